"""A real Prometheus (Debian's package) scrapes a running ``labelwatch run`` and answers for its metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from consumer.demo.broker import free_port

pytestmark = pytest.mark.kafka


def query(port: int, promql: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_labelwatch_and_reads_its_metrics_back(kafka_broker, unique_name, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: apt-get install -y prometheus (make test does it)"
    bootstrap = kafka_broker.bootstrap_servers
    topic, group = unique_name("in"), unique_name("group")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(30):
        producer.send(topic, orjson.dumps({"sample_id": f"p{i}", "label": "ab"[i % 2], "embedding": [i % 2, 1.0]}))
    producer.flush()
    producer.close()

    metrics_port, prometheus_port = free_port(), free_port()
    env = {**os.environ, "LABELWATCH_EMBEDDING_PRELOAD": "false", "LABELWATCH_SESSION_TIMEOUT_MS": "6000",
           "LABELWATCH_HEARTBEAT_INTERVAL_MS": "2000", "LABELWATCH_MAX_POLL_INTERVAL_MS": "10000"}
    service = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", bootstrap, "--input-topic", topic,
         "--group-id", group, "--review-topic", unique_name("reviews"), "--dlq-topic", unique_name("dlq"),
         "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: labelwatch\n"
                      f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
    server = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, consumed = time.monotonic() + 90, []
        while not consumed or float(consumed[0]["value"][1]) < 30:
            assert service.poll() is None and server.poll() is None, "labelwatch or prometheus exited"
            assert time.monotonic() < deadline, f"Prometheus never saw the 30 consumed samples: {consumed}"
            time.sleep(1)
            try:
                consumed = query(prometheus_port, 'labelwatch_samples_consumed_total{job="labelwatch"}')
            except OSError:  # Prometheus still starting
                consumed = []
        info = query(prometheus_port, "labelwatch_build_info")
        assert info and info[0]["metric"]["job"] == "labelwatch" and info[0]["value"][1] == "1"
        assert query(prometheus_port, 'up{job="labelwatch"}')[0]["value"][1] == "1"
    finally:
        for process in (service, server):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
