"""Durable detector state: atomic checkpoints, clear errors, and restarts that continue learning."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from consumer.pipeline import InputRecord, Pipeline
from consumer.state import (FORMAT_VERSION, MAGIC, CorruptStateError, DatasetState, StateStore, StateUnwritable,
                            encode_checkpoint)
from detectors import LabelMonitor, MonitorConfig
from schemas import SourcePosition, make_event_id
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


def state_at(offset: int) -> DatasetState:
    return DatasetState(LabelMonitor.from_config(CONFIG), positions={("in", 0): offset})


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    store.save("pets", state_at(1))

    def crash(*_):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StateUnwritable, match="power cut"):
        store.save("pets", state_at(2))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [store.path("pets").name], "no partial file left beside it"
    assert store.load("pets").positions == {("in", 0): 1}
    assert store.verify() == 1, "a half-written temporary file is not a checkpoint"


@pytest.mark.parametrize("damage", ["flip", "truncate", "not-ours", "version"])
def test_damaged_checkpoints_give_a_clear_error_and_are_not_dropped(tmp_path, damage):
    store = StateStore(tmp_path)
    store.save("pets", state_at(100))
    path = store.path("pets")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-5] ^= 0xFF
    elif damage == "truncate":
        blob = blob[:20]
    elif damage == "not-ours":
        blob = bytearray(b"hello world" * 10)
    else:
        blob = bytearray(encode_checkpoint(state_at(1)))
        blob[6:8] = (99).to_bytes(2, "big")
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptStateError, match="--fresh-state"):
        store.load("pets")
    with pytest.raises(CorruptStateError):
        store.verify()
    assert path.exists(), "a damaged checkpoint is never deleted"


def test_run_refuses_corrupt_state_before_consuming_and_fresh_state_sets_it_aside(tmp_path):
    store = StateStore(tmp_path)
    store.save("pets", state_at(1))
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


DATA = Path(__file__).parent / "data"


def _classes_named(payload: bytes) -> set[str]:
    """Every module.name a pickle refers to, as the unpickler will ask for it."""
    named = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            named.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recorder(io.BytesIO(payload)).load()
    return named


def test_a_checkpoint_names_no_class_of_the_service_shell_and_drops_caches(tmp_path):
    pipeline = Pipeline(CONFIG, None, state=StateStore(tmp_path))
    run(pipeline, positioned(0, 150))  # mid-step: confident learning holds the step's probabilities
    assert pipeline.monitors["default"].detector("confident")._scored, "the cache this test is about"
    pipeline.checkpoint()
    payload = StateStore(tmp_path).path("default").read_bytes()[len(MAGIC) + 2 + 32:]
    named = _classes_named(payload)
    assert not [n for n in named if n.startswith("consumer.")], named
    assert "detectors.monitor.LabelMonitor" in named
    assert StateStore(tmp_path).load("default").monitor.detector("confident")._scored == []


def test_a_checkpoint_naming_a_module_outside_the_allowed_ones_is_refused(tmp_path):
    payload = pickle.dumps({"monitor": subprocess.Popen})  # a class the state never holds
    blob = MAGIC + FORMAT_VERSION.to_bytes(2, "big") + hashlib.blake2b(payload, digest_size=32).digest() + payload
    (tmp_path / "x.ckpt").write_bytes(blob)
    with pytest.raises(CorruptStateError, match="may not name subprocess.Popen"):
        StateStore(tmp_path).verify()


def test_a_format_3_checkpoint_of_the_previous_release_is_migrated_and_judges_as_that_release_did(tmp_path):
    # checkpoint-v3-pets.ckpt was written by labelwatch at 8149b56 (format 3: the pickled
    # consumer.pipeline.DatasetState); the -next file holds the records that followed it and the
    # verdicts that release gave them. A detector class that moves without an entry in MOVED
    # fails here, not in a user's restart.
    (tmp_path / StateStore(tmp_path).path("pets").name).write_bytes((DATA / "checkpoint-v3-pets.ckpt").read_bytes())
    expected = json.loads((DATA / "checkpoint-v3-pets-next.json").read_text())
    pipeline = Pipeline(MonitorConfig(learning_step=50, reaudit_delay=20), None, state=StateStore(tmp_path))
    state = pipeline.dataset_state("pets")
    assert state.positions == {("annotations", 0): 240} and state.topic_ids == {}
    assert state.monitor.n_seen == 240
    records_after = [InputRecord(orjson.dumps(line), SourcePosition(topic="annotations", partition=0, offset=240 + i))
                     for i, line in enumerate(expected["records"])]
    got = [(v.sample_id, v.late, v.flagged, v.event_id, v.score) for v in pipeline.process(records_after).verdicts]
    want = [(sid, late, flagged, make_event_id("pets", sid, line["label"], "flagged" if flagged else "clean"), score)
            for (sid, flagged, late, score), line in zip(expected["verdicts"], expected["records"])]
    assert_same_verdicts(got, want)
    pipeline.checkpoint()
    assert StateStore(tmp_path).path("pets").read_bytes()[len(MAGIC):len(MAGIC) + 2] == FORMAT_VERSION.to_bytes(2, "big")
