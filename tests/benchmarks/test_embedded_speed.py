"""pytest-benchmark: the embedded model through the suite's own backends, one request per round.

Not part of the default test run (pyproject's ``norecursedirs``). Run and gate them with:

    pytest tests/benchmarks --benchmark-autosave
    pytest tests/benchmarks --benchmark-compare --benchmark-compare-fail=mean:15%

pytest-benchmark times the whole request (prompt + generation, e2e); the suite's own metrics from
the same requests (decode and prefill tok/s, TTFT, ITL, peak RSS) go in ``extra_info``, so a saved
run keeps both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import skip_unless_required

from bench.backends import backend_spec, check_available, load_backend_class
from bench.backends.base import LoadSettings
from bench.measuring.metrics import Timeline, summarize
from bench.measuring.trackers import MemoryTracker

pytestmark = pytest.mark.model

PROMPT, GEN, ROUNDS = 128, 32, 5
THREADS = min(4, len(os.sched_getaffinity(0)))

CASES = [("llama.cpp", "q4_1"), ("transformers", "hf-f32")]


@pytest.fixture(scope="module")
def store():
    from bench.models.store import ModelStore

    return ModelStore()


@pytest.mark.parametrize(("backend_name", "variant"), CASES, ids=[f"{b}-{v}" for b, v in CASES])
def test_request_speed(benchmark, catalog, store, backend_name: str, variant: str):
    from bench.errors import BenchError

    try:
        check_available(backend_spec(backend_name))
    except BenchError as exc:
        skip_unless_required(str(exc))
    model = catalog.model(catalog.default_model)
    resolved = store.resolve(model, model.variant(variant))
    backend = load_backend_class(backend_name)()
    traces = []
    with MemoryTracker() as mem:
        backend.load(Path(resolved.path), LoadSettings(threads=THREADS, device="cpu", n_ctx=PROMPT + GEN, seed=0))
        prompt = backend.prompt(PROMPT)

        def one_request():
            trace = backend.generate(prompt, GEN, stop_at_eos=False)
            traces.append(trace)
            return trace

        benchmark.pedantic(one_request, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    backend.close()
    counted = traces[1:]  # the first request was pytest-benchmark's warm-up round
    assert len(counted) == ROUNDS and all(len(t.token_ids) == GEN for t in counted)
    summary = summarize([Timeline(t.prompt_tokens, t.token_times, t.prefill_end) for t in counted])
    benchmark.extra_info.update({
        "backend": backend_name, "variant": variant, "threads": THREADS, "prompt_tokens": PROMPT, "gen_tokens": GEN,
        "decode_tps": summary["decode_tps"]["mean"], "prefill_tps": summary["prefill_tps"]["mean"],
        "ttft_s": summary["ttft_s"]["mean"], "itl_p50_s": summary["itl_s"]["p50"], "itl_p99_s": summary["itl_s"]["p99"],
        "peak_rss_bytes": mem.report()["peak_rss_bytes"], "definitions": "docs/METRICS.md",
    })
    # the suite's e2e and pytest-benchmark's timing of the same requests describe the same work
    e2e = summary["e2e_s"]["mean"]
    assert 0.5 < e2e / benchmark.stats.stats.mean <= 1.05
