"""`make bench`: Pulse and arq drain the same number of jobs on the same Redis and PostgreSQL.

Servers: PULSE_BENCH_REDIS_URL / PULSE_BENCH_DATABASE_URL when set, else embedded ones started
for this run. arq pins redis-py below 6, so it runs from a virtual environment of its own
(.bench-venv, made by bench/arq/setup_venv.sh). Results go to stdout and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import uvloop

from bench.pulse_drain import DrainResult, drain
from pulse.config import Settings

ROOT = Path(__file__).resolve().parent.parent
ARQ_VENV = ROOT / ".bench-venv"
REPORT = ROOT / "docs" / "benchmarks.md"
COMMAND = "make bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    args = parser.parse_args()
    with servers() as (redis_url, admin_url):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            pulse = runner.run(_pulse(redis_url, admin_url, args.jobs))
        arq = _arq(redis_url, args.jobs)
    ratio = pulse.rate / float(str(arq["rate"]))
    lines = [
        f"Pulse worker (log channel, state in PostgreSQL): {pulse.rate:,.0f} notifications/s"
        f" ({pulse.jobs} in {pulse.seconds:.2f} s)",
        f"arq {arq['version']} (no-op jobs, nothing persisted): {arq['rate']:,.0f} jobs/s"
        f" ({arq['jobs']} in {arq['seconds']:.2f} s)",
        f"ratio Pulse / arq: {ratio:.2f}x",
    ]
    print("\n".join(lines))
    if not args.no_report:
        write_report(pulse, arq, ratio)
        print(f"written to {REPORT.relative_to(ROOT)}")
    return 0


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    redis_url = os.environ.get("PULSE_BENCH_REDIS_URL")
    database_url = os.environ.get("PULSE_BENCH_DATABASE_URL")
    if redis_url and database_url:
        yield redis_url, database_url
        return
    from pulse.devtools.embedded import EmbeddedServers

    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as workdir:
        os.chmod(workdir, 0o755)
        with EmbeddedServers(Path(workdir)) as embedded:
            yield redis_url or embedded.redis_url, database_url or embedded.database_url


async def _pulse(redis_url: str, admin_url: str, jobs: int) -> DrainResult:
    name = f"pulse_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
        return await drain(redis_url, url, jobs, Settings(log_level="WARNING"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _arq(redis_url: str, jobs: int) -> dict[str, object]:
    subprocess.run(["bash", str(ROOT / "bench/arq/setup_venv.sh"), str(ARQ_VENV)], check=True)
    result = subprocess.run(
        [
            str(ARQ_VENV / "bin/python"),
            str(ROOT / "bench/arq/drain.py"),
            "--redis-url",
            redis_url,
            "--jobs",
            str(jobs),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    parsed: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


def write_report(pulse: DrainResult, arq: dict[str, object], ratio: float) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    arq_rate, arq_seconds = float(str(arq["rate"])), float(str(arq["seconds"]))
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(
        f"""# Benchmarks

Reproduce with `{COMMAND}` (servers: embedded Redis/Valkey and PostgreSQL unless
PULSE_BENCH_REDIS_URL / PULSE_BENCH_DATABASE_URL are set). Timings on a shared 2-core machine
are noisy: compare the ratio, which both peers measure in the same run on the same servers.

## Drain: one worker process empties a queue of {pulse.jobs:,} jobs

| peer | what a job does | jobs/s | seconds |
|---|---|---|---|
| Pulse | log channel, all state in PostgreSQL (below) | {pulse.rate:,.0f} | {pulse.seconds:.2f} |
| arq {arq["version"]} | no-op function; nothing persisted | {arq_rate:,.0f} | {arq_seconds:.2f} |

**Pulse / arq: {ratio:.2f}x**

What Pulse does per notification in this figure, batched per fetch round: a claim (status
`delivering` and an audit row, one statement per batch), the call down the tenant's route of
providers (breaker admission, a count per provider), then one statement per acker batch for the
status, its audit row, the attempt row and the receipt check, then `ack.lua` (XACK, XDEL, index
HDEL); leases are renewed in Redis and PostgreSQL meanwhile. The run checks every
notification ended `delivered` with its three audit rows. arq runs a no-op function and
persists nothing (`keep_result=0`), at its fastest settings.

Last run: {now} on {machine()}. arq settings: `{json.dumps(arq.get("settings", {}))}`.
"""
    )


if __name__ == "__main__":
    sys.exit(main())
