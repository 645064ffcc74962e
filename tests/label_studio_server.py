"""A real Label Studio server for the tests, from the virtual environment `make label-studio` builds.

The first start of a new data directory runs Django's migrations for about a minute, so the
first start migrates a template directory (kept next to the venv), and each test session starts
from a copy of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from consumer.demo.broker import free_port

VERSION = "1.23.2"
USER, PASSWORD = "admin@labelwatch.test", "labelwatch-admin-1"
TOKEN = "6c61626577617463682d746573742d746f6b656e"  # 40 hex characters, only for this throwaway server


def venv() -> Path:
    """Where `make label-studio` puts the virtual environment (LABELWATCH_LABEL_STUDIO_VENV, set by make)."""
    if os.environ.get("LABELWATCH_LABEL_STUDIO_VENV"):
        return Path(os.environ["LABELWATCH_LABEL_STUDIO_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    lock = hashlib.sha256((Path(__file__).parents[1] / "requirements-label-studio.lock").read_bytes()).hexdigest()
    return cache / "labelwatch" / f"label-studio-{VERSION}-{lock[:12]}"  # the Makefile's LABEL_STUDIO_VENV


class LabelStudioServer:
    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir, self.port = data_dir, port or free_port()
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> LabelStudioServer:
        binary = venv() / "bin" / "label-studio"
        assert binary.exists(), f"no Label Studio at {binary}: run `make label-studio` (make test does)"
        env = {**os.environ, "SSRF_PROTECTION_ENABLED": "false", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = (self.data_dir.parent / f"label-studio-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            [str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(self.port),
             "--data-dir", str(self.data_dir), "--username", USER, "--password", PASSWORD, "--user-token", TOKEN,
             "--enable-legacy-api-token"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"Label Studio exited: see {self.log.name}"
            try:
                self.call("GET", "/api/projects/")
                return self
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, f"Label Studio not up after {timeout} s: see {self.log.name}"
                time.sleep(1.0)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def call(self, method: str, path: str, body=None):
        request = urllib.request.Request(self.url + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Token {TOKEN}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


def started(base: Path) -> LabelStudioServer:
    """A server on a copy of the migrated template directory (made on first use)."""
    template = venv().parent / f"label-studio-{VERSION}-data"
    if not (template / "label_studio.sqlite3").exists():
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir(parents=True)
        first = LabelStudioServer(template).start()
        first.stop()
    data = base / "label-studio-data"
    shutil.copytree(template, data)
    return LabelStudioServer(data).start()
