"""The llama.cpp backend: exact prompt lengths, greedy determinism, honest timestamps.

The backend runs in a child interpreter (``child_json``), never in pytest's own process: a build
that cannot run here dies there with a signal and the test fails with the doctor's message."""

from __future__ import annotations

import pytest
from conftest import child_json

from bench.backends import BACKENDS
from bench.hardware.profiles import detect_gpus

CHILD = r"""
import json, sys
from pathlib import Path
from bench.backends import load_backend_class
from bench.backends.base import LoadSettings

b = load_backend_class("llama.cpp")()
b.load(Path(sys.argv[1]), LoadSettings(threads=2, device="cpu", n_ctx=512, seed=0))
out = {"name": type(b).name, "bos": b.llm.token_bos(), "prompts": {}}
for n in (1, 2, 7, 64, 300):
    out["prompts"][n] = b.prompt(n)
prompt = b.prompt(32)
a, c = b.generate(prompt, 10, stop_at_eos=False), b.generate(prompt, 10, stop_at_eos=False)
out["a"] = {"ids": a.token_ids, "times": a.token_times, "prefill_end": a.prefill_end, "eos": a.stopped_at_eos,
            "text": a.text}
out["b_ids"] = c.token_ids
chat = "<|im_start|>user\nSay hello in one word.<|im_end|>\n<|im_start|>assistant\n"
p = b.llm.tokenize(chat.encode(), add_bos=False, special=True)
stopped = b.generate(p, 200, stop_at_eos=True)
full = b.generate(p, len(stopped.token_ids) + 5, stop_at_eos=False)
out["stopped"] = {"ids": stopped.token_ids, "times": stopped.token_times, "eos": stopped.stopped_at_eos}
out["full_ids"] = full.token_ids
b.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def facts(embedded_gguf):
    return child_json(CHILD, str(embedded_gguf))


@pytest.mark.model
@pytest.mark.parametrize("n", [1, 2, 7, 64, 300])
def test_prompt_has_exactly_n_tokens(facts, n):
    tokens = facts["prompts"][str(n)]
    assert len(tokens) == n
    assert tokens[0] == facts["bos"]


@pytest.mark.model
def test_generation_is_greedy_and_timestamped(facts):
    a = facts["a"]
    assert a["ids"] == facts["b_ids"]  # the KV cache is cleared between requests: same result
    assert len(a["ids"]) == 10 and not a["eos"]
    assert a["prefill_end"] is not None and 0 < a["prefill_end"] < a["times"][0]
    assert a["text"]  # detokenized as the caller would receive it


@pytest.mark.fast
def test_registry_resolves_lazily():
    assert "llama.cpp" in BACKENDS
    assert BACKENDS["llama.cpp"].target.endswith(":LlamaCppBackend")


@pytest.mark.model
def test_backend_class_is_the_registered_one(facts):
    assert facts["name"] == "llama.cpp"


@pytest.mark.model
@pytest.mark.gpu
@pytest.mark.skipif(not detect_gpus(), reason="no CUDA GPU on this host")
def test_gpu_offload_runs_on_cuda(tmp_path, gpu_gguf):
    from conftest import read_jsonl, run_bench

    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--model", str(gpu_gguf), "--prompt-tokens", "64", "--gen-tokens", "16",
                     "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    row = read_jsonl(out)[0]
    assert row["config"]["device"] == "cuda" and row["config"]["n_gpu_layers"] == -1
    assert row["environment"]["backend"]["gpu_offload_supported"] is True
    memory = row["memory"]
    # every layer is on the GPU: NVML sees the memory, as this process's (where it lists the process)
    # or as the device's growth (where a PID namespace hides it); a 0 never stands for "not seen"
    assert memory.get("peak_vram_nvml_process_bytes", 0) > 0 or (
        memory.get("peak_vram_nvml_device_bytes", 0) > 0 and "vram_nvml_unavailable" in memory), memory
    assert row["environment"]["calibration"]["gpu_memory_bandwidth_bytes_per_s"] > 0
    assert row["efficiency"]["roofline"]["bandwidth_source"] == "measured on this GPU (calibration)"
    gpu_state = row["environment"]["machine_state"]["gpu"]
    assert gpu_state["sm_clock_mhz"]["max"] > 0 and gpu_state["samples"] >= 1
    if row["efficiency"]["energy_source"] == "nvml":
        assert row["summary"]["energy_j_per_token"]["mean"] > 0


@pytest.mark.model
def test_stop_at_eos_reports_the_count_it_got(facts):
    stopped, full = facts["stopped"], facts["full_ids"]
    assert stopped["eos"] and 1 <= len(stopped["ids"]) < 200
    assert len(stopped["times"]) == len(stopped["ids"])
    assert len(full) == len(stopped["ids"]) + 5  # by default generation goes on past EOS
    assert full[: len(stopped["ids"])] == stopped["ids"]
