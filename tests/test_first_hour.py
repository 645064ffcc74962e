"""docs/operations.md's "first hour", run as it stands against an empty broker: a reviewer's first answer."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from consumer.demo.broker import LocalBroker, free_port
from consumer.export import read_topic
from schemas import Correction

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parent.parent
VARIABLES = re.compile(r"^export BOOTSTRAP=.*$", re.MULTILINE)


def first_hour_script() -> str:
    """The first ``sh`` block of the section, exactly as a reader copies it."""
    section = (REPO / "docs" / "operations.md").read_text().split("## The first hour\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(.*?)```", section, re.DOTALL)[1]


@contextlib.contextmanager
def shell(script: str):
    """``script`` in bash (-euo pipefail) from the repository's root, with this venv first on PATH, in a
    session of its own; yields the process and its output file, and ends whatever it left running."""
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    try:
        yield process, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # what it left in the background, the judge and the desk
        process.wait(timeout=30)


def output_of(log) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")


def test_the_first_hour_takes_an_empty_broker_to_a_reviewers_first_answer(tmp_path):
    script = first_hour_script()
    assert len(VARIABLES.findall(script)) == 1, "the block starts by setting its four variables"
    with LocalBroker() as broker:  # empty: no topic exists before the script runs
        bootstrap = broker.bootstrap_servers
        ours = (f"export BOOTSTRAP={bootstrap} DESK_PORT={free_port()} METRICS_PORT={free_port()} "
                f"STATE_DIR={tmp_path / 'state'}")
        with shell(VARIABLES.sub(ours, script)) as (process, log):
            code = process.wait(timeout=420)
            output = output_of(log)
            assert code == 0, output[-6000:]
        answers = [line for line in output.splitlines() if '"outcome"' in line and '"reviewer_id"' in line]
        assert len(answers) == 1, output[-6000:]
        printed = Correction.model_validate_json(answers[0])
        assert printed.outcome == "confirmed" and printed.reviewer_id == "ana"
        written = [Correction.model_validate_json(r.value)
                   for r in read_topic({"bootstrap_servers": [bootstrap]}, "label-corrections", expected=1, timeout=10)]
        assert written == [printed]
        created = re.findall(r"^created +(\S+)$", output, re.MULTILINE)
        assert sorted(created) == ["annotations", "annotations-dlq", "label-corrections", "label-review-leases",
                                   "label-reviews"]
        assert "does not exist" not in output, "every topic was there before a command needed it"


def test_the_readmes_desk_commands_typed_in_order_against_an_empty_broker_give_a_ready_desk():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(labelwatch topics create --bootstrap-servers kafka:9092.*?)```", readme, re.DOTALL)[1]
    with LocalBroker() as broker:
        port = free_port()
        script = block.replace("kafka:9092", broker.bootstrap_servers).replace("--http-port 8080", f"--http-port {port}")
        with shell(script) as (process, log):
            deadline = time.monotonic() + 120
            while not ready(f"http://127.0.0.1:{port}/readyz"):
                assert process.poll() is None and time.monotonic() < deadline, output_of(log)
                time.sleep(0.5)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
