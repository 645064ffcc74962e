"""What the review-desk browser tests share: the desk as a child process, HTTP and metric helpers, and
the reviewers' moves in Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from consumer.demo.broker import free_port
from kafka_helpers import output_of, start_service, wait_for  # noqa: F401 (the tests take wait_for from here)

CHROMIUM = "/usr/bin/chromium"
REVIEWERS = {"alice": "alice-token-0123", "bob": "bob-token-4567", "carol": "carol-token-89ab"}


def start_desk(bootstrap: str, topics: dict[str, str], port: int):
    log = tempfile.TemporaryFile()
    env = {**os.environ, "LABELWATCH_REVIEWERS": ",".join(f"{r}:{t}" for r, t in REVIEWERS.items())}
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer", "review", "--bootstrap-servers", bootstrap, "--review-topic",
         topics["reviews"], "--corrections-topic", topics["corrections"], "--leases-topic", topics["leases"],
         "--input-topic", topics["in"], "--group-id", "desk", "--http-host", "127.0.0.1", "--http-port", str(port), "--log-format", "text"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log = log
    return process


def start_review_loop(bootstrap: str, topics: dict[str, str], state_dir, group: str, *flags: str):
    """``labelwatch run`` reading reviewers' answers from the corrections topic (and any other ``flags``),
    and a desk on a free port: ``(service, desk, desk_url)``."""
    service = start_service(bootstrap, state_dir, topics=topics, group=group,
                            flags=("--corrections-topic", topics["corrections"], *flags))
    port = free_port()
    return service, start_desk(bootstrap, topics, port), f"http://127.0.0.1:{port}/"


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


def sign_in(page, url: str, reviewer: str) -> None:
    page.goto(url)
    page.fill("#token", REVIEWERS[reviewer])
    page.click("#sign-in")
    page.wait_for_selector("#reviewer")


def current_event(page) -> str:
    return page.get_attribute("#current", "data-event-id")


def press(page, key: str) -> str:
    """Press one hotkey and return the event shown next."""
    before = current_event(page)
    with page.expect_navigation():
        page.keyboard.press(key)
    after = current_event(page)
    assert after and after != before
    return after
