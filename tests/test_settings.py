"""Service settings: LABELWATCH_* variables, explicit values, Kafka options and secrets."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr, ValidationError

from consumer.settings import Settings
from detectors import MonitorConfig

PASSWORD = "hunter2-Sup3r-s3cret"
SSL_PASSWORD = "key-passphrase-77"


pytestmark = pytest.mark.usefixtures("clean_env")  # conftest: no LABELWATCH_* variable leaks in


def test_defaults():
    settings = Settings()
    assert settings.n_clusters == 32 and settings.policy == "union"
    assert settings.kafka_config() == {"bootstrap_servers": ["localhost:9092"], "security_protocol": "PLAINTEXT"}


def test_environment_variable_is_picked_up(clean_env):
    clean_env.setenv("LABELWATCH_N_CLUSTERS", "7")
    clean_env.setenv("LABELWATCH_POLICY", "vote:2")
    clean_env.setenv("LABELWATCH_BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    settings = Settings()
    assert settings.n_clusters == 7
    assert settings.policy == "vote:2"
    assert settings.kafka_config()["bootstrap_servers"] == ["k1:9092", "k2:9093"]


def test_environment_variable_name_is_case_insensitive(clean_env):
    clean_env.setenv("labelwatch_n_clusters", "9")
    assert Settings().n_clusters == 9


def test_explicit_values_override_environment(clean_env):
    clean_env.setenv("LABELWATCH_N_CLUSTERS", "7")
    clean_env.setenv("LABELWATCH_SEED", "5")
    settings = Settings(n_clusters=3)
    assert settings.n_clusters == 3
    assert settings.seed == 5


def test_bad_environment_value_is_rejected(clean_env):
    clean_env.setenv("LABELWATCH_N_CLUSTERS", "zero")
    with pytest.raises(ValidationError, match="n_clusters"):
        Settings()


@pytest.mark.parametrize("policy", ["bogus", "vote:0", "majority", ""])
def test_bad_policy_is_rejected(policy):
    with pytest.raises(ValidationError, match="policy"):
        Settings(policy=policy)


def test_bad_policy_from_environment_is_rejected(clean_env):
    clean_env.setenv("LABELWATCH_POLICY", "vote:0")
    with pytest.raises(ValidationError):
        Settings()


def test_policy_is_normalised():
    assert Settings(policy=" Vote:3 ").policy == "vote:3"


@pytest.mark.parametrize(("name", "value"), [
    ("n_clusters", 0), ("min_majority", 0.0), ("min_majority", 1.5), ("user_weight", -0.1),
    ("metrics_port", 70000), ("max_poll_records", 0), ("security_protocol", "TLS"),
    ("sasl_mechanism", "MD5"), ("auto_offset_reset", "middle"),
])
def test_out_of_range_values_are_rejected(name, value):
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: value})


def test_unknown_setting_is_rejected():
    with pytest.raises(ValidationError):
        Settings(n_cluster=3)


def secure_settings(**overrides) -> Settings:
    return Settings(**{
        "bootstrap_servers": "broker-1:9094,broker-2:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "labelwatch",
        "sasl_password": PASSWORD,
        "ssl_cafile": "/etc/ca.pem",
        "ssl_certfile": "/etc/client.pem",
        "ssl_keyfile": "/etc/client.key",
        "ssl_password": SSL_PASSWORD,
        **overrides,
    })


def test_kafka_config_passes_security_options_through():
    config = secure_settings().kafka_config()
    assert config == {
        "bootstrap_servers": ["broker-1:9094", "broker-2:9094"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "labelwatch",
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": "/etc/ca.pem",
        "ssl_certfile": "/etc/client.pem",
        "ssl_keyfile": "/etc/client.key",
        "ssl_password": SSL_PASSWORD,
    }
    assert all(not isinstance(v, SecretStr) for v in config.values())


def test_kafka_config_from_environment(clean_env):
    clean_env.setenv("LABELWATCH_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_env.setenv("LABELWATCH_SASL_MECHANISM", "PLAIN")
    clean_env.setenv("LABELWATCH_SASL_USERNAME", "svc")
    clean_env.setenv("LABELWATCH_SASL_PASSWORD", PASSWORD)
    config = Settings().kafka_config()
    assert config["sasl_plain_password"] == PASSWORD
    assert config["sasl_plain_username"] == "svc"
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_password" not in config


def test_kafka_config_omits_unset_options():
    config = Settings(security_protocol="SSL", ssl_cafile="/ca.pem").kafka_config()
    assert config == {"bootstrap_servers": ["localhost:9092"], "security_protocol": "SSL", "ssl_cafile": "/ca.pem"}


def test_passwords_never_appear_in_repr_or_str():
    settings = secure_settings()
    for text in (repr(settings), str(settings), f"{settings}", settings.model_dump_json(),
                 str(settings.model_dump())):
        assert PASSWORD not in text
        assert SSL_PASSWORD not in text
    assert "labelwatch" in repr(settings)  # the username is not a secret, and repr still says something


def test_passwords_not_in_validation_errors():
    with pytest.raises(ValidationError) as caught:
        secure_settings(n_clusters=-1)
    assert PASSWORD not in str(caught.value) and SSL_PASSWORD not in str(caught.value)


def test_monitor_config_reflects_settings():
    settings = Settings(n_clusters=5, cluster_window=300, min_cluster_size=4, min_majority=0.7,
                        model_confidence=0.66, model_warmup=12, user_weight=0.25, policy="intersection", seed=9)
    assert settings.monitor_config() == MonitorConfig(
        n_clusters=5, cluster_window=300, min_cluster_size=4, min_majority=0.7, model_confidence=0.66,
        model_warmup=12, user_weight=0.25, policy="intersection", seed=9)


def test_monitor_config_window_holds_at_least_k_samples():
    config = Settings(n_clusters=50, cluster_window=10).monitor_config()
    cluster = config.build_detectors()[0]  # a window smaller than K would raise here
    assert cluster.window == 50


def test_monitor_config_builds_detectors_from_settings():
    settings = Settings(n_clusters=6, cluster_window=100, model_warmup=3, seed=4, neighbors_k=7,
                        detectors="cluster,model,neighbors,confident", voters="cluster,confident")
    cluster, model, neighbors, confident = settings.monitor_config().build_detectors()
    assert (cluster.n_clusters, cluster.window, cluster.seed) == (6, 100, 4)
    assert (model.warmup, model.seed) == (3, 4)
    assert (neighbors.k, confident.k, confident.seed) == (7, 7, 4)
    assert settings.monitor_config().voters == ("cluster", "confident")


@pytest.mark.parametrize("field", ["detectors", "voters"])
def test_unknown_detector_names_are_rejected(field):
    with pytest.raises(ValidationError, match="bogus"):
        Settings(**{field: "cluster,bogus"})


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.n_clusters = 2


def test_every_setting_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"--{name.replace('_', '-')}" not in readme]
    assert not missing, f"README's settings table lacks {missing}"
    # and the defaults it shows are the declared ones (a detector's come from its Params)
    def row(name: str):
        return re.search(r"\| `--%s` \| `([^`]*)` \|" % name.replace("_", "-"), readme)

    def as_shown(value) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    shown = {name: row(name) for name in Settings.model_fields}
    wrong = {name: (match.group(1), field.default) for name, field in Settings.model_fields.items()
             if (match := shown[name]) and match.group(1) != as_shown(field.default)}
    assert not wrong, f"README shows other defaults than the settings declare: {wrong}"
    assert sum(match is not None for match in shown.values()) >= 40, "the table's row format changed: update this test"
