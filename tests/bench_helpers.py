"""Running a script of ``bench/`` the way its smoke tests do: from the repository root, in a child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str, timeout: float) -> str:
    """``bench/SCRIPT ARGS`` with this interpreter; its stdout, once it has exited 0 (else its stderr's tail)."""
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout
