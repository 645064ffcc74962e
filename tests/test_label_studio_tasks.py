"""Review tasks in a real Label Studio when an import fails after Label Studio saved its tasks.

Label Studio's import is not one transaction, so a failed call may have made its tasks anyway (a
response lost to a timeout or a broken connection, or an error after the save). The bridge makes
no task until it has listed the review project again, and deletes a task made twice for one
review event, never one that holds an answer.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from consumer.labelstudio.bridge import Bridge
from consumer.labelstudio.client import LabelStudio, LabelStudioError
from consumer.labelstudio.mapping import Controls, review_task
from consumer.labelstudio.metrics import BridgeMetrics
from consumer.labelstudio.settings import BridgeSettings
from consumer.tailing import AckedWriter
from consumer.export import read_topic
from kafka_helpers import fresh_topics
from label_studio_server import TOKEN, started
from schemas import Correction, Reason, ReviewEvent

pytestmark = pytest.mark.kafka  # the answers the reconcile finds go to a real broker

CONFIG = '<View><Text name="text" value="$text"/><Choices name="label" toName="text">' \
         '<Choice value="spam"/><Choice value="ham"/></Choices></View>'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = started(tmp_path_factory.mktemp("label-studio"))
    yield server
    server.stop()


class LostAnswer(LabelStudio):
    """Label Studio saves the next import, and its answer never reaches the bridge."""

    lose = 1

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        summary = super().import_tasks(project_id, tasks)
        if self.lose:
            self.lose -= 1
            raise LabelStudioError(f"POST /api/projects/{project_id}/import: timed out")
        return summary


def event(i: int) -> ReviewEvent:
    return ReviewEvent(event_id=f"event-{i}", dataset="mail", sample_id=str(i), label="ham", suggested_label="spam",
                       score=0.9, reasons=[Reason(detector="confident", score=0.9)], text=f"win money {i}")


def bridge_of(server, kafka_broker, unique_name, client_type=LabelStudio):
    review = server.call("POST", "/api/projects/", {"title": unique_name("review"), "label_config": CONFIG})["id"]
    topics = fresh_topics(kafka_broker.bootstrap_servers, unique_name, "reviews", "corrections")
    settings = BridgeSettings(bootstrap_servers=kafka_broker.bootstrap_servers, review_project=review,
                              review_topic=topics["reviews"], corrections_topic=topics["corrections"],
                              label_studio_token=TOKEN)
    writer = AckedWriter(settings.kafka_config(), timeout_ms=10_000, name="test")
    return Bridge(settings, client_type(server.url, TOKEN), writer, BridgeMetrics()), review, topics


def deleted(bridge) -> float:
    return bridge.metrics.registry.get_sample_value("labelwatch_label_studio_duplicate_tasks_deleted_total")


def event_ids(server, project: int) -> list[str]:
    tasks = server.call("GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")
    return sorted(t["data"]["labelwatch_event_id"] for t in tasks)


def test_an_import_that_failed_after_label_studio_saved_it_makes_no_task_twice(server, kafka_broker, unique_name):
    bridge, review, _ = bridge_of(server, kafka_broker, unique_name, LostAnswer)
    for i in range(3):
        bridge._read_event(SimpleNamespace(value=event(i).model_dump_json().encode()))
    assert bridge.needs_listing and bridge.push_tasks() == 0  # not before the first listing
    bridge.reconcile()
    with pytest.raises(LabelStudioError, match="timed out"):
        bridge.push_tasks()
    assert event_ids(server, review) == ["event-0", "event-1", "event-2"]  # saved all the same
    assert bridge.needs_listing and bridge.push_tasks() == 0
    bridge.reconcile()  # lists the three, so nothing waits any more
    assert not bridge.needs_listing and bridge.push_tasks() == 0
    assert bridge.flow()["review_events_waiting"] == 0 and bridge.flow()["review_tasks"] == 3
    bridge._read_event(SimpleNamespace(value=event(3).model_dump_json().encode()))
    assert bridge.push_tasks() == 1
    assert event_ids(server, review) == ["event-0", "event-1", "event-2", "event-3"]
    assert deleted(bridge) == 0


def test_a_task_made_twice_is_deleted_and_the_answered_copy_stays(server, kafka_broker, unique_name):
    bridge, review, topics = bridge_of(server, kafka_broker, unique_name)
    controls = Controls.of(CONFIG)
    for copy in range(2):  # what a retried import that had been saved leaves: two tasks of each event
        server.call("POST", f"/api/projects/{review}/import", [review_task(event(i), controls) for i in range(2)])
    tasks = sorted(server.call("GET", f"/api/projects/{review}/export?exportType=JSON&download_all_tasks=true"),
                   key=lambda t: t["id"])
    answered = next(t for t in reversed(tasks) if t["data"]["labelwatch_event_id"] == "event-1")  # the later copy
    server.call("POST", f"/api/tasks/{answered['id']}/annotations/", {"result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["spam"]}}]})

    bridge.reconcile()
    left = server.call("GET", f"/api/projects/{review}/export?exportType=JSON&download_all_tasks=true")
    assert sorted((t["data"]["labelwatch_event_id"], t["id"]) for t in left) == [
        ("event-0", min(t["id"] for t in tasks if t["data"]["labelwatch_event_id"] == "event-0")),
        ("event-1", answered["id"])]
    assert deleted(bridge) == 2
    assert bridge.flow()["review_tasks"] == 2
    corrections = [Correction.model_validate_json(r.value) for r in read_topic(
        {"bootstrap_servers": [kafka_broker.bootstrap_servers]}, topics["corrections"], expected=2, timeout=5)]
    assert [(c.event_id, c.outcome) for c in corrections] == [("event-1", "confirmed")]

    bridge.reconcile()  # nothing more to delete
    assert deleted(bridge) == 2
    assert len(server.call("GET", f"/api/projects/{review}/export?exportType=JSON&download_all_tasks=true")) == 2
