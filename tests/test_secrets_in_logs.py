"""Credentials reach kafka-python and nothing else: not logs at any level, not error messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from consumer.service import LabelwatchService, consumer_options
from consumer.settings import Settings

PASSWORD = "s3cr3t-sasl-Pa55"  # noqa: S105 - a test credential
SSL_PASSWORD = "s3cr3t-key-Pa55"  # noqa: S105
API_TOKEN = "s3cr3t-api-t0ken"  # noqa: S105


def secure_env(tmp_path) -> dict[str, str]:
    cafile = tmp_path / "ca.pem"
    cafile.write_text("not a certificate\n")
    return {"LABELWATCH_SECURITY_PROTOCOL": "SASL_SSL", "LABELWATCH_SASL_MECHANISM": "SCRAM-SHA-512",
            "LABELWATCH_SASL_USERNAME": "labelwatch", "LABELWATCH_SASL_PASSWORD": PASSWORD,
            "LABELWATCH_SSL_CAFILE": str(cafile), "LABELWATCH_SSL_PASSWORD": SSL_PASSWORD,
            "LABELWATCH_API_TOKEN": API_TOKEN}


def test_sasl_ssl_scram_settings_reach_the_kafka_clients(tmp_path, monkeypatch):
    for name, value in secure_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    settings = Settings(bootstrap_servers="127.0.0.1:1")
    options = consumer_options(settings)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "labelwatch" and options["sasl_plain_password"] == PASSWORD
    assert options["ssl_password"] == SSL_PASSWORD and options["enable_auto_commit"] is False
    # the producer is built from the same path (it does not connect until it sends)
    producer = LabelwatchService(settings, _NoPipeline())._producer(api_version=(2, 8, 0), max_block_ms=100)
    try:
        assert producer.config["security_protocol"] == "SASL_SSL"
        assert producer.config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert producer.config["sasl_plain_password"] == PASSWORD
        assert producer.config["ssl_cafile"] == os.environ["LABELWATCH_SSL_CAFILE"]
    finally:
        producer.close(timeout=1)


class _NoPipeline:
    metrics = None


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_credentials_never_reach_the_logs_of_a_failing_service(tmp_path, level):
    env = {**os.environ, **secure_env(tmp_path), "LABELWATCH_LOG_LEVEL": level, "LABELWATCH_EMBEDDING_PRELOAD": "false"}
    service = subprocess.Popen([sys.executable, "-m", "consumer", "run", "--bootstrap-servers", "127.0.0.1:1",
                                "--metrics-port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = service.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        service.send_signal(signal.SIGTERM)
        try:
            output, _ = service.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            output, _ = service.communicate()
    text = output.decode(errors="replace")
    assert "connecting to 127.0.0.1:1 (SASL_SSL)" in text, "the service logged nothing, so the check proves nothing"
    assert PASSWORD not in text and SSL_PASSWORD not in text and API_TOKEN not in text
    assert service.returncode == 128 + signal.SIGTERM, "SIGTERM while connecting stops the service at once"
