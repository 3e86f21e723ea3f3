"""SFTP read throughput: Silta's SftpStore against OpenSSH's own ``sftp`` client.

One file (default 500 MiB of random bytes) lies in the root of a private sshd on loopback,
started the way the tests start theirs (``tests/servers/sshd.py``). Each run reads it:

  silta         ``SftpStore.open_read`` streamed in 4 MiB reads, counting bytes
  silta-sha256  the same with a sha256 of every chunk (what the sync engine's scan does)
  openssh       ``sftp -b batch ... get FILE /dev/null`` (OpenSSH 9.x's own pipelining)
  paramiko      (only with ``--only``) paramiko's own ``SFTPFile`` with ``prefetch()``, read
                in 4 MiB reads: what a connector written the obvious way gets

Runs are interleaved (round 1 of every path, then round 2, ...) because this machine's
speed drifts over minutes; the ratios are medians of the per-round ratios. A local sha256
pass over the file is printed for scale. ``--request-kib``, ``--read-ahead-mib``,
``--window-mib`` and ``--packet-kib`` override SftpStore's tuning for a sweep.

Usage::

    .venv/bin/python bench/sftp_throughput.py                    # 500 MiB, 3 runs
    .venv/bin/python bench/sftp_throughput.py --size-mb 100 --runs 5
    .venv/bin/python bench/sftp_throughput.py --request-kib 32 --read-ahead-mib 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 1 << 20
READ_CHUNK = 4 * MIB  # the sync engine's HASH_CHUNK
FILE_NAME = "bench.bin"

PATHS: dict[str, str] = {
    "silta": "SftpStore.open_read, 4 MiB reads, bytes counted",
    "silta-sha256": "SftpStore.open_read + sha256 of each chunk (the engine's scan)",
    "openssh": "OpenSSH sftp -b: get FILE /dev/null",
    "paramiko": "paramiko SFTPFile.prefetch() + 4 MiB reads (stock settings)",
}
DEFAULT_PATHS = ["silta", "silta-sha256", "openssh"]


@dataclass
class Run:
    path: str
    seconds: float
    bytes: int
    cpu_seconds: float  # this process (Silta) or the sftp/ssh children (OpenSSH)

    @property
    def mib_s(self) -> float:
        return self.bytes / MIB / self.seconds


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def make_file(path: Path, size: int) -> None:
    block = 16 * MIB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(block, left)))
            left -= block


def run_silta(store: Any, path: str, size: int, sha: bool) -> Run:
    cpu0 = _cpu_self()
    t0 = time.perf_counter()
    h = hashlib.sha256() if sha else None
    n = 0
    with store.open_read(FILE_NAME) as f:
        while chunk := f.read(READ_CHUNK):
            n += len(chunk)
            if h is not None:
                h.update(chunk)
    seconds = time.perf_counter() - t0
    if n != size:
        raise RuntimeError(f"{path}: read {n} bytes of {size}")
    return Run(path, seconds, n, _cpu_self() - cpu0)


def run_openssh(server: Any, remote: Path, size: int, work: Path) -> Run:
    batch = work / "batch.txt"
    batch.write_text(f"get {remote} /dev/null\n")
    cmd = ["sftp", "-q", "-b", str(batch), "-i", str(server.key_file),
           "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
           "-o", "BatchMode=yes", "-P", str(server.port), f"{server.username}@{server.host}"]
    cpu0 = _cpu_children()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sftp failed ({proc.returncode}): {proc.stderr.strip()}")
    return Run("openssh", seconds, size, _cpu_children() - cpu0)


def run_paramiko(server: Any, remote: Path, size: int) -> Run:
    import paramiko

    client = paramiko.SSHClient()
    client.get_host_keys().load(str(server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(server.host, server.port, server.username, key_filename=str(server.key_file),
                   allow_agent=False, look_for_keys=False)
    try:
        sftp = client.open_sftp()
        cpu0 = _cpu_self()
        t0 = time.perf_counter()
        n = 0
        with sftp.open(str(remote), "rb") as f:
            f.prefetch(size)
            while chunk := f.read(READ_CHUNK):
                n += len(chunk)
        seconds = time.perf_counter() - t0
    finally:
        client.close()
    return Run("paramiko", seconds, n, _cpu_self() - cpu0)


def local_sha256(path: Path) -> float:
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return time.perf_counter() - t0


def report(runs: dict[str, list[Run]], size: int, sha_s: float) -> None:
    print()
    head = (f"{'path':<14}{'best MiB/s':>11}{'median':>8}{'worst':>8}{'seconds':>9}"
            f"{'cores':>7}  what")
    print(head)
    print("-" * (len(head) + 50))
    for path, rs in runs.items():
        rates = sorted(r.mib_s for r in rs)
        med = statistics.median(rates)
        mid = min(rs, key=lambda r: abs(r.mib_s - med))
        print(f"{path:<14}{rates[-1]:>11.1f}{med:>8.1f}{rates[0]:>8.1f}{mid.seconds:>9.2f}"
              f"{mid.cpu_seconds / mid.seconds:>7.2f}  {PATHS[path]}")
    print(f"(cores: client CPU time / wall time; the server's sshd is not counted. A local "
          f"sha256 pass over the file: {size / MIB / sha_s:.0f} MiB/s.)")
    base = runs.get("openssh")
    if not base:
        return
    print()
    for path in ("silta", "silta-sha256", "paramiko"):
        if path not in runs:
            continue
        ratios = [a.mib_s / b.mib_s for a, b in zip(runs[path], base, strict=False)]
        best = max(r.mib_s for r in runs[path]) / max(r.mib_s for r in base)
        print(f"ratio {path}/openssh: median of per-round ratios {statistics.median(ratios):.2f}"
              f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)}); best/best {best:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=float, default=500, help="file size in MiB")
    ap.add_argument("--runs", type=int, default=3, help="rounds (every path once per round)")
    ap.add_argument("--only", default=",".join(DEFAULT_PATHS),
                    help=f"comma list: {', '.join(PATHS)}")
    ap.add_argument("--request-kib", type=int, help="SFTP read request size (SftpStore)")
    ap.add_argument("--read-ahead-mib", type=float, help="bytes requested ahead per stream")
    ap.add_argument("--window-mib", type=float, help="SSH channel window")
    ap.add_argument("--packet-kib", type=int, help="SSH channel max packet size")
    ap.add_argument("--workdir", type=Path, help="where sshd and the file live (default: temp)")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.only.split(",") if p.strip()]
    if not paths or any(p not in PATHS for p in paths):
        ap.error(f"--only takes a comma list of {', '.join(PATHS)}")
    if args.runs < 1:
        ap.error("--runs must be 1 or more")

    from connectors.sftp import SftpStore
    from tests.servers.sshd import start_sshd

    if args.request_kib:
        SftpStore.REQUEST_SIZE = args.request_kib << 10
    if args.read_ahead_mib:
        SftpStore.READ_AHEAD = int(args.read_ahead_mib * MIB)
    if args.window_mib:
        SftpStore.WINDOW_SIZE = int(args.window_mib * MIB)
    if args.packet_kib:
        SftpStore.MAX_PACKET = args.packet_kib << 10

    work = args.workdir or Path(tempfile.mkdtemp(prefix="silta-sftp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    server = start_sshd(work / "sshd")
    store = None
    try:
        size = int(args.size_mb * MIB)
        remote = server.root / FILE_NAME
        make_file(remote, size)
        sha_s = local_sha256(remote)  # also puts the file in the page cache
        store = server.store(server.root, timeout_seconds=60.0)
        detail = store.check()
        ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
        print(f"SFTP read throughput ({time.strftime('%Y-%m-%d %H:%M')})")
        print(f"  file:    {size / MIB:,.0f} MiB of random bytes on a private sshd at "
              f"127.0.0.1:{server.port}")
        print(f"  server:  {detail}")
        print(f"  client:  paramiko {version('paramiko')}, {ssh_version.strip()}; "
              f"{os.cpu_count()} cores, Python {platform.python_version()}, load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"  silta:   request {SftpStore.REQUEST_SIZE >> 10} KiB (capped by the "
              f"server's limits), read-ahead {SftpStore.READ_AHEAD / MIB:g} MiB, window "
              f"{SftpStore.WINDOW_SIZE / MIB:g} MiB, packet {SftpStore.MAX_PACKET >> 10} KiB")
        runs: dict[str, list[Run]] = {p: [] for p in paths}
        for rnd in range(args.runs):
            for path in paths:
                if path == "openssh":
                    r = run_openssh(server, remote, size, work)
                elif path == "paramiko":
                    r = run_paramiko(server, remote, size)
                else:
                    r = run_silta(store, path, size, sha=path == "silta-sha256")
                runs[path].append(r)
                print(f"  round {rnd + 1}/{args.runs} {path}: {r.seconds:.2f} s, "
                      f"{r.mib_s:.1f} MiB/s", file=sys.stderr, flush=True)
        report(runs, size, sha_s)
        load = os.getloadavg()[0]
        if load > (os.cpu_count() or 1) + 1:
            print(f"WARNING: load average {load:.2f} on {os.cpu_count()} cores: other processes "
                  "competed for the CPU (the transfer itself keeps about two busy); the "
                  "figures are disturbed, run again on a quiet machine")
    finally:
        if store is not None:
            store.close()
        server.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
