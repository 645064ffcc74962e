"""The service's one HTTP server: open metrics and probes, reports behind a bearer token, 404 elsewhere."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from consumer.health import Health, serve
from consumer.metrics import Metrics

TOKEN = "t0ken-for-tests"  # noqa: S105 - a test credential
REPORT = [{"annotator_id": "annotator-7", "dataset": "digits", "estimated_error_rate": 0.4}]


@pytest.fixture
def health() -> Health:
    return Health(stall_after_s=60)


@pytest.fixture
def server(health):
    server = serve(Metrics(), health, 0, "127.0.0.1", reports={"/annotators": lambda: REPORT}, api_token=TOKEN)
    yield server
    server.shutdown()
    server.server_close()


def get(server, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of ``GET path``, errors included."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_metrics_are_open(server):
    status, _, body = get(server, "/metrics")
    assert status == 200 and "labelwatch_build_info" in body.decode()
    assert get(server, "/")[0] == 200


def test_probes_follow_the_health_object(server, health):
    assert get(server, "/healthz")[0] == 200
    status, _, body = get(server, "/readyz")
    assert status == 503 and json.loads(body)["model_loaded"] is False
    health.model_ready = True
    health.polled(broker_reachable=True, assigned=3)
    status, _, body = get(server, "/readyz")
    assert status == 200 and json.loads(body)["assigned_partitions"] == 3
    health.stall_after_s = 0  # the last poll is now too long ago
    status, _, body = get(server, "/healthz")
    assert status == 503 and json.loads(body)["status"] == "unavailable"


def test_a_report_without_a_token_is_refused(server):
    status, headers, body = get(server, "/annotators")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in json.loads(body)["error"]
    assert b"annotator-7" not in body


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN])
def test_a_report_with_a_wrong_token_is_refused(server, authorization):
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/annotators",
                                     headers={"Authorization": authorization})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"annotator-7" not in refused.value.read()


def test_a_report_with_the_token_is_served(server):
    status, headers, body = get(server, "/annotators", TOKEN)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == REPORT


@pytest.mark.parametrize("configured", [None, ""])
def test_without_a_configured_token_reports_are_refused_to_everyone(health, configured):
    server = serve(Metrics(), health, 0, "127.0.0.1", reports={"/annotators": lambda: REPORT}, api_token=configured)
    try:
        for token in (None, "", "anything"):
            status, headers, body = get(server, "/annotators", token)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert "LABELWATCH_API_TOKEN" in json.loads(body)["error"]
        assert get(server, "/metrics")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path", ["/nope", "/annotators/", "/clusters", "/metrics/extra"])
def test_unknown_paths_are_not_found(server, path):
    status, _, body = get(server, path, TOKEN)
    assert status == 404 and "no such endpoint" in json.loads(body)["error"]


def test_after_shutdown_the_port_refuses_connections(health):
    server = serve(Metrics(), health, 0, "127.0.0.1")
    port = server.server_port
    assert get(server, "/healthz")[0] == 200
    server.shutdown()
    server.server_close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
