"""Each cell runs in its own process: a killed, crashed or hung worker becomes a result row,
and an interrupted run keeps every row it completed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, read_jsonl, run_bench

pytestmark = pytest.mark.model


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench", "run", "--no-progress", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def _worker_of(proc: subprocess.Popen[str]) -> psutil.Process | None:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "bench.measuring.worker" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            pass
    return None


def test_killed_worker_becomes_a_failed_row_and_the_matrix_goes_on(tmp_path, embedded_model):
    out = tmp_path / "r.jsonl"
    # three cells: a short one, a long one we kill, and a short one that must still run
    proc = _start("--prompt-tokens", "8", "--gen-tokens", "4,3000,5", "-o", str(out))
    _wait_for(lambda: len(_rows(out)) == 1, what="the first row")
    worker = _wait_for(lambda: _worker_of(proc), what="the second worker")
    worker.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    rows = _rows(out)
    assert [r["config"]["gen_tokens"] for r in rows] == [4, 3000, 5]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "SIGKILL" in rows[1]["reason"]
    assert rows[1]["samples"] == []  # nothing is reported that was not measured
    assert proc.returncode == 1  # some cell did not succeed


def test_hung_cell_times_out(tmp_path, embedded_model):
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--no-progress", "--prompt-tokens", "8", "--gen-tokens", "4000", "--timeout", "2",
                     "-o", str(out))
    assert proc.returncode == 1
    (row,) = _rows(out)
    assert row["status"] == "timeout" and "2 s" in row["reason"]


def test_parent_killed_mid_run_keeps_completed_rows_and_leaves_no_worker(tmp_path, embedded_model):
    out = tmp_path / "r.jsonl"
    proc = _start("--prompt-tokens", "8", "--gen-tokens", "4,3000", "-o", str(out))
    _wait_for(lambda: len(_rows(out)) == 1, what="the first row")
    worker = _wait_for(lambda: _worker_of(proc), what="the second worker")
    scratch = Path(worker.cmdline()[-1]).parent  # the worker's RESULT.json lies in the cell's scratch folder
    assert scratch.is_dir()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    rows = _rows(out)  # every line parses: no half-written row
    assert [r["status"] for r in rows] == ["ok"]
    worker.wait(timeout=10)  # the orphaned worker notices and exits
    assert not scratch.exists()  # and removes what the killed parent could not


def test_sigterm_aborts_the_current_cell_stops_its_worker_and_keeps_completed_rows(tmp_path, embedded_model):
    out = tmp_path / "r.jsonl"
    proc = _start("--prompt-tokens", "8", "--gen-tokens", "4,3000,5", "-o", str(out))
    _wait_for(lambda: len(_rows(out)) == 1, what="the first row")
    worker = _wait_for(lambda: _worker_of(proc), what="the second worker")
    scratch = Path(worker.cmdline()[-1]).parent
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "every completed row was kept" in stderr
    assert [(r["config"]["gen_tokens"], r["status"]) for r in _rows(out)] == [(4, "ok")]
    assert not worker.is_running() and not scratch.exists()  # stopped by the parent, not left to notice


def test_ctrl_c_finishes_the_current_cell_then_stops(tmp_path, embedded_model):
    out = tmp_path / "r.jsonl"
    proc = _start("--prompt-tokens", "8", "--gen-tokens", "150,4", "-o", str(out))
    _wait_for(lambda: _worker_of(proc), what="the first worker")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    rows = _rows(out)
    assert [(r["config"]["gen_tokens"], r["status"]) for r in rows] == [(150, "ok")]
    assert proc.returncode == 130 and "1 cell(s) not run" in stderr


def test_pass_folders_of_a_killed_suite_are_removed_and_live_ones_kept(tmp_path):
    """A pass folder whose owner (the launcher) is gone is removed at the next pass; one whose
    owner lives, or one without an owner file, is kept."""
    import subprocess

    from bench.measuring.launcher import OWNER_FILE, remove_stale_scratch
    from bench.measuring.worker import SCRATCH_PREFIX

    done = subprocess.Popen(["true"])
    done.wait()  # its pid now names no process (reaped)
    stale, live, unknown = (tmp_path / f"{SCRATCH_PREFIX}{n}" for n in ("stale", "live", "unknown"))
    for d in (stale, live, unknown):
        d.mkdir()
        (d / "job.json").write_text("{}")
    (stale / OWNER_FILE).write_text(str(done.pid))
    (live / OWNER_FILE).write_text(str(os.getpid()))
    assert remove_stale_scratch(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and unknown.exists()
