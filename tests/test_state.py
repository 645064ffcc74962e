"""Durable detector state: atomic checkpoints, clear errors, and restarts that continue learning."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import orjson
import pytest

from consumer.pipeline import InputRecord, Pipeline
from consumer.state import CorruptStateError, StateStore, encode_checkpoint
from detectors import MonitorConfig
from schemas import SourcePosition
from verdicts import assert_same_verdicts

pytestmark = pytest.mark.replay

CONFIG = MonitorConfig(n_clusters=3, cluster_window=256, neighbors_per_class=100, reaudit_window=400,
                       reaudit_delay=50, learning_step=100)
CENTERS = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])


def records(start: int, stop: int, total: int = 1200) -> list[InputRecord]:
    rng = np.random.default_rng(7)
    which = rng.integers(0, 3, total)
    vectors = CENTERS[which] + rng.normal(size=(total, 3))
    labels = which.copy()
    flip = rng.random(total) < 0.1
    labels[flip] = (labels[flip] + 1) % 3
    return [InputRecord(orjson.dumps({"sample_id": f"s{i}", "label": "abc"[labels[i]], "embedding": vectors[i].tolist()}))
            for i in range(start, stop)]


def run(pipeline: Pipeline, batch: list[InputRecord]):
    verdicts = []
    for start in range(0, len(batch), 100):
        verdicts += pipeline.process(batch[start:start + 100]).verdicts
    return [(v.sample_id, v.late, v.flagged, v.event_id, v.score) for v in verdicts]


def test_a_restart_from_a_checkpoint_continues_exactly_where_it_stopped(tmp_path):
    uninterrupted = run(Pipeline(CONFIG, None), records(0, 1200))

    first = Pipeline(CONFIG, None, state=StateStore(tmp_path))
    before = run(first, records(0, 600))
    assert first.checkpoint() == 1
    restarted = Pipeline(CONFIG, None, state=StateStore(tmp_path))  # a new process, in effect
    after = run(restarted, records(600, 1200))

    assert_same_verdicts(before + after, uninterrupted)
    monitor = restarted.monitors["default"]
    assert monitor.n_seen == 1200
    assert monitor.detector("cluster").cluster_totals.sum() == 1200, "cluster counts continue, not reset"


def test_checkpoint_saves_only_datasets_that_changed(tmp_path):
    pipeline = Pipeline(CONFIG, None, state=StateStore(tmp_path))
    run(pipeline, records(0, 100))
    assert pipeline.checkpoint() == 1
    assert pipeline.checkpoint() == 0


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    store.save("pets", {"version": 1})

    def crash(*_):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.save("pets", {"version": 2})
    monkeypatch.undo()
    assert store.load("pets") == {"version": 1}
    assert store.verify() == 1, "a half-written temporary file is not a checkpoint"


@pytest.mark.parametrize("damage", ["flip", "truncate", "not-ours", "version"])
def test_damaged_checkpoints_give_a_clear_error_and_are_not_dropped(tmp_path, damage):
    store = StateStore(tmp_path)
    store.save("pets", {"learned": list(range(100))})
    path = store.path("pets")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-5] ^= 0xFF
    elif damage == "truncate":
        blob = blob[:20]
    elif damage == "not-ours":
        blob = bytearray(b"hello world" * 10)
    else:
        blob = bytearray(encode_checkpoint({"x": 1}))
        blob[6:8] = (99).to_bytes(2, "big")
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptStateError, match="--fresh-state"):
        store.load("pets")
    with pytest.raises(CorruptStateError):
        store.verify()
    assert path.exists(), "a damaged checkpoint is never deleted"


def test_run_refuses_corrupt_state_before_consuming_and_fresh_state_sets_it_aside(tmp_path):
    store = StateStore(tmp_path)
    store.save("pets", {"learned": 1})
    store.path("pets").write_bytes(b"garbage")
    command = [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", "127.0.0.1:1",
               "--state-dir", str(tmp_path), "--metrics-port", "0"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "not a labelwatch checkpoint" in refused.stderr and "--fresh-state" in refused.stderr

    aside = store.set_aside()
    assert aside is not None and (aside / store.path("pets").name).read_bytes() == b"garbage"
    assert store.verify() == 0


def positioned(start: int, stop: int, partition: int = 0) -> list[InputRecord]:
    """records() with Kafka positions: offset i on ``partition``."""
    return [InputRecord(r.value, SourcePosition(topic="in", partition=partition, offset=i))
            for i, r in zip(range(start, stop), records(start, stop))]


def test_a_replay_from_behind_the_checkpoint_skips_what_the_state_already_judged(tmp_path):
    # a crash after the state was saved but before the offsets were committed: the next owner
    # restores the checkpoint and the broker replays from the last committed offset (here 300)
    uninterrupted = run(Pipeline(CONFIG, None), positioned(0, 1200))

    first = Pipeline(CONFIG, None, state=StateStore(tmp_path))
    before = run(first, positioned(0, 700))
    first.checkpoint()
    replaying = Pipeline(CONFIG, None, state=StateStore(tmp_path))
    after = run(replaying, positioned(300, 1200))

    assert replaying.metrics.samples_replayed._value.get() == 400
    assert_same_verdicts(before + after, uninterrupted)  # no sample judged twice, the rest as without the crash
    state = StateStore(tmp_path).load("default")
    assert state.positions == {("in", 0): 700}
    assert replaying.monitors["default"].n_seen == 1200


def test_release_forgets_datasets_only_after_a_checkpoint(tmp_path):
    pipeline = Pipeline(CONFIG, None, state=StateStore(tmp_path))
    run(pipeline, positioned(0, 100))
    with pytest.raises(RuntimeError, match="checkpoint"):
        pipeline.release()
    pipeline.checkpoint()
    pipeline.release()
    assert pipeline.datasets == {}
    run(pipeline, positioned(100, 200))
    assert pipeline.monitors["default"].n_seen == 200, "restored from the checkpoint, not started fresh"
