"""The heap trimmer: freed heap memory goes back to the system, at most once per interval."""

import gc
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

from consumer.allocator import HeapTrimmer, SurvivorFreezer

REPO = Path(__file__).resolve().parents[1]

# In a fresh interpreter: fill the heap with 200 MB of small blocks, free every other one (so the
# heap cannot shrink from its top), then read RSS before and after one trim.
CHILD = textwrap.dedent("""
    import sys
    from consumer.allocator import HeapTrimmer

    def rss_mib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    blocks = [bytearray(100_000) for _ in range(2_000)]
    del blocks[::2]
    before = rss_mib()
    assert HeapTrimmer()()
    print(before, rss_mib())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_a_trim_hands_the_freed_heap_pages_back():
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert before - after > 80, (before, after)  # about 100 MB of the 200 MB were freed


def test_trims_at_most_once_per_interval():
    now = [0.0]
    trim = HeapTrimmer(interval_s=1.0, clock=lambda: now[0])
    assert trim() and not trim()
    now[0] = 0.9
    assert not trim()
    now[0] = 1.0
    assert trim() and not trim()


def test_the_long_running_commands_collect_cycles_less_often_and_freeze_what_survives_each_batch():
    # in a fresh interpreter, through the real entry point: the threshold each command ran under,
    # whether a pipeline batch under the command's runtime then froze the heap, and that the runtime
    # was undone (threshold back, nothing frozen, the detectors' worker threads stopped) when it returned
    child = textwrap.dedent("""
        import gc, sys, threading
        import numpy as np
        from consumer import cli
        from consumer.app import build_pipeline
        from consumer.settings import Settings
        from detectors.threads import map_in_parallel

        def handler(args):
            build_pipeline(Settings(), embedder=None, runtime=args.runtime).process([])
            map_in_parallel(np.linalg.eigvalsh, [np.eye(2)] * 4)  # starts the detectors' worker threads
            print(args.command, gc.get_threshold()[0], gc.get_freeze_count() > 0)
            return 0

        cli.cmd_schemas = cli.cmd_run = handler
        assert cli.main(["schemas", "--out", sys.argv[1]]) == 0
        assert cli.main(["run"]) == 0
        workers = [t for t in threading.enumerate() if t.name.startswith("labelwatch-search")]
        print("after", gc.get_threshold()[0], gc.get_freeze_count() > 0, len(workers))
    """)
    result = subprocess.run([sys.executable, "-c", child, "/nonexistent"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["schemas", "700", "False", "run", "10000", "True", "after", "700", "False", "0"]


def test_cycles_among_frozen_objects_are_collected_at_the_next_full_collection():
    class Node:
        pass

    now = [0.0]
    freeze = SurvivorFreezer(full_every_s=600.0, clock=lambda: now[0])
    try:
        node = Node()
        node.self = node
        alive = weakref.ref(node)
        assert freeze() is False  # the cycle, still referenced, is frozen
        del node
        gc.collect()
        assert alive() is not None, "a frozen cycle waits for the next full collection"
        now[0] = 599.0
        assert freeze() is False and alive() is not None
        now[0] = 600.0
        assert freeze() is True and alive() is None
    finally:
        gc.unfreeze()
