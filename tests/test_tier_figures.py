"""The tier figures of the shipped hardware profiles: each says where and when it was read, threads are
llama.cpp's defaults, and impossible or unsourced figures are refused with file and line."""

from __future__ import annotations

import pytest
from conftest import REPO

from bench.errors import BenchError
from bench.hardware.profiles import load_profiles

pytestmark = pytest.mark.fast


def test_cpu_tiers_emulate_the_threads_llama_cpp_would_use():
    profiles = load_profiles(REPO / "hardware_profiles")
    # physical cores on SMT CPUs (4C/8T, 16C/32T), performance cores on Apple Silicon (4P + 4E / 4P + 6E)
    assert {k: profiles[k].capacity.threads for k in ("laptop-4c-8g", "desktop-16c-64g", "laptop-8c-16g",
                                                      "laptop-m4-16g", "rpi5-8g")} == {
        "laptop-4c-8g": 4, "desktop-16c-64g": 16, "laptop-8c-16g": 4, "laptop-m4-16g": 4, "rpi5-8g": 4}


def test_every_figure_and_price_says_where_and_when_it_was_read():
    for p in load_profiles(REPO / "hardware_profiles").values():
        if p.price:
            assert p.price.source and p.price.read, f"{p.id}: price without source or read date"
        figs = list(p.performance.memory_bandwidth) if p.performance else []
        if p.performance and p.performance.compute:
            c = p.performance.compute
            figs += c.fp32_gflops + c.fp64_gflops + c.fp16_gflops
        for f in figs:
            assert f.source and f.read and (f.kind == "peak" or f.tool), (p.id, f)
    # the cheap tiers the verdict asks about now have a bandwidth figure
    profiles = load_profiles(REPO / "hardware_profiles")
    for tid in ("rpi5-8g", "laptop-4c-8g", "laptop-8c-16g", "desktop-16c-64g", "minipc-n150-16g", "minipc-m4-16g",
                "laptop-m4-16g", "jetson-orin-nano-8g"):
        assert profiles[tid].performance.bandwidth is not None, tid


@pytest.mark.parametrize("figure,message", [
    ("{value: -5, kind: peak, source: x, read: 2026-11-30}", "greater than 0"),
    ("{value: 99999, kind: peak, source: x, read: 2026-11-30}", "above any real machine"),
    ("{value: 50, kind: measured, source: x, read: 2026-11-30}", "needs the tool"),
    ("{value: 50, kind: peak, read: 2026-11-30}", "source"),
    ("{value: 50, kind: peak, source: x, read: yesterday}", "read"),
])
def test_impossible_or_unsourced_figures_are_refused_with_file_and_line(tmp_path, figure, message):
    (tmp_path / "bad.yaml").write_text("id: bad\nname: x\ncapacity: {threads: 1, ram_gb: 1}\n"
                                       f"performance:\n  memory_bandwidth:\n    - {figure}\n")
    with pytest.raises(BenchError, match=rf"bad.yaml:\d+: performance.memory_bandwidth.*{message}"):
        load_profiles(tmp_path)


def test_threads_must_be_the_ones_llama_cpp_would_use(tmp_path):
    (tmp_path / "bad.yaml").write_text("id: bad\nname: x\ncapacity: {threads: 8, ram_gb: 8}\n"
                                       "performance: {compute: {threads: 4}}\n")
    with pytest.raises(BenchError, match="differs from performance.compute.threads"):
        load_profiles(tmp_path)
