"""Checks of deploy/k8s (Kubernetes manifests): wiring, settings shared with the compose file and
the tests' Apache Kafka, the probe commands against a real HTTP server, and kubeconform schema
validation, offline.

Schemas for kubeconform, with no network but the package registries:
- Kubernetes core kinds: the strict JSON Schemas shipped in the ``kubernetes-validate`` wheel (dev
  extra; generated from the Kubernetes OpenAPI spec). They ``$ref`` a shared ``_definitions.json``
  by an https URL that kubeconform would try to fetch, so each one used is made standalone here
  (the definitions embedded, refs made local), in kubeconform's ``-standalone-strict`` layout.
- ServiceMonitor: the CRD shipped in prometheus-operator's Go module (``go mod download`` through the
  Go module proxy; .ci/run fetches it), its ``openAPIV3Schema`` made strict (no unknown fields).
kubeconform itself: ``go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0`` (.ci/run).
Missing tools skip, unless TRACKER_REQUIRE_DEPLOY_TOOLS=1 (CI), which makes them fail.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")

from stream_app.core.config import Settings  # noqa: E402
from tests.deploy.test_deploy import (  # noqa: E402
    ALERTS,
    COMPOSE,
    DEPLOY,
    dockerfile_instructions,
    env_of,
    load_yaml,
    settings_from_env,
    tool,
)

K8S = DEPLOY / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
SCRAPE = K8S / "prometheus-scrape.yml"
# The oldest and the newest Kubernetes minor the manifests are validated against.
K8S_VERSIONS = ("1.30.0", "1.37.0")
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
CRD_FILES = {("monitoring.coreos.com", "ServiceMonitor"): "example/prometheus-operator-crd/"
                                                          "monitoring.coreos.com_servicemonitors.yaml"}
CRD_LAYOUT = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"  # kubeconform template
# The broker-facing settings that the compose file, the manifests and the tests' cluster share.
SHARED_FIELDS = ("broker_profile", "app_id", "partitions", "replication_factor", "security_protocol",
                 "data_dir", "metrics_port", *(f for f in Settings.model_fields if f.startswith("topic_")))


def require(name: str, path: str | None, hint: str) -> str:
    if path is None and os.environ.get("TRACKER_REQUIRE_DEPLOY_TOOLS") == "1":
        pytest.fail(f"{name} is not installed; TRACKER_REQUIRE_DEPLOY_TOOLS=1 (CI) forbids skipping")
    if path is None:
        pytest.skip(f"{name} is not installed (optional; {hint})")
    return path


def kubeconform_bin() -> str:
    found = tool("kubeconform")
    if found is None and shutil.which("go"):
        gobin = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout.strip()
        candidate = Path(gobin) / "bin" / "kubeconform"
        found = str(candidate) if candidate.exists() else None
    return require("kubeconform", found,
                   "go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0")


# --- the manifests ---------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return [K8S / name for name in load_yaml(KUSTOMIZATION)["resources"]]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    """kind -> object, from the kustomization's resources (one object of each kind)."""
    out: dict[str, dict[str, Any]] = {}
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in out, f"two {doc['kind']}s"
            out[doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objects["StatefulSet"]["spec"]["template"]


@pytest.fixture(scope="module")
def worker(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def k8s_settings(objects: dict[str, dict[str, Any]]) -> Settings:
    return settings_from_env(objects["ConfigMap"]["data"])


def test_kustomization_lists_every_manifest() -> None:
    listed = {p.name for p in manifest_files()}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {KUSTOMIZATION.name, SECRET_EXAMPLE.name}
    assert listed == on_disk, "every manifest but the Secret example is in kustomization.yaml"
    images = {i["name"] for i in load_yaml(KUSTOMIZATION)["images"]}
    for path in manifest_files():
        for image in re.findall(r"image:\s*(\S+)", path.read_text()):
            assert image.split(":")[0] in images, f"{path.name}: {image} not set by kustomization images"


def test_configmap_shares_the_broker_settings_of_compose_and_the_tests(k8s_settings: Settings) -> None:
    compose = settings_from_env(env_of(load_yaml(COMPOSE)["services"]["worker"]))
    for field in SHARED_FIELDS:
        assert getattr(k8s_settings, field) == getattr(compose, field), f"{field}: compose and k8s differ"
    assert k8s_settings.broker_profile == "kafka"
    # the tests' Apache Kafka (stream_app.kafka.apache, 3 nodes): replication factor 3, min ISR 2
    from stream_app.kafka.apache import ApacheKafkaCluster

    cluster = ApacheKafkaCluster(brokers=3)
    shutil.rmtree(cluster._tmp, ignore_errors=True)  # not started: only its defaults are wanted
    assert k8s_settings.replication_factor == cluster.brokers
    kafka_env = env_of(load_yaml(COMPOSE)["services"]["kafka-1"])
    assert int(kafka_env["KAFKA_MIN_INSYNC_REPLICAS"]) == cluster.min_isr == 2
    assert k8s_settings.metrics_host == "0.0.0.0", "Prometheus scrapes the pod IP"
    assert k8s_settings.web_port > 0, "the probes need the worker's web server"
    assert k8s_settings.sasl_password is None, "the password belongs in the Secret, not the ConfigMap"


def test_statefulset(objects: dict[str, dict[str, Any]], pod: dict[str, Any], worker: dict[str, Any],
                     k8s_settings: Settings) -> None:
    sts, svc, cm = objects["StatefulSet"], objects["Service"], objects["ConfigMap"]
    spec = sts["spec"]
    labels = pod["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["serviceName"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert 1 <= spec["replicas"] <= k8s_settings.partitions
    # a volume per pod, mounted at TRACKER_DATA_DIR
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    assert mounts[str(k8s_settings.data_dir)] == claim["metadata"]["name"]
    # settings: the ConfigMap, and the Secret for SASL credentials
    for container in [worker, *pod["spec"]["initContainers"]]:
        refs = container["envFrom"]
        assert {"configMapRef": {"name": cm["metadata"]["name"]}} in refs
        secrets = [r["secretRef"] for r in refs if "secretRef" in r]
        assert secrets and secrets[0]["name"] == load_yaml(SECRET_EXAMPLE)["metadata"]["name"]
        assert container["image"] == worker["image"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    assert set(load_yaml(SECRET_EXAMPLE)["stringData"]) == {"TRACKER_SASL_USERNAME", "TRACKER_SASL_PASSWORD"}
    (init,) = pod["spec"]["initContainers"]
    assert init["command"] == ["python", "/app/create_topics.py"]
    assert ("COPY", "deploy/create_topics.py /app/create_topics.py") in dockerfile_instructions()
    from stream_app.cli import main

    assert worker["args"][0] in main.commands
    # the image's non-root user, resources
    user = dict(dockerfile_instructions())["USER"].split(":")
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == user[0]
    assert str(pod["spec"]["securityContext"]["fsGroup"]) == user[1]
    resources = worker["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and resources["limits"]["memory"]
    # the metrics port, named, = TRACKER_METRICS_PORT = the annotation = the Service's target
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["metrics"] == k8s_settings.metrics_port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(k8s_settings.metrics_port)
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["name"] == "metrics" and svc_port["targetPort"] == "metrics"
    # a clean Faust stop fits in the grace period (mode's service shutdown timeout bounds each stage)
    from mode import Service

    assert pod["spec"]["terminationGracePeriodSeconds"] > Service.shutdown_timeout


def probe_command(worker: dict[str, Any], probe: str) -> list[str]:
    return worker[probe]["exec"]["command"]


def test_probes_use_ready_and_live(worker: dict[str, Any]) -> None:
    paths = {probe: re.search(r"/(\w+)'", " ".join(probe_command(worker, probe))).group(1)
             for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"startupProbe": "live", "livenessProbe": "live", "readinessProbe": "ready"}
    assert worker["startupProbe"]["periodSeconds"] * worker["startupProbe"]["failureThreshold"] >= 300, \
        "recovering a large state takes minutes: the startup probe must allow for it"


@pytest.fixture
def web_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A loopback HTTP server answering each path with the status in ``statuses``."""
    statuses: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], statuses
    finally:
        server.shutdown()
        server.server_close()


def test_probe_commands_against_a_web_server(worker: dict[str, Any],
                                             web_server: tuple[int, dict[str, int]]) -> None:
    """The probes' exec commands, run as the kubelet would (exit 0 = success), against /ready and
    /live answering 200, then 503, then a closed port."""
    port, statuses = web_server
    env = {**os.environ, "TRACKER_WEB_PORT": str(port)}

    def run(probe: str) -> int:
        cmd = ["python3" if c == "python" else c for c in probe_command(worker, probe)]
        return subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode

    statuses.update({"/ready": 200, "/live": 200})
    assert [run(p) for p in ("startupProbe", "livenessProbe", "readinessProbe")] == [0, 0, 0]
    statuses.update({"/ready": 503})
    assert run("readinessProbe") != 0 and run("livenessProbe") == 0
    statuses.update({"/live": 500})
    assert run("livenessProbe") != 0
    env["TRACKER_WEB_PORT"] = "1"  # nothing listens
    assert run("livenessProbe") != 0


def test_pdb_and_servicemonitor(objects: dict[str, dict[str, Any]], pod: dict[str, Any]) -> None:
    pdb, sm, svc = objects["PodDisruptionBudget"], objects["ServiceMonitor"], objects["Service"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    # the job label (the value of the Service's jobLabel label) is the job the alert rules select
    job = svc["metadata"]["labels"][sm["spec"]["jobLabel"]]
    assert f'job="{job}"' in ALERTS.read_text()


def test_annotation_scrape_config(pod: dict[str, Any]) -> None:
    """prometheus-scrape.yml (pod discovery by annotation). Debian's promtool is built without the
    Kubernetes service discovery (``kubernetes_sd_configs`` is an unknown field there), so it cannot
    check this file: checked here by structure, and its address rewrite by Python's regex engine
    (these patterns mean the same in RE2)."""
    config = load_yaml(SCRAPE)
    (job,) = config["scrape_configs"]
    assert f'job="{job["job_name"]}"' in ALERTS.read_text()
    assert (SCRAPE.parent / config["rule_files"][0]).resolve() == ALERTS
    annotations = pod["metadata"]["annotations"]
    meta = {f"__meta_kubernetes_pod_annotation_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
            for k, v in annotations.items()}
    labels = {"__address__": "10.1.2.3:6066", "__metrics_path__": "/metrics", **meta}
    for rule in job["relabel_configs"]:
        value = ";".join(labels.get(s, "") for s in rule["source_labels"])
        m = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            assert m, f"the pod would be dropped by {rule}"
        elif m:
            labels[rule["target_label"]] = m.expand(rule.get("replacement", "$1").replace("$", "\\"))
    assert labels["__address__"] == f"10.1.2.3:{annotations['prometheus.io/port']}"
    assert labels["__metrics_path__"] == annotations["prometheus.io/path"] == "/metrics"


# --- kubeconform -------------------------------------------------------------------------------------


def kubernetes_schemas() -> Path:
    """The kubernetes-validate package's schema folder (kubernetes-json-schema/v<version>-local-strict)."""
    try:
        import kubernetes_validate
    except ImportError:
        kubernetes_validate = None
    found = kubernetes_validate and Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return Path(require("kubernetes-validate (Python package)", str(found) if found else None,
                        "the dev extra: pip install -e '.[dev]'"))


def standalone_schema(source: Path, kind_file: str) -> dict[str, Any]:
    """A kubernetes-validate schema with the shared definitions embedded: no remote $ref."""
    text = (source / kind_file).read_text().replace('"/api/_definitions.json#/$defs/', '"#/$defs/')
    schema = json.loads(text)
    schema.pop("$id", None)  # https://kubernetes.io/api/...: refs must not resolve against it
    schema["$defs"] = json.loads((source / "_definitions.json").read_text())["$defs"]
    return schema


def strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema with unknown fields rejected (as kubeconform's openapi2jsonschema -strict)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_schemas(dest: Path) -> None:
    """{group}/{kind}_{version}.json for each CRD in CRD_FILES, from prometheus-operator's module."""
    go = require("go", shutil.which("go"), "Go, for the prometheus-operator module (CRDs)")
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([go, "mod", "download", "-json", PROMETHEUS_OPERATOR], capture_output=True,
                          text=True, timeout=300, cwd=dest, env={**os.environ, "GOFLAGS": "-mod=mod"})
    info = json.loads(proc.stdout or "{}")
    assert proc.returncode == 0 and "Dir" in info, f"go mod download failed:\n{proc.stdout}\n{proc.stderr}"
    for (group, kind), rel in CRD_FILES.items():
        crd = yaml.safe_load((Path(info["Dir"]) / rel).read_text())
        assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
        for version in crd["spec"]["versions"]:
            path = dest / group / f"{kind.lower()}_{version['name']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(strict(version["schema"]["openAPIV3Schema"])))


@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubeconform's local layout: v<k8s>-standalone-strict/<kind>-<group>-<version>.json for the core
    kinds of the manifests, crds/<group>/<kind>_<version>.json for the CRDs."""
    source = kubernetes_schemas()
    dest = tmp_path_factory.mktemp("k8s-schemas")
    docs = [d for p in [*manifest_files(), SECRET_EXAMPLE] for d in yaml.safe_load_all(p.read_text())]
    for version in K8S_VERSIONS:
        folder = dest / f"v{version}-standalone-strict"
        folder.mkdir()
        for doc in docs:
            group, _, api_version = doc["apiVersion"].rpartition("/")
            if "." in group:  # a CRD's group (monitoring.coreos.com)
                continue
            name = "-".join(x for x in (doc["kind"].lower(), group.split(".")[0], api_version) if x) + ".json"
            schema = standalone_schema(source / f"v{version}-local-strict", name)
            (folder / name).write_text(json.dumps(schema))
    crd_schemas(dest / "crds")
    return dest


def kubeconform(schemas: Path, version: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubeconform_bin(), "-strict", "-summary", "-output", "json", "-kubernetes-version", version,
         "-schema-location", str(schemas),
         "-schema-location", str(schemas / "crds" / CRD_LAYOUT),
         *map(str, files)],
        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubeconform(schema_dir: Path, version: str) -> None:
    files = [*manifest_files(), SECRET_EXAMPLE]
    proc = kubeconform(schema_dir, version, files)
    assert proc.returncode == 0, f"kubeconform failed:\n{proc.stdout}\n{proc.stderr}"
    summary = json.loads(proc.stdout)["summary"]
    assert summary == {"valid": len(files), "invalid": 0, "errors": 0, "skipped": 0}, summary


def test_kubeconform_rejects_broken_manifests(schema_dir: Path, tmp_path: Path) -> None:
    """The negative control: the schemas are really applied (a typo, a wrong type, an unknown field of
    the ServiceMonitor each make kubeconform fail)."""
    sts = load_yaml(K8S / "statefulset.yaml")
    sm = load_yaml(K8S / "servicemonitor.yaml")
    broken = []
    typo = copy.deepcopy(sts)
    typo["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 90
    wrong_type = copy.deepcopy(sts)
    wrong_type["spec"]["replicas"] = "3"
    bad_sm = copy.deepcopy(sm)
    bad_sm["spec"]["endpoints"][0]["portt"] = "metrics"
    for i, doc in enumerate([typo, wrong_type, bad_sm]):
        path = tmp_path / f"broken-{i}.yaml"
        path.write_text(yaml.safe_dump(doc))
        broken.append(path)
    for path in broken:
        proc = kubeconform(schema_dir, K8S_VERSIONS[-1], [path])
        assert proc.returncode != 0, f"kubeconform accepted {path.name}:\n{proc.stdout}"
        assert json.loads(proc.stdout)["summary"]["invalid"] == 1, proc.stdout
