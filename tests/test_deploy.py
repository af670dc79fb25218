"""deploy/ checked offline: every YAML parses, Kubernetes manifests match the API schemas, the compose
file is wired consistently, Vigil configs validate, and every metric the Grafana dashboard queries is
one a real Vigil `/metrics` endpoint serves.

No Docker engine or cluster is needed (none runs here); `kubernetes-validate` ships its schemas.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import VigilConfig
from pipeline.configfile import load_config
from pipeline.http import HealthProbe, MetricsServer
from pipeline.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
REPO = DEPLOY.parent
K8S_VERSION = "1.30.0"  # oldest Kubernetes the manifests must work on
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
K8S_DOCS = [
    pytest.param(doc, id=f"{path.name}:{doc['kind']}/{doc['metadata']['name']}")
    for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc
]
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "vigil.json"
HTTP_TOKEN_ENV = "VIGIL_HTTP_TOKEN"  # http.token_env of every deploy config
COMPOSE_TOKEN_SECRET = "vigil_http_token"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


# ---- YAML and Kubernetes ---------------------------------------------------------------------------


def test_deploy_has_the_expected_files() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in YAML_FILES}
    assert {
        "compose.yaml",
        "config.compose.yaml",
        "prometheus/prometheus.yml",
        "k8s/statefulset.yaml",
    } <= names
    assert (DEPLOY / "Dockerfile").is_file() and (DEPLOY / "Dockerfile.cpu").is_file()
    assert (DEPLOY / "camsim" / "Dockerfile").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("doc", K8S_DOCS)
def test_k8s_manifest_matches_schema(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_validator_rejects_a_misspelt_field() -> None:
    """Guards the test above: strict validation must catch a typo, offline."""
    (doc,) = [d.values[0] for d in K8S_DOCS if d.values[0]["kind"] == "StatefulSet"]
    bad = json.loads(json.dumps(doc))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = bad["spec"]["template"]["spec"][
        "containers"
    ][0].pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_k8s_statefulset_wiring() -> None:
    docs = {(d.values[0]["kind"], d.values[0]["metadata"]["name"]): d.values[0] for d in K8S_DOCS}
    sts = docs[("StatefulSet", "vigil")]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9108, "protocol": "TCP"} in container["ports"]
    # config from the ConfigMap, camera password from the Secret, event store on a claim
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] in {n for k, n in docs if k == "ConfigMap"}
    secret_keys = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    secret = docs[("Secret", "vigil-secrets")]
    assert "CAM_PASSWORD" in secret_keys and secret_keys <= set(secret["stringData"])
    # the metrics token: required (not optional), under the name the ConfigMap's http.token_env gives
    (token,) = [e for e in container["env"] if e["name"] == HTTP_TOKEN_ENV]
    assert token["valueFrom"]["secretKeyRef"]["name"] == "vigil-secrets"
    assert not token["valueFrom"]["secretKeyRef"].get("optional", False)
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert "data" in claims and mounts["data"] == "/var/lib/vigil"
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] in {
        n for k, n in docs if k == "PersistentVolumeClaim"
    }
    assert sts["spec"]["serviceName"] in {n for k, n in docs if k == "Service"}
    metrics_svc = docs[("Service", "vigil-metrics")]
    assert metrics_svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


# ---- Vigil configs shipped in deploy/ ----------------------------------------------------------------


def _k8s_config_text() -> str:
    (cm,) = [d.values[0] for d in K8S_DOCS if d.values[0]["kind"] == "ConfigMap"]
    return cm["data"]["config.yaml"]


@pytest.mark.parametrize(
    "name, text",
    [
        ("config.compose.yaml", (DEPLOY / "config.compose.yaml").read_text()),
        ("config.container.yaml", (DEPLOY / "config.container.yaml").read_text()),
        ("k8s ConfigMap config.yaml", _k8s_config_text()),
    ],
)
def test_deploy_configs_load(name: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each config loads with the real loader; metrics listen on all interfaces behind a token read from
    a secret; state is on the volume."""
    monkeypatch.setenv("CAM_PASSWORD", "s3cret-pw")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(path)
    assert isinstance(config, VigilConfig)
    assert config.http.host == "0.0.0.0" and config.http.port == 9108
    assert config.http.token_env == HTTP_TOKEN_ENV and not config.http.allow_unauthenticated
    assert str(config.sinks.sqlite.path).startswith("/var/lib/vigil/")
    assert str(config.events.media_dir).startswith("/var/lib/vigil/")
    for model in (config.detector.model, config.pose.model, config.appearance.model):
        assert str(model).startswith("/models/"), "weights come from the read-only /models mount"


# ---- compose -------------------------------------------------------------------------------------------


def test_compose_services_are_wired() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"vigil", "camsim", "mosquitto", "prometheus", "grafana"}
    declared_volumes = set(compose.get("volumes", {}))
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        assert "healthcheck" in svc and svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        if "build" in svc:
            dockerfile = (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve()
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: bind mount {source} missing"
            elif not source.startswith(("$", "/", "../")):
                assert source in declared_volumes, f"{name}: volume {source} not declared"
    vigil = services["vigil"]
    assert "./config.compose.yaml:/etc/vigil/config.yaml:ro" in vigil["volumes"]
    # the metrics token is a compose secret, read into http.token_env's variable as Vigil starts, and
    # given to Prometheus, which scrapes with it
    secret = f"/run/secrets/{COMPOSE_TOKEN_SECRET}"
    assert COMPOSE_TOKEN_SECRET in compose["secrets"] and "file" in compose["secrets"][COMPOSE_TOKEN_SECRET]
    for name in ("vigil", "prometheus"):
        assert COMPOSE_TOKEN_SECRET in services[name]["secrets"], name
    start = " ".join(vigil["entrypoint"])
    assert f'{HTTP_TOKEN_ENV}="$$(cat {secret})"' in start and 'exec vigil "$$@"' in start
    assert HTTP_TOKEN_ENV not in vigil.get("environment", {}), "from the secret, not from the compose file"
    assert any("/healthz" in part for part in vigil["healthcheck"]["test"])
    assert "9108:9108" in vigil["ports"]
    assert vigil["depends_on"]["camsim"]["condition"] == "service_healthy"
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto")
    assert (
        "./mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in services["mosquitto"]["volumes"]
    )


def test_compose_config_points_at_compose_services() -> None:
    config = VigilConfig.model_validate(yaml.safe_load((DEPLOY / "config.compose.yaml").read_text()))
    services = _compose()["services"]
    (camera,) = config.cameras
    assert camera.url.startswith("rtsp://camsim:8554/")
    mount = camera.url.rsplit("/", 1)[1]
    command = services["camsim"]["command"]
    assert any(arg.endswith(f":{mount}") for arg in command)
    assert command[command.index("--host") + 1] == "0.0.0.0", "reachable from the vigil container"
    assert config.sinks.mqtt.enabled and config.sinks.mqtt.host in services


def test_mosquitto_conf_directives() -> None:
    lines = [
        line.split()
        for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    directives = {words[0]: words[1:] for words in lines}
    assert directives["persistence"] == ["true"]
    assert directives["listener"][0] == "1883"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu", "camsim/Dockerfile"])
def test_dockerfile_conventions(dockerfile: str) -> None:
    lines = _instructions(DEPLOY / dockerfile)
    keys = [k for k, _ in lines]
    assert keys[0] == "FROM" and "USER" in keys and "HEALTHCHECK" in keys and "ENTRYPOINT" in keys
    user = dict(lines)["USER"]
    assert not user.startswith(("root", "0")), "containers run as a non-root user"
    assert keys.index("USER") > max(i for i, k in enumerate(keys) if k == "RUN"), "USER after the last RUN"
    ignore = (DEPLOY / f"{dockerfile}.dockerignore").read_text().splitlines()
    assert "*" in ignore, "the build context is a whitelist"
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for key, args in lines:  # every COPY source exists in the build context and is not .dockerignored
        if key == "COPY":
            for source in args.split()[:-1]:
                if source.startswith("--"):
                    continue
                assert (REPO / source).exists(), f"{dockerfile}: COPY {source} missing"
                assert any(source == a or source.startswith(a + "/") for a in allowed), (
                    f"{dockerfile}: COPY {source} is excluded by its .dockerignore"
                )
    if dockerfile != "camsim/Dockerfile":
        assert "/healthz" in dict(lines)["HEALTHCHECK"]
        assert json.loads(dict(lines)["ENTRYPOINT"]) == ["vigil"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, args = line.partition(" ")
            out.append((key.upper(), args.strip()))
    return out


# ---- Prometheus and Grafana ----------------------------------------------------------------------------


def test_prometheus_scrapes_vigil() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    vigil = jobs["vigil"]
    assert vigil["metrics_path"] == "/metrics"
    assert vigil["authorization"] == {
        "type": "Bearer",
        "credentials_file": f"/run/secrets/{COMPOSE_TOKEN_SECRET}",
    }
    targets = [t for sc in vigil["static_configs"] for t in sc["targets"]]
    config = VigilConfig.model_validate(yaml.safe_load((DEPLOY / "config.compose.yaml").read_text()))
    assert targets == [f"vigil:{config.http.port}"]
    assert "vigil" in _compose()["services"]


def test_grafana_provisioning_matches_dashboard() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/vigil.yaml").read_text())
    (provider,) = providers["providers"]
    grafana_mounts = _compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana_mounts
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if p["type"] != "row"} | {
        t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])
    }
    assert uids == {source["uid"]}


_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana `label_values(metric, label)` query)."""
    grafana = re.fullmatch(
        r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*,.*\)\s*", expr
    )
    if grafana:
        return {grafana.group(1)}
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group() in _PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


@pytest.mark.parametrize(
    "expr, names",
    [
        (
            'sum by (camera) (rate(vigil_source_frames_total{camera=~"$camera"}[1m]))',
            {"vigil_source_frames_total"},
        ),
        (
            "histogram_quantile(0.9, sum by (le) (rate(vigil_stage_latency_seconds_bucket[$__range])))",
            {"vigil_stage_latency_seconds_bucket"},
        ),
        ("min by (stage) (vigil_stage_healthy) == 0 or on (stage) up", {"vigil_stage_healthy", "up"}),
        ("label_values(vigil_source_up, camera)", {"vigil_source_up"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def _scrape_real_endpoint() -> set[str]:
    """Start Vigil's real MetricsServer on a registry with one sample of everything, scrape it over HTTP."""
    metrics = Metrics()
    metrics.source_registered("cam1", live=True)
    metrics.source_connected("cam1", up=True)
    metrics.source_frame("cam1", wall=time.time())
    metrics.source_reconnects.labels("cam1").inc()
    for stage in ("decode", "detect"):
        metrics.frames_in.labels("cam1", stage).inc()
        metrics.frames_out.labels("cam1", stage).inc()
        metrics.stage_latency.labels(stage).observe(0.01)
        metrics.queue_depth.labels(stage).set(2)
        metrics.stage_errors.labels("cam1", stage).inc()
        metrics.stage_healthy.labels(stage).set(1)
    metrics.dropped.labels("cam1", "behind").inc()
    metrics.e2e_latency.labels("cam1").observe(0.2)
    metrics.event_latency.labels("cam1").observe(0.3)
    metrics.events.labels("cam1", "new").inc()
    metrics.events_by_reason.labels("cam1", "speed").inc()
    metrics.frame_score.labels("cam1").set(1.5)
    metrics.sink_errors.labels("mqtt").inc()
    metrics.outbox_depth.labels("mqtt").set(3)
    metrics.deliveries.labels("mqtt").inc()
    metrics.delivery_failures.labels("mqtt").inc()
    metrics.delivery_latency.labels("mqtt").observe(0.004)
    server = MetricsServer(metrics, HealthProbe(metrics, stall_limit_s=1e9), host="127.0.0.1", port=0)
    stop = threading.Event()
    server.start(stop)
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        stop.set()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_dashboard_queries_only_exported_metrics() -> None:
    exported = _scrape_real_endpoint()
    queried = set().union(*(promql_metric_names(e) for e in _dashboard_queries()))
    assert queried, "the dashboard has queries"
    assert queried <= exported, f"not exported by Vigil: {sorted(queried - exported)}"
    must_show = {
        "vigil_source_frames_total",  # fps in
        "vigil_end_to_end_latency_seconds_count",  # fps out
        "vigil_end_to_end_latency_seconds_bucket",
        "vigil_stage_latency_seconds_bucket",
        "vigil_stage_queue_depth",
        "vigil_frames_dropped_total",
        "vigil_source_up",
        "vigil_source_reconnects_total",
        "vigil_source_last_frame_age_seconds",
        "vigil_events_by_reason_total",
        "vigil_outbox_depth",
        "vigil_deliveries_total",
        "vigil_delivery_failures_total",
    }
    assert must_show <= queried, f"dashboard lacks {sorted(must_show - queried)}"
