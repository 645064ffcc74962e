"""The composition root: the one place that builds labelwatch, for every mode.

``run``, ``demo``, ``audit``, ``evaluate`` and the benchmarks all get their pipeline from
:func:`build_pipeline` and their service from :func:`build_service`; :func:`run` is
``labelwatch run``: it owns every lifetime (the process runtime, state store, HTTP server,
signal handlers, the service) in one :class:`~contextlib.ExitStack`, released in reverse order
however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass

from consumer.health import Health, serve
from consumer.metrics import Metrics
from consumer.pipeline import Embedder, Pipeline
from consumer.runtime import Runtime
from consumer.service import LabelwatchService
from consumer.settings import Settings
from consumer.sinks import DeliveryError
from consumer.state import CorruptStateError, StateStore, StateUnwritable

log = logging.getLogger("labelwatch")


SETTINGS_MODEL = object()
"""``embedder`` default: the model ``settings`` names. ``None`` builds a pipeline for vectors only."""


def build_pipeline(settings: Settings, *, metrics: Metrics | None = None, state: StateStore | None = None,
                   embedder: Embedder | None | object = SETTINGS_MODEL, runtime: Runtime | None = None) -> Pipeline:
    """The pipeline every mode runs: the detectors of ``settings`` and its embedding model
    (loaded on first use; pass ``embedder`` to share one already loaded, or ``None`` for vectors only),
    under the process's ``runtime`` where one is entered (:class:`~consumer.runtime.Runtime`)."""
    if embedder is SETTINGS_MODEL:
        from consumer.embedding import embedder_for

        embedder = embedder_for(settings)
    return Pipeline(settings.monitor_config(), embedder, metrics=metrics,
                    max_message_bytes=settings.max_message_bytes, state=state, runtime=runtime)


def open_state(settings: Settings) -> StateStore | None:
    """The checkpoint store, verified before anything is consumed; ``None`` without a state dir."""
    if not settings.state_dir:
        return None
    store = StateStore(settings.state_dir)
    if settings.fresh_state:
        aside = store.set_aside()
        if aside:
            log.warning("--fresh-state: previous checkpoints moved to %s", aside)
    try:
        store.verify()
        store.check_writable()
    except (CorruptStateError, StateUnwritable) as error:
        raise SystemExit(f"labelwatch: {error}") from None
    return store


@dataclass
class App:
    """The service and what it is made of."""

    settings: Settings
    metrics: Metrics
    health: Health
    pipeline: Pipeline
    service: LabelwatchService


def build_service(settings: Settings, *, state: StateStore | None = None,
                  embedder: Embedder | None | object = SETTINGS_MODEL, flush_on_stop: bool = False,
                  runtime: Runtime | None = None) -> App:
    """The Kafka service of ``settings``, not started (``app.service.run()`` runs it)."""
    metrics = Metrics()
    health = Health(stall_after_s=settings.max_poll_interval_ms / 1000)
    pipeline = build_pipeline(settings, metrics=metrics, state=state, embedder=embedder, runtime=runtime)
    return App(settings, metrics, health, pipeline,
               LabelwatchService(settings, pipeline, health, flush_on_stop=flush_on_stop))


@contextlib.contextmanager
def http_server(app: App) -> Iterator[object | None]:
    """The one HTTP server (metrics, probes, token-protected reports) while the block runs; none on port 0."""
    settings = app.settings
    if not settings.metrics_port:
        yield None
        return
    server = serve(app.metrics, app.health, settings.metrics_port, settings.metrics_host,
                   reports={"/annotators": app.pipeline.annotator_report, "/clusters": app.pipeline.cluster_report},
                   api_token=settings.api_token.get_secret_value() if settings.api_token else None)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def stop_on_signals(service: LabelwatchService) -> Iterator[None]:
    """SIGTERM and SIGINT stop the service after its batch (checkpoint, commit, close); before it
    started consuming they exit at once. The previous handlers come back afterwards."""
    def on_signal(signum, _frame):
        if not service.started:  # still connecting: nothing consumed, nothing to save
            raise SystemExit(128 + signum)
        service.stop()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(settings: Settings, runtime: Runtime | None = None) -> int:
    """``labelwatch run``: consume until stopped; 0 after a clean stop.

    When outputs cannot be delivered or the state cannot be saved, nothing past the last saved
    state is committed: it logs why and returns 1, so the orchestrator restarts the service, which
    replays from its last checkpoint once the fault is gone (docs/reliability.md). It runs under
    ``runtime``, or enters a :class:`~consumer.runtime.Runtime` of its own first (undone last).
    """
    with contextlib.ExitStack() as stack:
        runtime = runtime or stack.enter_context(Runtime())
        app = build_service(settings, state=open_state(settings), runtime=runtime)
        stack.enter_context(http_server(app))
        stack.enter_context(stop_on_signals(app.service))
        try:
            app.service.run()
        except (DeliveryError, StateUnwritable) as error:
            log.error("stopping: %s. No offset past the last saved state was committed; restart to replay from it",
                      error, extra={"event": "fatal", "error_type": type(error).__name__})
            return 1
    return 0
