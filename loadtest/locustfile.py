"""Pulse under load through its public API, and the end that matters: deliveries.

Each simulated client (one tenant's API key, from ``LOADTEST_API_KEYS``) sends single
notifications with Idempotency-Keys across channels and priorities, retries some with the same
key, sends batches, reads statuses and attempts, and lists. Every id it is answered is tracked:
a poller per Locust process reads the finished ones back from the list API and reports each as
a ``DELIVERY`` line, ``accept → delivered``, whose times are Pulse's own ``delivered_at -
created_at``. After ``--run-time`` the users stop and the run waits (``LOADTEST_DRAIN_TIME``,
30 s) until every id it sent has finished; one still unfinished then makes the run fail.

    PYTHONPATH=. locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s \
        --host http://127.0.0.1:8000 --csv out/stats --html out/report.html

Settings (environment): LOADTEST_API_KEYS (comma-separated, required), LOADTEST_WEBHOOK_URL (a
receiver Pulse may post to; without it no webhooks are sent), LOADTEST_WAIT_MAX (seconds a user
waits between tasks at most, 0.5), LOADTEST_DRAIN_TIME (30), LOADTEST_SUMMARY (a path for the
summary as JSON).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, LoadTestShape, between, events, task
from locust.clients import HttpSession, ResponseContextManager
from locust.env import Environment
from locust.rpc import Message
from locust.runners import MasterRunner, Runner, WorkerRunner
from locust.stats import RequestStats, StatsEntry

from loadtest import mix
from loadtest.delivery import FINISHED, DeliveryBook, Settled
from loadtest.summary import DELIVERED, DELIVERY, render

logger = logging.getLogger("loadtest")
PENDING_MESSAGE = "pulse_pending"
POLL_NAME = "/api/notifications/ [delivery poll]"
POLL_S = 1.0
LIST_LIMIT = 500
MAX_PAGES = 10  # per key, status and poll: a backlog is read over several polls


class DeliveryFailed(Exception):
    """A notification this run sent ended ``failed``."""


@dataclass(frozen=True)
class Report:
    at: float  # when it arrived (the receiver's clock)
    accepted: int  # ids that process was answered
    pending: int  # ids sent and not yet finished
    users: int  # users still running in that process


@dataclass
class Run:
    """This process's share of the run: its tracker (where users are), and on the master (or a
    lone process) the unfinished counts each process reported, with when they arrived."""

    tracker: Tracker | None = None
    reports: dict[str, Report] = field(default_factory=dict)
    users_started: itertools.count[int] = field(default_factory=itertools.count)  # keys in turn


class Tracker:
    """Ids this process was answered, polled until they finish; a greenlet of its own."""

    def __init__(self, environment: Environment, host: str) -> None:
        self.book = DeliveryBook()
        self.tag = uuid.uuid4().hex  # the metadata value that finds this process's sends
        self._environment = environment
        self._session = HttpSession(
            base_url=host, request_event=environment.events.request, user=None
        )
        self._greenlet = gevent.spawn(self._run)

    def sent(self, key: str, ids: list[str]) -> None:
        self.book.sent(key, ids, datetime.now(UTC))

    def _run(self) -> None:
        while True:
            for key in self.book.keys_waiting():
                self._poll(key)
            runner = self._environment.runner
            if runner is not None:
                report = {
                    "accepted": self.book.accepted,
                    "pending": self.book.pending(),
                    "users": runner.user_count,
                }
                runner.send_message(PENDING_MESSAGE, report)
            gevent.sleep(POLL_S)

    def _poll(self, key: str) -> None:
        since = self.book.since(key)
        for status in FINISHED:
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                page = self._page(key, status, since, cursor)
                if page is None:
                    return
                for settled in self.book.settle(key, page["items"]):
                    self._report(settled)
                cursor = page["next_cursor"]
                if cursor is None:
                    break

    def _page(
        self, key: str, status: str, since: datetime | None, cursor: str | None
    ) -> dict[str, Any] | None:
        params: dict[str, str | int] = {
            "status": status,
            "metadata.loadtest": self.tag,
            "limit": LIST_LIMIT,
        }
        if since is not None:
            params["created_after"] = since.isoformat()
        if cursor is not None:
            params["cursor"] = cursor
        headers = {"Authorization": f"Bearer {key}"}
        with self._session.get(
            "/api/notifications/", params=params, headers=headers, name=POLL_NAME,
            catch_response=True,
        ) as answer:  # fmt: skip
            page: dict[str, Any] | None = _json(answer, 200)
            return page

    def _report(self, settled: Settled) -> None:
        failed = settled.status != "delivered"
        self._environment.events.request.fire(
            request_type=DELIVERY,
            name=DELIVERED,
            response_time=settled.latency_ms,
            response_length=0,
            exception=DeliveryFailed(f"{settled.id}: {settled.error}") if failed else None,
            context={},
        )


RUN = Run()


def _json(answer: ResponseContextManager, expected: int) -> Any:
    """The answer's JSON when its status is the one expected; else a failure, and None."""
    if answer.status_code != expected:
        answer.failure(f"{answer.status_code}: {answer.text[:300]}")
        return None
    return answer.json()


class PulseClient(HttpUser):
    """A product that uses Pulse: mostly sends, some reads, now and then a retry or a batch."""

    wait_max = float(os.environ.get("LOADTEST_WAIT_MAX", "0.5"))
    wait_time = between(min(0.05, wait_max), wait_max)

    def on_start(self) -> None:
        keys = os.environ["LOADTEST_API_KEYS"].split(",")
        self.key = keys[next(RUN.users_started) % len(keys)]
        self.client.headers["Authorization"] = f"Bearer {self.key}"
        self.rng = random.Random()
        self.webhook_url = os.environ.get("LOADTEST_WEBHOOK_URL") or None
        # Single sends only: a batch item's id answers 404 until a worker has fanned the batch
        # out (its row is written then), which under load is after the client reads it.
        self.recent: deque[str] = deque(maxlen=100)
        self.last: tuple[str, dict[str, Any], str] | None = None

    @task(9)
    def send(self) -> None:
        body = mix.single(self.rng, self.webhook_url, self._metadata())
        idempotency_key = f"lt-{uuid.uuid4().hex}"
        accepted = self._post("/api/notifications/", body, idempotency_key, "send")
        if accepted is not None:
            self._sent([accepted["id"]])
            self.recent.append(accepted["id"])
            self.last = (idempotency_key, body, accepted["id"])

    @task(1)
    def retry_with_same_key(self) -> None:
        """A client that lost the answer sends again: the first answer, nothing new."""
        if self.last is None:
            return
        idempotency_key, body, first_id = self.last
        with self.client.post(
            "/api/notifications/", json=body, headers={"Idempotency-Key": idempotency_key},
            name="/api/notifications/ (retry, same key)", catch_response=True,
        ) as answer:  # fmt: skip
            replayed = _json(answer, 202)
            if replayed is not None and (
                replayed["id"] != first_id or answer.headers.get("Idempotent-Replayed") != "true"
            ):
                answer.failure(f"not the first answer: {answer.text[:300]}")

    @task(1)
    def send_batch(self) -> None:
        body = mix.batch(self.rng, self.webhook_url, self._metadata())
        accepted = self._post("/api/notifications/batch", body, f"lt-{uuid.uuid4().hex}", "batch")
        if accepted is not None:
            self._sent([item["id"] for item in accepted["items"] if "id" in item])

    @task(4)
    def read_status(self) -> None:
        if self.recent:
            notification_id = self.rng.choice(self.recent)
            self._get(f"/api/notifications/{notification_id}", "/api/notifications/{id}")

    @task(1)
    def read_attempts(self) -> None:
        if self.recent:
            notification_id = self.rng.choice(self.recent)
            path = f"/api/notifications/{notification_id}/attempts"
            self._get(path, "/api/notifications/{id}/attempts")

    @task(2)
    def list_recent(self) -> None:
        query = self.rng.choice(["", "&status=delivered", "&channel=email", "&priority=2"])
        self._get(f"/api/notifications/?limit=20{query}", "/api/notifications/?limit=20")

    def _metadata(self) -> dict[str, str]:
        assert RUN.tracker is not None
        return {"loadtest": RUN.tracker.tag}

    def _post(
        self, path: str, body: dict[str, Any], idempotency_key: str, what: str
    ) -> dict[str, Any] | None:
        with self.client.post(
            path, json=body, headers={"Idempotency-Key": idempotency_key},
            name=f"{path} ({what})", catch_response=True,
        ) as answer:  # fmt: skip
            accepted: dict[str, Any] | None = _json(answer, 202)
            return accepted

    def _get(self, path: str, name: str) -> None:
        with self.client.get(path, name=name, catch_response=True) as answer:
            _json(answer, 200)

    def _sent(self, ids: list[str]) -> None:
        assert RUN.tracker is not None
        RUN.tracker.sent(self.key, ids)


class LoadThenDrain(LoadTestShape):
    """``--users`` for ``--run-time``, then none until every process reports nothing unfinished
    (at most LOADTEST_DRAIN_TIME): deliveries still on their way are measured too."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        assert options is not None
        elapsed = self.get_run_time()
        if options.run_time is None or elapsed < options.run_time:
            return options.num_users, options.spawn_rate
        drain_s = float(os.environ.get("LOADTEST_DRAIN_TIME", "30"))
        if elapsed < options.run_time + drain_s and not _drained(
            self.runner, time.time() - elapsed + options.run_time
        ):
            return 0, max(options.spawn_rate, options.num_users)  # all stop at once
        return None


def _drained(runner: Runner | None, since: float) -> bool:
    """Every process reported, since the drain began, no users running and nothing pending."""
    processes = len(runner.clients) if isinstance(runner, MasterRunner) else 1
    fresh = [report for report in RUN.reports.values() if report.at >= since]
    return len(fresh) >= processes and not any(r.pending or r.users for r in fresh)


@events.test_start.add_listener
def _start_tracker(environment: Environment, **kwargs: Any) -> None:
    if RUN.tracker is None and not isinstance(environment.runner, MasterRunner):
        assert environment.host is not None, "give --host"
        RUN.tracker = Tracker(environment, environment.host)


@events.init.add_listener
def _listen_for_reports(environment: Environment, **kwargs: Any) -> None:
    if environment.runner is not None and not isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(PENDING_MESSAGE, _record_report)


def _record_report(environment: Environment, msg: Message) -> None:
    RUN.reports[msg.node_id] = Report(
        at=time.time(),
        accepted=msg.data["accepted"],
        pending=msg.data["pending"],
        users=msg.data["users"],
    )


@events.quitting.add_listener
def _print_summary(environment: Environment, **kwargs: Any) -> None:
    if environment.runner is None or isinstance(environment.runner, WorkerRunner):
        return
    summary = summarize(environment.runner.stats)
    if path := os.environ.get("LOADTEST_SUMMARY"):
        Path(path).write_text(json.dumps(summary, indent=2) + "\n")  # the runner prints it last
    else:
        print(render(summary), flush=True)
    if summary["delivery"]["pending"]:
        logger.error("%d notifications not finished at the end", summary["delivery"]["pending"])
        environment.process_exit_code = 1


def summarize(stats: RequestStats) -> dict[str, Any]:
    """HTTP: the clients' requests (not the delivery polls); delivery: its own line."""
    http = StatsEntry(stats, "HTTP", "", use_response_times_cache=False)
    for entry in stats.entries.values():
        if entry.method != DELIVERY and entry.name != POLL_NAME:
            http.extend(entry)
    delivery = stats.entries.get((DELIVERED, DELIVERY)) or StatsEntry(stats, DELIVERED, DELIVERY)
    return {
        "http": _figures(http) | {"failures": http.num_failures},
        "delivery": _figures(delivery)
        | {
            "delivered": delivery.num_requests - delivery.num_failures,
            "failed": delivery.num_failures,
            "accepted": sum(report.accepted for report in RUN.reports.values()),
            "pending": sum(report.pending for report in RUN.reports.values()),
        },
    }


def _figures(entry: StatsEntry) -> dict[str, Any]:
    span = (entry.last_request_timestamp or entry.start_time) - entry.start_time
    count = entry.num_requests

    def percentile(share: float) -> float | None:
        return entry.get_response_time_percentile(share) if count else None

    return {
        "requests": count,
        "per_s": count / span if span > 0 else 0.0,
        "p50": percentile(0.5),
        "p95": percentile(0.95),
        "p99": percentile(0.99),
    }
