"""The service retries a run that failed on a transient error by itself, with back-off.

A sync from SFTP (a real sshd behind a TCP proxy) has no schedule: without retries its
failed start-up run would wait for a person. The link stalls from the start; each run
times out, is recorded and alerted, and is tried again after 1, 2, 4, 4 ... s
(`retry_seconds = 1`, `retry_max_seconds = 4`). Once the link is back, the next retry
lands every file once and the alert resolves; a good run ends the back-off.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import dedent, duck_rows
from tests.e2e._cli import background, ledger, wait_for
from tests.servers.sshd import SshServer
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(180)


def _runs(state: Path) -> list[dict[str, Any]]:
    try:
        return ledger(state, "SELECT trigger, status, rows, error FROM runs WHERE kind='sync' "
                      "AND status != 'running' ORDER BY rowid")
    except sqlite3.Error:
        return []  # the store is being created


def test_a_transient_failure_is_retried_with_back_off_until_it_lands(
        tmp_path: Path, sftp_server: SshServer, sftp_root: Path, duck: Any) -> None:
    for i in range(3):
        (sftp_root / f"f{i}.csv").write_text(f"id,name\n{i},n{i}\n", encoding="utf-8")
    proxy = TcpProxy(sftp_server.port)
    proxy.stall()
    config = tmp_path / "silta.toml"
    config.write_text(dedent(f'''
        [agent]
        name = "test-agent"
        state_dir = "state"
        heartbeat_seconds = 1
        retry_seconds = 1
        retry_max_seconds = 4
        [lake]
        uri = "lake"
        [connectors.inbox]
        type = "sftp"
        host = "127.0.0.1"
        port = {proxy.port}
        username = "{sftp_server.username}"
        key_file = "{sftp_server.key_file}"
        known_hosts = "{sftp_server.known_hosts_for(proxy.port)}"
        root = "{sftp_root}"
        timeout_seconds = 1
        retries = 0
        [[syncs]]
        name = "s"
        source = "inbox:*.csv"
        target = "lake:raw/s"
        watch = true
        settle_seconds = 0
        '''), encoding="utf-8")
    state = tmp_path / "state"
    with proxy, background(tmp_path, "agent", "run", "--config", config) as agent:
        failed = wait_for("four failed runs", lambda: (
            r if len(r := [x for x in _runs(state) if x["status"] == "failed"]) >= 4
            else None), timeout=90)
        assert [r["trigger"] for r in failed[:4]] == ["startup-scan", "retry", "retry",
                                                      "retry"]
        # the stalled link: paramiko gives up on the silent banner one way or another
        assert all(r["error"].startswith(f"SFTP {sftp_server.username}@127.0.0.1:"
                                         f"{proxy.port}: connecting: ")
                   and r["error"].endswith("; transient: the work is retried")
                   for r in failed), failed
        alerts = ledger(state, "SELECT check_name, target, state, count FROM alerts")
        assert len(alerts) == 1
        assert (alerts[0]["check_name"], alerts[0]["target"], alerts[0]["state"]) == (
            "run_failed", "sync:s", "firing")
        assert alerts[0]["count"] >= 4

        proxy.resume()
        landed = wait_for("a retry that lands the files", lambda: (
            r if (r := [x for x in _runs(state) if x["status"] == "ok"]) else None),
            timeout=60)
        assert (landed[0]["trigger"], landed[0]["rows"]) == ("retry", 3)
        time.sleep(6)  # longer than the longest back-off: no retry follows a good run
        after = _runs(state)
        assert [r["status"] for r in after[after.index(landed[0]):]] == ["ok"]
        assert agent.terminate(timeout=30) == 0, agent.stderr()
    log = agent.stderr()
    waits = [float(line.rsplit("tried again in ", 1)[1].split(" s")[0])
             for line in log.splitlines() if "tried again in" in line]
    assert waits[:4] == [1.0, 2.0, 4.0, 4.0], log
    assert "Traceback" not in log
    table = tmp_path / "lake" / "raw" / "s"
    assert duck_rows(duck, table, "SELECT id, name, _silta_source FROM t ORDER BY id") == [
        (i, f"n{i}", f"inbox:f{i}.csv") for i in range(3)]
    assert ledger(state, "SELECT state, resolved_by FROM alerts") == [
        {"state": "resolved", "resolved_by": "auto"}]
