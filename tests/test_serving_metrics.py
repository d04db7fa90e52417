"""Serving metrics on hand-made timestamp traces (bench/serving/metrics.py, docs/METRICS.md "Serving"),
the SSE parser and chunk reader on hand-made bytes, and the load generator's schedule accounting
with a fake sender (no network). No assertion on absolute times measured here."""

from __future__ import annotations

import statistics
import time

import pytest

from bench.results.serving import LoadSpec, PointSummary
from bench.serving import metrics as sm
from bench.serving.client import ChunkReader, HttpFailure, SSEParser
from bench.serving.load import Job, LoadPoint, arrivals, run_phase
from bench.serving.metrics import RequestTrace, Slo
from bench.serving.placement import plan_placement
from bench.serving.point import client_state

SLO = Slo(ttft_s=1.0, tpot_s=0.1, source="test")


def trace(i=0, scheduled=0.0, sent=0.0, times=(), tokens=None, usage=None, status="ok", source="server-counter",
          prompt=10, end=None):
    times = list(times)
    return RequestTrace(index=i, scheduled=scheduled, sent=sent, chunk_times=times,
                        chunk_tokens=list(tokens) if tokens else [1] * len(times), tokens_source=source,
                        status=status, completion_tokens=usage, prompt_tokens=prompt, prompt_tokens_client=prompt,
                        end=end if end is not None else (times[-1] if times else sent))


@pytest.mark.fast
def test_latency_counts_from_the_scheduled_time_not_the_send():
    # Scheduled at 0 but sent 0.5 s late (the client was busy): TTFT and e2e count the wait.
    t = trace(scheduled=0.0, sent=0.5, times=[1.0, 1.1, 1.2])
    assert sm.ttft(t) == pytest.approx(1.0)
    assert sm.ttft_from_send(t) == pytest.approx(0.5)
    assert sm.queue_time(t) == pytest.approx(0.5)
    assert sm.e2e(t) == pytest.approx(1.2)
    # The part spent waiting for an in-flight slot is not the generator's own lag.
    t.slot_wait = 0.4
    assert sm.send_lag(t) == pytest.approx(0.1)


@pytest.mark.fast
def test_a_chunk_of_several_tokens_is_spread_over_its_tokens():
    # Chunks at 1.0 (1 token), 1.3 (3 tokens), 1.4 (1 token): 5 tokens.
    t = trace(times=[1.0, 1.3, 1.4], tokens=[1, 3, 1], usage=5)
    assert sm.itl_samples(t) == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert sm.tpot(t) == pytest.approx(0.4 / 4)
    assert sum(sm.itl_samples(t)) == pytest.approx(t.chunk_times[-1] - t.chunk_times[0])
    assert sm.tokens_exact(t)


@pytest.mark.fast
def test_first_chunk_with_several_tokens_divides_by_the_tokens_after_it():
    t = trace(times=[1.0, 1.2, 1.4], tokens=[2, 1, 1], usage=4)
    assert sm.tpot(t) == pytest.approx(0.4 / 2)  # (c_m - c_1) / (n - k_1)


@pytest.mark.fast
def test_chunks_without_token_counts_are_flagged_as_inter_chunk():
    # One token per chunk assumed, but the server's usage says 6 tokens came in 3 chunks.
    t = trace(times=[1.0, 1.3, 1.6], usage=6, source="assumed-1")
    assert not sm.tokens_exact(t)
    assert sm.tpot(t) == pytest.approx(0.6 / 5)  # TPOT still uses the server's count
    s = sm.summarize_point([t], SLO)
    assert s["itl_basis"].startswith("inter-chunk for 1 of 1")
    # ...and the assumption confirmed by the total is exact.
    assert sm.tokens_exact(trace(times=[1.0, 1.3, 1.6], usage=3, source="assumed-1"))


@pytest.mark.fast
def test_point_throughputs_are_over_the_window_from_first_schedule_to_last_end():
    a = trace(0, scheduled=0.0, sent=0.0, times=[0.5, 0.6, 0.7, 0.8], usage=4, prompt=10, end=0.85)
    b = trace(1, scheduled=1.0, sent=1.0, times=[1.5, 1.6, 1.7, 1.8], usage=4, prompt=20, end=2.0)
    s = sm.summarize_point([a, b], SLO)
    assert s["window_s"] == pytest.approx(2.0)
    assert s["request_throughput_rps"] == pytest.approx(2 / 2.0)
    assert s["output_tps"] == pytest.approx(8 / 2.0)
    assert s["total_tps"] == pytest.approx((8 + 30) / 2.0)
    assert s["ttft_s"]["p50"] == pytest.approx(0.5)
    assert s["itl_s"]["n"] == 6 and s["itl_s"]["p50"] == pytest.approx(0.1)


@pytest.mark.fast
def test_total_throughput_is_unknown_not_short_when_a_prompt_was_not_counted():
    """A request whose prompt neither the server's usage nor the client counted makes total tok/s
    unknown, with why; it is never the output tokens plus 0 for that prompt."""
    a = trace(0, scheduled=0.0, sent=0.0, times=[0.5, 0.6, 0.7, 0.8], usage=4, prompt=10, end=0.85)
    b = trace(1, scheduled=1.0, sent=1.0, times=[1.5, 1.6, 1.7, 1.8], usage=4, prompt=None, end=2.0)
    s = sm.summarize_point([a, b], SLO)
    assert s["output_tps"] == pytest.approx(8 / 2.0)
    assert s["total_tps"] is None and s["prompt_tokens"] is None
    assert s["total_tps_unavailable"].startswith("1 of 2 completed request(s) have no prompt token count")
    b.prompt_tokens_client = 20  # the client's own count stands in for the server's
    s = sm.summarize_point([a, b], SLO)
    assert s["total_tps"] == pytest.approx((8 + 30) / 2.0) and "total_tps_unavailable" not in s


@pytest.mark.fast
def test_goodput_counts_requests_meeting_both_slos_and_errors_as_not_good():
    fast = trace(0, times=[0.5, 0.55, 0.6], usage=3)  # TTFT 0.5, TPOT 0.05
    slow_first = trace(1, times=[1.5, 1.55, 1.6], usage=3)  # TTFT 1.5 > 1.0
    slow_tokens = trace(2, times=[0.5, 0.8, 1.1], usage=3)  # TPOT 0.3 > 0.1
    failed = trace(3, status="http_500")
    failed.reason = "HTTP 500: boom"
    s = sm.summarize_point([fast, slow_first, slow_tokens, failed], SLO)
    g = s["goodput"]
    assert g["good"] == 1 and g["share"] == pytest.approx(0.25)
    assert g["goodput_rps"] == pytest.approx(1 / s["window_s"])
    assert s["errors"] == {"http_500": {"count": 1, "example": "HTTP 500: boom", "http_status": None}}
    assert s["ok"] == 3 and s["requests"] == 4


@pytest.mark.fast
def test_largest_sustainable_load_stops_at_the_first_point_that_fails():
    assert sm.max_sustainable([(1, True), (2, True), (4, False), (8, True)]) == 2
    assert sm.max_sustainable([(4, True), (1, True)]) == 4
    assert sm.max_sustainable([(1, False), (2, True)]) is None


@pytest.mark.fast
def test_cost_per_million_output_tokens():
    assert sm.usd_per_million_output(0.36, 100.0) == pytest.approx(0.36 / 360000 * 1e6)
    assert sm.usd_per_million_output(None, 100.0) is None
    assert sm.usd_per_million_output(1.0, 0.0) is None


@pytest.mark.fast
def test_arrivals_are_seeded_poisson_with_the_asked_mean_and_burstiness():
    a, b = arrivals(5000, 10.0, seed=3), arrivals(5000, 10.0, seed=3)
    assert a == b and a[0] == 0.0 and arrivals(50, 10.0, seed=4) != a[:50]
    gaps = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(0.1, rel=0.05)
    assert statistics.pstdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.08)  # exponential: CV 1
    bursty = arrivals(5000, 10.0, seed=3, burstiness=0.25)
    g2 = [y - x for x, y in zip(bursty, bursty[1:], strict=False)]
    assert statistics.mean(g2) == pytest.approx(0.1, rel=0.1)
    assert statistics.pstdev(g2) / statistics.mean(g2) == pytest.approx(2.0, rel=0.12)  # gamma: CV 1/sqrt(shape)


@pytest.mark.fast
def test_sse_parser_handles_split_reads_crlf_comments_and_multiline_data():
    p = SSEParser()
    assert p.feed(b": ping\r\n\r\ndata: {\"a\"") == []
    assert p.feed(b": 1}\r\n\r\nevent: error\ndata: x\ndata: y\n\n") == [("message", '{"a": 1}'), ("error", "x\ny")]
    assert p.feed(b"data: [DO") == [] and p.leftover() == b"data: [DO"


@pytest.mark.fast
def test_chunk_reader_counts_tokens_from_the_server_counter_or_token_ids():
    t = RequestTrace(index=0, scheduled=0.0)
    r = ChunkReader(t, "completions")
    r.event("message", '{"choices":[{"text":"a"}],"timings":{"predicted_n":1}}', 1.0)
    r.event("message", '{"choices":[{"text":""}],"timings":{"predicted_n":1}}', 1.05)  # no new token
    r.event("message", '{"choices":[{"text":"bcd"}],"timings":{"predicted_n":4}}', 1.3)
    r.event("message", '{"choices":[{"text":"","finish_reason":"length"}],"usage":{"completion_tokens":4,'
            '"prompt_tokens":7,"prompt_tokens_details":{"cached_tokens":0}},"timings":{"predicted_n":4}}', 1.31)
    r.event("message", "[DONE]", 1.32)
    assert r.done and t.tokens_source == "server-counter"
    assert t.chunk_times == [1.0, 1.3] and t.chunk_tokens == [1, 3]
    assert (t.completion_tokens, t.prompt_tokens, t.cached_tokens, t.finish_reason) == (4, 7, 0, "length")
    chat = RequestTrace(index=1, scheduled=0.0)
    r = ChunkReader(chat, "chat")
    r.event("message", '{"choices":[{"delta":{"role":"assistant","content":null}}]}', 0.5)  # role only: no output
    r.event("message", '{"choices":[{"delta":{"content":"hi"},"logprobs":{"content":[{"id":1},{"id":2}]}}]}', 0.9)
    assert chat.tokens_source == "token-ids" and chat.chunk_times == [0.9] and chat.chunk_tokens == [2]


@pytest.mark.fast
@pytest.mark.parametrize("data,kind", [("{not json", "malformed_sse"), ("[1, 2]", "malformed_sse"),
                                       ('{"error":{"message":"slot died"}}', "stream_error"),
                                       ('{"id": "x"}', "malformed_sse")])
def test_chunk_reader_names_what_is_wrong(data, kind):
    with pytest.raises(HttpFailure) as info:
        ChunkReader(RequestTrace(index=0, scheduled=0.0), "completions").event("message", data, 0.0)
    assert info.value.kind == kind


def _fake_sender(service_s: float):
    def send(job, trace, t0, cancels):
        trace.sent = time.perf_counter() - t0
        time.sleep(service_s)
        now = time.perf_counter() - t0
        trace.chunk_times, trace.chunk_tokens, trace.completion_tokens = [now], [1], 1
        trace.end, trace.status = now, "ok"
    return send


@pytest.mark.model
def test_a_client_capped_below_the_asked_rate_says_it_fell_behind():
    jobs = [Job(b"{}", 1, 1)] * 20
    capped = LoadPoint("rate", 200.0, 20, 30.0, max_in_flight=1, seed=1)
    free = LoadPoint("rate", 200.0, 20, 30.0, seed=1)
    res_capped = run_phase(capped, jobs, _fake_sender(0.05), grace_s=10)
    res_free = run_phase(free, jobs, _fake_sender(0.05), grace_s=10)
    s_capped, s_free = sm.summarize_point(res_capped.traces, None), sm.summarize_point(res_free.traces, None)
    # The cap makes requests wait for a slot: queue time grows along the run, and the row says so.
    assert s_capped["queue_time_s"]["p99"] > 10 * s_free["queue_time_s"]["p99"]
    assert max(t.slot_wait for t in res_capped.traces) > 0
    block = client_state(capped, res_capped, PointSummary.from_dict(s_capped), None)
    assert block.kept_up is False and "fell behind" in (block.kept_up_note or "")
    assert s_capped["achieved_send_rate_rps"] < s_free["achieved_send_rate_rps"]


@pytest.mark.fast
def test_closed_loop_keeps_the_concurrency_and_schedules_on_completion():
    jobs = [Job(b"{}", 1, 1)] * 9
    res = run_phase(LoadPoint("concurrency", 3, 9, 30.0), jobs, _fake_sender(0.02), grace_s=10)
    assert sorted(t.index for t in res.traces) == list(range(9))
    starts = sorted(t.scheduled for t in res.traces)
    assert starts[:3] == [0.0, 0.0, 0.0]  # three workers start at once, later ones when one frees
    assert all(t.scheduled > 0 for t in sorted(res.traces, key=lambda t: t.scheduled)[3:])


@pytest.mark.fast
def test_placement_gives_the_client_its_own_core_and_warns_on_overlap():
    p = plan_placement(2, [0, 1], managed=True)
    assert (p.server_cpus, p.client_cpus, p.overlap, p.warning) == ([0], [1], False, None)
    assert "capped to 1" in p.notes[0]
    four = plan_placement(2, [0, 1, 2, 3], managed=True)
    assert (four.server_cpus, four.client_cpus) == ([0, 1], [2, 3])
    shared = plan_placement(1, [0], managed=True)
    assert shared.overlap and "overlap" in shared.warning
    forced = plan_placement(2, [0, 1], managed=True, server_cpus=[0, 1], client_cpus=[1])
    assert forced.overlap and forced.warning
    url = plan_placement(None, [0, 1], managed=False, url_host="127.0.0.1")
    assert url.server_cpus is None and "this machine" in url.warning


@pytest.mark.fast
def test_a_serving_row_is_one_json_line_even_with_a_non_finite_number(tmp_path):
    import json

    from bench.results.files import append_row, read_results
    from bench.results.serving import PointSummary, ServingRow, ServingTarget

    row = ServingRow(run_id="r", record="point", status="ok", reason=None,
                     target=ServingTarget.from_dict({"base_url": "http://127.0.0.1:1/v1", "x": 1}),
                     load=LoadSpec(mode="concurrency", value=1),
                     summary=PointSummary.from_dict({"output_tps": float("nan"), "ratio": float("inf"), "ok": 2}))
    path = tmp_path / "s.jsonl"
    append_row(path, row)  # type: ignore[arg-type]
    append_row(path, row)  # type: ignore[arg-type]
    _, rows, warnings = read_results(path)
    assert len(rows) == 2 and not warnings
    summary = rows[0].point_summary
    assert summary.output_tps is None and summary.extra["ratio"] is None and summary.ok == 2
    line = json.loads(path.read_text().splitlines()[0])
    assert line["kind"] == "serving" and line["serving_schema_version"] == 1 and line["target"]["x"] == 1
    assert json.loads(rows[0].to_json()) == line  # read back and written again: the same line
    path.write_text(path.read_text() + '{"kind": "serving", "serving_schema_version": 99}\n{broken\n')
    _, rows, warnings = read_results(path)
    assert len(rows) == 2 and len(warnings) == 2 and "version 99" in warnings[0]


@pytest.mark.fast
def test_a_serve_request_shares_the_run_requests_parts_and_names_the_flag_in_errors(tmp_path):
    from bench.errors import BenchError
    from bench.request import RequestBase, RunRequest, ServeRequest, TaskSpec, serve_request_from_cli

    paths = {"output": tmp_path / "o.jsonl", "catalog_path": tmp_path, "profiles_dir": tmp_path,
             "claims_path": tmp_path}
    req = serve_request_from_cli({**paths, "concurrency": [1, 4], "gen_tokens": "8:32", "task": "gsm8k",
                                  "task_limit": None, "task_shots": 2, "threads": None})
    assert isinstance(req, RequestBase) and issubclass(RunRequest, RequestBase)
    assert (req.gen.lo, req.gen.hi, req.gen.describe()) == (8, 32, "uniform 8..32")
    assert req.task == TaskSpec(name="gsm8k", shots=2) and req.task_limit == 20  # bench serve's own default
    assert serve_request_from_cli({**paths, "concurrency": [1], "gen_tokens": "16"}).gen_tokens == (16, 16)
    for values, needle in (({"concurrency": []}, "give --concurrency N[,N...] or --rate R[,R...]"),
                           ({"concurrency": [1], "gen_tokens": "9:3"}, "--gen-tokens expects 1 <= LOW <= HIGH"),
                           ({"concurrency": [1], "duration_s": 0}, "--duration must be positive"),
                           ({"concurrency": [1], "threads": "x"}, "--threads"),
                           ({"concurrency": [1], "task": "gsm8k", "task_limit": 0}, "--task-limit"),
                           ({"concurrency": [1], "model": "m", "url": "http://127.0.0.1:1/v1"}, "not both")):
        with pytest.raises(BenchError) as exc:
            serve_request_from_cli({**paths, **values})
        assert needle in str(exc.value) and "\n" not in str(exc.value), (values, str(exc.value))
    with pytest.raises(BenchError):
        ServeRequest.model_validate({**paths, "concurrency": [1], "rates": [float("inf")]})
