"""The state directory fills up or turns read-only under a running service.

Chosen behaviour (docs/reliability.md): ``labelwatch run`` exits 1 with one clear log line,
having committed no offset past the last checkpoint it saved; restarted once the directory is
writable again, it replays from that checkpoint and loses nothing. A directory it cannot write
is refused at start, before anything is consumed. The tests run as root and mount a tmpfs.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer

from consumer.export import read_topic
from consumer.state import StateStore
from kafka_helpers import committed, fresh_topics, output_of, start_service, wait_committed
from schemas import SampleVerdict

pytestmark = pytest.mark.kafka


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def produce(bootstrap: str, topic: str, start: int, stop: int) -> None:
    rng = np.random.default_rng(start)
    centers = np.random.default_rng(0).normal(size=(5, 16)) * 3
    which = rng.integers(0, 5, stop - start)
    vectors = centers[which] + rng.normal(size=(stop - start, 16))
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(stop - start):
        message = {"sample_id": f"d{start + i}", "label": str(which[i]),
                   "embedding": [round(float(v), 4) for v in vectors[i]]}
        producer.send(topic, key=message["sample_id"].encode(), value=orjson.dumps(message))
    producer.flush()
    producer.close()


class Service:
    def __init__(self, bootstrap: str, topics: dict[str, str], state_dir: Path, group: str):
        self.bootstrap, self.topics, self.group = bootstrap, topics, group
        self.process = start_service(bootstrap, state_dir, group=group, topics=topics)

    def committed(self) -> int:
        return committed(self.bootstrap, self.group, self.topics["in"], 1)

    def wait_committed(self, n: int, timeout: float) -> None:
        wait_committed(self.process, self.bootstrap, n, partitions=1, timeout=timeout, group=self.group,
                       topic=self.topics["in"])

    def wait_exit(self, timeout: float) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        return code, self.output()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def output(self) -> str:
        return output_of(self.process)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def first_verdict_ids(bootstrap: str, topic: str, n: int) -> set[str]:
    records = read_topic({"bootstrap_servers": bootstrap}, topic, n, timeout=60)
    return {v.sample_id for v in map(SampleVerdict.model_validate_json, (r.value for r in records)) if not v.late}


def saved_position(state_dir: Path, topic: str) -> int:
    state = StateStore(state_dir).load("default")
    return state.positions.get((topic, 0), 0) if state else 0


def test_a_full_state_disk_stops_the_service_uncommitted_and_a_restart_loses_nothing(kafka_broker, unique_name,
                                                                                      tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topics = fresh_topics(bootstrap, unique_name, "in", "reviews", "dlq", "verdicts")
    n = 3000
    produce(bootstrap, topics["in"], 0, n)
    with tmpfs(tmp_path / "state", "512k") as state_dir:
        service = Service(bootstrap, topics, state_dir, "g-full")
        try:
            code, output = service.wait_exit(timeout=180)
        finally:
            service.kill()
        assert code == 1, output[-3000:]
        assert "No space left on device" in output and "No offset past the last saved state was committed" in output
        assert "Traceback" not in output, "one clear line, not a stack trace"
        assert service.committed() <= saved_position(state_dir, topics["in"]), "an offset was committed past the state"
        assert not [p for p in state_dir.iterdir() if ".tmp-" in p.name], "a partial checkpoint was left behind"

        remount(state_dir, "size=256m")  # space returns
        again = Service(bootstrap, topics, state_dir, "g-full")
        try:
            again.wait_committed(n, timeout=180)
            assert again.stop() == 0
        finally:
            again.kill()
    assert len(first_verdict_ids(bootstrap, topics["verdicts"], n)) == n


def test_a_read_only_state_directory_is_refused_at_start_and_stops_a_running_service(kafka_broker, unique_name,
                                                                                     tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topics = fresh_topics(bootstrap, unique_name, "in", "reviews", "dlq", "verdicts")
    produce(bootstrap, topics["in"], 0, 1500)
    with tmpfs(tmp_path / "state", "256m") as state_dir:
        remount(state_dir, "ro")
        refused = Service(bootstrap, topics, state_dir, "g-ro")
        try:
            code, output = refused.wait_exit(timeout=60)
        finally:
            refused.kill()
        assert code != 0 and "is not writable" in output and "Read-only file system" in output, output[-2000:]
        assert refused.committed() == 0, "nothing consumed before the state directory was checked"

        remount(state_dir, "rw")
        service = Service(bootstrap, topics, state_dir, "g-ro")
        try:
            service.wait_committed(1500, timeout=120)
            before = saved_position(state_dir, topics["in"])
            remount(state_dir, "ro")
            produce(bootstrap, topics["in"], 1500, 2500)  # its next checkpoint cannot be written
            code, output = service.wait_exit(timeout=120)
        finally:
            service.kill()
        assert code == 1 and "Read-only file system" in output, output[-3000:]
        assert service.committed() == before == 1500, "nothing committed past the last saved state"

        remount(state_dir, "rw")
        again = Service(bootstrap, topics, state_dir, "g-ro")
        try:
            again.wait_committed(2500, timeout=120)
            assert again.stop() == 0
        finally:
            again.kill()
    assert len(first_verdict_ids(bootstrap, topics["verdicts"], 2500)) == 2500
