"""The machine's state around a cell: the formulas on hand-made readings, and a real child on a
pinned core with another process busy on the same core."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.measuring.machine_state import StateWatch, cpu_times, summarize_state


@pytest.mark.fast
def test_others_share_steal_and_clock_drop_from_readings():
    before = {0: (100.0, 50.0, 1.0), 1: (200.0, 60.0, 2.0)}
    after = {0: (109.0, 51.0, 1.0), 1: (203.0, 67.0, 2.5)}  # 12 s busy on the 2 pinned cores in 10 s
    s = summarize_state([0, 1], 10.0, before, after, child_cpu_s=10.0, clocks={0: [3000, 2600], 1: [3000, 3000]},
                        temps={}, gpu=[])
    assert s["others_share"] == pytest.approx(2.0 / 20)  # 12 s busy - 10 s of the child's own
    assert s["steal_share"] == pytest.approx(0.5 / 20)
    assert s["clock_drop"] == pytest.approx(400 / 3000)
    assert s["disturbed"] and len(s["flags"]) == 3
    quiet = summarize_state([0], 10.0, {0: (0.0, 0.0, 0.0)}, {0: (9.9, 0.1, 0.0)}, 9.9, {}, {}, [])
    assert not quiet["disturbed"] and quiet["others_share"] == pytest.approx(0.0)
    assert quiet["clock_khz"].startswith("unavailable")


@pytest.mark.model
@pytest.mark.skipif(not cpu_times() or not hasattr(os, "sched_setaffinity"), reason="needs /proc/stat and affinity")
def test_a_busy_neighbour_on_the_pinned_core_is_counted_as_others():
    """A child pinned to one core while another process spins on the same core: the watch must
    count at least the neighbour's own CPU time (read from the kernel in the same window) as others'."""
    import psutil

    cpu = sorted(os.sched_getaffinity(0))[0]
    spin = "import time\nt=time.time()\nwhile time.time()-t<4: pass"
    pinned = [sys.executable, "-c", f"import os; os.sched_setaffinity(0, [{cpu}]); exec({spin!r})"]
    neighbour = subprocess.Popen(pinned)
    try:
        time.sleep(0.3)
        n = psutil.Process(neighbour.pid)
        before = sum(n.cpu_times()[:2])
        with StateWatch([cpu]) as watch:
            subprocess.run([*pinned[:2], pinned[2].replace("<4", "<2")], check=True)
        neighbour_share = (sum(n.cpu_times()[:2]) - before) / watch.wall_s
    finally:
        neighbour.kill()
        neighbour.wait()
    report = watch.report()
    assert neighbour_share > 0.2  # the kernel really shared the core
    assert report["others_share"] >= neighbour_share - 0.05
    assert report["disturbed"] and "other processes" in report["flags"][0]


THIS_MACHINE = """\
schema_version: 1
id: this-machine
name: test tier that is this machine (its own CPUs and RAM)
device: cpu
capacity: {{threads: {threads}, ram_gb: {ram_gb}, reserve_ram_gb: 0}}
price: {{basis: on_demand, usd_per_hour: 0.5, source: "test fixture"}}
"""


@pytest.mark.model
@pytest.mark.skipif(not cpu_times() or not hasattr(os, "sched_setaffinity"), reason="needs /proc/stat and affinity")
def test_a_cell_on_the_tiers_own_machine_is_watched_on_every_core(tmp_path, embedded_model):
    """A cell planned for a machine that is its tier (what a fleet node runs) pins nothing; the
    watch must then cover every core it could run on, so a process spinning on one of them flags
    the row DISTURBED like any emulated one."""
    from conftest import REPO

    from bench.hardware.profiles import detect_host
    from bench.measuring.environment import capture_environment
    from bench.measuring.plan import build_plans
    from bench.measuring.runner import RunContext, run_cell
    from bench.models.store import ModelStore
    from bench.request import RunRequest

    host = detect_host()
    (tmp_path / "this-machine.yaml").write_text(THIS_MACHINE.format(threads=host.usable_cpus,
                                                                    ram_gb=round(host.ram_bytes / 2**30, 2)))
    req = RunRequest(models=["smollm2-135m"], profiles=["this-machine"], prompt_tokens=[16], gen_tokens=[8])
    (plan,) = build_plans(req, ModelStore(), host, REPO / "models.yaml", tmp_path, on_tier={"this-machine"})
    assert plan.caps.to_dict() == {} and plan.tier.measured_on_tier  # the tier's own machine: nothing pinned
    cpu = sorted(os.sched_getaffinity(0))[-1]
    spin = f"import os, time\nos.sched_setaffinity(0, [{cpu}])\nwhile True: pass"
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)
        row = run_cell(plan, RunContext("test", capture_environment(host)))
    finally:
        neighbour.kill()
        neighbour.wait()
    state = row.environment.machine_state or {}
    assert row.status == "ok", row.reason
    assert state["cpus"] == sorted(os.sched_getaffinity(0)) and "cpu_time" not in state
    assert state["cpus_watched"].startswith("every core")
    assert state["others_share"] > 0.05 and state["disturbed"]
    assert row.reason and row.reason.startswith("DISTURBED: other processes used")
