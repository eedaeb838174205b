"""A real Prometheus scrapes a real worker: every metric the dashboard and the alert rules query is
present in Prometheus, and Prometheus loads the alert rules.

The worker (``interest-tracker worker`` on the session's embedded broker) gets valid events of
every type and a malformed record (dead letters appear only then). Prometheus is the Debian
package's ``/usr/bin/prometheus`` (2.42), on a free loopback port, with a generated config: one job
named as in deploy/prometheus/prometheus.yml, a 1 s scrape interval, deploy/prometheus/alerts.yml
as its rule file. Skipped without it, unless TRACKER_REQUIRE_DEPLOY_TOOLS=1 (CI).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")

from stream_app.core.config import Settings  # noqa: E402
from stream_app.core.events import Event  # noqa: E402
from stream_app.kafka.embedded import free_port  # noqa: E402
from stream_app.service.process import stop_process  # noqa: E402
from tests.deploy.test_deploy import (  # noqa: E402
    COMPOSE,
    DASHBOARD,
    PROMETHEUS,
    dashboard_exprs,
    env_of,
    load_yaml,
    needs,
    promql_metric_names,
    rules,
)
from tests.support.streaming import WorkerProcess, produce, read_topic  # noqa: E402

pytestmark = pytest.mark.broker
# Queried, yet not expected from this worker: it runs the baseline recommender (no model artifact).
ONLY_WITH_A_MODEL = {
    "tracker_model_updates_total": "counted per user a model answers (stream_app/service/track.py); the "
                                   "baseline gives no churn probability: the panel is empty without a model",
}
DEPLOY_APP_ID = env_of(load_yaml(COMPOSE)["services"]["worker"])["TRACKER_APP_ID"]


def queried_metric_names() -> dict[str, set[str]]:
    """metric name -> where it is queried: the alert rules, the dashboard's panels and variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(f"alert {r['alert']}", r["expr"]) for r in rules()]
    queries += [(f"panel {title}", expr) for title, expr in dashboard_exprs(dashboard)]
    for var in dashboard["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["definition"])
        assert m, var["definition"]
        queries.append((f"variable {var['name']}", m.group(1)))
    out: dict[str, set[str]] = {}
    for where, expr in queries:
        for name in promql_metric_names(expr):
            out.setdefault(name, set()).add(where)
    return out


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())  # noqa: S310 - loopback
    assert body["status"] == "success", body
    return body["data"]


def events(now_ms: int) -> list[Event]:
    """5 users x 12 events, every type, a minute apart, ending now."""
    types = ("click", "browse", "purchase")
    out = []
    for u in range(5):
        for i in range(12):
            etype = types[i % 3]
            purchase = etype == "purchase"
            out.append(Event(f"prom-{u}-{i}", f"user-{u}", f"item-{(u * 7 + i) % 20}", f"cat-{i % 4}",
                             now_ms - (12 - i) * 60_000, etype,  # type: ignore[arg-type]
                             price=9.5 if purchase else None, quantity=1 if purchase else None))
    return out


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """(process, config path, port): started by the test once the config is written."""
    binary = needs("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    log = tmp_path / "prometheus.log"
    holder: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            holder["proc"] = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
        return holder["proc"]

    yield start, config, port, log  # type: ignore[misc]
    proc = holder.get("proc")
    if proc is not None and proc.poll() is None:
        stop_process(proc)


def test_prometheus_scrapes_a_worker(settings: Settings, tmp_path: Path, prometheus: Any) -> None:
    start_prometheus, config_path, prom_port, prom_log = prometheus
    started = time.monotonic()
    metrics_port = free_port()
    settings = settings.model_copy(update={"metrics_port": metrics_port, "metrics_host": "127.0.0.1"})
    # Faust's metric names embed the app id: the deploy files query the compose app id's names
    faust_prefix = "faust_" + settings.app_id.replace("-", "_") + "_"
    deploy_prefix = "faust_" + DEPLOY_APP_ID.replace("-", "_") + "_"
    wanted = {n: w for n, w in queried_metric_names().items() if n not in ONLY_WITH_A_MODEL}
    assert set(ONLY_WITH_A_MODEL) <= set(queried_metric_names()), "stale ONLY_WITH_A_MODEL entry"
    assert any(name.startswith(deploy_prefix) for name in wanted)

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        valid = events(int(time.time() * 1000))
        bad = [(settings.topic_clicks, b"user-0", b'{"event_id": "broken", "user_id": '),
               (settings.topic_browses, b"user-1", b"[1, 2, 3]")]
        asyncio.run(produce(settings, valid, raw=bad))
        recs = asyncio.run(read_topic(settings, settings.topic_recommendations, expect=len(valid)))
        dead = asyncio.run(read_topic(settings, settings.topic_dead_letters, expect=len(bad)))
        assert len(recs) == len(valid) and len(dead) == len(bad), worker.log()[-3000:]

        # the job name and rule file of deploy/prometheus/prometheus.yml, a static target
        deploy_config = load_yaml(PROMETHEUS)
        (job,) = [j for j in deploy_config["scrape_configs"] if j["job_name"] == "interest-tracker"]
        config_path.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS.parent / f) for f in deploy_config["rule_files"]],
            "scrape_configs": [{"job_name": job["job_name"], "scrape_interval": "1s",
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }))
        proc = start_prometheus()
        base = f"http://127.0.0.1:{prom_port}"
        deadline = time.monotonic() + 120
        missing: dict[str, set[str]] = dict(wanted)
        target: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, prom_log.read_text()[-3000:]
            assert worker.alive, worker.log()[-3000:]
            try:
                targets = api(base, "targets")["activeTargets"]
                present = set(api(base, "label/__name__/values"))
            except OSError:
                time.sleep(0.5)  # Prometheus is starting
                continue
            target = targets[0] if targets else {}
            seen = {n.replace(faust_prefix, deploy_prefix, 1) for n in present}
            missing = {n: where for n, where in wanted.items() if n not in seen}
            if not missing and target.get("health") == "up":
                break
            time.sleep(1)
        assert target.get("health") == "up", target
        assert target["labels"]["job"] == "interest-tracker"
        assert not missing, "queried but not in Prometheus:\n" + "\n".join(
            f"{n} ({', '.join(sorted(w))})" for n, w in sorted(missing.items()))
        # real values, not only names: the events and the dead letters were counted
        total = api(base, "query", query="sum(tracker_events_total)")["result"]
        assert total and float(total[0]["value"][1]) == len(valid)
        dead_total = api(base, "query", query="sum(tracker_dead_letters_total)")["result"]
        assert dead_total and float(dead_total[0]["value"][1]) == len(bad)
        # Prometheus loaded the alert rules, and none of them is broken on real data
        groups = api(base, "rules")["groups"]
        loaded = {r["name"] for g in groups for r in g["rules"]}
        assert loaded == {r["alert"] for r in rules()}
        assert all(r["health"] in ("ok", "unknown") for g in groups for r in g["rules"]), groups
        print(f"\nPrometheus scraped a worker: {len(wanted)} queried metrics present, "
              f"{time.monotonic() - started:.1f} s in all")
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
