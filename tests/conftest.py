"""Shared fixtures. Kafka tests run against a real Tansu broker started here, never a mock."""

from __future__ import annotations

import uuid

import pytest

from consumer.demo.broker import LocalBroker


@pytest.fixture(scope="session")
def kafka_broker():
    """A memory-only Tansu broker on a free loopback port, for the whole test session."""
    with LocalBroker() as broker:
        yield broker


@pytest.fixture
def unique_name():
    """A fresh topic or group name per test, so tests on the shared broker never collide."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"
