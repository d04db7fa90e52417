"""`bench serve --url` against a small misbehaving OpenAI-compatible server started on loopback
(bench/serving/stub.py): every fault is one clear line (bad input, exit 2) or a row with a status
and a reason (exit 1), never a hang and never a lost row."""

from __future__ import annotations

import socket

import pytest
from conftest import assert_clean_error, read_serving_rows, run_bench

from bench.serving.stub import StubProcess

pytestmark = pytest.mark.model

FAST = ("--no-ceiling", "--gen-tokens", "6", "--prompt-tokens", "16", "--request-timeout", "10")


def serve(url: str, out, *args: str, timeout: float = 120):
    return run_bench("serve", "--url", url, "-o", str(out), *FAST, *args, timeout=timeout)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stub():
    with StubProcess("--mode", "ok", "--tokens", "6") as s:
        yield s


def test_a_refused_connection_is_one_line(tmp_path):
    proc = serve(f"http://127.0.0.1:{closed_port()}/v1", tmp_path / "r.jsonl", "--served-model", "m", "-c", "1")
    assert_clean_error(proc, "cannot reach", "connection refused")
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("url,needle", [("ftp://127.0.0.1/v1", "--url must look like"),
                                        ("http://127.0.0.1:99999/v1", "bad port")])
def test_a_bad_url_is_one_line(tmp_path, url, needle):
    assert_clean_error(serve(url, tmp_path / "r.jsonl", "-c", "1"), needle)


def test_a_model_the_server_does_not_know_is_one_line(tmp_path, stub):
    proc = serve(stub.base_url, tmp_path / "r.jsonl", "--served-model", "no-such-model", "-c", "1")
    assert_clean_error(proc, "does not serve model 'no-such-model'", "stub-model")


def test_bad_options_are_one_line(tmp_path, stub):
    out = tmp_path / "r.jsonl"
    assert_clean_error(serve(stub.base_url, out, "--served-model", "stub-model", "-c", "0"), "--concurrency")
    assert_clean_error(serve(stub.base_url, out, "--served-model", "stub-model", "--gen-tokens", "9:3"),
                       "--gen-tokens")
    assert_clean_error(serve(stub.base_url, out, "--served-model", "stub-model", "--api-key-env", "BENCH_NO_SUCH_VAR"),
                       "BENCH_NO_SUCH_VAR")
    assert_clean_error(serve(stub.base_url, out, "--served-model", "stub-model", "--in-process"), "--in-process")


@pytest.mark.parametrize("mode,kind,needle", [
    ("http_400", "http_400", "HTTP 400: Field 'max_tokens'"),
    ("http_500", "http_500", "HTTP 500: internal failure"),
    ("not_streaming", "not_streaming", "application/json instead of an event stream"),
    ("malformed", "malformed_sse", "not JSON"),
    ("truncate", "disconnected", "ended before [DONE]"),
    ("stream_error", "stream_error", "slot failed"),
])
def test_each_server_fault_is_a_row_with_its_kind_and_reason(tmp_path, stub, mode, kind, needle):
    out = tmp_path / "r.jsonl"
    proc = serve(stub.base_url, out, "--served-model", mode, "-c", "1,2", "-n", "2", "--warmup", "0")
    assert proc.returncode == 1, proc.stderr
    rows, warnings = read_serving_rows(out)
    assert not warnings
    points = [r for r in rows if r["record"] == "point"]
    assert [r["load"]["value"] for r in points] == [1, 2]
    for r in points:
        assert r["status"] == "failed" and needle in r["reason"], r["reason"]
        assert r["summary"]["errors"][kind]["count"] == 2
        assert [q["status"] for q in r["requests"]] == [kind, kind]
    assert rows[-1]["record"] == "sweep" and rows[-1]["status"] == "failed"
    assert "Traceback" not in proc.stderr


def test_a_server_that_dies_mid_sweep_leaves_a_row_per_point(tmp_path):
    out = tmp_path / "r.jsonl"
    with StubProcess("--mode", "die_after", "--die-after", "3", "--tokens", "6") as dying:
        proc = serve(dying.base_url, out, "--served-model", "stub-model", "-c", "1,2,4", "-n", "4", "--warmup", "0")
    assert proc.returncode == 1, proc.stderr
    rows, _ = read_serving_rows(out)
    first, second, third, sweep = rows
    assert first["status"] == "partial" and first["summary"]["ok"] == 3
    assert first["summary"]["errors"]["disconnected"]["count"] == 1
    assert second["status"] == "failed" and set(second["summary"]["errors"]) == {"connection_refused"}
    assert third["status"] == "failed" and third["reason"].startswith("not run: the server stopped answering")
    assert sweep["record"] == "sweep"
    assert sweep["summary"]["max_sustainable"]["concurrency"]["max_sustainable_load"] is None


def test_a_server_that_never_answers_times_out_instead_of_hanging(tmp_path):
    out = tmp_path / "r.jsonl"
    with StubProcess("--mode", "hang") as hanging:
        proc = serve(hanging.base_url, out, "--served-model", "stub-model", "-c", "2", "-n", "2", "--warmup", "0",
                     "--request-timeout", "1", timeout=60)
    assert proc.returncode == 1, proc.stderr
    point = read_serving_rows(out)[0][0]
    assert point["status"] == "failed" and point["summary"]["errors"]["timeout"]["count"] == 2


def test_several_tokens_per_chunk_are_counted_or_flagged(tmp_path, stub):
    out = tmp_path / "r.jsonl"
    proc = serve(stub.base_url, out, "--served-model", "counter", "-c", "1", "-n", "2", "--warmup", "0")
    point = read_serving_rows(out)[0][0]
    assert point["status"] == "ok" and point["summary"]["itl_basis"] == "per-token"
    assert proc.returncode == 0, proc.stderr  # every row ok (bench serve exits 1 only for a row that is not)
    assert point["summary"]["tokens_per_chunk_max"] == 3 and point["summary"]["itl_s"]["n"] == 2 * (6 - 3)
    out2 = tmp_path / "m.jsonl"
    serve(stub.base_url, out2, "--served-model", "merged", "-c", "1", "-n", "2", "--warmup", "0")
    merged = read_serving_rows(out2)[0][0]
    assert merged["summary"]["itl_basis"].startswith("inter-chunk for 2 of 2")
    assert merged["summary"]["output_tokens"] == 12  # the server's usage, not the 4 chunks


def test_a_sweep_against_a_healthy_server_measures_the_client_ceiling_and_open_loop(tmp_path, stub):
    out = tmp_path / "r.jsonl"
    proc = run_bench("serve", "--url", stub.base_url, "--served-model", "stub-model", "-o", str(out),
                     "--gen-tokens", "6", "--prompts", "mix", "--rate", "20", "-n", "10", "--warmup", "1",
                     "--slo-ttft", "5", "--slo-tpot", "1")
    assert proc.returncode == 0, proc.stderr
    rows, _ = read_serving_rows(out)
    point, sweep = rows
    assert point["status"] == "ok" and point["load"]["mode"] == "rate"
    assert point["summary"]["ok"] == 10 and len(point["warmup_requests"]) == 1
    assert point["workload"]["prompts"]["counted_by"].startswith("unchecked")  # the stub has no /tokenize
    assert point["placement"]["server_cpus"] is None
    ceiling = sweep["client"]["ceiling"]
    assert ceiling["requests_per_s"] > 0 and ceiling["chunks_per_s"] > 0
    assert point["client"]["ceiling_share"] < 1
    assert sweep["summary"]["max_sustainable"]["rate"]["max_sustainable_load"] == 20
    assert "largest sustainable load 20" in proc.stdout
