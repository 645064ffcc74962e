"""``labelwatch label-studio``: the bridge's composition root. Registers its webhooks, reads its
topics back, serves the webhook receiver with ``/metrics`` and the probes on one port, and runs
the reconciles until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from consumer.health import serve, url_of, wait_for_signal
from consumer.labelstudio.bridge import Bridge
from consumer.labelstudio.client import LabelStudio, LabelStudioError
from consumer.labelstudio.metrics import BridgeMetrics
from consumer.labelstudio.settings import BridgeSettings
from consumer.tailing import AckedWriter, TopicReader, Unavailable

log = logging.getLogger("labelwatch.label_studio")
WEBHOOK_PATH = "/webhook"
STALL_LOG_EVERY_S = 300.0
"""How often the log repeats why no review task comes (``/readyz`` always says it)."""
RELIST_AFTER_S = 5.0
"""How soon after a failed import the review project is listed again (the tasks wait for it)."""


@dataclass
class Running:
    """A running bridge; :meth:`close` stops it."""

    bridge: Bridge
    reader: TopicReader
    server: object
    stopped: threading.Event
    worker: threading.Thread

    @property
    def url(self) -> str:
        return url_of(self.server)

    def close(self) -> None:
        self.stopped.set()
        self.worker.join(timeout=30)
        self.server.shutdown()
        self.server.server_close()
        self.reader.stop()
        self.bridge.writer.close()


class _Probes:
    def __init__(self, bridge: Bridge, reader: TopicReader):
        self.bridge, self.reader = bridge, reader

    def liveness(self) -> tuple[bool, dict]:
        return self.reader.liveness()

    def readiness(self) -> tuple[bool, dict]:
        ok, detail = self.reader.readiness()
        error = self.bridge.label_studio_error
        flow = self.bridge.flow()
        stalled = self.bridge.stalled(flow)
        return ok and error is None, {**detail, "label_studio_reachable": error is None,
                                      **({"label_studio_error": error} if error else {}),
                                      "flow": flow, **({"no_review_tasks_because": stalled} if stalled else {})}


def start_bridge(settings: BridgeSettings) -> Running:
    """Start the bridge; returns once its webhooks are registered and the receiver listens."""
    if settings.label_studio_token is None:
        raise ValueError("no Label Studio token: set LABELWATCH_LABEL_STUDIO_TOKEN")
    if not (settings.source_project or settings.review_project):
        raise ValueError("nothing to bridge: give --source-project, --review-project or both")
    metrics = BridgeMetrics()
    client = LabelStudio(settings.label_studio_url, settings.label_studio_token.get_secret_value())
    writer = AckedWriter(settings.kafka_config(), timeout_ms=settings.delivery_timeout_ms,
                         name="labelwatch-label-studio")
    bridge = Bridge(settings, client, writer, metrics)
    reader = bridge.reader()
    reader.start()

    def receive(environ, start_response):
        if environ.get("PATH_INFO") != WEBHOOK_PATH or environ.get("REQUEST_METHOD") != "POST":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(min(size, 16 * 1024 * 1024))
        try:
            status = bridge.webhook(body) if reader.caught_up else 503  # not before the topics were read back
        except Unavailable:
            status = 503
        start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                       [("Content-Type", "text/plain")])
        return [b"ok" if status == 200 else b"retry later"]

    server = serve(metrics, _Probes(bridge, reader), settings.webhook_port, settings.webhook_host, app=receive)
    host, port = server.server_address[:2]
    public = (settings.public_url or f"http://{settings.webhook_host}:{port}").rstrip("/") + WEBHOOK_PATH
    for project in (settings.source_project, settings.review_project):
        if project and client.ensure_webhook(project, public):
            log.info("registered a webhook on project %d: %s", project, public)
    stopped = threading.Event()
    worker = threading.Thread(target=_work, args=(bridge, reader, settings.reconcile_interval_s, stopped),
                              name="labelwatch-label-studio-worker", daemon=True)
    worker.start()
    return Running(bridge, reader, server, stopped, worker)


def _work(bridge: Bridge, reader: TopicReader, interval: float, stopped: threading.Event) -> None:
    """Once the topics are read back: reconcile now and every ``interval``; push review tasks every second."""
    while not reader.caught_up:
        if stopped.wait(0.5):
            return
    since, said = interval, float("-inf")
    while not stopped.is_set():
        try:
            if since >= interval or (bridge.needs_listing and since >= RELIST_AFTER_S):
                bridge.reconcile()
                since = 0.0
                flow = bridge.flow()
                stalled = bridge.stalled(flow)
                if stalled is not None and time.monotonic() - said >= STALL_LOG_EVERY_S:
                    log.warning("label studio bridge: %s", stalled, extra={"flow": flow})
                    said = time.monotonic()
            bridge.push_tasks()
        except (LabelStudioError, Unavailable) as error:
            log.warning("label studio bridge: %s; retrying", error)
        stopped.wait(1.0)
        since += 1.0


def run(settings: BridgeSettings) -> int:
    """Bridge until SIGTERM or SIGINT; 2 when the settings or Label Studio refuse to start it."""
    try:
        running = start_bridge(settings)
    except (ValueError, LabelStudioError) as error:
        log.error("labelwatch label-studio: %s", error)
        return 2
    log.info("label studio bridge running", extra={"url": running.url})
    try:
        wait_for_signal()
    finally:
        running.close()
    return 0
