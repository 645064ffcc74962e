"""Settings of ``labelwatch label-studio``: flags and ``LABELWATCH_*`` variables, like ``labelwatch run``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from consumer.settings import KafkaConnection


class BridgeSettings(KafkaConnection):
    """Every knob of the Label Studio bridge. Each field ``x_y`` is the flag ``--x-y`` and ``LABELWATCH_X_Y``."""

    label_studio_url: str = Field("http://localhost:8080", description="Base URL of the Label Studio instance.")
    label_studio_token: SecretStr | None = Field(
        None, description="Label Studio API token (Authorization: Token ...); a secret, best given as the variable.")
    input_topic: str = Field("annotations", description="Where annotations go, as AnnotatedSamples (labelwatch run's input).")
    review_topic: str = Field("label-reviews", description="ReviewEvents to turn into review tasks.")
    corrections_topic: str = Field("label-corrections", description="Where reviewers' answers go, as Corrections.")
    dlq_topic: str = Field("annotations-dlq", description="Where webhook payloads that cannot be read go, with the reason.")
    source_project: int | None = Field(None, ge=1, description="The labelling project whose annotations go in (none: off).")
    review_project: int | None = Field(None, ge=1, description="The project of review tasks (none: off).")
    text_field: str = Field("text", description="The task data field holding the text.")
    id_field: str | None = Field(None, description="A task data field to use as sample_id (default: the task id).")
    image_field: str = Field(
        "image", description="The task data field holding an image the review desk shows (an http(s) address or a "
                             "raster data: URI; anything else is ignored).")
    webhook_host: str = Field("0.0.0.0", description="Bind address of the webhook receiver, /metrics and the probes.")
    webhook_port: int = Field(8091, ge=0, le=65535, description="Port of the webhook receiver; 0 picks a free one.")
    public_url: str | None = Field(
        None, description="The URL Label Studio reaches the bridge at (default http://WEBHOOK_HOST:WEBHOOK_PORT).")
    group_id: str = Field("labelwatch-label-studio", description="Consumer group id of the bridge; it commits nothing.")
    reconcile_interval_s: float = Field(
        30.0, gt=0, description="How often both projects are compared with the topics, to catch what a webhook missed.")
    delivery_timeout_ms: int = Field(10_000, ge=1_000, description="How long a write waits for the broker's ack.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", description="Logging level.")
    log_format: Literal["json", "text"] = Field("json", description="One JSON object per log line, or plain text.")
