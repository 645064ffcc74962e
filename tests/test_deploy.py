"""Static checks of deploy/: compose file, Dockerfile, Grafana dashboard, Helm chart, sample producer.

No Docker and no cluster here. What runs for real: the service's own /metrics exposition (every
metric a dashboard panel queries must be in it), the settings model (every LABELWATCH_ variable
named under deploy/ must be a field, and every value given must validate), Helm's own renderer
and linter (the Go Helm v4 SDK, through helm-python-sdk), and the sample producer against the
JSON schema and, in the kafka-marked test, against the real Tansu broker.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shlex
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from consumer.health import Health, serve
from consumer.metrics import Metrics
from consumer.desk.metrics import DeskMetrics
from consumer.desk.settings import DeskSettings
from consumer.embed.metrics import EmbedMetrics
from consumer.embed.settings import EmbedSettings
from consumer.labelstudio.settings import BridgeSettings
from consumer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "labelwatch.json"
CHART = DEPLOY / "helm" / "labelwatch"
PRODUCER = DEPLOY / "producer" / "produce_samples.py"
SAMPLE_SCHEMA = ROOT / "schemas" / "json" / "annotated_sample.schema.json"

ENV_NAME = re.compile(r"\bLABELWATCH_[A-Z0-9_]*[A-Z0-9]\b")
TOPICS = {"annotations": 3, "label-reviews": None, "annotations-dlq": None, "label-verdicts": None,
          "label-corrections": None}
DESK_TOPICS = {"LABELWATCH_REVIEW_TOPIC": "label-reviews", "LABELWATCH_CORRECTIONS_TOPIC": "label-corrections",
               "LABELWATCH_LEASES_TOPIC": "label-review-leases", "LABELWATCH_INPUT_TOPIC": "annotations"}


# ---------------------------------------------------------------- helpers


def settings_env_names() -> set[str]:
    """The LABELWATCH_ variable of every field of the real settings models: the service's, the desk's, the
    embedder's and the Label Studio bridge's."""
    return {f"LABELWATCH_{name.upper()}" for name in (*Settings.model_fields, *DeskSettings.model_fields,
                                                      *EmbedSettings.model_fields, *BridgeSettings.model_fields)}


def settings_from_env(env: dict[str, str]) -> Settings:
    """Validate ``env`` (LABELWATCH_ names and string values) with the settings model."""
    return Settings(**{name.removeprefix("LABELWATCH_").lower(): value for name, value in env.items()})


def image_is_pinned(image: str) -> bool:
    """``repo[:tag][@digest]`` names an explicit version: a digest, or a tag other than latest."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]  # a registry host may carry a port: localhost:5000/x
    if ":" not in last:
        return False
    tag = last.rsplit(":", 1)[1]
    return bool(tag) and tag != "latest" and "{" not in tag and "$" not in tag


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                "offset", "bool", "inf", "nan", "atan2",
                # aggregation operators, which may be followed by a by/without clause instead of "("
                "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                "topk", "quantile", "limitk", "limit_ratio"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    expr = re.sub(r"\{[^{}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\[\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r"\1", expr)
    expr = re.sub(r"\boffset\s+-?[0-9a-z]+", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def exposed_metric_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition can produce, from HELP/TYPE lines and samples."""
    names = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            parts = line.split()
            name = parts[2]
            names.add(name)
            kind = parts[3] if line.startswith("# TYPE ") and len(parts) > 3 else None
            if kind == "histogram":
                names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
            elif kind == "summary":
                names |= {name + s for s in ("_sum", "_count", "_created")}
            elif kind == "counter":
                base = name.removesuffix("_total")
                names |= {base + "_total", base + "_created"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    """Metric names from the service's real /metrics endpoint, served by its HTTP server on a free port."""
    server = serve(Metrics(), Health(stall_after_s=60), 0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    names = exposed_metric_names(text)
    assert "labelwatch_build_info" in names, text[:500]
    names |= exposed_metric_names(generate_latest(DeskMetrics().registry).decode())  # the review desk
    return names | exposed_metric_names(generate_latest(EmbedMetrics().registry).decode())  # labelwatch embed


@pytest.fixture(scope="module")
def helm():
    try:
        import helm_python
    except ImportError:  # a dev dependency: missing means the environment is wrong, not that the chart is fine
        pytest.fail("helm_python not importable: `pip install helm-python-sdk==0.2.2` (Helm's Go SDK, "
                    "used to lint and render deploy/helm/labelwatch)")
    return helm_python


def render(helm, values: dict | None = None) -> dict[str, list[dict]]:
    """Rendered manifests by kind, parsed as YAML (every document must parse)."""
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="lw", namespace="ops")
    by_kind: dict[str, list[dict]] = {}
    for path, text in manifests.items():
        if path.endswith(".txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def only(by_kind: dict, kind: str) -> dict:
    assert len(by_kind.get(kind, [])) == 1, f"expected one {kind}, got {list(by_kind)}"
    return by_kind[kind][0]


# ---------------------------------------------------------------- the helpers can fail


def test_helpers_reject_what_they_should():
    assert not image_is_pinned("python")
    assert not image_is_pinned("grafana/grafana:latest")
    assert not image_is_pinned("localhost:5000/labelwatch")
    assert image_is_pinned("localhost:5000/labelwatch:0.1.0")
    assert image_is_pinned("apache/kafka@sha256:" + "0" * 64)
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, job) (rate(foo_bucket{job=~"$job",le!="x"}[5m] offset 1d))) '
        '/ on (job) group_left (version) bar and up == 1') == {"foo_bucket", "bar", "up"}
    text = "# HELP a_total A.\n# TYPE a_total counter\n# HELP h H.\n# TYPE h histogram\n"
    assert {"a_total", "a_created", "h_bucket", "h_count"} <= exposed_metric_names(text)
    assert "nope" not in exposed_metric_names(text)
    with pytest.raises(Exception):
        settings_from_env({"LABELWATCH_SECURITY_PROTOCOL": "TELNET"})


# ---------------------------------------------------------------- docker-compose


def test_compose_has_the_stack():
    services = compose()["services"]
    assert {"kafka", "kafka-init", "labelwatch", "producer", "prometheus", "grafana"} <= set(services)
    lw = services["labelwatch"]
    assert lw["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert "/healthz" in " ".join(lw["healthcheck"]["test"])
    assert lw["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / lw["build"]["context"] / lw["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert any(str(v).endswith(":/var/lib/labelwatch") for v in lw["volumes"])
    producer = services["producer"]
    assert producer["image"] == lw["image"]
    assert producer["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_compose_topics_match_the_service():
    services = compose()["services"]
    script = " ".join(services["kafka-init"]["command"])
    created = dict(re.findall(r"\b([a-z][a-z-]*):(\d+)\b", script))
    assert "kafka-topics.sh" in script and "--create" in script
    assert services["kafka-init"]["image"] == services["kafka"]["image"]
    for topic, partitions in TOPICS.items():
        assert topic in created, f"kafka-init does not create {topic}"
        if partitions:
            assert int(created[topic]) == partitions
    env = services["labelwatch"]["environment"]
    assert {env[k] for k in ("LABELWATCH_REVIEW_TOPIC", "LABELWATCH_DLQ_TOPIC", "LABELWATCH_VERDICT_TOPIC",
                             "LABELWATCH_CORRECTIONS_TOPIC")} | {"annotations"} == set(TOPICS)
    # the producer writes raw annotations, the embedders embed them for the judge
    embedder = services["embedder"]["environment"]
    assert embedder["LABELWATCH_OUTPUT_TOPIC"] == env["LABELWATCH_INPUT_TOPIC"] in created
    assert embedder["LABELWATCH_GROUP_ID"] != env["LABELWATCH_GROUP_ID"]
    assert int(created[embedder["LABELWATCH_INPUT_TOPIC"]]) >= services["embedder"]["deploy"]["replicas"]
    assert services["embedder"]["command"] == ["embed"]
    EmbedSettings(**{k.removeprefix("LABELWATCH_").lower(): str(v) for k, v in embedder.items()})
    desk = services["review-desk"]["environment"]
    assert {k: desk[k] for k in DESK_TOPICS} == DESK_TOPICS and set(DESK_TOPICS.values()) <= set(created)
    assert services["producer"]["environment"]["PRODUCER_TOPIC"] == embedder["LABELWATCH_INPUT_TOPIC"]
    # the bridge writes raw annotations beside the producer, and answers where the judge reads them
    bridge = {k: v for k, v in services["label-studio-bridge"]["environment"].items()}
    assert bridge["LABELWATCH_INPUT_TOPIC"] == embedder["LABELWATCH_INPUT_TOPIC"]
    assert bridge["LABELWATCH_CORRECTIONS_TOPIC"] == env["LABELWATCH_CORRECTIONS_TOPIC"]
    assert {bridge[k] for k in ("LABELWATCH_REVIEW_TOPIC", "LABELWATCH_DLQ_TOPIC")} <= set(created)
    assert services["label-studio-bridge"]["command"] == ["label-studio"]
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_compose_mounts_and_scrape_target_line_up():
    services = compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] if job["job_name"] == "labelwatch"
               for sc in job["static_configs"] for t in sc["targets"]]
    env = services["labelwatch"]["environment"]
    assert targets == [f"labelwatch:{env['LABELWATCH_METRICS_PORT']}"]
    assert f"{env['LABELWATCH_METRICS_PORT']}:{env['LABELWATCH_METRICS_PORT']}" in services["labelwatch"]["ports"]
    # LabelwatchDown watches every job scraping a judge or an embedder; LabelwatchComponentDown every job
    # scraping the other labelwatch services (the desk, the bridge)
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "labelwatch.rules.yml").read_text())

    def watched_by(alert: str) -> str:
        rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert)
        return re.search(r'job=~"([^"]+)"', rule["expr"]).group(1)

    def running(*commands) -> set[str]:
        return {name for name, service in services.items()
                if service.get("image", "").startswith("labelwatch:") and service.get("command") in commands}

    judging, others = running(None, ["embed"]), running(["review"], ["label-studio"])
    assert judging == {"labelwatch", "embedder"} and others == {"review-desk", "label-studio-bridge"}
    watchers = {"LabelwatchDown": (judging, watched_by("LabelwatchDown")),
                "LabelwatchComponentDown": (others, watched_by("LabelwatchComponentDown"))}
    for job in prom["scrape_configs"]:
        hosts = {t.split(":")[0] for sc in job.get("static_configs", []) for t in sc["targets"]}
        hosts |= {n for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
        for alert, (scraped, watched) in watchers.items():
            if hosts & scraped:
                assert re.fullmatch(watched, job["job_name"]), f"{alert} does not watch job {job['job_name']}"
    # Grafana's provisioning points at the folder compose mounts the dashboards into.
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/labelwatch.yml").read_text())
    mounted = {str(v).split(":")[1] for v in services["grafana"]["volumes"] if str(v).startswith("./grafana/dashboards")}
    assert {p["options"]["path"] for p in provider["providers"]} == mounted
    # The producer runs the script the Dockerfile copies into the image.
    copied = [rest.split()[-1] for word, rest in dockerfile_instructions()
              if word == "COPY" and "produce_samples.py" in rest]
    assert copied and services["producer"]["entrypoint"][-1] == copied[0]


# ---------------------------------------------------------------- images are pinned


def test_every_image_is_pinned(helm):
    images = {f"compose {name}": s["image"] for name, s in compose()["services"].items() if "image" in s}
    assert set(images) == {f"compose {name}" for name in compose()["services"]}, "a service without image:"
    froms = [rest.split()[0] for word, rest in dockerfile_instructions() if word == "FROM"]
    assert froms
    images.update({f"Dockerfile FROM {i}": image for i, image in enumerate(froms)})
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    images["helm values"] = f"{values['image']['repository']}:{values['image']['tag']}"
    for kind, docs in render(helm).items():
        for doc in docs:
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                images[f"helm {kind} {container['name']}"] = container["image"]
    loose = {where: image for where, image in images.items() if not image_is_pinned(image)}
    assert not loose, f"images without an explicit version: {loose}"
    assert not re.search(r"image:\s*\S+:latest\b", "\n".join(p.read_text() for p in DEPLOY.rglob("*.y*ml")))


# ---------------------------------------------------------------- LABELWATCH_ variables are settings


def test_every_labelwatch_variable_under_deploy_is_a_setting(helm):
    named: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            for name in ENV_NAME.findall(path.read_text(errors="ignore")):
                named.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    for values in (FULL_VALUES, COMPONENT_VALUES):
        for kind in ("ConfigMap", "Secret"):
            for doc in render(helm, values)[kind]:
                for name in doc["data"]:
                    named.setdefault(name, set()).add(f"rendered {kind}")
    assert len(named) >= 10, named
    unknown = {name: sorted(where) for name, where in named.items() if name not in settings_env_names()}
    assert not unknown, f"not fields of consumer.settings.Settings: {unknown}"


def test_configured_values_validate():
    services = compose()["services"]
    settings = settings_from_env({k: str(v) for k, v in services["labelwatch"]["environment"].items()})
    assert settings.metrics_port == 9108 and settings.state_dir == "/var/lib/labelwatch"
    desk = DeskSettings(**{k.removeprefix("LABELWATCH_").lower(): str(v)
                           for k, v in services["review-desk"]["environment"].items()})
    assert desk.http_port == 8080 and desk.corrections_topic == settings.corrections_topic
    substituted = {k: re.sub(r"\$\{[A-Z_]+:[-?]([^}]*)\}", r"\1", str(v))
                   for k, v in services["label-studio-bridge"]["environment"].items()}
    bridge = BridgeSettings(**{k.removeprefix("LABELWATCH_").lower(): v for k, v in substituted.items()})
    assert (bridge.source_project, bridge.review_project) == (1, 2)
    assert bridge.label_studio_url == "http://label-studio:8080"
    command = services["label-studio"]["command"]
    assert "--enable-legacy-api-token" in command and services["label-studio"]["environment"][
        "SSRF_PROTECTION_ENABLED"] == "false"
    assert bridge.public_url == f"http://label-studio-bridge:{bridge.webhook_port}"
    image_env = {k: v for k, v in dockerfile_env().items() if k.startswith("LABELWATCH_")}
    assert settings_from_env(image_env).state_dir == "/var/lib/labelwatch"


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_runs_offline_as_non_root_with_a_healthcheck_and_state_volume():
    steps = dockerfile_instructions()
    words = [w for w, _ in steps]
    env = dockerfile_env()
    assert env["HF_HUB_OFFLINE"] == "1"
    users = [rest for w, rest in steps if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert words.index("USER") < words.index("ENTRYPOINT")
    health = " ".join(rest for w, rest in steps if w == "HEALTHCHECK")
    assert "127.0.0.1" in health and "/healthz" in health and "urllib" in health and "curl" not in health
    volumes = [json.loads(rest) for w, rest in steps if w == "VOLUME"]
    assert volumes == [[env["LABELWATCH_STATE_DIR"]]]
    assert env["LABELWATCH_METRICS_PORT"] in [rest for w, rest in steps if w == "EXPOSE"]
    runs = " ".join(rest for w, rest in steps if w == "RUN")
    # the image installs what CI tested: requirements.lock, whose torch is the CPU build
    assert "pip install \"$(grep '^pip==' requirements.lock)\"" in runs
    assert "--build-constraint requirements.lock -c requirements.lock ." in runs
    assert '--extra-index-url "$TORCH_INDEX_URL"' in runs and "ARG TORCH_INDEX_URL=" in DOCKERFILE.read_text()
    assert re.search(r"^torch==2\.13\.0\+cpu$", (ROOT / "requirements.lock").read_text(), re.M)
    assert "SentenceEmbedder()" in runs, "the build should prove the baked-in model loads offline"


def test_dockerfile_copies_exist_and_pass_the_dockerignore():
    allowed = [line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for word, rest in dockerfile_instructions():
        if word == "COPY":
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                assert any(source == a or source.startswith(a + "/") for a in allowed), \
                    f"COPY {source} is excluded by Dockerfile.dockerignore"


# ---------------------------------------------------------------- Grafana


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.match(r"label_values\(\s*([^,()]+)", query or "")
        if m:
            exprs.append(m.group(1))
    return exprs


def test_dashboard_panels(exposed):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "labelwatch"
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for needed in ("throughput", "lag", "by detector", "dead letters by reason", "cluster purity", "latency",
                   "build info", "embedders: samples forwarded"):
        assert needed in titles, f"no panel about {needed}: {titles}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    latency = [t["expr"] for p in dashboard["panels"] for t in p["targets"]
               if "labelwatch_record_latency_seconds_bucket" in t["expr"]]
    for q in ("0.5", "0.95", "0.99"):
        assert any(e.startswith(f"histogram_quantile({q},") for e in latency), f"no p{q} latency"
    used = set()
    for expr in dashboard_exprs(dashboard):
        names = promql_metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        used |= names
    missing = used - exposed
    assert not missing, f"dashboard queries metrics the service does not export: {missing}"


def test_dashboard_datasource_is_the_provisioned_one():
    dashboard = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    refs = [p["datasource"] for p in dashboard["panels"]] + [t["datasource"] for p in dashboard["panels"]
                                                             for t in p["targets"]]
    assert refs and all(r == {"type": "prometheus", "uid": source["uid"]} for r in refs)


# ---------------------------------------------------------------- Helm chart

FULL_VALUES = {
    "replicaCount": 3,
    "persistence": {"accessMode": "ReadWriteMany"},
    "kafka": {"verdictTopic": "label-verdicts", "securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512",
              "saslUsername": "labelwatch",
              "tls": {"enabled": True, "secretName": "kafka-tls", "certFile": "tls.crt", "keyFile": "tls.key"}},
    "secrets": {"saslPassword": "s3cret", "sslPassword": "k3y", "apiToken": "t0ken"},
    "config": {"extra": {"LABELWATCH_N_CLUSTERS": "64"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "podDisruptionBudget": {"enabled": True},
}


COMPONENT_VALUES = {
    "embedder": {"enabled": True},
    "desk": {"enabled": True, "replicaCount": 2, "reviewers": "ana:tok-ana-1,bo:tok-bo-22", "sessionSecret": "k3y"},
    "labelStudio": {"enabled": True, "token": "ls-t0ken", "sourceProject": 1, "reviewProject": 2},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
}


def test_helm_lint_is_clean(helm):
    for values in (None, FULL_VALUES, COMPONENT_VALUES):
        report = helm.lint(str(CHART), values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert report["total_charts_linted"] == 1 and not problems, problems


def test_helm_default_render(helm):
    by_kind = render(helm)
    assert set(by_kind) == {"ConfigMap", "Secret", "Service", "Deployment", "PersistentVolumeClaim"}
    deployment, service = only(by_kind, "Deployment"), only(by_kind, "Service")
    config, secret = only(by_kind, "ConfigMap"), only(by_kind, "Secret")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = int(config["data"]["LABELWATCH_METRICS_PORT"])
    assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert service["spec"]["ports"][0]["port"] == port and service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == config["data"]["LABELWATCH_STATE_DIR"]
    claim = next(v for v in pod["volumes"] if v["name"] == "state")["persistentVolumeClaim"]["claimName"]
    assert claim == only(by_kind, "PersistentVolumeClaim")["metadata"]["name"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # ReadWriteOnce claim
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"] == deployment["spec"]["selector"]["matchLabels"]
    settings = settings_from_env(config["data"])
    assert settings.input_topic == "annotations" and settings.metrics_port == port


def test_helm_full_render(helm):
    by_kind = render(helm, FULL_VALUES)
    deployment, config = only(by_kind, "Deployment"), only(by_kind, "ConfigMap")
    secret = {k: base64.b64decode(v).decode() for k, v in only(by_kind, "Secret")["data"].items()}
    assert secret == {"LABELWATCH_SASL_PASSWORD": "s3cret", "LABELWATCH_SSL_PASSWORD": "k3y",
                      "LABELWATCH_API_TOKEN": "t0ken"}
    settings = settings_from_env({**config["data"], **secret})
    assert settings.kafka_config()["sasl_plain_password"] == "s3cret"
    assert settings.api_token.get_secret_value() == "t0ken" and "LABELWATCH_API_TOKEN" not in config["data"]
    assert settings.ssl_cafile == "/etc/labelwatch/tls/ca.crt" and settings.n_clusters == 64
    assert deployment["spec"]["replicas"] == 3 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert only(by_kind, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = deployment["spec"]["template"]["spec"]
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "kafka-tls"
    monitor, pdb = only(by_kind, "ServiceMonitor"), only(by_kind, "PodDisruptionBudget")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["selector"]["matchLabels"] == selector and monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    # The alert rules expect the scrape job (the Service name, for a ServiceMonitor) to contain "labelwatch".
    assert "labelwatch" in only(by_kind, "Service")["metadata"]["name"]


def test_helm_embedders_in_front_of_the_judge(helm):
    by_kind = render(helm, {"embedder": {"enabled": True, "replicaCount": 3, "threads": 1},
                            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}})
    judge, embedder = sorted(by_kind["Deployment"], key=lambda d: d["metadata"]["name"])
    assert embedder["metadata"]["name"].endswith("-embedder") and embedder["spec"]["replicas"] == 3
    config = only(by_kind, "ConfigMap")["data"]
    (container,) = embedder["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["embed"]
    env = {**config, **{e["name"]: e["value"] for e in container["env"]}}  # env wins over envFrom
    stage = EmbedSettings(**{k.removeprefix("LABELWATCH_").lower(): v for k, v in env.items()
                             if k.removeprefix("LABELWATCH_").lower() in EmbedSettings.model_fields})
    judged = settings_from_env(config)
    assert (stage.input_topic, stage.output_topic) == ("annotations", "annotations-embedded")
    assert judged.input_topic == stage.output_topic and stage.group_id != judged.group_id
    assert stage.embedding_threads == 1 and stage.embedding_preload and not judged.embedding_preload
    # neither the judge's Deployment nor its Service selects the embedder pods
    pod_labels = embedder["spec"]["template"]["metadata"]["labels"]
    judge_service, embedder_service = sorted(by_kind["Service"], key=lambda d: d["metadata"]["name"])
    for selector in (judge["spec"]["selector"]["matchLabels"], judge_service["spec"]["selector"]):
        assert not selector.items() <= pod_labels.items()
    assert embedder["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert_each_monitor_scrapes_its_own_pods(by_kind, 2)
    assert render(helm)["Deployment"][0]["metadata"]["name"] == judge["metadata"]["name"]  # off by default
    assert len(render(helm)["Deployment"]) == 1


def assert_each_monitor_scrapes_its_own_pods(by_kind: dict, n: int) -> None:
    """Prometheus scrapes each kind of pod once: each ServiceMonitor selects exactly one Service, whose
    selector picks exactly one Deployment's pods and whose port is where they serve /metrics."""
    services, deployments = by_kind["Service"], by_kind["Deployment"]
    monitors = by_kind["ServiceMonitor"]
    assert len(monitors) == len(services) == len(deployments) == n
    for monitor in monitors:
        (service,) = [svc for svc in services
                      if monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()]
        (deployment,) = [d for d in deployments
                         if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        port = next(p for p in service["spec"]["ports"] if p["name"] == monitor["spec"]["endpoints"][0]["port"])
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert port["targetPort"] in [p["name"] for p in container["ports"]]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert "labelwatch" in service["metadata"]["name"]  # the scrape job the alert rules expect


def pod_settings(by_kind: dict, deployment_name: str, model):
    """The settings a Deployment's pods start with: the ConfigMap and Secrets they mount, then their env."""
    (deployment,) = [d for d in by_kind["Deployment"] if d["metadata"]["name"] == deployment_name]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    maps = {d["metadata"]["name"]: d["data"] for d in by_kind["ConfigMap"]}
    secrets = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
               for d in by_kind["Secret"]}
    env = {}
    for source in container["envFrom"]:
        env |= maps[source["configMapRef"]["name"]] if "configMapRef" in source else secrets[source["secretRef"]["name"]]
    env |= {e["name"]: e["value"] for e in container.get("env", [])}  # env wins over envFrom
    fields = {k.removeprefix("LABELWATCH_").lower(): v for k, v in env.items() if k.startswith("LABELWATCH_")}
    return model(**{k: v for k, v in fields.items() if k in model.model_fields}), container, env


def test_helm_desk_and_bridge_beside_the_judge(helm):
    by_kind = render(helm, COMPONENT_VALUES)
    judge, _, _ = pod_settings(by_kind, "lw-labelwatch", Settings)
    desk, desk_container, _ = pod_settings(by_kind, "lw-labelwatch-desk", DeskSettings)
    bridge, bridge_container, _ = pod_settings(by_kind, "lw-labelwatch-label-studio", BridgeSettings)
    assert desk_container["args"] == ["review"] and bridge_container["args"] == ["label-studio"]
    # answers from the desk and the bridge reach the judge, which reads the embedders' topic
    assert judge.corrections_topic == desk.corrections_topic == bridge.corrections_topic == "label-corrections"
    assert judge.input_topic == "annotations-embedded" and bridge.input_topic == "annotations"
    assert desk.review_topic == bridge.review_topic == judge.review_topic
    assert desk.reviewers.get_secret_value() == "ana:tok-ana-1,bo:tok-bo-22"
    assert desk.session_secret.get_secret_value() == "k3y" and desk.leases_replication_factor == 3
    assert desk.http_port == 8080 and bridge.webhook_port == 8091
    assert bridge.label_studio_token.get_secret_value() == "ls-t0ken"
    assert (bridge.source_project, bridge.review_project) == (1, 2)
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    assert bridge.public_url == f"http://lw-labelwatch-label-studio:{services['lw-labelwatch-label-studio']['spec']['ports'][0]['port']}"
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert deployments["lw-labelwatch-desk"]["spec"]["replicas"] == 2
    assert deployments["lw-labelwatch-label-studio"]["spec"]["strategy"]["type"] == "Recreate"
    # reviewers' and Label Studio's tokens reach only their own pods
    for name, deployment in deployments.items():
        mounted = {s["secretRef"]["name"] for s in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
                   if "secretRef" in s}
        assert ("lw-labelwatch-desk" in mounted) == name.endswith("-desk")
        assert ("lw-labelwatch-label-studio" in mounted) == name.endswith("-label-studio")
    assert_each_monitor_scrapes_its_own_pods(by_kind, 4)
    assert "LABELWATCH_CORRECTIONS_TOPIC" not in only(render(helm), "ConfigMap")["data"]  # nobody answers


def test_helm_existing_secret_and_no_persistence(helm):
    by_kind = render(helm, {"secrets": {"existingSecret": "kafka-creds"}, "persistence": {"enabled": False}})
    assert "Secret" not in by_kind and "PersistentVolumeClaim" not in by_kind
    (container,) = only(by_kind, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": "kafka-creds"}} in container["envFrom"]
    state = next(v for v in only(by_kind, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "state")
    assert state == {"name": "state", "emptyDir": {}}


@pytest.mark.parametrize("values, message", [
    ({"replicaCount": 4}, "must not exceed kafka.inputTopicPartitions"),
    ({"replicaCount": 4, "persistence": {"accessMode": "ReadWriteMany"}}, "must not exceed kafka.inputTopicPartitions"),
    ({"replicaCount": 2}, "ReadWriteMany"),
    ({"replicaCount": 2, "persistence": {"enabled": False}}, "persistence.enabled"),
    ({"kafka": {"tls": {"enabled": True}}}, "kafka.tls.secretName is required"),
    ({"embedder": {"enabled": True, "replicaCount": 4}}, "embedder.replicaCount (4) must not exceed"),
    ({"desk": {"enabled": True}}, "desk.enabled needs desk.reviewers"),
    ({"desk": {"enabled": True, "reviewers": "a:b", "replicaCount": 2}}, "desk.replicaCount > 1 needs desk.sessionSecret"),
    ({"labelStudio": {"enabled": True, "sourceProject": 1}}, "labelStudio.enabled needs labelStudio.token"),
    ({"labelStudio": {"enabled": True, "token": "t"}}, "needs labelStudio.sourceProject and/or"),
])
def test_helm_refuses_bad_values(helm, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(helm, values)


def test_helm_more_partitions_allow_more_replicas(helm):
    values = {"replicaCount": 6, "kafka": {"inputTopicPartitions": 6}, "persistence": {"accessMode": "ReadWriteMany"}}
    assert only(render(helm, values), "Deployment")["spec"]["replicas"] == 6


def test_helm_chart_metadata_and_values_references():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "labelwatch"
    assert {"version", "appVersion", "description"} <= set(chart)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert str(values["image"]["tag"]) == str(chart["appVersion"])
    templates = list((CHART / "templates").glob("*"))
    assert {"deployment.yaml", "service.yaml", "configmap.yaml", "secret.yaml", "servicemonitor.yaml", "pdb.yaml",
            "_helpers.tpl"} <= {t.name for t in templates}
    missing = []
    for template in templates:
        text = template.read_text()
        assert text.count("{{") == text.count("}}"), f"unbalanced actions in {template.name}"
        for ref in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
            node = values
            for key in ref.strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{template.name}: .Values{ref}")
                    break
                node = node[key]
    assert not missing, f"templates read values that values.yaml does not define: {missing}"


def test_helm_every_value_is_documented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*:", line) and " #" not in line:
            previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            if not previous.startswith("#"):
                undocumented.append(line.strip())
    assert not undocumented, f"values without a comment: {undocumented}"


# ---------------------------------------------------------------- sample producer


def load_producer():
    spec = importlib.util.spec_from_file_location("produce_samples", PRODUCER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_producer_messages_are_valid_noisy_samples_keyed_by_dataset():
    import jsonschema

    producer = load_producer()
    schema = json.loads(SAMPLE_SCHEMA.read_text())
    messages = producer.noisy_digits(noise=0.1, seed=0)
    assert len(messages) == 1797 and len({m["sample_id"] for m in messages}) == 1797
    for message in messages[:200]:
        jsonschema.validate(message, schema)
    noisy = [m for m in messages if m["metadata"]["noisy"]]
    assert 0.08 < len(noisy) / len(messages) < 0.12
    assert all(m["label"] != m["metadata"]["true_label"] for m in noisy)
    assert all(m["label"] == m["metadata"]["true_label"] for m in messages if not m["metadata"]["noisy"])
    key, value = producer.encode(messages[0])
    assert key == b"digits" and json.loads(value) == messages[0]
    second = list(producer.messages(0.1, 0, "digits", passes=2))
    assert len(second) == 2 * 1797 and len({m["sample_id"] for m in second}) == 2 * 1797
    args = producer.parse_args([])
    assert args.topic == compose()["services"]["producer"]["environment"]["PRODUCER_TOPIC"]
    assert not ENV_NAME.search(PRODUCER.read_text()), "the producer has its own PRODUCER_ variables"


@pytest.mark.kafka
def test_producer_streams_to_a_real_broker(kafka_broker, unique_name):
    from consumer.demo.topics import ensure_topics
    from consumer.export import read_topic

    producer = load_producer()
    topic = unique_name("deploy-producer")
    settings = Settings(bootstrap_servers=kafka_broker.bootstrap_servers)
    ensure_topics(settings, [topic], partitions=3)
    assert producer.main(["--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
                          "--rate", "0", "--limit", "60", "--dataset", "digits-ci"]) == 0
    records = read_topic(settings.kafka_config(), topic, expected=60)
    assert len(records) == 60
    assert {r.key for r in records} == {b"digits-ci"} and len({r.partition for r in records}) == 1
    assert all(json.loads(r.value)["dataset"] == "digits-ci" for r in records)
