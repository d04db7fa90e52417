"""A trivial OpenAI-compatible streaming server on loopback, in a process of its own:

- ``ok`` streams ``--tokens`` one-token chunks as fast as it can (``--delay`` seconds apart), so the
  load generator's own ceiling can be measured against it (``bench serve`` does, before its sweep);
- the other modes misbehave, for the tests of the error paths: ``http_400``, ``http_500``,
  ``not_streaming`` (a JSON answer to a streaming request), ``malformed`` (an event that is not
  JSON), ``truncate`` (the stream stops without [DONE]), ``stream_error`` (an error event mid-stream),
  ``hang`` (never answers), ``die_after`` (serves ``--die-after`` requests, then exits in the middle
  of the next stream), ``merged`` (chunks of ``--merge`` tokens with no per-chunk count),
  ``counter`` (chunks of several tokens with llama-server's per-chunk token counter).

``GET /v1/models`` lists ``stub-model`` (and every mode's name): a request for any other model
gets llama.cpp/vLLM's 404. A request naming a mode as its model gets that mode's behaviour.
``python -m bench.serving.stub --port 0`` prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "http_400", "http_500", "not_streaming", "malformed", "truncate", "stream_error", "hang",
         "die_after", "merged", "counter")
MODEL = "stub-model"


class _State:
    mode = "ok"
    tokens = 16
    delay = 0.0
    die_after = 1
    merge = 3
    served = 0
    lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _json(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str, kind: str) -> None:
        self._json(code, {"error": {"code": code, "message": message, "type": kind}})

    def do_GET(self) -> None:
        if self.path in ("/health", "/v1/health"):
            self._json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in (MODEL, *MODES)]})
        else:
            self._error(404, "File Not Found", "not_found_error")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._error(500, "parse error", "server_error")
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self._error(404, "File Not Found", "not_found_error")
        model = body.get("model")
        if model not in (MODEL, *MODES):
            return self._error(404, f"The model `{model}` does not exist.", "not_found_error")
        mode = model if model in MODES else _State.mode
        with _State.lock:
            _State.served += 1
            served = _State.served
        n = int(body.get("max_tokens") or _State.tokens)
        self._answer(mode, n, served, body)

    def _answer(self, mode: str, n: int, served: int, body: dict[str, Any]) -> None:
        if mode == "http_400":
            return self._error(400, "Field 'max_tokens': bad value", "invalid_request_error")
        if mode == "http_500":
            return self._error(500, "internal failure", "server_error")
        if mode == "not_streaming":
            return self._json(200, {"choices": [{"text": "hello", "finish_reason": "stop"}],
                                    "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
        if mode == "hang":
            time.sleep(3600)
            return None
        self._start_stream()
        if mode == "malformed":
            self._chunk(b"data: {this is not json\n\n")
            return self._end()
        chat = self.path.endswith("chat/completions")
        dying = mode == "die_after" and served > _State.die_after
        per_chunk = _State.merge if mode in ("merged", "counter") else 1
        sent = 0
        while sent < n:
            k = min(per_chunk, n - sent)
            sent += k
            self._event(_delta("x" * k, chat, sent if mode == "counter" else None))
            if dying and sent >= min(2, n):
                self.wfile.flush()
                os._exit(3)  # the server dies in the middle of a stream
            if mode == "stream_error" and sent >= min(2, n):
                self._event({"error": {"code": 500, "message": "slot failed", "type": "server_error"}})
                return self._end()
            if _State.delay:
                time.sleep(_State.delay)
        if mode == "truncate":
            return self._end()
        final = _delta("", chat, None)
        final["choices"][0]["finish_reason"] = "length"
        final["usage"] = {"prompt_tokens": _prompt_len(body), "completion_tokens": n, "total_tokens": n}
        self._event(final)
        self._chunk(b"data: [DONE]\n\n")
        return self._end()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _event(self, obj: dict[str, Any]) -> None:
        self._chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


def _prompt_len(body: dict[str, Any]) -> int:
    p = body.get("prompt")
    if isinstance(p, list):
        return len(p)
    text = p if isinstance(p, str) else json.dumps(body.get("messages", ""))
    return len(text.split())


def _delta(text: str, chat: bool, counter: int | None) -> dict[str, Any]:
    choice: dict[str, Any] = ({"index": 0, "delta": {"content": text}, "finish_reason": None} if chat else
                              {"index": 0, "text": text, "finish_reason": None})
    out: dict[str, Any] = {"object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]}
    if counter is not None:
        out["timings"] = {"predicted_n": counter}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serving.stub")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--die-after", type=int, default=1)
    p.add_argument("--merge", type=int, default=3)
    args = p.parse_args(argv)
    _State.mode, _State.tokens, _State.delay = args.mode, args.tokens, args.delay
    _State.die_after, _State.merge = args.die_after, args.merge
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())


class StubProcess:
    """``with StubProcess("--mode", "ok") as stub: stub.base_url``: the stub in a process of its
    own (pinned to ``cpus``), on a free loopback port, stopped on exit."""

    def __init__(self, *args: str, cpus: list[int] | None = None, log_path: Any = None) -> None:
        self.args, self.cpus, self.log_path = list(args), cpus, log_path
        self.proc: Any = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> StubProcess:
        import tempfile
        from pathlib import Path

        from bench.serving.client import HttpFailure, http_json
        from bench.serving.server import free_port, spawn_pinned, stop_process

        self.port = free_port()
        log = Path(self.log_path) if self.log_path else Path(tempfile.mkstemp(prefix="bench-stub-", suffix=".log")[1])
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = spawn_pinned([sys.executable, "-m", "bench.serving.stub", "--port", str(self.port), *self.args],
                                 self.cpus, log, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if http_json(f"http://127.0.0.1:{self.port}/health", timeout_s=1.0)[0] == 200:
                    return self
            except HttpFailure:
                time.sleep(0.05)
        stop_process(self.proc)
        raise RuntimeError(f"the stub server did not start; log: {log}")

    def __exit__(self, *exc: object) -> None:
        from bench.serving.server import stop_process

        if self.proc is not None:
            stop_process(self.proc, grace_s=5)
