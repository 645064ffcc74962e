"""Threads in the detectors: one for BLAS and OpenMP, except where a neighbour search spreads its own.

Left to themselves, OpenBLAS and OpenMP start a thread per core for every call, and those threads
spin while they wait for the next one. The detectors' calls are small (a 384 × 384
eigendecomposition, K-means over 4,096 samples), so on a machine that does anything else beside,
the spinning threads take the cores from the work. On 2 busy cores, assigning 4,096 samples to
K-means clusters took 27 ms on two OpenMP threads and 1.4 ms on one, and ``bench/hotspots.py``
spent 190 to 2,750 ms per 500 samples in the cross-fitted LDA on two BLAS threads, 75 ms on one.
What is worth spreading spreads itself, each piece on one BLAS thread: the neighbour search
(:func:`search_in_parallel`) and the cross-fitted LDA's eigendecompositions (:func:`map_in_parallel`).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from threadpoolctl import ThreadpoolController

SEARCH_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
_MIN_ROWS_PER_THREAD = 64
_pool: ThreadPoolExecutor | None = None
_controller: ThreadpoolController | None = None


def _threadpools() -> ThreadpoolController:
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


@contextmanager
def one_thread():
    """BLAS and OpenMP on one thread each while inside (process-wide, restored on leaving).

    Results do not depend on it: a matrix product or decomposition splits its output between
    threads, never a sum, so each number is computed alike.

    >>> with one_thread():
    ...     float(np.linalg.eigh(np.eye(3))[0].sum())
    3.0
    """
    with _threadpools().limit(limits=1):
        yield


def search_in_parallel(work, n_rows: int, chunk: int) -> None:
    """Call ``work(start, stop)`` over ``n_rows`` rows in slices, on up to four threads.

    A neighbour search is a matrix product (multi-threaded by BLAS already) then an
    ``argpartition`` (single-threaded). Slices on threads, with BLAS on one thread each, keep
    every core busy in both: 1.3 to 1.5 times faster on 2 cores. Each row is computed the same way
    whichever slice it lands in, and ``work`` writes disjoint rows, so the result does not depend on
    the threads. The BLAS limit is process-wide while a search runs: searches are meant to come from
    one thread (the pipeline's).
    """
    slices = -(-n_rows // chunk)
    if SEARCH_THREADS > 1 and n_rows >= 2 * _MIN_ROWS_PER_THREAD:  # a multiple of the threads, to keep each busy
        slices = -(-max(slices, SEARCH_THREADS) // SEARCH_THREADS) * SEARCH_THREADS
    if slices <= 1 or SEARCH_THREADS == 1:
        for start in range(0, n_rows, chunk):
            work(start, min(start + chunk, n_rows))
        return
    bounds = np.linspace(0, n_rows, slices + 1).astype(int).tolist()
    with _threadpools().limit(limits=1, user_api="blas"):
        for done in [_workers().submit(work, start, stop) for start, stop in zip(bounds, bounds[1:])]:
            done.result()


def map_in_parallel(function, items) -> list:
    """``[function(item) for item in items]``, on up to four threads with BLAS on one thread each.

    For independent pieces of LAPACK work, which release the GIL: each is computed alone, exactly as
    it would be in a loop, so the results do not depend on the threads.

    >>> [float(v.sum()) for v in map_in_parallel(np.linalg.eigvalsh, [np.eye(2), 2 * np.eye(3)])]
    [2.0, 6.0]
    """
    items = list(items)
    if SEARCH_THREADS == 1 or len(items) < 2:
        return [function(item) for item in items]
    with _threadpools().limit(limits=1, user_api="blas"):
        return list(_workers().map(function, items))


def _workers() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="labelwatch-search")
    return _pool


def shut_down() -> None:
    """Stop the worker threads (the next parallel search starts them again): the process's runtime
    calls this on exit (:class:`consumer.runtime.Runtime`)."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)


def on_one_thread(method):
    """``method`` run inside :func:`one_thread` (for the entry points of the detectors' work)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with one_thread():
            return method(*args, **kwargs)

    return wrapper
