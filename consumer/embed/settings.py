"""Settings of ``labelwatch embed``: flags and ``LABELWATCH_*`` variables, like ``labelwatch run``.

The consumer, producer and embedding knobs are ``labelwatch run``'s own fields, taken from
:class:`~consumer.settings.Settings` so each is declared once; the topics and the group are the stage's.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, create_model, field_validator

from consumer.settings import KafkaConnection, Settings

SHARED_WITH_RUN = (
    "dlq_topic", "auto_offset_reset", "max_poll_records", "poll_timeout_ms", "fetch_max_wait_ms",
    "max_poll_interval_ms", "session_timeout_ms", "heartbeat_interval_ms", "max_message_bytes", "delivery_timeout_ms",
    *(name for name in Settings.model_fields if name.startswith("embedding_")),
    "metrics_host", "metrics_port", "log_level", "log_format")
"""``labelwatch run``'s settings that mean the same for the embedder (the embedding ones included)."""


class _EmbedStageSettings(KafkaConnection):
    """The stage's own knobs: where raw annotations come from and where embedded samples go."""

    input_topic: str = Field("annotations", description="Topic of raw AnnotatedSamples (text, or a vector already).")
    output_topic: str = Field(
        "annotations-embedded", description="Internal topic of AnnotatedSamples that carry their embedding, keyed "
                                            "by dataset: labelwatch run --input-topic reads it.")
    group_id: str = Field("labelwatch-embed", description="Consumer group of the embedders (never labelwatch run's): "
                                                          "replicas share the input's partitions.")

    @field_validator("log_level", mode="before", check_fields=False)
    @classmethod
    def _level_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


EmbedSettings = create_model(
    "EmbedSettings", __base__=_EmbedStageSettings, __module__=__name__,
    __doc__="Every knob of ``labelwatch embed``. Each field ``x_y`` is the flag ``--x-y`` and ``LABELWATCH_X_Y``.",
    **{name: (Settings.model_fields[name].annotation, Settings.model_fields[name]) for name in SHARED_WITH_RUN})
