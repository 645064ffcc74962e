"""What reviewers see of a flagged sample's neighbours (consumer/previews.py): bounded, and saved with the state."""

from __future__ import annotations

import orjson

from consumer.demo.datasets import inject_noise, load, to_messages
from consumer.pipeline import InputRecord, Pipeline
from consumer.previews import Previews
from consumer.state import DatasetState
from detectors import LabelMonitor, MonitorConfig
from schemas import AnnotatedSample


def sample(i: int, *, text: str | None = None, image: str | None = None) -> AnnotatedSample:
    return AnnotatedSample(sample_id=f"s{i}", label="a", text=text, embedding=None if text else [1.0],
                           metadata={"image_url": image} if image else {})


def test_previews_keep_the_latest_samples_within_their_character_budget():
    previews = Previews(capacity=10, max_chars=250)
    previews.remember([sample(0, text="x" * 300), sample(1, text="short"), sample(2, image="javascript:alert(1)")])
    assert previews.of("s0") == ("x" * 200 + "…", None) and previews.of("s1") == ("short", None)
    assert previews.of("s2") is None  # no image a browser may show, no text: nothing kept
    previews.remember([sample(3, image="https://example.org/" + "y" * 30)])  # over 250 characters: s0 goes
    assert previews.of("s0") is None and previews.of("s1") == ("short", None) and previews.of("s3")[1].startswith("https://")
    previews.remember([sample(1, text="short, again")])  # a re-annotation replaces, and counts once
    assert previews.of("s1") == ("short, again", None) and previews._chars == len("short, again") + 50
    previews.remember([sample(i, text="w") for i in range(4, 20)])
    assert len(previews._items) == 10 and previews.of("s19") == ("w", None) and previews.of("s3") is None


def test_a_checkpoint_saves_previews_as_a_plain_dict_and_restores_them():
    state = DatasetState(LabelMonitor.from_config(MonitorConfig()))
    state.previews.remember([sample(0, text="a dog"), sample(1, image="data:image/png;base64,iVBORw0KGgo=")])
    saved = state.fields()["previews"]
    assert type(saved).__module__ == "collections"
    restored = DatasetState(**{**state.fields(), "previews": saved})
    assert restored.previews.of("s0") == ("a dog", None)
    assert restored.previews.of("s1") == (None, "data:image/png;base64,iVBORw0KGgo=")
    assert restored.previews._chars == state.previews._chars


def test_review_events_carry_each_neighbours_thumbnail_and_how_suspect_the_sample_is():
    data = load("digits")
    noisy, _ = inject_noise(data.labels, 0.1, n_classes=10, seed=0)
    messages = to_messages(data, noisy)[:1200]
    images = {m["sample_id"]: m["metadata"]["image_url"] for m in messages}
    pipeline = Pipeline(MonitorConfig(), None)
    events = []
    for start in range(0, len(messages), 200):
        result = pipeline.process([InputRecord(orjson.dumps(m)) for m in messages[start:start + 200]])
        events += result.events
        window = sorted(j.assessment.verdict.score for j in pipeline.monitors["digits"].schedule.window)
        for event in result.events:  # the share of the window at least as suspect, right after the batch
            assert event.suspect_share == max(sum(s >= event.score for s in window), 1) / len(window)
    assert len(events) >= 20
    neighbors = [n for e in events for n in e.context.neighbors]
    assert neighbors and all(n.thumbnail == images[n.sample_id] and n.snippet is None for n in neighbors)
