"""``labelwatch review``: the desk's composition root. Builds the queue, its feed and writer, the
page, and serves them with ``/metrics`` and the probes on one port until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from consumer.desk.desk import ReviewDesk
from consumer.desk.feed import Writer, desk_reader
from consumer.desk.metrics import DeskMetrics
from consumer.desk.queue import ReviewQueue
from consumer.desk.reviewers import Reviewers
from consumer.desk.settings import DeskSettings
from consumer.health import serve, url_of, wait_for_signal

log = logging.getLogger("labelwatch.desk")


@dataclass
class Desk:
    """A running desk: its parts and the HTTP server. :meth:`close` stops them all."""

    desk: ReviewDesk
    server: object

    @property
    def url(self) -> str:
        return url_of(self.server) + "/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.desk.feed.stop()
        self.desk.writer.close()


def start_desk(settings: DeskSettings, reviewers: Reviewers) -> Desk:
    """Start reading the topics and serving the page; returns at once (readiness says when it caught up)."""
    from consumer.desk.web import create_app

    metrics = DeskMetrics()
    queue = ReviewQueue()
    feed = desk_reader(settings, queue, metrics)
    writer = Writer(settings, metrics)
    desk = ReviewDesk(queue, feed, writer, metrics, lease_seconds=settings.lease_seconds)
    secret = settings.session_secret.get_secret_value().encode() if settings.session_secret else secrets.token_bytes(32)
    app = create_app(desk, reviewers, secret_key=secret)
    feed.start()

    server = serve(metrics, feed, settings.http_port, settings.http_host, app=app)
    return Desk(desk, server)


def run(settings: DeskSettings) -> int:
    """Serve the desk until SIGTERM or SIGINT; 2 when the reviewers cannot be read."""
    try:
        reviewers = Reviewers.load(settings.reviewers_file,
                                   settings.reviewers.get_secret_value() if settings.reviewers else None)
    except (OSError, ValueError) as error:
        log.error("labelwatch review: %s", error)
        return 2
    desk = start_desk(settings, reviewers)
    log.info("review desk serving", extra={"url": desk.url, "reviewers": len(reviewers.ids)})
    try:
        wait_for_signal()
    finally:
        desk.close()
    return 0
