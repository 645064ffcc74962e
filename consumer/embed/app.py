"""``labelwatch embed``: the stage's composition root. Builds the embedding model and the loop,
serves ``/metrics`` and the probes, and runs until SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import logging

from consumer.app import stop_on_signals
from consumer.embed.metrics import EmbedMetrics
from consumer.embed.stage import EmbedDeliveryError, EmbedStage
from consumer.health import Health, serve

log = logging.getLogger("labelwatch.embed")


def build_stage(settings) -> EmbedStage:
    """The stage of ``settings`` with its embedding model (loaded when the stage starts), not started."""
    from consumer.embedding import embedder_for

    return EmbedStage(settings, embedder_for(settings), EmbedMetrics(),
                      Health(stall_after_s=settings.max_poll_interval_ms / 1000))


def run(settings) -> int:
    """``labelwatch embed``: 0 after a clean stop; 1 when outputs could not be delivered (nothing
    past them was committed: restart, and the records are embedded again)."""
    stage = build_stage(settings)
    with contextlib.ExitStack() as stack:
        if settings.metrics_port:
            server = serve(stage.metrics, stage.health, settings.metrics_port, settings.metrics_host)
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
        stack.enter_context(stop_on_signals(stage))
        try:
            stage.run()
        except EmbedDeliveryError as error:
            log.error("stopping: %s; restart to embed them again", error,
                      extra={"event": "fatal", "error_type": type(error).__name__})
            return 1
    return 0
