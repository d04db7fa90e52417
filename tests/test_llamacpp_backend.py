"""The llama.cpp backend in-process: exact prompt lengths, greedy determinism, honest timestamps."""

from __future__ import annotations

import pytest

from bench.backends import BACKENDS, load_backend_class
from bench.backends.base import LoadSettings
from bench.hardware import detect_gpus


@pytest.fixture(scope="module")
def backend(embedded_gguf):
    b = load_backend_class("llama.cpp")()
    b.load(embedded_gguf, LoadSettings(threads=2, device="cpu", n_ctx=512, seed=0))
    yield b
    b.close()


@pytest.mark.parametrize("n", [1, 2, 7, 64, 300])
def test_prompt_has_exactly_n_tokens(backend, n):
    tokens = backend.prompt(n)
    assert len(tokens) == n
    assert tokens[0] == backend.llm.token_bos()


def test_generation_is_greedy_and_timestamped(backend):
    prompt = backend.prompt(32)
    a = backend.generate(prompt, 10, stop_at_eos=False)
    b = backend.generate(prompt, 10, stop_at_eos=False)
    assert a.token_ids == b.token_ids  # the KV cache is cleared between requests: same result
    assert len(a.token_ids) == 10 and not a.stopped_at_eos
    assert a.prefill_end is not None and 0 < a.prefill_end < a.token_times[0]
    assert a.text  # detokenized as the caller would receive it


def test_registry_resolves_lazily():
    assert "llama.cpp" in BACKENDS
    assert load_backend_class("llama.cpp").name == "llama.cpp"


@pytest.mark.gpu
@pytest.mark.skipif(not detect_gpus(), reason="no CUDA GPU on this host")
def test_gpu_offload_runs_on_cuda(tmp_path, embedded_gguf):
    from conftest import read_jsonl, run_bench

    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--model", str(embedded_gguf), "--prompt-tokens", "64", "--gen-tokens", "16",
                     "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    row = read_jsonl(out)[0]
    assert row["config"]["device"] == "cuda" and row["config"]["n_gpu_layers"] == -1
    assert row["environment"]["backend"]["gpu_offload_supported"] is True
    assert row["memory"].get("peak_vram_nvml_process_bytes", 0) > 0 or "vram_nvml_unavailable" in row["memory"]


def test_stop_at_eos_reports_the_count_it_got(backend):
    chat = "<|im_start|>user\nSay hello in one word.<|im_end|>\n<|im_start|>assistant\n"
    prompt = backend.llm.tokenize(chat.encode(), add_bos=False, special=True)
    stopped = backend.generate(prompt, 200, stop_at_eos=True)
    assert stopped.stopped_at_eos and 1 <= len(stopped.token_ids) < 200
    assert len(stopped.token_times) == len(stopped.token_ids)
    full = backend.generate(prompt, len(stopped.token_ids) + 5, stop_at_eos=False)
    assert len(full.token_ids) == len(stopped.token_ids) + 5  # by default generation goes on past EOS
    assert full.token_ids[: len(stopped.token_ids)] == stopped.token_ids
