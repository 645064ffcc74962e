"""What a reviewer sees of a sample that has no text, in a real browser: the demo's digits (vectors,
each with its PNG as ``metadata.image_url``) through Tansu, `labelwatch run` and `labelwatch review`,
and Debian's Chromium driven by Playwright. The digit itself, its neighbours' thumbnails, how suspect
it is in words, and what reviewers confirmed in its score band."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from playwright.sync_api import sync_playwright

from consumer.demo.datasets import inject_noise, load, to_messages
from consumer.desk.explain import band_in_words, suspect_in_words
from consumer.desk.queue import band_of
from desk_helpers import CHROMIUM, REVIEWERS, current_event, get, sign_in, start_review_loop, wait_for
from kafka_helpers import fresh_topics

pytestmark = pytest.mark.kafka

LOADED = "e => e.complete && e.naturalWidth"  # an <img> the browser decoded: its width in pixels, else 0


def answer(url: str, reviewer: str, event: dict, outcome: str) -> None:
    """A reviewer's answer through the desk's JSON API (as a script or another desk would send it)."""
    import urllib.request

    body = {"event_id": event["event_id"], "outcome": outcome,
            "corrected_label": event["suggested_label"] if outcome == "confirmed" else None}
    request = urllib.request.Request(url + "api/answers", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {REVIEWERS[reviewer]}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201


def test_a_digit_is_shown_with_its_neighbours_rank_and_band_precision(kafka_broker, unique_name, tmp_path):
    assert Path(CHROMIUM).exists(), "make test installs Debian's chromium (apt-get install chromium)"
    bootstrap = kafka_broker.bootstrap_servers
    topics = fresh_topics(bootstrap, unique_name, "in", "reviews", "dlq", "verdicts", "corrections", "leases")
    service, desk, url = start_review_loop(bootstrap, topics, tmp_path / "state", unique_name("g"))
    try:
        data = load("digits")
        noisy, _ = inject_noise(data.labels, 0.15, n_classes=len(data.class_names), seed=0)
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for message in to_messages(data, noisy):  # what `labelwatch demo` produces: each digit with its PNG
            producer.send(topics["in"], key=b"digits", value=orjson.dumps(message))
        producer.flush()

        wait_for(lambda: get(url + "readyz")[0] == 200, "the desk to be ready", 60, desk, service)

        seen: list[list[str]] = []

        def settled_digits():  # every digit judged: the same eight or more events for three seconds
            status, body = get(url + "api/queue?dataset=digits", REVIEWERS["bob"])
            items = json.loads(body) if status == 200 else []
            seen.append([e["event_id"] for e in items])
            return items if len(items) >= 8 and seen[-6:] == [seen[-1]] * 6 else None
        queue = wait_for(settled_digits, "the review events on digits to settle", 180, desk, service)
        assert all(e["metadata"]["image_url"].startswith("data:image/png;base64,") for e in queue)
        neighbors = [n for e in queue for n in e["context"]["neighbors"]]
        assert neighbors and all(n["thumbnail"].startswith("data:image/png;base64,") for n in neighbors)
        assert all(0 < e["suspect_share"] <= 1 for e in queue)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            alice = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
            sign_in(alice, url + "?dataset=digits", "alice")
            shown = next(e for e in queue if e["event_id"] == current_event(alice))
            # the digit, decoded by the browser at its own 8 x 8 pixels, under the desk's CSP
            assert alice.eval_on_selector("#sample-image", LOADED) == 8
            assert alice.get_attribute("#sample-image", "src") == shown["metadata"]["image_url"]
            assert alice.locator(".no-text").count() == 0 and "image_url" not in alice.inner_text("#current")
            # every nearest earlier sample as a thumbnail, each decoded
            thumbnails = alice.locator("#neighbors img.thumbnail")
            assert thumbnails.count() == len(shown["context"]["neighbors"])
            assert all(thumbnails.nth(i).evaluate(LOADED) == 8 for i in range(thumbnails.count()))
            # how suspect, in words, and the score to 4 significant digits
            assert alice.inner_text("#suspect-rank") == suspect_in_words(shown["suspect_share"])
            assert alice.inner_text("#score") == f"{shown['score']:#.4g}"
            band = band_of(shown["suspect_share"])
            assert alice.inner_text("#band-precision") == f"No answers yet in {band_in_words(band)}."

            # bob answers two other events of the same band: one confirmed, one a false alarm
            same_band = [e for e in queue if e["event_id"] != shown["event_id"] and band_of(e["suspect_share"]) == band]
            assert len(same_band) >= 2, f"too few events in {band_in_words(band)} to count a precision: {queue}"
            answer(url, "bob", same_band[0], "confirmed")
            answer(url, "bob", same_band[1], "false_alarm")
            expected = f"In {band_in_words(band)}, reviewers confirmed 1 of the 2 answered (50%)."

            def counted():
                alice.reload()
                return current_event(alice) == shown["event_id"] and alice.inner_text("#band-precision") == expected
            wait_for(counted, "the desk to count bob's answers in the band", 30, desk)

            screenshot = tmp_path / "review-desk-digits.png"
            alice.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("LABELWATCH_SCREENSHOT_DIR"):
                shutil.copy(screenshot, Path(os.environ["LABELWATCH_SCREENSHOT_DIR"]) / "review-desk-digits.png")
            browser.close()
    finally:
        for process in (desk, service):
            process.terminate()
            process.wait(timeout=30)
