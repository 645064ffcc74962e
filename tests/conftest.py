"""Shared fixtures. Kafka tests run against a real Tansu broker started here, never a mock."""

from __future__ import annotations

import os
import uuid

import pytest

from consumer.demo.broker import LocalBroker


@pytest.fixture(scope="session")
def kafka_broker():
    """A memory-only Tansu broker on a free loopback port, for the whole test session."""
    with LocalBroker() as broker:
        yield broker


@pytest.fixture
def clean_env(monkeypatch):
    """No LABELWATCH_* variable of the machine running the tests leaks in; returns ``monkeypatch``."""
    for name in list(os.environ):
        if name.upper().startswith("LABELWATCH_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def unique_name():
    """A fresh topic or group name per test, so tests on the shared broker never collide."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


def pytest_collection_modifyitems(items):
    """A test that uses the broker is a ``kafka`` test, marked or not: ``make check`` leaves them all out."""
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
