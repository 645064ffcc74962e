"""Service settings: read once at the entry point, from flags and ``LABELWATCH_*`` variables."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from detectors import REGISTRY, Combiner, MonitorConfig, parameters
from detectors.config import MONITOR_DEFAULTS

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# small batches pad less: 16 beats 64 by 2x on polls of 100 texts and by over a quarter on polls of 500
# (bench/embedding_batch.py, docs/benchmarks.md)
DEFAULT_EMBEDDING_BATCH_SIZE = 16
EmbeddingBackend = Literal["torch", "onnx", "onnx-int8"]
# onnx: 2.15x torch's texts/s on reviews with the same embeddings (to 1e-5), so the same quality table. onnx-int8
# (4.6x) moved seed 0's text F1 by up to 0.028 and cost an AUPRC target there, though within 0.01 on a five-seed
# mean: a flag costs a reviewer's time, so it is opt-in (bench/text_backends.py, docs/benchmarks.md)
DEFAULT_EMBEDDING_BACKEND: EmbeddingBackend = "onnx"


class KafkaConnection(BaseSettings):
    """How to reach the brokers: shared by ``labelwatch run`` and ``labelwatch review``."""

    model_config = SettingsConfigDict(env_prefix="LABELWATCH_", frozen=True, extra="forbid")

    bootstrap_servers: str = Field("localhost:9092", description="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].")
    # Kafka security, passed through to kafka-python
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None

    def kafka_config(self) -> dict[str, Any]:
        """Connection and security options shared by the consumer and producer."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": self.ssl_password.get_secret_value() if self.ssl_password else None,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config


class _ServiceSettings(KafkaConnection):
    """Every knob of labelwatch but the detectors' parameters, which :class:`Settings` adds from the registry."""

    # Kafka topics and group
    input_topic: str = Field("annotations", description="Topic of AnnotatedSample messages.")
    review_topic: str = Field("label-reviews", description="Topic that receives ReviewEvents.")
    dlq_topic: str = Field("annotations-dlq", description="Dead-letter topic for rejected input.")
    verdict_topic: str | None = Field(
        None, description="Optional topic with one SampleVerdict per processed sample, flagged or not.")
    review_routes: str = Field(
        "", description="Route review events: priority:N=TOPIC or detector:NAME=TOPIC, comma-separated, first match wins.")
    review_budget: int = Field(
        0, ge=0, description="Review events per budget window sent for review (most urgent first); 0 is unlimited.")
    review_budget_window_s: int = Field(3600, ge=1, description="Length of the review-budget window, in seconds.")
    review_deferred_topic: str | None = Field(
        None, description="Where events over the budget go, retrievable later; default: the review topic + '-deferred'.")
    corrections_topic: str | None = Field(
        None, description="Optional topic of reviewers' Corrections (confirmed with a corrected label, or false alarm).")
    group_id: str = Field("labelwatch", description="Kafka consumer group id.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new group starts reading.")
    max_poll_records: int = Field(500, ge=1, description="Micro-batch size: records per poll.")
    poll_timeout_ms: int = Field(500, ge=1, description="How long one poll waits for records.")
    fetch_max_wait_ms: int = Field(
        100, ge=0, le=10_000,
        description="Longest a fetch waits at the broker for data; brokers that hold a fetch this long even when "
                    "records arrive add it to every record's latency.")
    max_poll_interval_ms: int = Field(
        300_000, ge=1_000, description="Longest gap between polls before the group evicts this consumer.")
    session_timeout_ms: int = Field(10_000, ge=1_000, description="Group session timeout.")
    heartbeat_interval_ms: int = Field(3_000, ge=100, description="Group heartbeat interval.")
    max_message_bytes: int = Field(1_048_576, ge=1, description="Larger input records go to the DLQ.")
    delivery_timeout_ms: int = Field(
        120_000, ge=1_000, description="How long the producer keeps retrying one output record before it fails.")
    delivery_attempts: int = Field(
        5, ge=1, description="Times a batch's failed outputs are sent again before the service stops uncommitted.")
    delivery_backoff_ms: int = Field(
        1_000, ge=0, description="Wait before the first resend of failed outputs; doubles each attempt, up to 30 s.")
    # Durable state
    state_dir: str | None = Field(None, description="Directory of per-dataset detector checkpoints.")
    fresh_state: bool = Field(False, description="Set existing checkpoints aside (never deleted) and start empty.")
    checkpoint_interval_ms: int = Field(
        5_000, ge=0, description="How often to save state and commit offsets; 0 does it after every batch.")
    # Embedding
    embedding_model: str = Field(
        DEFAULT_EMBEDDING_MODEL,
        description="sentence-transformers model name or local path; the default ships offline.")
    embedding_batch_size: int = Field(
        DEFAULT_EMBEDDING_BATCH_SIZE, ge=1,
        description="Texts per forward pass of the embedding model (backend torch; the onnx backends run each text "
                    "alone, one per core at a time).")
    embedding_device: str = Field("cpu", description="Torch device for the embedding model (backend torch only).")
    embedding_backend: EmbeddingBackend = Field(
        DEFAULT_EMBEDDING_BACKEND,
        description="What runs the embedding model: torch (sentence-transformers), onnx (onnxruntime, fp32) or "
                    "onnx-int8 (onnxruntime, weights quantised to int8).")
    embedding_threads: int = Field(
        0, ge=0, description="CPU threads of the embedding model; 0 uses every core this process may run on. One per "
                             "labelwatch embed replica lets replicas share a machine without contending.")
    embedding_cache_dir: str | None = Field(
        None, description="Where the onnx backends keep the model's one-off ONNX export; default "
                          "$XDG_CACHE_HOME/labelwatch/onnx.")
    embedding_preload: bool = Field(
        True, description="Load the embedding model at start (readiness waits for it); false loads it on the first text.")
    # Detectors
    detectors: str = Field(",".join(MONITOR_DEFAULTS["detectors"]),
                           description=f"Detectors to run, comma-separated: {', '.join(REGISTRY)}.")
    voters: str = Field(",".join(MONITOR_DEFAULTS["voters"]),
                        description="Detectors (and evidence: consensus, the label most of a sample's annotators gave) "
                                    "whose verdicts the policy combines, comma-separated.")
    policy: str = Field(MONITOR_DEFAULTS["policy"],
                        description="How the voters' verdicts combine: union, intersection or vote:K.")
    reaudit_window: int = Field(MONITOR_DEFAULTS["reaudit_window"], ge=1,
                                description="Recent samples kept for retrospective re-audit.")
    reaudit_delay: int = Field(MONITOR_DEFAULTS["reaudit_delay"], ge=0,
                               description="Newer samples to wait for before re-auditing a sample.")
    learning_step: int = Field(
        MONITOR_DEFAULTS["learning_step"], ge=1,
        description="Samples per learning step; verdicts never depend on how polls cut the stream.")
    reaudit_slice: int = Field(
        250, ge=0, description="Queued re-audits run per idle poll; batches also run a share each (a step queues ~3 "
                               "per sample learned). 0 runs them all with the batch that completes the step.")
    seed: int = Field(MONITOR_DEFAULTS["seed"], description="Seeds every detector.")
    # Metrics and logs
    metrics_host: str = Field(
        "0.0.0.0", description="Bind address of the HTTP server: /metrics, /healthz, /readyz and the data endpoints.")
    metrics_port: int = Field(9108, ge=0, le=65535, description="Port of that server; 0 turns it off.")
    api_token: SecretStr | None = Field(
        None, description="Bearer token that the data endpoints /annotators and /clusters require (they reveal sample "
                          "and annotator ids); without one they answer 401. /metrics and the probes stay open.")
    annotator_metrics_top: int = Field(
        0, ge=0, le=100, description="Publish the error rate of this many worst annotators as metrics; 0 publishes none.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Logging level.")
    log_format: Literal["json", "text"] = Field("json", description="One JSON object per log line, or plain text.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("review_routes")
    @classmethod
    def _routes_parse(cls, value: str) -> str:
        from consumer.routing import parse_routes

        parse_routes(value)
        return value

    @field_validator("policy")
    @classmethod
    def _policy_parses(cls, value: str) -> str:
        return str(Combiner.parse(value))

    @model_validator(mode="after")
    def _onnx_runs_on_the_cpu(self):
        if self.embedding_backend != "torch" and self.embedding_device != "cpu":
            raise ValueError(f"embedding_device {self.embedding_device!r} needs embedding_backend torch; "
                             f"the {self.embedding_backend} backend runs on the CPU")
        return self

    @model_validator(mode="after")
    def _detectors_are_known(self):
        self.monitor_config()  # raises ValueError naming the unknown detector or voter
        return self

    def monitor_config(self) -> MonitorConfig:
        """The detectors' configuration, shared by every dataset."""
        return MonitorConfig(
            detectors=_names(self.detectors), voters=_names(self.voters), policy=self.policy,
            reaudit_window=self.reaudit_window, reaudit_delay=min(self.reaudit_delay, self.reaudit_window),
            learning_step=self.learning_step, seed=self.seed,
            **{name: getattr(self, name) for name in parameters()})

def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


Settings = create_model(
    "Settings", __base__=_ServiceSettings, __module__=__name__,
    __doc__="Every knob of labelwatch. Each field ``x_y`` is the flag ``--x-y`` and the variable ``LABELWATCH_X_Y``; "
            "the detectors' parameters come from their declarations (:func:`detectors.parameters`).",
    **{name: (field.annotation, field) for name, field in parameters().items()})
