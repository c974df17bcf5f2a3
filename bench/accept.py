"""Accept: requests/s and p50/p99 under wrk at 64 connections, for Pulse's
``POST /api/notifications/`` (one API process) and the bare endpoints of bench/bare_xadd.py.

wrk comes from Debian's package ``wrk``, installed here with apt-get where missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis

from bench.processes import ROOT, clean_env, pulse_api, wait_http
from bench.scope import Scope, fresh_scope
from bench.servers import free_port
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore

CONNECTIONS = 64
THREADS = 2
WARMUP_S = 1
PATH = "/api/notifications/"


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: installing wrk (Debian package) with apt-get", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return found


def wrk(url: str, seconds: float, key: str = "none") -> dict[str, Any]:
    command = [
        ensure_wrk(), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
        "-s", str(ROOT / "bench" / "post.lua"), url,
    ]  # fmt: skip
    env = os.environ | {"PULSE_BENCH_KEY": key}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


async def pulse_accept(redis_url: str, admin_url: str, seconds: float) -> dict[str, Any]:
    async with fresh_scope(redis_url, admin_url) as scope:
        return await accept_in(scope, seconds)


async def accept_in(scope: Scope, seconds: float) -> dict[str, Any]:
    """wrk against one ``pulse api`` on ``scope``, as a tenant of its own, after a warm-up."""
    pool = await create_pool(scope.database_url, 1, 1)
    try:
        key = (await TenantStore(pool).create(f"bench-{scope.prefix}")).api_key
    finally:
        await pool.close()
    with pulse_api(scope, free_port()) as base:
        wrk(base + PATH, WARMUP_S, key)
        return wrk(base + PATH, seconds, key)


async def bare_accept(redis_url: str, mode: str, seconds: float) -> dict[str, Any]:
    stream = f"bench{secrets.token_hex(4)}:bare"
    try:
        with bare_xadd(redis_url, stream, mode) as base:
            wrk(base + PATH, WARMUP_S)
            return wrk(base + PATH, seconds)
    finally:
        redis: Redis = Redis.from_url(redis_url)
        await redis.delete(stream)
        await redis.aclose()


@contextlib.contextmanager
def bare_xadd(redis_url: str, stream: str, mode: str) -> Iterator[str]:
    port = free_port()
    args = ["--redis-url", redis_url, "--port", str(port), "--stream", stream, "--mode", mode]
    command = [sys.executable, "-m", "bench.bare_xadd", *args]
    process = subprocess.Popen(command, env=clean_env({}), cwd=ROOT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", process)
        yield base
    finally:
        process.terminate()
        process.wait(30)
