"""Helpers shared by the tests that run the real service against a real broker."""

from __future__ import annotations

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

QUICK_GROUP = {"LABELWATCH_MAX_POLL_INTERVAL_MS": "10000", "LABELWATCH_SESSION_TIMEOUT_MS": "6000",
               "LABELWATCH_HEARTBEAT_INTERVAL_MS": "2000", "LABELWATCH_EMBEDDING_PRELOAD": "false"}
"""Environment for `labelwatch run` on a local broker: the group joins in seconds, no model to load."""


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """The sum of the group's committed offsets over the topic's partitions (0 where none)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions))
    finally:
        consumer.close(autocommit=False)


def fresh_topics(bootstrap: str, unique_name, *kinds: str) -> dict[str, str]:
    """One new single-partition topic per kind, with a unique name; returns kind -> name."""
    names = {kind: unique_name(kind) for kind in kinds}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, 1, 1) for name in names.values()])
    finally:
        admin.close()
    return names


def start_service(bootstrap: str, state_dir, *, group: str = "g", topics: dict[str, str] | None = None,
                  flags: tuple[str, ...] = ()):
    """``labelwatch run`` in a child process, as an operator starts it: quick group timings,
    checkpoints every 500 ms, polls of 200, a state dir and a verdict topic (default topics
    ``in``, ``reviews``, ``dlq``, ``verdicts``), then any other ``flags``. Its output goes to a temporary file (a pipe
    nobody reads could fill and block it): :func:`output_of` reads it."""
    import os
    import subprocess
    import sys
    import tempfile

    topics = {"in": "in", "reviews": "reviews", "dlq": "dlq", "verdicts": "verdicts", **(topics or {})}
    env = {**os.environ, **QUICK_GROUP, "LABELWATCH_CHECKPOINT_INTERVAL_MS": "500", "LABELWATCH_MAX_POLL_RECORDS": "200"}
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", bootstrap, "--input-topic", topics["in"],
         "--review-topic", topics["reviews"], "--dlq-topic", topics["dlq"], "--verdict-topic", topics["verdicts"],
         "--group-id", group, "--metrics-port", "0", "--state-dir", str(state_dir), "--log-format", "text", *flags],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log = log
    return process


def output_of(process) -> str:
    """What a process from :func:`start_service` printed so far."""
    process.log.seek(0)
    return process.log.read().decode(errors="replace")


def wait_committed(service, bootstrap: str, n: int, *, partitions: int, timeout: float, group: str = "g",
                   topic: str = "in") -> None:
    """Wait until the group committed ``n`` offsets of ``topic``; fail if the service dies or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while committed(bootstrap, group, topic, partitions) < n:
        assert service.poll() is None, "the service died:\n" + output_of(service)[-4000:]
        assert time.monotonic() < deadline, f"fewer than {n} offsets committed after {timeout} s"
        time.sleep(0.5)


def wait_for(check, what: str, timeout: float, *processes):
    """``check()``'s first truthy value, polled every half second; fail if one of ``processes`` dies or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for process in processes:
            assert process.poll() is None, f"a process died waiting for {what}:\n{output_of(process)[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n" + "\n---\n".join(
            output_of(p)[-3000:] for p in processes)
        time.sleep(0.5)
