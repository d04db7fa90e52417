"""Synthetic GGUF files (bench.models.synthetic): the embedded model's header with random weights has
the real file's size, layout and header summary, holds no zeros where weights go, loads and runs in
the real llama.cpp, and a header that is not the one its manifest names is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.errors import BenchError
from bench.models.gguf_info import read_gguf_info
from bench.models.synthetic import F16_FIELDS, make_skeleton, synthesize

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, embedded_model):
    d = tmp_path_factory.mktemp("synthetic")
    manifest = make_skeleton(embedded_model.path, d / "smollm2.header", "the embedded model")
    made = synthesize(d / "smollm2.header", manifest, d / "smollm2-synthetic.gguf")
    return embedded_model, manifest, made, d


def test_the_header_is_small_and_the_whole_file_the_real_size(synthetic):
    real, manifest, made, d = synthetic
    assert (d / "smollm2.header").stat().st_size == manifest["header_bytes"] < real.size_bytes // 20
    assert made["bytes"] == manifest["file_bytes"] == real.size_bytes
    assert made["sha256"] != real.sha256  # the weights are not the real ones
    assert read_gguf_info(real.path).to_dict() == read_gguf_info(d / "smollm2-synthetic.gguf").to_dict()


def test_weights_are_random_with_small_scales(synthetic):
    real, manifest, made, d = synthetic
    raw = np.fromfile(d / "smollm2-synthetic.gguf", dtype=np.uint8)
    name, type_name, offset, nbytes = next(t for t in manifest["tensors"] if t[1] == "Q4_1")
    block, fields = F16_FIELDS["Q4_1"]
    blocks = raw[manifest["header_bytes"] + offset:][:nbytes].reshape(-1, block)
    scales = blocks[:, 0:2].copy().view(np.float16).astype(np.float32).ravel()
    mins = blocks[:, 2:4].copy().view(np.float16).astype(np.float32).ravel()
    assert 0.0025 <= scales.min() and scales.max() <= 0.0075  # d drawn in [0.5, 1.5] x 0.005
    assert -0.06 <= mins.min() and mins.max() <= -0.02
    quants = blocks[:, 4:]
    assert np.unique(quants).size == 256  # random bytes: every pair of nibbles occurs
    assert np.count_nonzero(quants) > 0.99 * quants.size  # zeros only as often as chance makes them (1/256)


def test_the_same_seed_gives_the_same_file(synthetic, tmp_path):
    real, manifest, made, d = synthetic
    again = synthesize(d / "smollm2.header", manifest, tmp_path / "again.gguf")
    assert again["sha256"] == made["sha256"]
    other = synthesize(d / "smollm2.header", manifest, tmp_path / "other.gguf", seed=1)
    assert other["sha256"] != made["sha256"]


def test_llama_cpp_loads_and_generates_with_it(synthetic):
    from bench.native.smoke import run_smoke

    real, manifest, made, d = synthetic
    result = run_smoke(model=d / "smollm2-synthetic.gguf")
    assert result.ok, result.detail
    assert result.decode_tps > 0


def test_a_header_other_than_the_manifests_is_refused(synthetic, tmp_path):
    real, manifest, made, d = synthetic
    bad = tmp_path / "bad.header"
    data = bytearray((d / "smollm2.header").read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(BenchError, match="not the header its manifest describes"):
        synthesize(bad, manifest, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.part").exists()
    unknown = json.loads(json.dumps(manifest))
    unknown["tensors"][0][1] = "IQ2_XXS"
    with pytest.raises(BenchError, match="IQ2_XXS are not implemented"):
        synthesize(d / "smollm2.header", unknown, tmp_path / "y.gguf")
    assert not (tmp_path / "y.gguf").exists() and not (tmp_path / "y.gguf.part").exists()
