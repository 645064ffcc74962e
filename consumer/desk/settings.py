"""Settings of ``labelwatch review``: flags and ``LABELWATCH_*`` variables, like ``labelwatch run``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from consumer.settings import KafkaConnection


class DeskSettings(KafkaConnection):
    """Every knob of the review desk. Each field ``x_y`` is the flag ``--x-y`` and ``LABELWATCH_X_Y``."""

    review_topic: str = Field("label-reviews", description="Topic of ReviewEvents to work (what labelwatch run writes).")
    review_deferred_topic: str | None = Field(
        None, description="Also work the events put aside over the review budget (labelwatch run's deferred topic).")
    corrections_topic: str = Field(
        "label-corrections", description="Where answers go as Corrections; read back to know what is answered.")
    leases_topic: str = Field(
        "label-review-leases", description="Where leases go: an item one reviewer has open is theirs for a while. "
                                           "The desk's internal topic: it creates it when missing (compacted).")
    leases_replication_factor: int = Field(
        1, ge=1, description="Replication factor the desk creates its leases topic with (3 on a production cluster).")
    input_topic: str | None = Field(
        None, description="The annotations topic, read to show the texts of a flagged sample's nearest earlier samples.")
    group_id: str = Field(
        "labelwatch-review-desk", description="Consumer group id of the desk; it commits nothing (every start reads "
                                              "the topics from the beginning). Never labelwatch run's group.")
    http_host: str = Field("0.0.0.0", description="Bind address of the desk's page, API, /metrics and probes.")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the desk; 0 picks a free one.")
    reviewers_file: str | None = Field(None, description="File of reviewers, one reviewer_id:token per line.")
    reviewers: SecretStr | None = Field(None, description="Reviewers as id:token,id:token (instead of a file).")
    session_secret: SecretStr | None = Field(
        None, description="Key that signs session cookies; give every replica the same one. Default: random per start.")
    lease_seconds: int = Field(120, ge=5, le=3600, description="How long an opened item stays leased to its reviewer.")
    delivery_timeout_ms: int = Field(10_000, ge=1_000, description="How long an answer waits for the broker's ack.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", description="Logging level.")
    log_format: Literal["json", "text"] = Field("json", description="One JSON object per log line, or plain text.")
