"""The shipped Prometheus rules and Grafana board, proven against a real Prometheus.

promtool checks the config and the rules and runs their unit tests; then a real Prometheus (on
loopback, data in a temp dir) scrapes a running Pulse (`pulse api` and `pulse worker`
processes) that has delivered, retried, dead-lettered and replayed notifications, and every
expression of every dashboard panel and every recording and alerting rule is evaluated through
its HTTP API: each must parse and return a number, so no panel can silently show "No data".
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml

from pulse.config import Settings
from pulse.devtools.ports import free_port
from pulse.store.tenants import TenantStore
from tests.conftest import EXAMPLE, wait_http_ok
from tests.prometheus_tools import PrometheusServer, promtool
from tests.smtp_servers import ScriptedHandler, ScriptedSmtp

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pulse.json"
# Grafana's variables, as Grafana would fill them in for a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s"}
# An alert is "<what it watches> <comparison> <threshold>": what it watches must have data.
ALERT_FORM = re.compile(r"^(?P<watched>.+?)\s*(?:>|<|==|!=|>=|<=)\s*[-0-9.e]+\s*$", re.S)


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of the shipped files that has ``kind`` (``record`` or ``alert``)."""
    found: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(rule for rule in group["rules"] if kind in rule)
    return found


def panel_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel, Grafana variables filled."""
    found = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def test_promtool_checks_the_config_and_the_rules() -> None:
    config = promtool("check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml"))
    checked = promtool("check", "rules", *map(str, RULE_FILES))

    assert config.returncode == 0, config.stdout + config.stderr
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    tested = {
        line.split(":", 1)[1].strip()
        for path in tests
        for line in path.read_text().splitlines()
        if line.strip().startswith("alertname:")
    }

    result = promtool("test", "rules", *map(str, tests))

    assert result.returncode == 0, result.stdout + result.stderr
    assert tested == {rule["alert"] for rule in rules("alert")}


def test_every_alert_is_a_threshold_on_something_watched() -> None:
    assert [rule["alert"] for rule in rules("alert") if not ALERT_FORM.match(rule["expr"])] == []


def test_the_board_uses_the_provisioned_datasource_and_has_the_operator_sections() -> None:
    board = json.loads(DASHBOARD.read_text())
    targets = [t for p in board["panels"] for t in p.get("targets", [])]
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )

    assert {t["datasource"]["uid"] for t in targets} == {provisioned["datasources"][0]["uid"]}
    assert rows == [
        "Is Pulse healthy?",
        "Throughput",
        "Queue, per priority (0 critical ... 4 bulk)",
        "End-to-end latency",
        "Retries and dead letters",
        "Providers",
        "Workers and API",
    ]


def test_compose_runs_prometheus_and_grafana_on_the_shipped_files() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}

    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    assert any(v.startswith("./deploy/grafana/dashboards:") for v in services["grafana"]["volumes"])
    assert services["worker"]["environment"]["PULSE_WORKER_METRICS_PORT"] == "9100"
    assert "ports" not in services["worker"]
    assert jobs["pulse-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["pulse-worker"]["dns_sd_configs"][0] == {
        "names": ["worker"],
        "type": "A",
        "port": 9100,
    }


# --- against a real Prometheus scraping a running Pulse ---------------------------------------


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    with ScriptedSmtp(ScriptedHandler()) as server:
        yield server


def _process(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pulse", command], env=env, stdout=out, stderr=out
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture
async def pulse(
    settings: Settings, smtp: ScriptedSmtp, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """`pulse api` and `pulse worker` processes on loopback; yields (API base, worker target)."""
    api_port, worker_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        PULSE_REDIS_URL=settings.require_redis_url(),
        PULSE_DATABASE_URL=settings.require_database_url(),
        PULSE_KEY_PREFIX=settings.key_prefix,
        PULSE_HTTP_HOST="127.0.0.1",
        PULSE_HTTP_PORT=str(api_port),
        PULSE_WORKER_METRICS_PORT=str(worker_port),
        PULSE_LOG_LEVEL="WARNING",
        PULSE_SMTP_HOST="127.0.0.1",
        PULSE_SMTP_PORT=str(smtp.port),
        PULSE_SMTP_TLS="none",
        PULSE_RETRY_BASE_S="0.05",
        PULSE_RETRY_CAP_S="0.2",
        PULSE_WORKER_RECLAIM_INTERVAL_MS="50",
        PULSE_WORKER_BLOCK_MS="100",
        PULSE_RECONCILE_INTERVAL_S="3600",
    )
    api = _process("api", env, tmp_path / "api.log")
    worker = _process("worker", env, tmp_path / "worker.log")
    try:
        await wait_http_ok(f"http://127.0.0.1:{api_port}/healthz")
        await wait_http_ok(f"http://127.0.0.1:{worker_port}/metrics")
        yield f"http://127.0.0.1:{api_port}", f"127.0.0.1:{worker_port}"
    finally:
        _stop(worker)
        _stop(api)


class Sender:
    def __init__(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        self._session = session
        self._base = base
        self._headers = {"Authorization": f"Bearer {key}"}

    async def post(self, path: str, body: Any = None) -> Any:
        async with self._session.post(self._base + path, json=body, headers=self._headers) as r:
            assert r.status == 202, await r.text()
            return await r.json()

    async def send(self, recipient: str) -> str:
        return str(
            (await self.post("/api/notifications/", EXAMPLE | {"recipient": recipient}))["id"]
        )

    async def wait(self, notification_id: str, status: str) -> None:
        url = f"{self._base}/api/notifications/{notification_id}"
        document: Any = {}
        for _ in range(1200):
            async with self._session.get(url, headers=self._headers) as response:
                document = await response.json()
            if document["status"] == status:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{notification_id} never reached {status}: {document}")

    async def dead_letters(self) -> list[Any]:
        async with self._session.get(self._base + "/api/dead-letters", headers=self._headers) as r:
            return list((await r.json())["items"])


async def _round(sender: Sender) -> None:
    """Delivered at once, delivered after a 451, refused for good (550), and a batch of two."""
    ids = [await sender.send(r) for r in ("ann@example.com", "flaky1-bob@x.org", "reject-cy@x.org")]
    await sender.post("/api/notifications/batch", {"items": [EXAMPLE, EXAMPLE | {"priority": 3}]})
    for notification_id, status in zip(ids, ("delivered", "delivered", "failed"), strict=True):
        await sender.wait(notification_id, status)


def _watched(expr: str) -> str:
    match = ALERT_FORM.match(expr)
    assert match is not None, expr
    return match["watched"]


def _has_number(answer: Any) -> bool:
    """A successful instant query with at least one finite value."""
    if answer.get("status") != "success":
        return False
    result = answer["data"]["result"]
    values = [float(s["value"][1]) for s in result] if isinstance(result, list) else []
    return any(math.isfinite(v) for v in values)


async def _until_all_have_data(
    prometheus: PrometheusServer, exprs: dict[str, str]
) -> dict[str, Any]:
    """Query each expression until it returns a number (scrapes and rule evaluations take a
    few seconds); the ones that never did within two minutes, with Prometheus's last answer."""
    missing = dict(exprs)
    answers: dict[str, Any] = {}
    for _ in range(240):
        for name, expr in list(missing.items()):
            answers[name] = await asyncio.to_thread(prometheus.query, expr)
            if _has_number(answers[name]):
                del missing[name]
        if not missing:
            return {}
        await asyncio.sleep(0.5)
    return {name: (expr, answers[name]) for name, expr in missing.items()}


async def _rule_health(prometheus: PrometheusServer) -> dict[str, tuple[str, str | None]]:
    """Each rule's health once every rule has been evaluated ("unknown" until its group's first
    evaluation, which a loaded machine can delay), or as it stands after a minute."""
    for _ in range(120):
        groups = (await asyncio.to_thread(prometheus.get, "/api/v1/rules"))["data"]["groups"]
        health = {r["name"]: (r["health"], r.get("lastError")) for g in groups for r in g["rules"]}
        if all(state != "unknown" for state, _ in health.values()):
            break
        await asyncio.sleep(0.5)
    return health


async def _firing(prometheus: PrometheusServer, alert: str) -> bool:
    for _ in range(120):
        answer = await asyncio.to_thread(prometheus.get, "/api/v1/alerts")
        if any(a["labels"]["alertname"] == alert for a in answer["data"]["alerts"]):
            return True
        await asyncio.sleep(0.5)
    return False


async def test_every_panel_and_rule_returns_data_from_a_real_prometheus(
    pulse: tuple[str, str], pool: asyncpg.Pool
) -> None:
    api, worker_target = pulse
    key = (await TenantStore(pool).create(f"prom-{os.getpid()}")).api_key
    api_target = api.removeprefix("http://")
    targets = {"pulse-api": [api_target], "pulse-worker": [worker_target]}
    with PrometheusServer(targets, RULE_FILES) as prometheus:
        async with aiohttp.ClientSession() as session:
            sender = Sender(session, api, key)
            # Given a first round of traffic, scraped
            await _round(sender)
            first = await _until_all_have_data(
                prometheus, {"dead": "pulse_notifications_dead_lettered_total"}
            )
            assert first == {}, prometheus.log()
            # And a second round, and a dead letter replayed
            await _round(sender)
            dead = await sender.dead_letters()
            await sender.post(f"/api/dead-letters/{dead[0]['id']}/replay")

        # When every panel's and every rule's expression is evaluated by Prometheus
        exprs = {f"panel {title}: {expr}": expr for title, expr in panel_expressions()}
        exprs |= {f"record {r['record']}": r["expr"] for r in rules("record")}
        exprs |= {f"alert {r['alert']}": _watched(r["expr"]) for r in rules("alert")}
        never = await _until_all_have_data(prometheus, exprs)

        # Then each returned a number; every rule evaluates without error; both targets are up
        assert never == {}
        health = await _rule_health(prometheus)
        assert {name for name, (state, _) in health.items() if state != "ok"} == set(), health
        up = await asyncio.to_thread(prometheus.query, "up")
        assert sorted((s["metric"]["job"], s["value"][1]) for s in up["data"]["result"]) == [
            ("pulse-api", "1"),
            ("pulse-worker", "1"),
        ]
        # And the dead letters of the second round set off their alert, as they should
        assert await _firing(prometheus, "PulseDeadLettersGrowing")
        # And the alerts' own expressions parse (quiet ones answer an empty vector)
        for rule in rules("alert"):
            assert (await asyncio.to_thread(prometheus.query, rule["expr"]))["status"] == "success"
