"""Sync throughput: Silta against the paths a person would write by hand.

One CSV (default about 1 GB; ``--double`` for 2x) is generated once, deterministically,
and cached in ``bench/out/data/``. Each path then writes it into a fresh Delta table, in
its own child process, so that the child's own peak RSS can be read (``os.wait4``
returns the rusage of exactly that child):

  silta     ``silta sync run`` with the CSV config that matches the file
            (``csv = { newlines_in_values = false }``: no quoted line breaks)
  silta-nl  the same with Silta's default CSV config (``newlines_in_values = true``)
  a         pandas.read_csv, then deltalake.write_deltalake (what a data scientist writes)
  b         DuckDB's read_csv handed to write_deltalake as an Arrow RecordBatchReader
  c         pyarrow.csv.open_csv streamed into write_deltalake with Silta's CSV options
            and type handling (timestamps as us): Silta's read and write without the
            exactly-once bookkeeping (sha256 pass, ledger, commit metadata, app
            transaction, lineage columns)
  c-py      (only with ``--only``) (c) through a Python file object and a generator-backed
            reader, as Silta streams
  silta-nolineage  (only with ``--only``) Silta with ``lineage_columns = false``

With ``--runs N`` the runs are interleaved and the ratios are medians of per-round ratios:
this machine's speed drifts by tens of percent over minutes, so read a goal line only
from ``--runs 3`` or more.

Every child runs with ``ARROW_DEFAULT_MEMORY_POOL=system`` unless ``--allocator`` says
otherwise (``--allocator system,default`` runs every path under both). Wall time covers
the whole child (interpreter start and imports included, as an operator would see it).
Rows are counted back from every table (``to_pyarrow_dataset().count_rows()``).

Usage::

    .venv/bin/python bench/sync_throughput.py                  # ~1 GB
    .venv/bin/python bench/sync_throughput.py --size-gb 0.1    # quick
    .venv/bin/python bench/sync_throughput.py --double         # ~2 GB (RSS must stay flat)
    .venv/bin/python bench/sync_throughput.py --only silta,c --runs 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
DATA = OUT / "data"
RESULTS = OUT / "results"
GEN_VERSION = 2  # bump when the generated data changes: invalidates the cache
CHUNK_ROWS = 250_000
GIB = 1 << 30
MIB = 1 << 20
RESULT_TAG = "BENCH_RESULT "

# Path (c) reads and writes with Silta's own settings (imported in the child from
# connectors.formats and connectors.lake), so (c) differs from Silta only by bookkeeping.
DUCKDB_BATCH_ROWS = 1_000_000  # DuckDBPyRelation.to_arrow_reader's default

PATHS: dict[str, str] = {
    "silta": "silta sync run (csv newlines_in_values=false)",
    "silta-nl": "silta sync run (default csv: newlines_in_values=true)",
    "silta-nolineage": "silta sync run (newlines false, lineage_columns=false)",
    "a": "pandas.read_csv + write_deltalake",
    "b": "duckdb read_csv -> RecordBatchReader -> write_deltalake",
    "c": "pyarrow.csv.open_csv stream -> write_deltalake (no bookkeeping)",
    "c-py": "(c) through Silta's Python plumbing: file object + generator reader",
}
DEFAULT_PATHS = ["silta", "silta-nl", "a", "b", "c"]

_WORDS_TEXT = (
    "survey household income region municipality respondent answer weight sample "
    "estimate quarter annual census employment wage hours sector industry education "
    "age group female male total share index price consumer producer export import "
    "balance value volume change growth rate adjusted seasonal trend revision final "
    "provisional preliminary published release table series code label note source "
    "method imputation missing refused unknown other yes no urban rural north south "
    "east west central coastal island capital city town village farm firm enterprise "
    "local unit establishment register business owner tenant dwelling building room "
    "floor area heating energy electricity gas oil wood solar wind water waste "
    "transport car bus train bicycle walk commute distance minutes kilometres "
    "the of and to in for on with at by from as is was were be been has have "
    "not very more less most least about around between within without during "
    "however, moreover, therefore, although, because, whereas, e.g., i.e., etc., "
    "\"quoted\" 'single' 50% 3.5 €12 naïve café Zürich Ålesund São-Paulo"
)
WORDS = _WORDS_TEXT.split()
CATEGORIES = [
    "north", "south", "east", "west", "central", "north-east", "north-west",
    "south-east", "south-west", "capital", "islands", "abroad",
]


# -- data ---------------------------------------------------------------------------------
@dataclass
class Dataset:
    path: Path
    rows: int
    bytes: int
    seed: int
    cached: bool
    gen_seconds: float = 0.0

    @property
    def folder(self) -> Path:
        return self.path.parent


def _chunk_table(rng: Any, start: int, n: int) -> Any:
    """One chunk of rows: 10 numeric columns, a timestamp, a categorical, free text."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    base = np.datetime64("2024-01-01T00:00:00", "s")
    ts = base + rng.integers(0, 366 * 86400, n).astype("timedelta64[s]")
    f_missing = rng.random(n) < 0.01
    vocab = pa.array(WORDS)
    n_words = rng.integers(4, 19, n)  # 4..18 words
    word_cols = []
    for k in range(18):
        idx = pa.array(rng.integers(0, len(WORDS), n), mask=n_words <= k)
        word_cols.append(vocab.take(idx))
    text = pc.binary_join_element_wise(*word_cols, " ", null_handling="skip")
    text_missing = rng.random(n) < 0.005
    text = pc.if_else(pa.array(text_missing), pa.scalar(None, pa.string()), text)
    return pa.table({
        "id": pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64)),
        "count": pa.array(rng.poisson(40, n).astype(np.int64)),
        "delta": pa.array(rng.integers(-1000, 1001, n)),
        "flag": pa.array(rng.integers(0, 10, n)),
        "amount": pa.array(np.round(rng.lognormal(6, 1.2, n), 2)),
        "score": pa.array(np.round(rng.normal(50, 15, n), 3)),
        "ratio": pa.array(np.round(rng.random(n), 4)),
        "weight": pa.array(np.round(rng.gamma(2.0, 1.5, n), 3)),
        "lat": pa.array(np.round(rng.uniform(55, 70, n), 5)),
        "temp": pa.array(np.round(rng.normal(8, 9, n), 1), mask=f_missing),
        "ts": pa.array(ts),
        "region": pa.array(rng.choice(np.array(CATEGORIES), n)),
        "comment": text,
    })


def ensure_dataset(size_gb: float, seed: int, regenerate: bool) -> Dataset:
    """The CSV of about ``size_gb`` GB (10**9 bytes), generated once and reused."""
    target = int(size_gb * 1e9)
    name = f"bench-{size_gb:g}gb-s{seed}-v{GEN_VERSION}"
    folder = DATA / name
    csv_path = folder / f"{name}.csv"
    meta_path = DATA / f"{name}.json"
    if not regenerate and csv_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (meta.get("target_bytes") == target and meta.get("seed") == seed
                and meta.get("gen_version") == GEN_VERSION
                and meta.get("bytes") == csv_path.stat().st_size):
            return Dataset(csv_path, int(meta["rows"]), int(meta["bytes"]), seed, cached=True)
    import numpy as np
    import pyarrow.csv as pacsv

    shutil.rmtree(folder, ignore_errors=True)
    for stale in DATA.glob(f"bench-{size_gb:g}gb-s{seed}-v*"):  # older generator versions
        if stale.name.removesuffix(".json") != name:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    folder.mkdir(parents=True)
    tmp = folder / f".{name}.csv.tmp"  # hidden: never picked up by the folder connector
    t0 = time.perf_counter()
    rows = 0
    options = pacsv.WriteOptions(quoting_header="none", batch_size=8192)
    with open(tmp, "wb") as raw:
        writer = None
        chunk = 0
        while raw.tell() < target:
            rng = np.random.default_rng([seed, chunk])
            table = _chunk_table(rng, rows, CHUNK_ROWS)
            if writer is None:
                writer = pacsv.CSVWriter(raw, table.schema, write_options=options)
            before = raw.tell()
            remaining = target - before
            # The last chunk is cut so that the file ends close to the target size.
            per_row = max(1.0, _estimate_row_bytes(table))
            if remaining < per_row * CHUNK_ROWS:
                table = table.slice(0, max(1, int(remaining / per_row)))
            writer.write_table(table)
            raw.flush()
            rows += table.num_rows
            chunk += 1
            _status(f"generating {csv_path.name}: {raw.tell() / 1e9:.2f}/{target / 1e9:.2f} GB")
        if writer is not None:
            writer.close()
    os.replace(tmp, csv_path)
    seconds = time.perf_counter() - t0
    size = csv_path.stat().st_size
    _status("")
    meta_path.write_text(json.dumps({
        "target_bytes": target, "seed": seed, "gen_version": GEN_VERSION, "rows": rows,
        "bytes": size, "seconds": round(seconds, 2), "path": str(csv_path)}, indent=2))
    return Dataset(csv_path, rows, size, seed, cached=False, gen_seconds=seconds)


def _estimate_row_bytes(table: Any) -> float:
    import io

    import pyarrow.csv as pacsv

    sample = table.slice(0, 20_000)
    buf = io.BytesIO()
    pacsv.write_csv(sample, buf, write_options=pacsv.WriteOptions(include_header=False))
    return len(buf.getvalue()) / sample.num_rows


def _status(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{text}")
        sys.stderr.flush()


def sha256_pass(path: Path) -> float:
    """Read the file once (warms the page cache for every path alike); time a sha256."""
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return time.perf_counter() - t0


# -- children -----------------------------------------------------------------------------
def silta_engine_child(config: str, sync: str) -> int:
    """Silta's engine as `silta sync run` drives it, with each phase timed.

    A diagnostic (``--silta-via engine``): no instance lock and no progress reporter,
    and the phases are timed by wrapping the engine's own (private) steps.
    """
    t0 = time.perf_counter()
    import resource

    import agent.sync as engine_mod
    from agent.config import load_config
    from agent.state import StateStore
    from agent.stores import open_lake, open_store
    from connectors import lake as lake_mod

    phases: dict[str, float] = {}

    def timed(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - t

        setattr(owner, name, wrapper)

    timed(engine_mod._SyncRun, "_sha256", "sha256")
    timed(engine_mod._SyncRun, "_probe", "probe")
    timed(engine_mod._SyncRun, "scan", "scan (incl. sha256)")
    timed(lake_mod, "write_deltalake", "write_deltalake")
    timed(engine_mod._SyncRun, "commit", "commit (probe+write+settle)")
    loaded = load_config(Path(config))
    conf = loaded.config.sync(sync)
    state = StateStore(loaded.state_dir)
    engine = engine_mod.SyncEngine(loaded, state, open_lake(loaded),
                                   {conf.connector: open_store(loaded, conf.connector)},
                                   loaded.config.agent.name)
    t_ready = time.perf_counter() - t0
    outcome = engine.run(conf.name, trigger="bench")
    t_total = time.perf_counter() - t0
    state.close()
    import pyarrow as pa

    print(RESULT_TAG + json.dumps({
        "status": outcome.status, "reported_rows": outcome.rows, "error": outcome.error,
        "imports_s": t_ready, "work_s": t_total, "phases": phases,
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "pool": pa.default_memory_pool().backend_name,
    }), flush=True)
    return 0 if outcome.status == "ok" else 1


def child_main(path: str, csv: str, table: str) -> int:
    """Run one hand-written path in this process and report on stdout."""
    if path == "silta-engine":
        return silta_engine_child(csv, table)
    t0 = time.perf_counter()
    import pyarrow as pa
    from deltalake import write_deltalake

    t_imports = time.perf_counter() - t0
    if path == "a":
        import pandas as pd

        df = pd.read_csv(csv, parse_dates=["ts"])
        t_read = time.perf_counter() - t0
        write_deltalake(table, df, mode="append")
    elif path == "b":
        import duckdb

        con = duckdb.connect()
        literal = csv.replace("'", "''")
        rel = con.sql(f"SELECT * FROM read_csv('{literal}')")
        reader = rel.to_arrow_reader(DUCKDB_BATCH_ROWS)
        t_read = time.perf_counter() - t0
        write_deltalake(table, reader, mode="append")
        con.close()
    elif path in ("c", "c-py"):
        import pyarrow.csv as pacsv

        sys.path.insert(0, str(ROOT))
        from connectors.formats import DEFAULT_BLOCK_BYTES as SILTA_BLOCK_BYTES
        from connectors.formats import PROBE_BYTES as SILTA_PROBE_BYTES
        from connectors.formats import CsvFormat
        from connectors.lake import WRITER

        silta_null_values = list(CsvFormat().null_values)

        # c-py reads through a Python file object and re-exports the batches from a Python
        # generator, as Silta's read_batches/_Stream do: the plumbing without the bookkeeping.
        def options(types: dict[str, Any], block: int) -> dict[str, Any]:
            return {
                "read_options": pacsv.ReadOptions(block_size=block, use_threads=True),
                "parse_options": pacsv.ParseOptions(newlines_in_values=False),
                "convert_options": pacsv.ConvertOptions(
                    column_types=types, null_values=silta_null_values,
                    strings_can_be_null=True, quoted_strings_can_be_null=False),
            }

        # Like Silta: types come from the first MiB, timestamps normalized to us (what
        # Delta stores), so that both hand delta-rs the same types (no cast inside it).
        probed = pacsv.open_csv(csv, **options({}, SILTA_PROBE_BYTES)).schema
        types = {f.name: pa.timestamp("us", tz=f.type.tz) if pa.types.is_timestamp(f.type)
                 else f.type for f in probed}
        source: Any = open(csv, "rb") if path == "c-py" else csv  # noqa: SIM115 (closed below)
        reader = pacsv.open_csv(source, **options(types, SILTA_BLOCK_BYTES))
        if path == "c-py":
            reader = pa.RecordBatchReader.from_batches(reader.schema, (b for b in reader))
        t_read = time.perf_counter() - t0
        write_deltalake(table, reader, mode="append", writer_properties=WRITER)
        if path == "c-py":
            source.close()
    else:
        raise SystemExit(f"unknown child path {path!r}")
    t_total = time.perf_counter() - t0
    import resource

    print(RESULT_TAG + json.dumps({
        "imports_s": t_imports, "open_s": t_read, "work_s": t_total,
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "pool": pa.default_memory_pool().backend_name,
    }), flush=True)
    return 0


# -- the parent ---------------------------------------------------------------------------
@dataclass
class Run:
    path: str
    allocator: str
    seconds: float
    peak_rss_kib: int
    rows: int | None
    exit_code: int
    table: Path
    cpu_seconds: float = 0.0  # the child's user + system time
    other_cores: float = 0.0  # CPU used by other processes meanwhile, in cores (noise)
    detail: dict[str, Any] = field(default_factory=dict)
    rss_trace: list[tuple[float, int]] = field(default_factory=list)


def _silta_config(work: Path, ds: Dataset, variant: str, table: str) -> Path:
    state = work / f"state-{table.replace('/', '_')}"
    csv_line = ("csv = { newlines_in_values = false }" if variant in ("silta", "silta-nolineage")
                else None)
    lines = [
        "[agent]",
        'name = "bench"',
        f"state_dir = {json.dumps(str(state))}",
        "[lake]",
        f"uri = {json.dumps(str(work / 'lake'))}",
        "[connectors.bench]",
        'type = "folder"',
        f"path = {json.dumps(str(ds.folder))}",
        "[[syncs]]",
        'name = "bench"',
        f"source = {json.dumps('bench:' + ds.path.name)}",
        f"target = {json.dumps('lake:' + table)}",
        "settle_seconds = 0",
    ]
    if csv_line:
        lines.append(csv_line)
    if variant == "silta-nolineage":
        lines.append("lineage_columns = false")
    cfg = work / f"silta-{table.replace('/', '_')}.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def _rss_sampler(pid: int, samples: list[tuple[float, int]], stop: threading.Event) -> None:
    t0 = time.perf_counter()
    status = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        samples.append((time.perf_counter() - t0, int(line.split()[1])))
                        break
        except OSError:
            return
        stop.wait(0.1)


@dataclass
class ChildResult:
    seconds: float
    maxrss_kib: int
    exit_code: int
    stdout: str
    cpu_seconds: float
    other_cores: float
    samples: list[tuple[float, int]]


def _busy_seconds() -> float:
    """CPU seconds spent by the whole machine since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> ChildResult:
    """Run ``cmd``; its wall time, its own peak RSS and CPU, and the machine's other load."""
    out_path = log.with_suffix(".out")
    with open(out_path, "wb") as out, open(log, "wb") as err:
        busy0 = _busy_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_rss_sampler, args=(proc.pid, samples, stop),
                                   daemon=True)
        sampler.start()
        # wait4 reports this child's own rusage (ru_maxrss = its peak RSS, KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        busy = _busy_seconds() - busy0
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    # Our own sampler thread costs next to nothing; the rest is other processes' work.
    others = max(0.0, busy - cpu) / seconds if seconds > 0 else 0.0
    return ChildResult(seconds, int(usage.ru_maxrss), proc.returncode, out_path.read_text(),
                       cpu, others, samples)


def count_rows(table: Path) -> int | None:
    from deltalake import DeltaTable

    try:
        # to_pyarrow_dataset: to_pyarrow_table() aborts the process at exit (lake.py).
        return int(DeltaTable(str(table)).to_pyarrow_dataset().count_rows())
    except Exception as e:  # a failed path has no table; reported as rows "-"
        sys.stderr.write(f"cannot count rows of {table}: {e}\n")
        return None


def table_schema(table: Path) -> dict[str, str]:
    import pyarrow as pa
    from deltalake import DeltaTable

    try:
        schema = pa.schema(DeltaTable(str(table)).schema().to_arrow())
    except Exception:
        return {}
    return {f.name: str(f.type) for f in schema}


def child_env(allocator: str, default_pool: str) -> dict[str, str]:
    env = dict(os.environ)
    # silta's CLI does os.environ.setdefault(..., "system"): name the default pool
    # explicitly so that "default" means the same thing for every child.
    env["ARROW_DEFAULT_MEMORY_POOL"] = default_pool if allocator == "default" else allocator
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def probe_default_pool() -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run(
        [sys.executable, "-c",
         "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"],
        env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def silta_bin() -> str:
    here = Path(sys.executable).parent / "silta"
    if here.exists():
        return str(here)
    found = shutil.which("silta")
    if not found:
        raise SystemExit("the `silta` command is not installed (make install)")
    return found


def run_path(path: str, allocator: str, rep: int, ds: Dataset, work: Path,
             default_pool: str, silta_via: str = "cli") -> Run:
    env = child_env(allocator, default_pool)
    table_name = f"{path}-{allocator}-r{rep}"
    table = work / "lake" / table_name
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{table_name}.log"
    if path.startswith("silta"):
        cfg = _silta_config(work, ds, path, table_name)
        if silta_via == "cli":
            cmd = [silta_bin(), "sync", "run", "bench", "--config", str(cfg), "--json"]
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "silta-engine",
                   "--csv", str(cfg), "--table", "bench"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", path,
               "--csv", str(ds.path), "--table", str(table)]
    res = run_child(cmd, env, log)
    detail: dict[str, Any] = {}
    if path.startswith("silta") and silta_via == "cli":
        try:
            outcome = json.loads(res.stdout)[0]
            detail = {"status": outcome.get("status"), "reported_rows": outcome.get("rows"),
                      "error": outcome.get("error")}
        except (ValueError, IndexError, KeyError, TypeError):
            detail = {"stdout": res.stdout[-2000:]}
    else:
        for line in res.stdout.splitlines():
            if line.startswith(RESULT_TAG):
                detail = json.loads(line[len(RESULT_TAG):])
    if res.exit_code != 0:
        detail["stderr_tail"] = log.read_text(errors="replace")[-2000:]
    rows = count_rows(table) if table.exists() else None
    return Run(path, allocator, res.seconds, res.maxrss_kib, rows, res.exit_code, table,
               res.cpu_seconds, res.other_cores, detail, res.samples)


# -- report -------------------------------------------------------------------------------
def _median(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[(len(ordered) - 1) // 2]


def _fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def _ok_runs(runs: list[Run] | None, expected: int) -> list[Run]:
    return [r for r in runs or [] if r.exit_code == 0 and r.rows == expected]


def report(ds: Dataset, results: dict[str, dict[str, list[Run]]], allocators: list[str],
           default_pool: str, sha_s: float, size_label: str) -> None:
    mib = ds.bytes / MIB
    for alloc in allocators:
        by_path = results.get(alloc, {})
        if not by_path:
            continue
        pool = default_pool if alloc == "default" else alloc
        print()
        print(f"== allocator: ARROW_DEFAULT_MEMORY_POOL={pool}"
              f"{' (pyarrow default)' if alloc == 'default' else ''}")
        head = (f"{'path':<16}{'seconds':>8}{'rows/s':>11}{'MiB/s':>7}{'peak RSS':>9}"
                f"{'cores':>6}{'noise':>6}{'rows':>11}  {'ok':<4}what")
        print(head)
        print("-" * (len(head) + 40))
        noisy = 0.0
        for path, runs in by_path.items():
            good = _ok_runs(runs, ds.rows)
            r = _median(good or runs)
            rss = max(x.peak_rss_kib for x in (good or runs)) / 1024
            noisy = max(noisy, *(x.other_cores for x in runs))
            spread = ""
            if len(runs) > 1:
                secs = [x.seconds for x in runs]
                spread = f"  [{len(runs)} runs: {min(secs):.2f}..{max(secs):.2f} s]"
            rows = "-" if r.rows is None else _fmt_int(r.rows)
            print(f"{path:<16}{r.seconds:>8.2f}{_fmt_int(ds.rows / r.seconds):>11}"
                  f"{mib / r.seconds:>7.1f}{rss:>9.0f}{r.cpu_seconds / r.seconds:>6.2f}"
                  f"{r.other_cores:>6.2f}{rows:>11}  {'yes' if len(good) == len(runs) else 'NO':<4}"
                  f"{PATHS[path]}{spread}")
            phases = r.detail.get("phases")
            if phases:
                parts = [f"start+imports {r.detail.get('imports_s', 0):.2f} s"]
                parts += [f"{k} {v:.2f} s" for k, v in phases.items()]
                print(f"{'':<16}phases: " + ", ".join(parts))
            for x in runs:
                if x not in good:
                    print(f"    {path} run FAILED: exit {x.exit_code}, rows {x.rows} "
                          f"(expected {ds.rows:,}); logs in {x.table.parent.parent / 'logs'}")
                    tail = str(x.detail.get("stderr_tail") or x.detail.get("error")
                               or x.detail.get("stdout") or "")
                    for t in tail.strip().splitlines()[-6:]:
                        print(f"      {t}")
        print("(seconds: wall time of the whole child process, interpreter start included; "
              "peak RSS in MiB, the child's own ru_maxrss; cores: the child's CPU time / wall "
              f"time; noise: cores used by other processes meanwhile. A sha256 pass over the "
              f"file takes {sha_s:.2f} s here, {mib / sha_s:.0f} MiB/s.)")
        if noisy > 0.25:
            print(f"WARNING: other processes used up to {noisy:.2f} cores during a run: the "
                  "times are disturbed; run again on a quiet machine (or --runs 3)")
        _ratios(ds, by_path, size_label)


def _ratios(ds: Dataset, by_path: dict[str, list[Run]], size_label: str) -> None:
    def sec(path: str) -> float | None:
        runs = _ok_runs(by_path.get(path), ds.rows)
        return _median(runs).seconds if runs else None

    def rss(path: str) -> float | None:
        runs = _ok_runs(by_path.get(path), ds.rows)
        return max(x.peak_rss_kib for x in runs) / 1024 if runs else None

    def speedup(other: str, base: str = "silta") -> float | None:
        """seconds(other) / seconds(base): the median of the per-round ratios when every
        round has both (runs are interleaved, so a round shares the machine's mood)."""
        pairs = _pairs(other, base)
        if pairs:
            return statistics.median(o / b for o, b in pairs)
        so, sb = sec(other), sec(base)
        return so / sb if so is not None and sb is not None else None

    def _pairs(other: str, base: str) -> list[tuple[float, float]]:
        o_runs, b_runs = by_path.get(other) or [], by_path.get(base) or []
        pairs = [(o.seconds, b.seconds) for o, b in zip(o_runs, b_runs, strict=False)
                 if o in _ok_runs(o_runs, ds.rows) and b in _ok_runs(b_runs, ds.rows)]
        return pairs if len(pairs) == len(o_runs) == len(b_runs) > 1 else []

    def basis(other: str, base: str, sign: float = 1.0) -> str:
        """How a ratio was formed: per-round percentages, or the two medians."""
        pairs = _pairs(other, base)
        if pairs:
            rounds = ", ".join(f"{100 * sign * (o / b - 1):+.0f}%" for o, b in pairs)
            return f"rounds {rounds}"
        return f"{sec(other):.2f} s vs {sec(base):.2f} s"

    s = sec("silta")
    print()
    print("Silta (S = silta, csv newlines_in_values=false) against the others")
    if s is None:
        print("  (silta was not run or failed: no ratios)")
    else:
        s_rss = rss("silta") or 0.0
        for key, label in (("a", "(a) pandas"), ("b", "(b) duckdb"), ("c", "(c) pyarrow"),
                           ("c-py", "(c-py) pyarrow via Python"),
                           ("silta-nl", "S, default csv config")):
            ratio = speedup(key)
            if ratio is None:
                continue
            o_rss = rss(key) or 0.0
            print(f"  throughput vs {label:<26} {ratio:5.2f}x   "
                  f"peak RSS {s_rss:5.0f} vs {o_rss:5.0f} MiB = {s_rss / o_rss:4.2f}x")
        for key, label in (("c", "bookkeeping overhead vs (c):"),
                           ("c-py", "bookkeeping overhead vs (c-py):")):
            ratio = speedup("silta", key)
            if ratio is not None:
                print(f"  {label:<36} {100 * (ratio - 1):+6.1f}%  ({basis('silta', key)})")
        ratio = speedup("silta-nl")
        if ratio is not None:
            print(f"  {'cost of newlines_in_values=true:':<36} {100 * (ratio - 1):+6.1f}%  "
                  f"({basis('silta-nl', 'silta')})")
        ratio = speedup("silta", "silta-nolineage")
        if ratio is not None:
            print(f"  {'cost of the lineage columns:':<36} {100 * (ratio - 1):+6.1f}%  "
                  f"({basis('silta', 'silta-nolineage')})")
        if any(_pairs(k, "silta") for k in by_path):
            print("  (ratios are medians of per-round ratios: runs are interleaved, so one "
                  "round shares the machine's state)")

    print()
    print("Goals")
    ratio = speedup("b")
    if s is not None and ratio is not None:
        print(f"  [{'PASS' if ratio >= 1.0 else 'FAIL'}] Silta throughput >= 1.0x of (b): "
              f"{ratio:.2f}x")
    for key in ("silta", "silta-nl"):
        r = rss(key)
        if r is not None:
            print(f"  [{'PASS' if r <= 1024 else 'FAIL'}] peak RSS <= 1 GiB at {size_label} "
                  f"({key}): {r:.0f} MiB")
    ratio = speedup("silta", "c")
    if s is not None and ratio is not None:
        over = ratio - 1
        print(f"  [{'PASS' if over <= 0.10 else 'FAIL'}] bookkeeping <= 10% over (c): "
              f"{100 * over:+.1f}%")
    bad = [p for p, runs in by_path.items() if len(_ok_runs(runs, ds.rows)) != len(runs)]
    print(f"  [{'FAIL' if bad else 'PASS'}] every path wrote {ds.rows:,} rows"
          + (f" (not: {', '.join(bad)})" if bad else ""))


def schema_notes(results: dict[str, dict[str, list[Run]]]) -> None:
    """Column types that differ from Silta's table (fairness: not every path parses alike)."""
    first = next(iter(results.values()), {})
    schemas = {path: table_schema(runs[0].table) for path, runs in first.items()}
    schemas = {p: s for p, s in schemas.items() if s}
    ref_path = next((p for p in ("silta", "silta-nl", "c", "c-py", "b", "a") if p in schemas),
                    None)
    if ref_path is None:
        return
    ref = schemas[ref_path]
    print()
    print(f"Table schema ({ref_path}): "
          + ", ".join(f"{n} {t}" for n, t in ref.items()))
    for path, sch in schemas.items():
        if path == ref_path:
            continue
        diff = [f"{n} {t}" for n, t in sch.items() if ref.get(n) != t]
        missing = [n for n in ref if n not in sch]
        parts = ([f"differs: {', '.join(diff)}"] if diff else []) + (
            [f"without {', '.join(missing)}"] if missing else [])
        print(f"  {path}: {'; '.join(parts) if parts else 'same'}")


def previous_sizes(allocator: str, current: Path) -> None:
    """Silta's peak RSS at the other sizes benchmarked here (memory must stay flat)."""
    rows = []
    for f in sorted(RESULTS.glob(f"*-v{GEN_VERSION}.json")):
        try:
            data = json.loads(f.read_text())
        except ValueError:
            continue
        runs = [r for r in data.get("runs", {}).get(allocator, {}).get("silta", [])
                if r.get("exit_code") == 0 and r.get("rows") == data.get("rows")]
        if runs:
            rows.append((data["bytes"], max(r["peak_rss_kib"] for r in runs) / 1024,
                         f == current))
    if len(rows) > 1:
        print()
        print(f"Silta peak RSS by file size (pool {allocator}, from {RESULTS.relative_to(ROOT)}):")
        for size, rss, now in sorted(rows):
            print(f"  {size / 1e9:6.2f} GB: {rss:6.0f} MiB{'  (this run)' if now else ''}")


def save_results(out: Path, ds: Dataset, sha_s: float, default_pool: str,
                 results: dict[str, dict[str, list[Run]]], silta_via: str) -> None:
    """Merge this run's figures into the dataset's results file (latest per path)."""
    data: dict[str, Any] = {}
    if out.exists():
        try:
            data = json.loads(out.read_text())
        except ValueError:
            data = {}
    if data.get("rows") != ds.rows or data.get("bytes") != ds.bytes:
        data = {}
    data.update({"csv": str(ds.path), "rows": ds.rows, "bytes": ds.bytes, "sha256_s": sha_s,
                 "default_pool": default_pool})
    runs = data.setdefault("runs", {})
    for alloc, by_path in results.items():
        for path, rs in by_path.items():
            runs.setdefault(alloc, {})[path] = [
                {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": r.seconds,
                 "peak_rss_kib": r.peak_rss_kib, "rows": r.rows, "exit_code": r.exit_code,
                 "cpu_seconds": r.cpu_seconds, "other_cores": r.other_cores,
                 "allocator": alloc, "detail": r.detail,
                 "via": silta_via if path.startswith("silta") else "child",
                 "rss_trace": r.rss_trace[::5]} for r in rs]
    out.write_text(json.dumps(data, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size-gb", type=float, default=1.0, help="CSV size in GB (10^9 bytes)")
    ap.add_argument("--double", action="store_true", help="twice --size-gb")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", default=",".join(DEFAULT_PATHS),
                    help=f"comma list of paths: {', '.join(PATHS)}")
    ap.add_argument("--runs", type=int, default=1, help="runs per path (median shown)")
    ap.add_argument("--allocator", default="system",
                    help="comma list of Arrow pools for the children: system, default "
                         "(pyarrow's own, mimalloc here), jemalloc, mimalloc")
    ap.add_argument("--silta-via", choices=["cli", "engine"], default="cli",
                    help="cli: `silta sync run` (the measurement); engine: Silta's engine "
                         "in a child of this script, with phase timings (a diagnostic)")
    ap.add_argument("--keep", action="store_true", help="keep the tables and logs")
    ap.add_argument("--regenerate", action="store_true", help="ignore the cached CSV")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where tables go (default: a new temp folder)")
    # internal: one hand-written path in a child process
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child, args.csv, args.table)

    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # generation, counting
    paths = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        ap.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    allocators = [a.strip() for a in args.allocator.split(",") if a.strip()]
    if args.runs < 1:
        ap.error("--runs must be 1 or more")
    size_gb = args.size_gb * (2 if args.double else 1)

    ds = ensure_dataset(size_gb, args.seed, args.regenerate)
    default_pool = probe_default_pool()
    sha_s = sha256_pass(ds.path)
    import deltalake
    import pyarrow as pa

    versions = [f"pyarrow {pa.__version__}", f"deltalake {deltalake.__version__}"]
    for mod in ("pandas", "duckdb"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} missing")
    import psutil

    print(f"Silta sync throughput ({time.strftime('%Y-%m-%d %H:%M')})")
    print(f"  data:    {ds.path.relative_to(ROOT)}  {ds.bytes / 1e9:.3f} GB "
          f"({ds.bytes / MIB:,.0f} MiB), {ds.rows:,} rows, {ds.bytes / ds.rows:.0f} B/row, "
          + ("cached" if ds.cached else f"generated in {ds.gen_seconds:.1f} s"))
    print(f"  machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / GIB:.1f} GiB "
          f"RAM, Python {platform.python_version()}; {', '.join(versions)}")
    print(f"  paths:   {', '.join(paths)}; runs {args.runs}; silta via {args.silta_via}; "
          f"allocators {', '.join(allocators)} (pyarrow default here: {default_pool}); "
          f"load average {os.getloadavg()[0]:.2f}; the file is in the page cache for all")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="silta-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[Run]]] = {}
    failed = True  # until the report is out: a crash keeps the logs
    try:
        for rep in range(args.runs):
            for alloc in allocators:
                for path in paths:
                    print(f"  running {path} (pool {alloc}, run {rep + 1}/{args.runs}) ...",
                          file=sys.stderr, flush=True)
                    r = run_path(path, alloc, rep, ds, work, default_pool, args.silta_via)
                    results.setdefault(alloc, {}).setdefault(path, []).append(r)
                    print(f"    {r.seconds:.2f} s, peak RSS {r.peak_rss_kib / 1024:.0f} MiB, "
                          f"rows {r.rows}, exit {r.exit_code}", file=sys.stderr, flush=True)
        ordered = {a: {p: results[a][p] for p in paths if p in results.get(a, {})}
                   for a in allocators}
        size_label = f"{ds.bytes / 1e9:.2f} GB"
        report(ds, ordered, allocators, default_pool, sha_s, size_label)
        schema_notes(ordered)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"{ds.path.stem}.json"
        save_results(out, ds, sha_s, default_pool, ordered, args.silta_via)
        previous_sizes(allocators[0], out)
        print(f"\nresults: {out.relative_to(ROOT)}"
              + (f"; tables and logs kept in {work}" if args.keep else ""))
        failed = any(x.exit_code != 0 or x.rows != ds.rows
                     for by in results.values() for runs in by.values() for x in runs)
        if failed and not args.keep:
            print(f"some runs failed: tables and logs kept in {work}")
    finally:
        if not args.keep and args.workdir is None and not failed:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
