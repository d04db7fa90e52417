"""An OpenAI-compatible streaming client over the standard library's http.client.

Each read of the response is stamped (``time.perf_counter``) as soon as it returns, before any
parsing; every server-sent event in those bytes gets that stamp. Nothing is sent anywhere but the
target's host and port.

Error kinds a request can end with (``RequestTrace.status``): ``connection_refused``,
``unreachable`` (no route, DNS), ``timeout`` (no byte for the request timeout, or past its
deadline), ``http_<code>`` (4xx/5xx, with the server's message), ``not_streaming`` (200 without an
event stream), ``malformed_sse`` (an event that is not JSON, or a stream cut inside an event),
``stream_error`` (an error event inside the stream), ``disconnected`` (the stream ended before
``[DONE]`` and before any finish reason), ``cancelled`` (still running when the load point's
grace period ended), ``client_error`` (a bug on our side, with its message).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.request import parse_url
from bench.results.serving import RequestTrace

clock = time.perf_counter
MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class Target:
    """Where the load goes: an OpenAI-compatible base URL (``http://HOST:PORT/v1``) and a model."""

    base_url: str
    model: str
    api: str = "completions"  # completions | chat
    api_key: str | None = None
    server_kind: str = "openai-compatible"  # llama-server | openai-compatible
    managed: bool = False  # started and stopped by the suite
    api_key_source: str | None = None  # where the key came from ("$VAR", "generated for this run"); never the key

    @property
    def root(self) -> str:
        """The server's root (the base URL without a trailing /v1), where llama-server keeps
        /health, /props, /tokenize and /metrics."""
        base = self.base_url.rstrip("/")
        return base[:-3] if base.endswith("/v1") else base

    @property
    def request_path(self) -> str:
        prefix = urlsplit(self.base_url).path.rstrip("/")
        return prefix + ("/chat/completions" if self.api == "chat" else "/completions")

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model, "api": self.api, "server_kind": self.server_kind,
                "managed": self.managed, "api_key": (self.api_key_source or "given") if self.api_key else None}


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1, localhost; a UNIX socket path (llama-server's ``--host X.sock``) is local too."""
    import ipaddress

    if host == "localhost" or host.endswith(".sock"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def connection(url: str, timeout_s: float) -> http.client.HTTPConnection:
    scheme, host, port, _ = parse_url(url)
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    return cls(host, port, timeout=timeout_s)


def headers(target: Target) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if target.api_key:
        h["Authorization"] = f"Bearer {target.api_key}"
    return h


# -- simple requests (probing, tokenizing, metrics) ------------------------------------------------
class HttpFailure(Exception):
    def __init__(self, kind: str, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.kind, self.reason, self.status = kind, reason, status


def _connect_failure(exc: BaseException) -> HttpFailure:
    if isinstance(exc, ConnectionRefusedError):
        return HttpFailure("connection_refused", "connection refused")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return HttpFailure("timeout", "no answer within the timeout")
    if isinstance(exc, socket.gaierror):
        return HttpFailure("unreachable", f"host name not resolved ({exc.strerror or exc})")
    if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        return HttpFailure("disconnected", f"the server closed the connection ({type(exc).__name__})")
    if isinstance(exc, http.client.IncompleteRead):
        return HttpFailure("disconnected", "the server closed the connection in the middle of the stream")
    if isinstance(exc, http.client.HTTPException):
        return HttpFailure("bad_response", f"not an HTTP answer ({type(exc).__name__}: {exc})")
    if isinstance(exc, OSError):
        return HttpFailure("unreachable", f"{exc.strerror or exc}")
    return HttpFailure("client_error", f"{type(exc).__name__}: {exc}")


def http_json(url: str, method: str = "GET", body: dict[str, Any] | None = None, timeout_s: float = 10.0,
              api_key: str | None = None) -> tuple[int, Any]:
    """(status, parsed JSON or raw text) of one plain request; connection problems raise HttpFailure."""
    _, _, _, path = parse_url(url)
    conn = connection(url, timeout_s)
    data = json.dumps(body).encode() if body is not None else None
    h = {"Content-Type": "application/json"} if data is not None else {}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    try:
        conn.request(method, path or "/", body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
    except Exception as exc:
        raise _connect_failure(exc) from None
    finally:
        conn.close()
    text = raw.decode("utf-8", errors="replace")
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def error_message(payload: Any) -> str:
    """The message of an OpenAI-style (or llama.cpp, vLLM, TGI, Ollama) error body."""
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or json.dumps(err)[:200]
            return str(msg)
        if isinstance(err, str):
            return err
        if "detail" in payload:
            return str(payload["detail"])[:200]
        return json.dumps(payload)[:200]
    return str(payload).strip().replace("\n", " ")[:200] or "(empty body)"


# -- server-sent events ----------------------------------------------------------------------------
class SSEParser:
    """Splits a byte stream into events (blank-line separated); ``data:`` lines are joined with
    newlines, ``:`` comment lines (keep-alive pings) skipped, other fields ignored."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        self.buf = (self.buf + data).replace(b"\r\n", b"\n")
        events = []
        while True:
            block, sep, rest = self.buf.partition(b"\n\n")
            if not sep:
                return events
            self.buf = rest
            event = self._event(block)
            if event is not None:
                events.append(event)

    @staticmethod
    def _event(block: bytes) -> tuple[str, str] | None:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HttpFailure("malformed_sse", f"an event is not UTF-8 ({exc.reason})") from None
        name, data = "message", []
        for line in text.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data":
                data.append(value)
            elif key == "event":
                name = value
        return (name, "\n".join(data)) if data else None

    def leftover(self) -> bytes:
        return self.buf.strip()


@dataclass
class ChunkReader:
    """Turns the events of one streamed answer into the request's trace."""

    trace: RequestTrace
    api: str
    keep_text: bool = False
    done: bool = False
    _mode: str | None = None  # decided on the first output-bearing chunk
    _predicted: int = 0
    _text: list[str] = field(default_factory=list)

    def event(self, name: str, data: str, t: float) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(data)
        except ValueError:
            raise HttpFailure("malformed_sse", f"an event's data is not JSON: {data[:80]!r}") from None
        if not isinstance(obj, dict):
            raise HttpFailure("malformed_sse", f"an event's data is not a JSON object: {data[:80]!r}")
        if "error" in obj or name == "error":
            raise HttpFailure("stream_error", f"error inside the stream: {error_message(obj)}")
        self._usage(obj)
        choices = obj.get("choices")
        if choices is None and "usage" not in obj and "timings" not in obj:
            raise HttpFailure("malformed_sse", f"an event with neither choices nor usage: {data[:80]!r}")
        if choices:
            self._choice(choices[0], obj.get("timings"), t)

    def _usage(self, obj: dict[str, Any]) -> None:
        usage, timings = obj.get("usage"), obj.get("timings")
        if isinstance(usage, dict):
            self.trace.prompt_tokens = usage.get("prompt_tokens", self.trace.prompt_tokens)
            self.trace.completion_tokens = usage.get("completion_tokens", self.trace.completion_tokens)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and details.get("cached_tokens") is not None:
                self.trace.cached_tokens = details["cached_tokens"]
        if isinstance(timings, dict) and timings.get("cache_n") is not None and self.trace.cached_tokens is None:
            self.trace.cached_tokens = timings["cache_n"]

    def _choice(self, choice: dict[str, Any], timings: Any, t: float) -> None:
        if self.api == "chat":
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""
        else:
            text = choice.get("text") or ""
        if choice.get("finish_reason"):
            self.trace.finish_reason = choice["finish_reason"]
        k = self._tokens(choice, timings, bool(text))
        if k > 0:
            self.trace.chunk_times.append(t)
            self.trace.chunk_tokens.append(k)
        if self.keep_text and text:
            self._text.append(text)

    def _tokens(self, choice: dict[str, Any], timings: Any, has_text: bool) -> int:
        counter = timings.get("predicted_n") if isinstance(timings, dict) else None
        logprobs = choice.get("logprobs")
        ids = None
        if isinstance(logprobs, dict):
            ids = logprobs.get("content") if isinstance(logprobs.get("content"), list) else logprobs.get("tokens")
        if self._mode is None and (has_text or counter):
            self._mode = ("server-counter" if isinstance(counter, int) else
                          "token-ids" if isinstance(ids, list) else "assumed-1")
            self.trace.tokens_source = self._mode
        if self._mode == "server-counter" and isinstance(counter, int):
            k, self._predicted = counter - self._predicted, max(counter, self._predicted)
            return max(k, 0)
        if self._mode == "token-ids" and isinstance(ids, list):
            return len(ids)
        return 1 if has_text else 0

    @property
    def text(self) -> str:
        return "".join(self._text)


class Cancels:
    """Open connections of a load point, so that a grace period can end them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self.cancelled = False

    def add(self, conn: http.client.HTTPConnection) -> bool:
        with self._lock:
            if self.cancelled:
                return False
            self._open.add(conn)
            return True

    def discard(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(conn)

    def cancel_all(self) -> None:
        with self._lock:
            self.cancelled = True
            for conn in self._open:
                sock = conn.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


def stream_request(target: Target, body: bytes, trace: RequestTrace, t0: float, timeout_s: float,
                   cancels: Cancels | None = None, keep_text: bool = False) -> RequestTrace:
    """Send one prepared request and read its stream into ``trace`` (times relative to ``t0``).
    Never raises for what the server or the network does: the trace gets a status and a reason."""
    conn = connection(target.base_url, timeout_s)
    if cancels is not None and not cancels.add(conn):
        trace.status, trace.reason = "cancelled", "the load point ended before it was sent"
        return trace
    reader = ChunkReader(trace, target.api, keep_text)
    deadline = clock() + timeout_s
    trace.sent = clock() - t0
    try:
        _exchange(conn, target, body, reader, t0, deadline)
        trace.status = "ok"
    except HttpFailure as exc:
        trace.status, trace.reason, trace.http_status = exc.kind, exc.reason, exc.status or trace.http_status
    except Exception as exc:
        failure = _connect_failure(exc)
        trace.status, trace.reason = failure.kind, failure.reason
    finally:
        trace.end = clock() - t0
        conn.close()
        if cancels is not None:
            cancels.discard(conn)
            if cancels.cancelled and trace.status != "ok":
                trace.status, trace.reason = "cancelled", f"ended by the load point's grace period ({trace.reason})"
    if keep_text:
        trace.text = reader.text
    return trace


def _exchange(conn: http.client.HTTPConnection, target: Target, body: bytes, reader: ChunkReader, t0: float,
              deadline: float) -> None:
    conn.request("POST", target.request_path, body=body, headers=headers(target))
    resp = conn.getresponse()
    reader.trace.http_status = resp.status
    if resp.status != 200:
        raw = resp.read(MAX_ERROR_BODY).decode("utf-8", errors="replace")
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = raw
        raise HttpFailure(f"http_{resp.status}", f"HTTP {resp.status}: {error_message(payload)}", resp.status)
    ctype = (resp.getheader("Content-Type") or "").lower()
    if not ctype.startswith("text/event-stream"):
        resp.read(MAX_ERROR_BODY)
        raise HttpFailure("not_streaming", f"the server answered 200 with Content-Type {ctype or '(none)'} instead "
                          "of an event stream: it does not stream this endpoint")
    parser = SSEParser()
    while not reader.done:
        data = resp.read1(65536)
        t = clock() - t0  # stamped on arrival, before parsing
        if not data:
            break
        for name, payload in parser.feed(data):
            reader.event(name, payload, t)
            if reader.done:
                break
        if clock() > deadline:
            raise HttpFailure("timeout", "the request ran past its timeout")
    if reader.done:
        return
    if parser.leftover():
        raise HttpFailure("malformed_sse", f"the stream ended inside an event: {parser.leftover()[:80]!r}")
    if reader.trace.finish_reason is None:
        raise HttpFailure("disconnected", "the stream ended before [DONE] and before any finish reason "
                          "(the server closed it)")
