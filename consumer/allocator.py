"""Freed heap memory goes back to the system: glibc's ``malloc_trim``, at most once a second.

glibc's malloc keeps freed memory in its heap for reuse. The detectors free large temporaries all
the time (a neighbour search's 500 × 10,000 distance block, a learning step's float64 copies), and
after the first few such blocks glibc serves them from the heap rather than mapping each on its own
(its mmap threshold rises to the largest block freed). So RSS keeps what the worst moment's
fragmentation left behind: on the 1M-sample memory benchmark it stepped up by 88 MiB between 200k
and 500k samples and never came down, while the live data stayed the same.

:class:`HeapTrimmer` calls ``malloc_trim(0)``, which hands every whole free page of the heap back
(``madvise``), at most once per interval, after each micro-batch. Two
alternatives were measured (docs/benchmarks.md, Memory): a fixed mmap threshold of 1 MiB kept RSS
as flat but cost a quarter of the vector path's throughput in page faults; trimming after every
batch cost no measurable speed. Elsewhere than glibc (musl, macOS) it does nothing.

The other half of the heap's upkeep is CPython's cycle collector, whose defaults suit small heaps,
not a service that keeps a window of tens of thousands of samples: each full collection walks every
live object, and with the re-audit window full (about 350,000 objects) one took about 170 ms, seven
per 20,000 vector samples, 14% of the judging time and a pause each time (docs/benchmarks.md). So a
long-running process collects less often (:data:`COLLECT_AFTER`), and what survives a micro-batch is
frozen out of its walks (:class:`SurvivorFreezer`), with one full collection every ten minutes.
:class:`consumer.runtime.Runtime` applies both, and undoes them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


class HeapTrimmer:
    """Returns the heap's free pages to the system when called, at most once every ``interval_s``.

    >>> trim = HeapTrimmer(interval_s=60.0)
    >>> trim(), trim()  # glibc (Linux): the first call trims, the second is too soon
    (True, False)
    """

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._trim = _malloc_trim()
        self._last: float | None = None

    def __call__(self) -> bool:
        """Trim if the interval has passed since the last trim; whether it trimmed."""
        now = self.clock()
        if self._trim is None or (self._last is not None and now - self._last < self.interval_s):
            return False
        self._trim(0)
        self._last = now
        return True


COLLECT_AFTER = 10_000
"""Container allocations (net of frees) between two collections of the youngest generation; CPython's default is 700."""

FULL_COLLECTION_EVERY_S = 600.0
"""How often :class:`SurvivorFreezer` lets the cycle collector walk the old objects after all."""


class SurvivorFreezer:
    """Keeps the cycle collector off the long-lived heap: each call moves every object alive now to
    CPython's permanent generation (``gc.freeze``), which collections do not walk; once every
    ``full_every_s`` it first brings them back and collects everything, so cycles among old objects
    are still reclaimed.

    Reference counting frees frozen objects as usual; only cyclic garbage waits for the next full
    collection. Pausing once every ten minutes replaces a pause every few seconds.

    >>> clock = iter([0.0, 1.0, 700.0]).__next__
    >>> freeze = SurvivorFreezer(full_every_s=600.0, clock=clock)
    >>> freeze(), freeze(), freeze()  # whether each call collected everything first
    (False, False, True)
    >>> gc.get_freeze_count() > 0
    True
    >>> gc.unfreeze()
    """

    def __init__(self, full_every_s: float = FULL_COLLECTION_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.full_every_s = full_every_s
        self.clock = clock
        self._since: float | None = None

    def __call__(self) -> bool:
        now = self.clock()
        collected = self._since is not None and now - self._since >= self.full_every_s
        if collected:
            gc.unfreeze()
            gc.collect()
        if self._since is None or collected:
            self._since = now
        gc.freeze()
        return collected
