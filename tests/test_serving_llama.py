"""`bench serve` against a real llama-server (built from the wheel's llama.cpp source, cached) on the
embedded model, with small loads; and the guarantee that no server is left running: not after a
sweep, not after Ctrl-C, not after the suite itself is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, run_bench

from bench.serving.rows import read_serving_rows

SMALL = ("--no-ceiling", "--prompt-tokens", "32", "--gen-tokens", "8", "--profile", "auto")


@pytest.fixture(scope="module")
def llama_server_exe(embedded_model) -> Path:
    from bench.native.tools import tool_path

    return tool_path("llama-server", say=lambda line: print(line, file=sys.stderr))


def servers_on(port: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "--port" in cmd and cmd[cmd.index("--port") + 1:cmd.index("--port") + 2] == [str(port)]:
            found.append(p)
    return found


def wait_gone(pid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def port_of(row: dict) -> int:
    cmd = row["target"]["command"]
    return int(cmd[cmd.index("--port") + 1])


def test_a_sweep_of_two_concurrency_levels_on_a_real_llama_server(tmp_path, llama_server_exe):
    out = tmp_path / "serve.jsonl"
    proc = run_bench("serve", "-c", "1,2", "-n", "3", "-o", str(out), *SMALL)
    assert proc.returncode == 0, proc.stderr
    rows, warnings = read_serving_rows(out)
    assert not warnings
    points = [r for r in rows if r["record"] == "point"]
    assert [(r["load"]["mode"], r["load"]["value"], r["status"]) for r in points] == [
        ("concurrency", 1, "ok"), ("concurrency", 2, "ok")]
    for r in points:
        t, s = r["target"], r["summary"]
        assert t["server_kind"] == "llama-server" and t["managed"] and t["base_url"].startswith("http://127.0.0.1:")
        assert t["command"][t["command"].index("--host") + 1] == "127.0.0.1"
        assert t["build"]["ggml_flags"] and Path(t["log"]).is_file()
        assert r["placement"]["overlap"] is False or len(os.sched_getaffinity(0)) == 1
        assert s["ok"] == 3 and len(r["requests"]) == 3 and len(r["warmup_requests"]) == r["load"]["value"]
        for q in r["requests"]:
            # forced output length, counted from the server's per-chunk counter; prompt length checked
            assert q["completion_tokens"] == 8 and sum(q["chunk_tokens"]) == 8
            assert q["tokens_source"] == "server-counter"
            assert q["prompt_tokens"] == q["prompt_tokens_client"] == 32
            assert q["scheduled"] <= q["sent"] < q["chunk_times"][0] <= q["chunk_times"][-1] <= q["end"]
        assert s["prompt_tokens_client_vs_server"]["differ"] == 0
        assert s["cache"]["requests_reporting"] == 3 and s["cache"]["cached_prompt_tokens"] <= 3
        assert s["itl_basis"] == "per-token" and s["itl_s"]["n"] == 3 * 7
        assert s["ttft_s"]["p50"] <= s["e2e_s"]["p50"]
        assert r["server"]["memory"]["peak_rss_bytes"] > 50 * 2**20  # the model is resident
        assert r["server"]["counters"]["tokens_predicted"] >= 3 * 8
    sweep = rows[-1]
    assert sweep["record"] == "sweep"
    assert sweep["summary"]["max_sustainable"]["concurrency"]["max_sustainable_load"] in (None, 1, 2)
    assert not servers_on(port_of(points[0]))  # stopped at the end
    assert "bench serve: one row per load point" in proc.stdout


def test_ctrl_c_keeps_the_point_measured_so_far_and_stops_the_server(tmp_path, llama_server_exe):
    out, log = tmp_path / "serve.jsonl", tmp_path / "stderr.txt"
    with log.open("w") as err:
        # --duration 600: the point cannot end on its own before the Ctrl-C below, however slowly a
        # loaded host gets to it (once, under load, it ran its default 120 s and exited 0 first)
        proc = subprocess.Popen([sys.executable, "-m", "bench", "serve", "-c", "1", "-n", "500", "-o", str(out),
                                 "--warmup", "0", "--duration", "600", *SMALL], cwd=REPO, stderr=err,
                                stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "[1/1]" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(3)  # a few requests complete
        server = [p for p in psutil.Process(proc.pid).children(recursive=True) if "llama-server" in p.name()]
        proc.send_signal(signal.SIGINT)
        # quiet, it exits within seconds; once, on a host loaded by two other test runs, not within 60 s
        assert proc.wait(120) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert server and wait_gone(server[0].pid), "llama-server left running"
    rows, _ = read_serving_rows(out)
    assert len(rows) == 1 and rows[0]["status"] == "failed" and rows[0]["reason"].startswith("interrupted")
    assert any(q["status"] == "ok" for q in rows[0]["requests"])


def test_a_server_killed_mid_sweep_gives_rows_with_the_reason(tmp_path, llama_server_exe):
    out, log = tmp_path / "serve.jsonl", tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bench", "serve", "-c", "1,2", "-n", "200", "-o", str(out),
                                 "--warmup", "0", "--request-timeout", "20", *SMALL], cwd=REPO, stderr=err,
                                stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "[1/2]" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(2)
        for p in psutil.Process(proc.pid).children(recursive=True):
            if "llama-server" in p.name():
                p.kill()
        assert proc.wait(120) == 1, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    rows, _ = read_serving_rows(out)
    first, second, sweep = rows
    assert "llama-server exited (signal SIGKILL)" in first["reason"]
    assert second["status"] == "failed" and second["reason"].startswith("not run: llama-server exited")
    assert sweep["record"] == "sweep" and sweep["status"] == "failed"


KILLED_PARENT = """
import json, sys, time
from pathlib import Path
from bench.serving.server import ManagedServer, ServerSpec
spec = ServerSpec(exe=Path(sys.argv[1]), model_path=Path(sys.argv[2]), alias="m", threads=1, ctx_per_slot=256,
                  parallel=1, cpus=[], log_path=Path(sys.argv[3]))
server = ManagedServer(spec)
server.start()
print(json.dumps({"pid": server.proc.pid}), flush=True)
time.sleep(600)
"""


def test_the_server_dies_with_the_suite_even_on_sigkill(tmp_path, llama_server_exe, embedded_model):
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(llama_server_exe), str(embedded_model.path),
                               str(tmp_path / "server.log")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(parent.stdout.readline())["pid"]
        assert psutil.pid_exists(pid)
        parent.kill()  # no atexit, no finally: only the kernel's parent-death signal is left
        parent.wait(10)
        assert wait_gone(pid), "llama-server outlived a SIGKILLed suite"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_in_process_side_by_side_and_task_answers_under_load(tmp_path, llama_server_exe):
    out = tmp_path / "serve.jsonl"
    proc = run_bench("serve", "-c", "2", "-n", "2", "--warmup", "0", "-o", str(out), "--in-process", "--task", "gsm8k",
                     "--task-limit", "2", "--task-shots", "1", "--task-max-tokens", "24", *SMALL, timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows, _ = read_serving_rows(out)
    task = next(r for r in rows if r["record"] == "task")
    assert set(task["summary"]["at"]) == {"1", "2"} and task["summary"]["items"] == 2
    assert 0 <= task["summary"]["answers_changed"] <= 2
    sweep = rows[-1]
    ip = sweep["summary"]["in_process"]
    assert ip["status"] == "ok" and ip["ttft_s"] > 0 and ip["tpot_s"] > 0
    inproc = [json.loads(line) for line in Path(ip["file"]).read_text().splitlines()]
    assert inproc[0]["config"]["prompt_tokens"] == 32 and inproc[0]["config"]["threads"] == ip["threads"]
    assert "in process (bench run" in proc.stdout and "task gsm8k" in proc.stdout


def test_humaneval_under_load_goes_through_the_same_task_runner(tmp_path, llama_server_exe):
    """bench serve --task humaneval: the GGUF's chat template, the same prompts and stop sequences as
    bench run, each completion executed in the sandbox, at concurrency 1 and 2."""
    out = tmp_path / "serve.jsonl"
    proc = run_bench("serve", "-c", "2", "-n", "2", "--warmup", "0", "-o", str(out), "--task", "humaneval",
                     "--task-limit", "2", "--task-max-tokens", "32", *SMALL, timeout=900)
    assert proc.returncode == 0, proc.stderr
    rows, _ = read_serving_rows(out)
    s = next(r for r in rows if r["record"] == "task")["summary"]
    assert s["task"] == "humaneval" and s["metric"] == "pass@1" and s["items"] == 2
    assert s["prompt"]["style"] == "chat" and "GGUF" in s["prompt"]["template"]
    assert s["sandbox"]["network"] and set(s["at"]) == {"1", "2"}
    for level in s["at"].values():  # each answer is the program's outcome: passed, or the kind of failure
        assert all(a == "passed" or isinstance(a, str) for a in level["answers"])
