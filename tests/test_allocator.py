"""The heap trimmer: freed heap memory goes back to the system, at most once per interval."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from consumer.allocator import HeapTrimmer

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


def test_every_labelwatch_command_collects_cycles_less_often():
    # in a fresh interpreter, through the real entry point: the threshold the command ran under, and
    # that a cycle is still collected (later, not never)
    child = textwrap.dedent("""
        import gc, sys, weakref
        from consumer import cli

        seen = []
        cli.cmd_schemas = lambda args: seen.append(gc.get_threshold()) or 0
        assert cli.main(["schemas", "--out", sys.argv[1]]) == 0

        class Node:
            pass
        node = Node()
        node.self = node
        alive = weakref.ref(node)
        del node
        gc.collect(0)
        print(seen[0][0], alive() is None)
    """)
    result = subprocess.run([sys.executable, "-c", child, "/nonexistent"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10000", "True"]
