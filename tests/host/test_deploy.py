"""deploy/: the Prometheus alert rules and configuration, and the Grafana dashboard.

promtool (Debian's ``prometheus`` package) checks the rules, runs their unit tests
(``alerts_test.yml``), checks the configuration, and parses every dashboard query (as recording
rules). Without promtool those tests skip, saying so; under ``HFSKILLS_TEST_STRICT=1`` with
``HFSKILLS_TEST_PROMTOOL=1`` (.ci/run, where it installs the package) they fail instead. Every
metric the rules and the dashboard name must be exported by a real server's ``/metrics``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import entry

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "hfskills.json"
METRIC = re.compile(r"\bhfskills_[a-z0-9_]+")
#: Grafana's variables, as a query reaches Prometheus.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$model": ".*", "${model}": ".*"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        why = "promtool is not installed (apt-get install prometheus)"
        strict = os.environ.get("HFSKILLS_TEST_STRICT") == "1"
        if strict and os.environ.get("HFSKILLS_TEST_PROMTOOL") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return subprocess.run(
        [found, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> Iterator[str]:
    """Every query the dashboard sends: its panels' and its variables'."""
    board = dashboard()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["definition"]


def as_prometheus(query: str) -> str:
    for name, value in VARIABLES.items():
        query = query.replace(name, value)
    return query


# -- promtool -----------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_checks_the_prometheus_configuration() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path) -> None:
    queries = [as_prometheus(q) for q in dashboard_queries() if not q.startswith("label_values(")]
    records = [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)]
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]})
    )
    done = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the files themselves ---------------------------------------------------------------------


def test_every_alert_is_documented_and_labelled() -> None:
    alerts = rules()
    assert {rule["alert"] for rule in alerts} >= {
        "HFSkillsHighLatency",
        "HFSkillsHighErrorRate",
        "HFSkillsBudgetNearlySpent",
        "HFSkillsBudgetExhausted",
        "HFSkillsCircuitBreakerOpen",
        "HFSkillsQueueBacklog",
    }
    for rule in alerts:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    docs = (REPO / "docs" / "observability.md").read_text()
    assert all(rule["alert"] in docs for rule in alerts)


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        own = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert grid["x"] + grid["w"] <= 24 and not own & cells, panel["title"]  # no overlap
        cells |= own
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    assert board["templating"]["list"][0]["type"] == "datasource"


# -- every metric used is exported ------------------------------------------------------------


def exported(name: str, types: dict[str, str]) -> bool:
    """Whether ``name`` is a series of a metric in the ``# TYPE`` lines (a counter's
    ``_total``, a histogram's ``_bucket``, ``_count`` and ``_sum``)."""
    if name in types:
        return True
    for suffix, kinds in (
        ("_total", {"counter"}),
        ("_bucket", {"histogram"}),
        ("_count", {"histogram", "summary"}),
        ("_sum", {"histogram", "summary"}),
    ):
        if name.endswith(suffix) and types.get(name.removesuffix(suffix)) in kinds:
            return True
    return False


def test_every_metric_the_rules_and_the_dashboard_use_is_exported(serve, task_checkpoint) -> None:
    server = serve(
        models=[entry("embed", task_checkpoint("bert", "text_embedding"))], embedded_default=False
    )
    with server.client() as http:
        assert http.post("/v1/embeddings", json={"model": "embed", "input": "x"}).status_code == 200
        text = http.get("/metrics").text
    types = {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")
    }
    used = {
        "rules": {name for rule in rules() for name in METRIC.findall(rule["expr"])},
        "dashboard": {name for query in dashboard_queries() for name in METRIC.findall(query)},
    }
    assert len(used["rules"]) >= 6 and len(used["dashboard"]) >= 12
    for where, names in used.items():
        missing = sorted(name for name in names if not exported(name, types))
        assert not missing, f"{where} use metrics /metrics does not export: {missing}"


def test_the_budget_and_utilization_gauges_are_read_when_scraped() -> None:
    from hfskills.host.metrics import Metrics

    metrics = Metrics()
    rows = [{"scope": "global", "daily_usd": 10.0, "spent_usd": 9.5, "used": 0.95}]
    metrics.watch_budgets(lambda: rows)
    text = metrics.render().decode()
    assert 'hfskills_budget_used_ratio{scope="global"} 0.95' in text
    assert 'hfskills_budget_spent_usd{scope="global"} 9.5' in text
    assert 'hfskills_budget_daily_usd{scope="global"} 10.0' in text
    (cpu,) = [
        line
        for line in text.splitlines()
        if line.startswith("hfskills_hardware_utilization_percent{") and 'hardware="cpu"' in line
    ]
    assert 0 <= float(cpu.split()[-1]) <= 100

    broken = Metrics()

    def fails() -> list[dict[str, Any]]:
        raise RuntimeError("the database is away")

    broken.watch_budgets(fails)  # a scrape never fails for the accounts
    assert "# TYPE hfskills_budget_used_ratio gauge" in broken.render().decode()
