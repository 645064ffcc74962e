"""``labelwatch demo``: the embedded default, run exactly as a new user runs it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kafka  # the demo starts a Tansu broker of its own


def _tansu_processes() -> set[str]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if "tansu broker" in line}


def test_demo_reports_what_it_caught_and_leaves_no_broker_behind():
    before = _tansu_processes()
    done = subprocess.run([sys.executable, "-m", "consumer", "demo", "--limit", "900"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"started a Tansu broker on 127\.0\.0\.1:\d+", out)
    assert "produced 900 samples of 'digits'" in out
    final = re.search(r"after the final re-audit\s*: flagged (\d+) .* precision ([\d.]+)\s+recall ([\d.]+)", out)
    assert final, out
    flagged, precision, recall = int(final.group(1)), float(final.group(2)), float(final.group(3))
    assert flagged > 0 and precision >= 0.7 and recall >= 0.5, out
    assert "dead-lettered 3 malformed messages" in out
    assert re.search(r"metrics: http://127\.0\.0\.1:\d+/metrics", out)
    assert _tansu_processes() <= before, "the demo left a broker running"


EVICTION_SIGNS = ("poll timeout", "CommitFailedError", "commit failed", "rebalance", "terminate called")


def test_the_text_demo_judges_every_sample_on_a_busy_machine_without_falling_out_of_its_group():
    # one core spun by another process, as on a laptop doing something else: embedding a poll of
    # reviews then takes twice as long, and the demo's 10 s poll interval must still never lapse
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = subprocess.run([sys.executable, "-m", "consumer", "demo", "--dataset", "reviews", "--limit", "600"],
                              capture_output=True, text=True, timeout=600)
    finally:
        hog.kill()
        hog.wait()
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "judged all 600 samples" in done.stdout, log
    assert "dead-lettered 3 malformed messages" in done.stdout, log
    assert not [sign for sign in EVICTION_SIGNS if sign.lower() in log.lower()], log


def test_demo_review_serves_the_desk_until_ctrl_c_then_reports():
    import json
    import signal
    import time
    import urllib.request

    demo = subprocess.Popen([sys.executable, "-m", "consumer", "demo", "--review"],  # all 1,797 digits: live flags
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 240
        while not any(line.startswith("review desk:") for line in lines):
            assert time.monotonic() < deadline and demo.poll() is None, "".join(lines)
            lines.append(demo.stdout.readline())
        found = re.search(r"review desk: (http://127\.0\.0\.1:\d+/)\s+\(sign in with the token ([0-9a-f]+);", lines[-1])
        assert found, lines[-1]
        url, token = found.groups()
        request = urllib.request.Request(url + "api/queue", headers={"Authorization": f"Bearer {token}"})
        while True:  # the desk reads the review topic from the start: ready once it caught up
            with urllib.request.urlopen(request, timeout=5) as response:
                queue = json.loads(response.read())
            if queue or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert queue and all(item["dataset"] == "digits" for item in queue)
        event = queue[0]
        answer = urllib.request.Request(
            url + "api/answers", method="POST", data=json.dumps({"event_id": event["event_id"], "outcome": "confirmed"}
                                                              ).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(answer, timeout=15) as response:
            assert response.status == 201 and json.loads(response.read())["reviewer_id"] == "demo"
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=120)
        assert demo.returncode == 0, "".join(lines) + out
        assert re.search(r"after the final re-audit\s*: flagged \d+", out), out
    finally:
        if demo.poll() is None:
            demo.kill()
