"""The embedded servers start real Redis and PostgreSQL and leave no process behind; the SMTP
sink receives and parses mail."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest
from redis.asyncio import Redis

from pulse.devtools.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServers,
    is_running,
    process_tree,
)
from pulse.devtools.smtp_sink import ReceivedMail, SmtpSink

pytestmark = pytest.mark.system


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line names ``text`` (Linux; elsewhere none are found)."""
    found = []
    needle = os.fsencode(text)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "cmdline").read_bytes() and is_running(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def test_servers_answer_and_leave_nothing_behind(tmp_path: Path) -> None:
    servers = EmbeddedServers(tmp_path)
    with servers:
        redis_pid, postgres_pid = servers.redis.pid, servers.postgres.pid
        assert redis_pid is not None
        assert postgres_pid is not None
        conn = await asyncpg.connect(servers.database_url)  # keeps a backend alive across stop
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        redis = Redis.from_url(servers.redis_url)
        try:
            assert await redis.ping()
        finally:
            await redis.aclose()
        pids = [*process_tree(postgres_pid), redis_pid]
        assert len(pids) > 2  # the postmaster has children: checkpointer, walwriter, ...
    assert not [pid for pid in pids if is_running(pid)]
    assert _processes_mentioning(str(tmp_path)) == []


async def test_postgres_restarts_in_the_same_folder(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg")
    for _ in range(2):
        with postgres:
            assert postgres.pid is not None
            pids = process_tree(postgres.pid)
            conn = await asyncpg.connect(postgres.url)
            try:
                assert await conn.fetchval("SELECT 2") == 2
            finally:
                await conn.close()
        assert not [pid for pid in pids if is_running(pid)]


def test_redis_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed ``pulse dev`` does not leave Redis running.

    A middle process is made a child subreaper, so the orphaned Redis is reparented to it and
    reaped there instead of lingering as a zombie under a PID 1 that may never reap it.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    parent_script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from pulse.devtools.embedded import EmbeddedRedis
        redis = EmbeddedRedis(Path({str(tmp_path)!r}))
        redis.start()
        print(redis.pid, flush=True)
        time.sleep(60)
        """
    )
    reaper_script = textwrap.dedent(
        f"""
        import ctypes, os, subprocess, sys, time
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        parent = subprocess.Popen([sys.executable, "-c", {parent_script!r}],
                                  stdout=subprocess.PIPE, text=True)
        redis_pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(redis_pid, os.WNOHANG)[0] == redis_pid:
                    print("reaped", redis_pid)
                    break
            except ChildProcessError:  # not reparented to us yet
                pass
            time.sleep(0.02)
        else:
            os.kill(redis_pid, 9)
            print("survived", redis_pid)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", reaper_script], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.startswith("reaped"), result.stdout + result.stderr
    assert not is_running(int(result.stdout.split()[1]))


def test_redis_falls_back_to_tcp_for_a_long_path(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    with EmbeddedRedis(deep) as redis:
        assert redis.url.startswith("redis://127.0.0.1:")
        pid = redis.pid
    assert pid is not None
    assert not is_running(pid)


async def test_smtp_sink_receives_and_parses(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[ReceivedMail] = []
    message = EmailMessage()
    message["From"] = "pulse@example.test"
    message["To"] = "ada@example.test"
    message["Subject"] = "Your code is 123456"
    message["Message-ID"] = "<abc123@pulse>"
    message.set_content("Hello Ada,\nyour code is 123456.\n")
    with (
        caplog.at_level(logging.INFO, logger="pulse.devtools.smtp_sink"),
        SmtpSink(on_message=seen.append) as sink,
    ):
        assert sink.port != 0
        await aiosmtplib.send(message, hostname="127.0.0.1", port=sink.port, start_tls=False)
        mails = sink.messages()
    assert len(mails) == 1
    mail = mails[0]
    assert mail.mail_from == "pulse@example.test"
    assert mail.rcpt_tos == ["ada@example.test"]
    assert mail.subject == "Your code is 123456"
    assert mail.text == "Hello Ada,\nyour code is 123456.\n"
    assert mail.message_id == "<abc123@pulse>"
    assert b"Subject: Your code is 123456" in mail.raw
    assert seen == [mail]
    assert "received mail from pulse@example.test to ada@example.test" in caplog.text
    mails.clear()  # a copy: the sink's own list is untouched
    assert sink.messages() == [mail]


async def test_smtp_sink_port_zero_gives_distinct_ports() -> None:
    with SmtpSink() as first, SmtpSink() as second:
        assert first.port != second.port
        await asyncio.sleep(0)
