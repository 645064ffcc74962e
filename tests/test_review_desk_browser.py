"""The whole review loop in a real browser: Tansu, `labelwatch run`, `labelwatch review`, noisy
tweets labelled by the app that sent them (text, embedded by the real model), and Debian's Chromium driven by Playwright
(both installed by `make test`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from playwright.sync_api import sync_playwright

from consumer.demo.broker import free_port
from consumer.demo.datasets import inject_noise, load, to_messages
from consumer.desk.explain import suspect_in_words
from consumer.export import read_topic
from schemas import Correction, Neighbor, Reason, ReviewContext, ReviewEvent
from desk_helpers import CHROMIUM, REVIEWERS, current_event, get, metric, press, sign_in, start_review_loop, wait_for
from kafka_helpers import fresh_topics, output_of

pytestmark = pytest.mark.kafka

N_SAMPLES = 1200
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">Tom & "Jerry"'


def test_reviewers_work_the_queue_in_a_browser_and_run_applies_their_answers(kafka_broker, unique_name, tmp_path):
    assert Path(CHROMIUM).exists(), "make test installs Debian's chromium (apt-get install chromium)"
    bootstrap = kafka_broker.bootstrap_servers
    topics = fresh_topics(bootstrap, unique_name, "in", "reviews", "dlq", "verdicts", "corrections", "leases")
    run_port = free_port()
    service, desk, url = start_review_loop(bootstrap, topics, tmp_path / "state", unique_name("g"),
                                           "--metrics-port", str(run_port))
    try:
        data = load("tweets")
        noisy, _ = inject_noise(data.labels, 0.15, n_classes=len(data.class_names), seed=0)
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for message in to_messages(data, noisy)[:N_SAMPLES]:
            producer.send(topics["in"], key=b"tweets", value=orjson.dumps(message))
        hostile = ReviewEvent(event_id="hostile-1", dataset="hostile", sample_id="h1", label="cat",
                              suggested_label="dog", score=1.0, priority=1, text=HOSTILE,
                              reasons=[Reason(detector="cluster", score=1.0)],
                              metadata={"image_url": "javascript:window.__pwned = 3"},
                              context=ReviewContext(neighbors=[Neighbor(
                                  sample_id="h0", label="cat", similarity=0.9, snippet=HOSTILE,
                                  thumbnail="data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=")]))
        producer.send(topics["reviews"], key=b"hostile", value=hostile.model_dump_json().encode())
        producer.flush()

        wait_for(lambda: get(url + "readyz")[0] == 200, "the desk to be ready", 60, desk, service)
        def open_tweets():
            status, body = get(url + "api/queue?dataset=tweets", REVIEWERS["bob"])
            items = json.loads(body) if status == 200 else []
            return items if len(items) >= 6 else None
        queue = wait_for(open_tweets, "six review events on tweets", 120, desk, service)
        assert [(e["priority"], -e["score"]) for e in queue] == sorted((e["priority"], -e["score"]) for e in queue)
        assert all(e["context"]["neighbors"] and e["context"]["cluster_labels"] for e in queue)
        # each neighbour travels with the start of its text, and each event with its rank among recent samples
        assert all(n["snippet"] and len(n["snippet"]) <= 201 for e in queue for n in e["context"]["neighbors"])
        assert all(0 < e["suspect_share"] <= 1 for e in queue)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            alice = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
            sign_in(alice, url + "?dataset=tweets", "alice")
            first = current_event(alice)
            suggested = alice.inner_text("#suggested-label")
            assert alice.locator("#reasons li").count() >= 1 and alice.locator("#neighbors tr").count() > 1
            assert alice.inner_text("#sample-text") and "tweets-" not in alice.inner_text("#neighbors")  # texts shown
            shown = next(e for e in queue if e["event_id"] == first)
            assert alice.inner_text("#suspect-rank") == suspect_in_words(shown["suspect_share"])
            assert alice.inner_text("#score") == f"{shown['score']:#.4g}"
            screenshot = tmp_path / "review-desk.png"
            alice.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("LABELWATCH_SCREENSHOT_DIR"):
                shutil.copy(screenshot, Path(os.environ["LABELWATCH_SCREENSHOT_DIR"]) / "review-desk.png")

            second = press(alice, "c")                       # confirm the suggestion
            third = press(alice, "f")                        # false alarm
            relabel_to = alice.locator("form:has(#relabel-2) input[name=corrected_label]").get_attribute("value")
            fourth = press(alice, "2")                       # relabel to the second label offered
            assert len({first, second, third, fourth}) == 4

            bob = browser.new_context().new_page()
            sign_in(bob, url + "?dataset=tweets", "bob")
            assert current_event(bob) not in {first, second, third, fourth}  # alice leases the fourth

            carol = browser.new_context().new_page()
            sign_in(carol, url + "?dataset=hostile", "carol")
            assert current_event(carol) == "hostile-1"
            assert carol.inner_text("#sample-text") == HOSTILE   # shown as text, never run
            assert HOSTILE in carol.inner_text("#neighbors")     # a neighbour's snippet too; no image is made of
            # a script address or an SVG (images may come only from http(s) and raster data: URIs)
            assert carol.evaluate("window.__pwned") is None
            assert carol.locator("main script, main img").count() == 0

            stranger = browser.new_context()
            form = {"event_id": fourth, "outcome": "false_alarm", "csrf_token": "x"}
            assert stranger.request.post(url + "answer", form=form, max_redirects=0).status == 401
            assert alice.context.request.post(url + "answer", form=form, max_redirects=0).status == 403
            assert alice.context.request.post(url + "api/answers", data={"event_id": fourth, "outcome": "skip"}
                                              ).status == 403  # the session's cookie without its CSRF header
            assert stranger.request.post(url + "api/answers", data={"event_id": fourth, "outcome": "skip"}).status == 401
            browser.close()

        answers = [Correction.model_validate_json(m.value)
                   for m in read_topic({"bootstrap_servers": [bootstrap]}, topics["corrections"], expected=3, timeout=20)]
        assert [(a.event_id, a.outcome, a.reviewer_id) for a in answers] == [
            (first, "confirmed", "alice"), (second, "false_alarm", "alice"), (third, "confirmed", "alice")]
        assert answers[0].corrected_label == suggested and answers[1].corrected_label is None
        assert answers[2].corrected_label == relabel_to and all(a.answered_at and a.schema_version == 2 for a in answers)

        def applied():
            status, body = get(f"http://127.0.0.1:{run_port}/metrics")
            text = body.decode()
            done = metric(text, "labelwatch_corrections_total", dataset="tweets")
            return text if status == 200 and done >= 3 else None
        text = wait_for(applied, "labelwatch run to apply the three answers", 60, service)
        assert metric(text, "labelwatch_reviewer_confirmed_precision", dataset="tweets") == pytest.approx(2 / 3)
        # the false alarm is remembered: similar samples with its label now need a higher score to be flagged
        assert metric(text, "labelwatch_corrections_total", dataset="tweets", outcome="false_alarm",
                      applied="false_alarm") == 1

        status, body = get(url + "metrics")
        assert metric(body.decode(), "labelwatch_reviewer_answers_total", reviewer="alice") == 3
        assert metric(body.decode(), "labelwatch_review_desk_invalid_records_total") == 0
        logs = output_of(desk) + output_of(service)
        assert not any(token in logs for token in REVIEWERS.values()), "a reviewer token reached the logs"
    finally:
        for process in (desk, service):
            process.terminate()
            process.wait(timeout=30)
