"""Writing one benchmark's section of ``docs/benchmarks.md`` without touching the others."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HEADER = "# Benchmarks\n\nEvery figure below comes from the command printed next to it.\n"


def replace_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->``, appending if absent."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def cpu_model() -> str:
    """The processor's name, for the record of where a figure was measured."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def command_line() -> str:
    """The command as it was run, with the interpreter and script relative to the working directory."""
    def short(path: Path) -> str:
        path = Path(os.path.abspath(path))  # keeps the venv's python link unresolved
        return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)

    return " ".join(shlex.quote(part) for part in [short(Path(sys.executable)), short(Path(sys.argv[0])),
                                                   *sys.argv[1:]])


def git_revision() -> str:
    """``git describe --always --dirty`` of the repository, or ``unknown``."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                              text=True, timeout=10)
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown"


def load_average() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def provenance(software: str, load: tuple[float, float], command: str, load_effect: str = "") -> list[str]:
    """The "measured when, where, with what, by which command" lines every benchmark section starts with."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"Measured {now} on {cores} cores (nproc; {cpu_model()}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}; {software}. Revision `{git_revision()}`; 1-minute load "
        f"average {load[0]:.2f} before the run and {load[1]:.2f} after it (above 0 means other work shared the "
        f"cores{load_effect}).",
        "",
        "Command:",
        "",
        "```sh",
        command,
        "```",
    ]
