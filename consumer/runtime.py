"""The process settings a long-running labelwatch runs under, in one place (:class:`Runtime`)."""

from __future__ import annotations

import gc

from consumer.allocator import COLLECT_AFTER, HeapTrimmer, SurvivorFreezer
from detectors import threads


class Runtime:
    """What a long-running labelwatch process changes about itself, entered once and undone on exit.

    - **The cycle collector** (with ``tune_collector``): its youngest generation is collected after
      ``collect_after`` new containers instead of CPython's 700, and what survives each batch is
      frozen out of its walks, with a full collection every ten minutes
      (:class:`~consumer.allocator.SurvivorFreezer`).
    - **The heap**: freed pages go back to the system after each batch, at most once a second
      (:class:`~consumer.allocator.HeapTrimmer`).
    - **The detectors' worker threads** (:mod:`detectors.threads`): shut down on exit.

    ``labelwatch run`` enters one in :func:`consumer.app.run`'s ExitStack; the command line enters
    one around its other long-running commands (``audit``, ``demo``, ``embed``); the benchmarks do as
    they do. :meth:`after_batch` is what the pipeline calls after each micro-batch. Without one a
    pipeline keeps CPython's collector and only trims the heap: a library user's process is its own.

    >>> before = gc.get_threshold()
    >>> with Runtime() as runtime:
    ...     gc.get_threshold()[0], runtime.after_batch() is None
    (10000, True)
    >>> gc.get_threshold() == before, gc.get_freeze_count()
    (True, 0)
    """

    def __init__(self, *, tune_collector: bool = True, collect_after: int = COLLECT_AFTER):
        self.tune_collector = tune_collector
        self.collect_after = collect_after
        self.trim_heap = HeapTrimmer()  # freed temporaries back to the system, so RSS follows the live data
        self._freeze: SurvivorFreezer | None = None
        self._threshold: tuple[int, ...] | None = None

    def __enter__(self) -> Runtime:
        if self.tune_collector:
            self._threshold = gc.get_threshold()
            gc.set_threshold(self.collect_after, *self._threshold[1:])
            self._freeze = SurvivorFreezer()
        return self

    def __exit__(self, *exc) -> None:
        if self._threshold is not None:
            gc.set_threshold(*self._threshold)
            self._threshold = None
        if self._freeze is not None:
            self._freeze = None
            gc.unfreeze()
        threads.shut_down()

    def after_batch(self) -> None:
        """After a micro-batch: hand freed heap pages back, and freeze what survived (when entered)."""
        self.trim_heap()
        if self._freeze is not None:
            self._freeze()
