"""The offline quantization ladder: real files through gguf-py and llama.cpp's quantizer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import read_jsonl, run_bench

from bench.errors import BenchError
from bench.models.catalog import Catalog
from bench.models.store import ModelStore


@pytest.fixture(scope="module")
def ladder(catalog, embedded_model):
    store = ModelStore()
    model = catalog.model("smollm2-135m")
    wanted = ("f16", "q8_0-derived", "q4_0-derived", "q2_k-derived")
    out = {vid: store.resolve(model, model.variant(vid)) for vid in wanted}
    before = len(store.fetched)
    again = store.resolve(model, model.variant("q8_0-derived"))
    return out, again, len(store.fetched) - before


@pytest.mark.model
def test_f16_reference_is_the_q4_1_weights_dequantized(ladder, embedded_model):
    import gguf

    (out, _, _) = ladder
    f16 = out["f16"]
    assert set(f16.gguf["tensor_types"]) == {"F16", "F32"}
    src = {t.name: t for t in gguf.GGUFReader(embedded_model.path).tensors}
    dst = {t.name: t for t in gguf.GGUFReader(f16.path).tensors}
    assert src.keys() == dst.keys()
    name = "blk.0.ffn_down.weight"
    expected = gguf.quants.dequantize(src[name].data, src[name].tensor_type).astype(np.float16)
    assert np.array_equal(np.asarray(dst[name].data).reshape(expected.shape), expected)


@pytest.mark.model
def test_ladder_records_the_types_it_really_got(ladder):
    (out, _, _) = ladder
    assert set(out["q8_0-derived"].gguf["tensor_types"]) == {"Q8_0", "F32"}
    # 576-wide rows are not a multiple of the K-quants' 256 block: llama.cpp falls back, and the
    # header read back says so. "Q2_K" here is mostly Q4_0.
    q2 = out["q2_k-derived"].gguf["tensor_bytes"]
    assert "Q2_K" not in q2 and q2["Q4_0"] > 0
    sizes = [out[v].size_bytes for v in ("f16", "q8_0-derived", "q4_0-derived")]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.model
def test_derived_files_are_made_once(ladder):
    (out, again, made_by_second_resolve) = ladder
    assert again.path == out["q8_0-derived"].path
    assert made_by_second_resolve == 0


@pytest.mark.model
def test_a_derived_variant_runs(tmp_path, ladder):
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--model", "smollm2-135m:q4_0-derived", "--prompt-tokens", "8", "--gen-tokens", "4",
                     "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    row = read_jsonl(out)[0]
    assert row["config"]["variant_id"] == "q4_0-derived" and row["status"] == "ok"


@pytest.mark.fast
def test_derive_chains_must_end_in_a_real_source():
    base = {"id": "m", "name": "M", "family": "f", "developer": "d"}
    loop = [{"id": "a", "kind": "quantized", "format": "gguf", "quantization": "Q8_0",
             "source": {"derive": {"from": "b", "recipe": "Q8_0"}}},
            {"id": "b", "kind": "quantized", "format": "gguf", "quantization": "Q8_0",
             "source": {"derive": {"from": "a", "recipe": "Q8_0"}}}]
    with pytest.raises(Exception, match="loops"):
        Catalog.model_validate({"schema_version": 1, "default_model": "m", "models": [{**base, "variants": loop}]})


@pytest.mark.fast
def test_unknown_recipe_is_refused():
    from bench.models.derive import recipe

    with pytest.raises(BenchError, match="unknown derive recipe"):
        recipe("Q1_X")
