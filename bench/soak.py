"""Soak: the agent as a service for a long while, fed a file every few seconds.

The world is the demo's (config/demo.toml, written under --out with its own paths), with
two changes: the survey answers' sync settles after 1 s (so each file dropped is a sync
run of its own, seconds apart) and the prediction runs on a cron every minute instead of
after each sync. The monitor and the publish of predictions follow each prediction as in
the demo.

Reported (goals from issue 7):

- RSS of the agent (and of it with its ML worker) over time: flat. The figure is the
  growth from the first sample after warm-up to the mean of the last ones, and a
  least-squares slope over the second half, in MiB per hour.
- CPU of the agent while idle (no file arrives; the minute's prediction still runs and
  finds nothing new), at the start and at the end: < 2% of a core.
- The time to open and read the latest version of the busy table (raw/survey_responses),
  at the start and at the end, each with its ratio to a baseline measured at the same
  moment: the same rows written as one commit into a fresh table. A table whose log or
  small files pile up reads ever slower than its baseline; with checkpoints and compaction
  (connectors/lake_maintenance.py) the ratio stays put.
- Correctness: every file dropped is in the table exactly once (distinct `_silta_source`),
  and no run failed.

    .venv/bin/python bench/soak.py                    # 30 minutes (the issue's figure)
    .venv/bin/python bench/soak.py --minutes 3        # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from agent.demo import later_answers  # noqa: E402

SILTA = [str(Path(sys.executable).with_name("silta"))]
TABLE = "raw/survey_responses"


def _config(out: Path) -> Path:
    """The demo's config with the soak's two changes; paths resolve under ``out``."""
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    replacements = [
        ('schedule = "*/5 * * * *"\nwatch = true\nsettle_seconds = 5\non_success = "keep"',
         'schedule = "*/5 * * * *"\nwatch = true\nsettle_seconds = 1\non_success = "keep"'),
        ('after = ["sync:survey_responses", "train:train_occupation_coder"]',
         'schedule = "* * * * *"'),
        ('heartbeat_seconds = 10', 'heartbeat_seconds = 10\nlog_file = "logs/agent.log"'),
    ]
    for old, new in replacements:
        if old not in text:
            raise SystemExit(f"config/demo.toml changed; the soak cannot find {old!r}")
        text = text.replace(old, new, 1)
    folder = out / "config"
    folder.mkdir(parents=True)
    path = folder / "soak.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _silta(config: Path, *args: str) -> str:
    r = subprocess.run([*SILTA, *args, "--config", str(config)], capture_output=True,
                       text=True, env={**os.environ, "SILTA_CONFIG": ""}, check=False)
    if r.returncode != 0:
        raise SystemExit(f"silta {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n"
                         f"{r.stderr}")
    return r.stdout


def _rss(proc: psutil.Process) -> tuple[float, float]:
    """RSS of the agent, and of it with its children (the ML worker), in MiB."""
    own = proc.memory_info().rss
    total = own
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # it ended meanwhile
            total += child.memory_info().rss
    return own / 2**20, total / 2**20


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of the agent and of its children, living and reaped."""
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def _idle_cpu(proc: psutil.Process, seconds: float) -> float:
    """Share of one core the agent used over ``seconds`` with no file arriving."""
    start_cpu, start = _cpu_seconds(proc), time.monotonic()
    time.sleep(seconds)
    return (_cpu_seconds(proc) - start_cpu) / (time.monotonic() - start)


def _settled(lake: Path, state_db: Path, timeout: float = 180.0) -> float:
    """Wait until the predictions cover the input's latest version and no run is going
    (the minute's prediction, its monitor and publish have followed the last file): an
    idle measurement must not start inside them. Returns the seconds waited."""
    from deltalake import DeltaTable

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            to = DeltaTable(str(lake / TABLE)).version()
            done = DeltaTable(str(lake / "predictions" / "occupation_codes")
                              ).transaction_version("silta-predict/code_answers")
            with sqlite3.connect(state_db) as db:
                going = db.execute("SELECT count(*) FROM runs WHERE status='running'"
                                   ).fetchone()[0]
        except Exception:  # the tables or the store are not there yet
            done, to, going = None, 0, 1
        if done is not None and done - 1 >= to and going == 0:
            time.sleep(2)  # the publish and the monitor that follow start within a second
            with sqlite3.connect(state_db) as db:
                if db.execute("SELECT count(*) FROM runs WHERE status='running'"
                              ).fetchone()[0] == 0:
                    return time.monotonic() - start
        time.sleep(1)
    raise SystemExit(f"the predictions did not catch up with {TABLE} in {timeout:g} s")


def _read_times(lake: Path, scratch: Path, repeats: int = 5) -> dict[str, Any]:
    """Open and read the busy table's latest version, against the same rows in one
    commit of a fresh table (the baseline, measured now), medians of ``repeats``."""
    from deltalake import DeltaTable, write_deltalake

    uri = str(lake / TABLE)
    busy = DeltaTable(uri)
    data = busy.to_pyarrow_table()
    base_uri = str(scratch / f"baseline_{time.monotonic_ns()}")
    write_deltalake(base_uri, data)

    def timed(path: str) -> tuple[float, float]:
        opens, reads = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            table = DeltaTable(path)
            t1 = time.perf_counter()
            table.to_pyarrow_table()
            t2 = time.perf_counter()
            opens.append(t1 - t0)
            reads.append(t2 - t0)
        return statistics.median(opens), statistics.median(reads)

    b_open, b_read = timed(base_uri)
    open_s, read_s = timed(uri)
    shutil.rmtree(base_uri, ignore_errors=True)
    return {"version": busy.version(), "rows": data.num_rows,
            "files": len(busy.file_uris()), "open_s": open_s, "read_s": read_s,
            "baseline_open_s": b_open, "baseline_read_s": b_read,
            "read_ratio": read_s / b_read, "open_ratio": open_s / b_open}


def _mean_reads(reads: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("version", "rows", "files", "open_s", "read_s", "baseline_open_s",
            "baseline_read_s", "read_ratio", "open_ratio")
    return {k: statistics.fmean(float(r[k]) for r in reads) for k in keys} | {
        "samples": float(len(reads))}


def _slope_mib_per_hour(samples: list[tuple[float, float]]) -> float:
    xs, ys = [t for t, _ in samples], [r for _, r in samples]
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys,
                                                                         strict=True)) \
        / den * 3600


def _runs(state_db: Path) -> dict[str, dict[str, int]]:
    with sqlite3.connect(state_db) as db:
        rows = db.execute("SELECT kind, status, count(*) FROM runs GROUP BY 1, 2").fetchall()
    out: dict[str, dict[str, int]] = {}
    for kind, status, n in rows:
        out.setdefault(kind, {})[status] = n
    return out


def _landed(lake: Path) -> tuple[int, int]:
    """(distinct stream files in the table, rows from them) by DuckDB, an independent
    reader."""
    import duckdb
    import duckdb_extension_delta

    ext = sorted((Path(duckdb_extension_delta.__file__).parent / "extensions").glob(
        "*/delta.duckdb_extension"))[-1]
    con = duckdb.connect()
    con.execute(f"LOAD '{ext}'")
    files, rows, ids = con.execute(
        f"SELECT count(DISTINCT _silta_source), count(*), count(DISTINCT response_id) FROM "
        f"delta_scan('{lake / TABLE}') WHERE _silta_source LIKE '%stream_%'").fetchone()
    if rows != ids:
        raise SystemExit(f"{rows - ids} answers are in the table more than once")
    return int(files), int(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="busy phase (default 30)")
    ap.add_argument("--drop-every", type=float, default=3.0, help="seconds between files")
    ap.add_argument("--rows", type=int, default=40, help="answers per file")
    ap.add_argument("--idle", type=float, default=90.0,
                    help="seconds of each idle CPU measurement (default 90)")
    ap.add_argument("--sample-every", type=float, default=10.0, help="RSS samples")
    ap.add_argument("--read-every", type=float, default=30.0,
                    help="seconds between reads of the busy table (and its baseline)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "soak")
    args = ap.parse_args(argv)

    shutil.rmtree(args.out, ignore_errors=True)
    config = _config(args.out)
    var = args.out / "var"
    lake, incoming, scratch = var / "lake", var / "onprem" / "incoming", args.out / "scratch"
    scratch.mkdir(parents=True)
    state_db = var / "state" / "silta.db"
    _silta(config, "demo", "init")
    _silta(config, "agent", "run", "--once")  # the first model, the first predictions
    print(f"world ready under {args.out}", flush=True)

    log = open(args.out / "agent.stderr", "wb")  # noqa: SIM115 - closed at the end
    agent = subprocess.Popen([*SILTA, "agent", "run", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=log,
                             env={**os.environ, "SILTA_CONFIG": ""})
    proc = psutil.Process(agent.pid)
    try:
        time.sleep(15)  # start-up: imports, recovery, the catch-up pass
        _settled(lake, state_db)
        idle_start = _idle_cpu(proc, args.idle)
        print(f"idle CPU at start: {idle_start * 100:.2f}% of a core", flush=True)

        samples: list[dict[str, float]] = []
        began = time.monotonic()
        next_drop = next_sample = next_read = began
        reads: list[dict[str, Any]] = []
        dropped = 0
        while time.monotonic() - began < args.minutes * 60:
            now = time.monotonic()
            if now >= next_drop:
                rel, content = later_answers(7, dropped, args.rows)
                tmp = incoming / (rel + ".part")  # a temporary name the sync ignores
                tmp.write_bytes(content)
                os.replace(tmp, incoming / rel)
                dropped += 1
                next_drop += args.drop_every
            if now >= next_sample:
                own, total = _rss(proc)
                samples.append({"t": now - began, "rss": own, "rss_total": total,
                                "cpu": _cpu_seconds(proc)})
                next_sample += args.sample_every
                if len(samples) % 18 == 1:
                    print(f"{(now - began) / 60:5.1f} min: {dropped} files, RSS "
                          f"{own:.0f} MiB ({total:.0f} with the worker)", flush=True)
            if now >= next_read:
                reads.append({"t": now - began, **_read_times(lake, scratch, repeats=3)})
                next_read += args.read_every
            if agent.poll() is not None:
                raise SystemExit(f"the agent exited with {agent.returncode}")
            time.sleep(0.2)
        busy_cpu = (samples[-1]["cpu"] - samples[0]["cpu"]) / max(
            samples[-1]["t"] - samples[0]["t"], 1e-9)

        time.sleep(max(10.0, args.drop_every * 3))  # the last files settle and land
        _settled(lake, state_db)
        idle_end = _idle_cpu(proc, args.idle)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=120)
        except subprocess.TimeoutExpired:
            agent.kill()
        log.close()

    landed_files, landed_rows = _landed(lake)
    # compaction makes the figures a saw-tooth: compare the means of whole windows
    window = min(300.0, args.minutes * 60 / 3)
    start_read = _mean_reads([r for r in reads if r["t"] <= window])
    end_read = _mean_reads([r for r in reads if r["t"] >= args.minutes * 60 - window])
    runs = _runs(state_db)
    warm = [s for s in samples if s["t"] >= 60] or samples
    tail = warm[-max(1, len(warm) // 10):]
    half = warm[len(warm) // 2:]
    result = {
        "minutes": args.minutes, "files_dropped": dropped, "files_landed": landed_files,
        "rows_landed": landed_rows, "runs": runs,
        "rss_first_mib": warm[0]["rss"], "rss_last_mib": statistics.fmean(
            s["rss"] for s in tail),
        "rss_max_mib": max(s["rss"] for s in samples),
        "rss_slope_mib_per_hour": _slope_mib_per_hour([(s["t"], s["rss"]) for s in half]),
        "rss_total_first_mib": warm[0]["rss_total"],
        "rss_total_last_mib": statistics.fmean(s["rss_total"] for s in tail),
        "idle_cpu_start": idle_start, "idle_cpu_end": idle_end, "busy_cpu": busy_cpu,
        "read_start": start_read, "read_end": end_read, "reads": reads,
        "read_window_s": window,
        "rss_samples": [(round(s["t"]), round(s["rss"], 1)) for s in samples],
    }
    (args.out / "soak.json").write_text(json.dumps(result, indent=2), encoding="utf-8")

    failed = sum(v.get("failed", 0) for v in runs.values())
    print()
    print(f"soak: {args.minutes:g} min, a file every {args.drop_every:g} s "
          f"({args.rows} answers), predictions every minute")
    print(f"files: {dropped} dropped, {landed_files} in {TABLE} exactly once "
          f"({landed_rows} rows); runs: " + ", ".join(
              f"{k} {sum(v.values())}" for k, v in sorted(runs.items()))
          + f"; failed runs: {failed}")
    print("| figure | start | end | end/start |")
    print("|---|---:|---:|---:|")
    print(f"| agent RSS MiB | {result['rss_first_mib']:.0f} | {result['rss_last_mib']:.0f} | "
          f"{result['rss_last_mib'] / result['rss_first_mib']:.2f}x |")
    print(f"| agent + worker RSS MiB | {result['rss_total_first_mib']:.0f} | "
          f"{result['rss_total_last_mib']:.0f} | "
          f"{result['rss_total_last_mib'] / result['rss_total_first_mib']:.2f}x |")
    print(f"| idle CPU, % of a core | {idle_start * 100:.2f} | {idle_end * 100:.2f} | |")
    for key, label in (("read_s", "read latest version ms"), ("open_s", "open table ms")):
        s, e = start_read[key] * 1000, end_read[key] * 1000
        print(f"| {label} | {s:.1f} | {e:.1f} | {e / s:.2f}x |")
    ratio = "read_ratio"
    print(f"| read / baseline (same rows, one commit) | {start_read[ratio]:.2f}x | "
          f"{end_read[ratio]:.2f}x | {end_read[ratio] / start_read[ratio]:.2f}x |")
    print(f"| table version / files in latest (window means) | "
          f"{start_read['version']:.0f} / {start_read['files']:.1f} | "
          f"{end_read['version']:.0f} / {end_read['files']:.1f} | |")
    print(f"(reads: the mean of the samples every {args.read_every:g} s in the first and "
          f"the last {window / 60:g} min of the busy phase)")
    print(f"RSS slope over the second half: {result['rss_slope_mib_per_hour']:+.1f} MiB/h; "
          f"max {result['rss_max_mib']:.0f} MiB; CPU while busy "
          f"{busy_cpu * 100:.1f}% of a core")
    ok = (landed_files == dropped and failed == 0)
    if not ok:
        print("NOT OK: files missing or runs failed (see agent.stderr)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
