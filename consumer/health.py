"""Liveness, readiness and the one HTTP server of the service: ``/metrics``, the probes and the reports.

``/healthz`` answers 200 while the consume loop makes progress (it polled recently), 503 when it
is stuck. ``/readyz`` answers 200 once the embedding model is loaded, a broker is reachable and
partitions are assigned, 503 before or otherwise. Both bodies are JSON that says why.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from prometheus_client import make_wsgi_app

from consumer.metrics import Metrics


@dataclass
class Health:
    """What the probes report, updated by the service loop.

    >>> health = Health(stall_after_s=60)
    >>> health.readiness()[0]
    False
    >>> health.model_ready = True
    >>> health.polled(broker_reachable=True, assigned=2)
    >>> health.readiness()[0], health.liveness()[0]
    (True, True)
    """

    stall_after_s: float
    model_ready: bool = False
    broker_reachable: bool = False
    assigned_partitions: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last_poll_at: float | None = None

    def polled(self, *, broker_reachable: bool, assigned: int) -> None:
        """Called after every poll of the consume loop."""
        self.last_poll_at = time.monotonic()
        self.broker_reachable = broker_reachable
        self.assigned_partitions = assigned

    def liveness(self) -> tuple[bool, dict]:
        """Alive while the last poll (or the start, before the first) is less than ``stall_after_s`` ago."""
        since = time.monotonic() - (self.last_poll_at if self.last_poll_at is not None else self.started_at)
        return since < self.stall_after_s, {"seconds_since_last_poll": round(since, 3),
                                            "stall_after_s": self.stall_after_s}

    def readiness(self) -> tuple[bool, dict]:
        checks = {"model_loaded": self.model_ready, "broker_reachable": self.broker_reachable,
                  "partitions_assigned": self.assigned_partitions > 0}
        return all(checks.values()), {**checks, "assigned_partitions": self.assigned_partitions}


class Probes(Protocol):
    """What ``/healthz`` and ``/readyz`` ask: ``(ok, detail)`` each."""

    def liveness(self) -> tuple[bool, dict]: ...

    def readiness(self) -> tuple[bool, dict]: ...


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # probes every few seconds would flood the logs
        pass


def serve(metrics: Metrics, health: Probes, port: int, host: str = "0.0.0.0", *,
          reports: dict[str, Callable[[], object]] | None = None, api_token: str | None = None,
          app: Callable | None = None):
    """Serve ``/metrics`` (also at ``/`` when there is no ``app``), ``/healthz``, ``/readyz`` and each of
    ``reports`` (path -> JSON-able callable) in a background thread; returns the server:
    ``shutdown()`` and ``server_close()`` it when the service ends. ``metrics`` is anything with a
    Prometheus ``registry``; ``app``, a WSGI app, answers every other path (the review desk).

    Reports reveal sample and annotator ids, so they answer only requests that carry
    ``Authorization: Bearer <api_token>``; without an ``api_token`` they answer none (401). Any
    other path is 404. ``port`` 0 picks a free port: read it from ``server.server_port``.
    """
    reports = reports or {}
    metrics_app = make_wsgi_app(metrics.registry)

    def dispatch(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics" or (path == "/" and app is None):
            return metrics_app(environ, start_response)
        if path in ("/healthz", "/readyz"):
            ok, detail = health.liveness() if path == "/healthz" else health.readiness()
            return _json(start_response, "200 OK" if ok else "503 Service Unavailable",
                         {"status": "ok" if ok else "unavailable", **detail})
        if path in reports:
            refused = _refusal(environ.get("HTTP_AUTHORIZATION", ""), api_token)
            if refused:
                return _json(start_response, "401 Unauthorized", {"error": refused},
                             (("WWW-Authenticate", 'Bearer realm="labelwatch"'),))
            return _json(start_response, "200 OK", reports[path]())
        if app is not None:
            return app(environ, start_response)
        return _json(start_response, "404 Not Found", {"error": f"no such endpoint: {path}"})

    server = make_server(host, port, dispatch, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="labelwatch-http", daemon=True).start()
    return server


def url_of(server) -> str:
    """The base URL of a server from :func:`serve` (a wildcard bind is reached on loopback).

    >>> class Bound: server_address = ("0.0.0.0", 8080)
    >>> url_of(Bound())
    'http://127.0.0.1:8080'
    """
    host, port = server.server_address[:2]
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT; the previous handlers come back afterwards. For the helper
    processes (the desk, the bridge), whose work runs in threads of their own."""
    import signal

    stopped = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stopped.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stopped.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _refusal(authorization: str, api_token: str | None) -> str | None:
    """Why a request with this ``Authorization`` header may not read a report; ``None`` if it may.

    >>> _refusal("Bearer s3cret", "s3cret") is None
    True
    >>> _refusal("Bearer wrong", "s3cret")
    'wrong bearer token'
    >>> _refusal("", None)
    'no API token is configured: set --api-token or LABELWATCH_API_TOKEN to read this endpoint'
    """
    if not api_token:
        return "no API token is configured: set --api-token or LABELWATCH_API_TOKEN to read this endpoint"
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "this endpoint needs an Authorization: Bearer <token> header"
    if not hmac.compare_digest(token.strip().encode(), api_token.encode()):
        return "wrong bearer token"
    return None


def _json(start_response, status: str, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> list[bytes]:
    body = json.dumps(payload, default=str).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
    return [body]
