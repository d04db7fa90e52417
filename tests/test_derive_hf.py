"""The HF recipe: the embedded GGUF as a float32 safetensors folder, loadable by transformers,
whose greedy output agrees with llama.cpp on the same weights and tokens."""

from __future__ import annotations

import pytest
from conftest import child_json, require_or_skip

torch = require_or_skip("torch", "the hf extra is not installed")  # CI installs it (README setup) and requires it
transformers = require_or_skip("transformers", "the hf extra is not installed")

from bench.models.store import ModelStore  # noqa: E402

pytestmark = pytest.mark.model

LLAMA_GREEDY = r"""
import json, sys
from pathlib import Path
from bench.backends import load_backend_class
from bench.backends.base import LoadSettings

lc = load_backend_class("llama.cpp")()
lc.load(Path(sys.argv[1]), LoadSettings(threads=2, device="cpu", n_ctx=128, seed=0))
prompt = lc.prompt(32)
print(json.dumps({"prompt": prompt, "ids": lc.generate(prompt, 6, stop_at_eos=False).token_ids}))
lc.close()
"""


@pytest.fixture(scope="module")
def hf_folder(catalog, embedded_model):
    model = catalog.model("smollm2-135m")
    return ModelStore().resolve(model, model.variant("hf-f32"))


def test_folder_is_safetensors_only(hf_folder):
    names = {p.name for p in hf_folder.path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    assert hf_folder.format == "hf" and hf_folder.quantization == "f32"


def test_transformers_and_llama_cpp_agree_on_greedy_tokens(hf_folder, catalog):
    model = catalog.model("smollm2-135m")
    f16 = ModelStore().resolve(model, model.variant("f16"))
    got = child_json(LLAMA_GREEDY, str(f16.path))  # llama.cpp in a child, never in pytest's process
    prompt, ours = got["prompt"], got["ids"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_folder.path, dtype=torch.float32)
    with torch.inference_mode():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)
    theirs = out[0, len(prompt):].tolist()
    assert theirs[:4] == ours[:4], (theirs, ours)
