"""``make loadtest``: a Pulse of its own, tenants, headless Locust, a summary, a clean stop.

Starts ``pulse dev`` on a free port (embedded Redis and PostgreSQL unless PULSE_REDIS_URL and
PULSE_DATABASE_URL name servers), a webhook receiver on loopback that Pulse is allowed to post
to, creates LOADTEST_TENANTS tenants through the operator API, and runs Locust for
LOADTEST_RUN_TIME with LOADTEST_USERS users: in one process, or with LOADTEST_WORKERS > 0 as one
master and that many workers on loopback. Reports (CSV, HTML, summary.json, logs) go to
LOADTEST_OUT. The exit status is Locust's: not 0 on any failed request, failed delivery or
notification still unfinished after the drain.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import msgspec

from loadtest.summary import render
from loadtest.tenants import create_tenants
from loadtest.webhook_receiver import WebhookReceiver
from pulse.devtools.ports import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STARTUP_S = 300.0  # pulse dev's first start initialises an embedded PostgreSQL
STOP_S = 60.0


@dataclass(frozen=True)
class Options:
    users: int
    spawn_rate: float
    run_time: str
    workers: int
    tenants: int
    drain_s: float
    out: Path

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Options:
        users = int(env.get("LOADTEST_USERS", "20"))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return cls(
            users=users,
            spawn_rate=float(env.get("LOADTEST_SPAWN_RATE", str(max(users / 5, 1)))),
            run_time=env.get("LOADTEST_RUN_TIME", "60s"),
            workers=int(env.get("LOADTEST_WORKERS", "0")),
            tenants=int(env.get("LOADTEST_TENANTS", "2")),
            drain_s=float(env.get("LOADTEST_DRAIN_TIME", "30")),
            out=Path(env.get("LOADTEST_OUT", str(HERE / "reports" / stamp))).resolve(),
        )


def seconds(timespan: str) -> int:
    """Locust's --run-time notation (``90``, ``90s``, ``1m30s``, ``1h``) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?", timespan.strip())
    if parts is None or not any(parts.groups()):
        raise ValueError(f"LOADTEST_RUN_TIME={timespan!r} is not like 30s, 2m or 1h30m")
    hours, minutes, secs = (int(group or 0) for group in parts.groups())
    return hours * 3600 + minutes * 60 + secs


@contextlib.contextmanager
def pulse_dev(out: Path, webhooks: bool) -> Iterator[tuple[str, str]]:
    """A ``pulse dev`` of its own on a free port: (base URL, the operator key it printed)."""
    port = free_port("127.0.0.1")
    workdir = Path(tempfile.mkdtemp(prefix="pulse-loadtest-"))
    env = dict(os.environ)
    env.update(PULSE_HTTP_PORT=str(port), PULSE_DATA_DIR=str(workdir / "data"))
    env.setdefault("PULSE_LOG_LEVEL", "WARNING")  # the SMTP sink logs each mail at INFO
    env.pop("PULSE_DEV_API_KEY", None)
    if webhooks:  # the receiver is on loopback, which Pulse refuses unless told
        env.update(PULSE_WEBHOOK_ALLOW_HTTP="true", PULSE_WEBHOOK_ALLOW_PRIVATE="true")
    log = (out / "pulse.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "pulse", "dev"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=log,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        key = _operator_key(process, process.stdout, out / "pulse.log")
        yield f"http://127.0.0.1:{port}", key
    finally:
        _stop(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _operator_key(process: subprocess.Popen[bytes], stdout: IO[bytes], log: Path) -> str:
    """The key on the banner pulse dev prints once it serves (its tenant is an operator); the
    rest of its output is read on, so a full pipe never blocks it."""
    late = threading.Timer(STARTUP_S, process.kill)  # a pulse dev that hangs ends the wait too
    late.start()
    try:
        for raw in stdout:
            line = raw.decode(errors="replace")
            if line.startswith("API key of tenant"):
                threading.Thread(target=stdout.read, daemon=True).start()
                return line.split(": ", 1)[1].strip()
    finally:
        late.cancel()
    process.kill()
    raise SystemExit(f"pulse dev did not start (within {STARTUP_S:.0f} s); its log: {log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """As Ctrl-C does: pulse dev stops its worker, API and the servers it started."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def locust_env(keys: list[str], webhook_url: str, options: Options) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        LOADTEST_API_KEYS=",".join(keys),
        LOADTEST_WEBHOOK_URL=webhook_url,
        LOADTEST_DRAIN_TIME=str(options.drain_s),
        LOADTEST_SUMMARY=str(options.out / "summary.json"),
    )
    return env


def run_locust(host: str, env: dict[str, str], options: Options) -> int:
    """Locust headless (one master and its workers when asked); its exit status."""
    common = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--host", host]
    headless = [
        "--headless", "--only-summary", "-u", str(options.users), "-r", str(options.spawn_rate),
        "-t", options.run_time, "--csv", str(options.out / "stats"),
        "--html", str(options.out / "report.html"),
    ]  # fmt: skip
    timeout = seconds(options.run_time) + options.drain_s + 180
    if options.workers <= 0:
        return subprocess.run(
            [*common, *headless], env=env, timeout=timeout, check=False
        ).returncode
    master_port = free_port("127.0.0.1")
    master = [
        "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
        "--expect-workers", str(options.workers), "--expect-workers-max-wait", "120",
    ]  # fmt: skip
    worker = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]
    with contextlib.ExitStack() as stack:
        for n in range(1, options.workers + 1):
            log = stack.enter_context((options.out / f"locust-worker-{n}.log").open("wb"))
            process = subprocess.Popen(
                [*common, *worker], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            stack.callback(_reap, process)
        return subprocess.run(
            [*common, *headless, *master], env=env, timeout=timeout, check=False
        ).returncode


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Workers quit when their master does; one that does not is stopped."""
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait()


def main() -> int:
    options = Options.from_env(dict(os.environ))
    options.out.mkdir(parents=True, exist_ok=True)
    with WebhookReceiver() as receiver, pulse_dev(options.out, webhooks=True) as (host, key):
        print(f"Pulse under test at {host}; reports in {options.out}", flush=True)
        keys = create_tenants(host, key, options.tenants, f"loadtest-{secrets.token_hex(3)}")
        status = run_locust(host, locust_env(keys, receiver.url, options), options)
        webhooks, duplicates = receiver.received, receiver.duplicates
    summary_file = options.out / "summary.json"
    if summary_file.exists():
        print(render(msgspec.json.decode(summary_file.read_bytes())))
    print(f"  webhooks   {webhooks} received by the loopback receiver, {duplicates} duplicates")
    print(f"Reports: {options.out}/stats_stats.csv, {options.out}/report.html (status {status})")
    return status


if __name__ == "__main__":
    sys.exit(main())
