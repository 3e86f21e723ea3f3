"""Lake write: the same batch committed to a local lake, to Azurite and to moto S3.

The data (default about 200 MiB of Arrow: 10 numeric columns, a timestamp, a categorical
and free text, as in ``sync_throughput.py``) is generated once, deterministically, and
cached as an Arrow IPC file in ``bench/out/data/``. Each run is a child process that
memory-maps that file and hands it to ``DeltaLake.commit_batch`` as a
``RecordBatchReader`` (one commit, a fresh table, exactly the call the sync engine
makes), then opens the latest version with a new ``DeltaLake`` and reads it back whole
(``DeltaLake.read``). The script starts its own servers on loopback:

  local    a folder under the work directory
  az       Azurite 3.35 (``az://``) behind the tests' listing proxy
           (tests/servers/azurite.py: Azurite ignores List Blobs' ``startFrom``)
  s3       moto 5.2 in server mode (``s3://``), IAM checks on; it keeps objects in memory
  az-direct  (only with ``--targets``) Azurite without the proxy: one commit to a new
           table does not need ``startFrom``, so this shows what the proxy costs

Times are taken inside the child around each step (interpreter start and imports
excluded); peak RSS is the child's own ``ru_maxrss`` (``os.wait4``). With ``--runs N``
the runs are interleaved (round 1 of every target, then round 2, ...) and each ratio to
the local lake is the median of the per-round ratios. The emulators run on this same
2-core machine, so their figures say how Silta's object-store path behaves (requests,
retries, multipart uploads), not how fast Azure or S3 are.

Usage::

    .venv/bin/python bench/lake_write.py                    # ~200 MiB, 3 runs each
    .venv/bin/python bench/lake_write.py --size-mb 50 --runs 1
    .venv/bin/python bench/lake_write.py --targets local,az,az-direct,s3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
DATA = OUT / "data"
GEN_VERSION = 1  # bump when the generated data changes: invalidates the cache
CHUNK_ROWS = 100_000
MIB = 1 << 20
RESULT_TAG = "BENCH_RESULT "
OPTIONS_ENV = "SILTA_BENCH_STORAGE_OPTIONS"  # not argv: options hold keys

TARGETS: dict[str, str] = {
    "local": "local folder",
    "az": "Azurite 3.35 (az://) behind the startFrom proxy",
    "az-direct": "Azurite 3.35 (az://), no proxy",
    "s3": "moto 5.2 server (s3://), in memory",
}
DEFAULT_TARGETS = ["local", "az", "s3"]
_WORDS_TEXT = ("survey household income region municipality respondent answer weight "
               "sample estimate quarter annual census employment wage hours sector industry "
               "education age group female male total share index price consumer producer "
               "export import naïve café Zürich Ålesund São-Paulo \"quoted\" 'single' 50% "
               "3.5 €12")
WORDS = _WORDS_TEXT.split()
CATEGORIES = ["north", "south", "east", "west", "central", "capital", "islands", "abroad"]


# -- data ---------------------------------------------------------------------------------
@dataclass
class Dataset:
    path: Path
    rows: int
    bytes: int  # Arrow buffer bytes (what commit_batch is handed)
    cached: bool
    gen_seconds: float = 0.0


def _chunk(rng: Any, start: int, n: int) -> Any:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    base = np.datetime64("2024-01-01T00:00:00", "s")
    ts = (base + rng.integers(0, 366 * 86400, n).astype("timedelta64[s]")).astype(
        "datetime64[us]")
    vocab = pa.array(WORDS)
    n_words = rng.integers(4, 13, n)
    words = [vocab.take(pa.array(rng.integers(0, len(WORDS), n), mask=n_words <= k))
             for k in range(12)]
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
        "temp": pa.array(np.round(rng.normal(8, 9, n), 1), mask=rng.random(n) < 0.01),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "region": pa.array(rng.choice(np.array(CATEGORIES), n)),
        "comment": pc.binary_join_element_wise(*words, " ", null_handling="skip"),
    })


def ensure_dataset(size_mb: float, seed: int, regenerate: bool) -> Dataset:
    """The Arrow IPC file of about ``size_mb`` MiB of buffers, generated once and reused."""
    import numpy as np
    import pyarrow as pa

    target = int(size_mb * MIB)
    name = f"lake-write-{size_mb:g}mb-s{seed}-v{GEN_VERSION}"
    path, meta_path = DATA / f"{name}.arrow", DATA / f"{name}.json"
    if not regenerate and path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("file_bytes") == path.stat().st_size:
            return Dataset(path, int(meta["rows"]), int(meta["bytes"]), cached=True)
    DATA.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = path.with_suffix(".arrow.tmp")
    rows = nbytes = chunk = 0
    writer = None
    with pa.OSFile(str(tmp), "wb") as sink:
        while nbytes < target:
            table = _chunk(np.random.default_rng([seed, chunk]), rows, CHUNK_ROWS)
            if nbytes + table.nbytes > target:  # cut the last chunk to end near the target
                keep = max(1, int(table.num_rows * (target - nbytes) / table.nbytes))
                table = table.slice(0, keep)
            if writer is None:
                writer = pa.ipc.new_file(sink, table.schema)
            for b in table.to_batches(max_chunksize=CHUNK_ROWS):
                writer.write_batch(b)
            rows += table.num_rows
            nbytes += table.nbytes
            chunk += 1
        if writer is not None:
            writer.close()
    os.replace(tmp, path)
    seconds = time.perf_counter() - t0
    meta_path.write_text(json.dumps({"rows": rows, "bytes": nbytes, "seed": seed,
                                     "file_bytes": path.stat().st_size,
                                     "seconds": round(seconds, 2)}, indent=2))
    return Dataset(path, rows, nbytes, cached=False, gen_seconds=seconds)


# -- the child ----------------------------------------------------------------------------
def child_main(data: str, uri: str) -> int:
    """One run in this process: commit the file to ``uri``, open it, read it back."""
    import resource

    sys.path.insert(0, str(ROOT))
    import pyarrow as pa

    from connectors.lake import DeltaLake

    options = json.loads(os.environ.get(OPTIONS_ENV, "{}"))
    source = pa.ipc.open_file(pa.memory_map(data, "r"))
    reader = pa.RecordBatchReader.from_batches(
        source.schema, (source.get_batch(i) for i in range(source.num_record_batches)))
    t0 = time.perf_counter()
    result = DeltaLake(uri, options).commit_batch(
        "bench", reader, app_id="bench/lake_write", seq=1, mode="append",
        schema_merge=False, metadata={"silta.source": "bench"})
    t1 = time.perf_counter()
    reader_lake = DeltaLake(uri, options)  # a reader that shares nothing with the writer
    table = reader_lake.require("bench")
    t2 = time.perf_counter()
    version = table.version()
    adds = pa.table(table.get_add_actions(flatten=True))  # arro3 -> pyarrow
    parquet_bytes = sum(adds.column("size_bytes").to_pylist())
    back = reader_lake.read("bench")
    t3 = time.perf_counter()
    print(RESULT_TAG + json.dumps({
        "commit_s": t1 - t0, "open_s": t2 - t1, "read_s": t3 - t2,
        "version": version, "committed_version": result.version, "rows": back.num_rows,
        "parquet_bytes": parquet_bytes, "files": adds.num_rows,
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }), flush=True)
    sys.stdout.flush()
    # deltalake's native thread pools can abort at interpreter exit (tests/conftest.py).
    os._exit(0)


# -- servers ------------------------------------------------------------------------------
class Servers:
    """The emulators this run needs, each started once; a fresh container/bucket per run."""

    def __init__(self, work: Path, targets: list[str]) -> None:
        sys.path.insert(0, str(ROOT))
        self.azurite: Any = None
        self.s3: Any = None
        if any(t.startswith("az") for t in targets):
            from tests.servers.azurite import AzuriteServer

            if shutil.which("azurite-blob") is None:
                raise SystemExit("azurite-blob is not installed: run .ci/run or "
                                 "`npm install -g azurite@3.35.0`")
            self.azurite = AzuriteServer(work / "azurite")
            self.azurite.start()
        if "s3" in targets:
            from tests.servers.moto_s3 import MotoS3Server

            self.s3 = MotoS3Server(work / "moto")
            self.s3.launch()

    def place(self, target: str, work: Path, label: str) -> tuple[str, dict[str, str]]:
        """(lake URI, storage options) of an empty lake for one run."""
        if target == "local":
            return str(work / "lake" / label), {}
        if target == "s3":
            return f"s3://{self.s3.new_bucket('bench')}/lake", self.s3.storage_options()
        container = self.azurite.new_container("bench")
        options = self.azurite.storage_options()
        if target == "az-direct":
            options["azure_storage_endpoint"] = (
                f"http://127.0.0.1:{self.azurite.blob_port}/{self.azurite.account}")
        return f"az://{container}/lake", options

    def clear(self, target: str, uri: str) -> None:
        """Drop a run's data (moto holds it in memory, Azurite on disk)."""
        if target == "local":
            shutil.rmtree(uri, ignore_errors=True)
            return
        name = uri.split("://", 1)[1].split("/", 1)[0]
        if target == "s3":
            client = self.s3.client()
            for key in self.s3.object_names(name):
                client.delete_object(Bucket=name, Key=key)
            client.delete_bucket(Bucket=name)
        else:
            self.azurite.service_client().delete_container(name)

    def stop(self) -> None:
        if self.azurite is not None:
            self.azurite.stop()
        if self.s3 is not None:
            self.s3.shutdown()


# -- the parent ---------------------------------------------------------------------------
@dataclass
class Run:
    target: str
    wall_s: float
    peak_rss_kib: int
    exit_code: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and "commit_s" in self.detail


def run_one(target: str, rep: int, ds: Dataset, work: Path, servers: Servers) -> Run:
    uri, options = servers.place(target, work, f"{target}-r{rep}")
    env = dict(os.environ, **{OPTIONS_ENV: json.dumps(options)})
    env.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{target}-r{rep}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--data", str(ds.path),
           "--uri", uri]
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT)
        out = proc.stdout.read().decode() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    detail: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith(RESULT_TAG):
            detail = json.loads(line[len(RESULT_TAG):])
    if code != 0 or not detail:
        detail["stderr_tail"] = log.read_text(errors="replace")[-1500:]
    servers.clear(target, uri)
    return Run(target, wall, int(usage.ru_maxrss), code, detail)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(ds: Dataset, results: dict[str, list[Run]]) -> bool:
    mib = ds.bytes / MIB
    local = results.get("local", [])
    head = (f"{'target':<10}{'commit s':>9}{'MiB/s':>8}{'vs local':>9}{'open ms':>9}"
            f"{'read s':>8}{'read MiB/s':>11}{'read vs local':>14}{'peak RSS':>9}  {'ok':<4}what")
    print()
    print(head)
    print("-" * (len(head) + 30))
    bad = False
    for target, runs in results.items():
        good = [r for r in runs if r.ok and r.detail.get("rows") == ds.rows]
        bad = bad or len(good) != len(runs)
        if not good:
            print(f"{target:<10}{'-':>9}  all runs FAILED: {TARGETS[target]}")
        else:
            commit = _median([r.detail["commit_s"] for r in good])
            read = _median([r.detail["read_s"] for r in good])
            opened = _median([r.detail["open_s"] for r in good])
            rss = max(r.peak_rss_kib for r in good) / 1024
            vs = _ratio(runs, local, "commit_s")
            rvs = _ratio(runs, local, "read_s")
            spread = ""
            if len(good) > 1:
                secs = [r.detail["commit_s"] for r in good]
                spread = f"  [{len(good)} runs: {min(secs):.2f}..{max(secs):.2f} s]"
            print(f"{target:<10}{commit:>9.2f}{mib / commit:>8.1f}{vs:>8.2f}x{opened * 1000:>9.0f}"
                  f"{read:>8.2f}{mib / read:>11.1f}{rvs:>13.2f}x{rss:>9.0f}  "
                  f"{'yes' if len(good) == len(runs) else 'NO':<4}{TARGETS[target]}{spread}")
        for r in runs:
            if r not in good:
                print(f"    {target} run FAILED: exit {r.exit_code}, rows "
                      f"{r.detail.get('rows')} (expected {ds.rows:,})")
                for t in str(r.detail.get("stderr_tail", "")).strip().splitlines()[-6:]:
                    print(f"      {t}")
    sizes = [(r.detail["parquet_bytes"], r.detail["files"]) for rs in results.values()
             for r in rs if r.ok]
    if sizes:
        size, files = sizes[0]
        print(f"(each commit wrote {size / MIB:.0f} MiB of parquet in {files} file(s): "
              f"{100 * size / ds.bytes:.0f}% of the Arrow size)")
    print(f"(commit s: DeltaLake.commit_batch of the whole file as one commit to a new table; "
          f"MiB/s over {mib:.0f} MiB of Arrow buffers; vs local: median of per-round ratios "
          "commit time / local commit time; open ms: DeltaLake.require of the latest version "
          "by a fresh DeltaLake; read s: DeltaLake.read of the whole table; peak RSS in MiB, "
          "the child's own ru_maxrss)")
    return not bad


def _ratio(runs: list[Run], local: list[Run], key: str) -> float:
    """Median of per-round ratios to the local lake (runs are interleaved by round)."""
    pairs = [(r.detail[key], b.detail[key]) for r, b in zip(runs, local, strict=False)
             if r.ok and b.ok]
    return statistics.median(o / b for o, b in pairs) if pairs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=float, default=200.0,
                    help="data size in MiB of Arrow buffers (default 200)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", type=int, default=3, help="runs per target (median shown)")
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                    help=f"comma list: {', '.join(TARGETS)}")
    ap.add_argument("--regenerate", action="store_true", help="ignore the cached data")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    # internal: one run in a child process
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--uri", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.data, args.uri)

    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        ap.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    if "local" not in targets:
        targets.insert(0, "local")  # the baseline of every ratio
    if args.runs < 1:
        ap.error("--runs must be 1 or more")

    ds = ensure_dataset(args.size_mb, args.seed, args.regenerate)
    import deltalake
    import pyarrow as pa

    print(f"Silta lake write ({time.strftime('%Y-%m-%d %H:%M')})")
    print(f"  data:    {ds.path.relative_to(ROOT)}  {ds.bytes / MIB:,.0f} MiB of Arrow buffers, "
          f"{ds.rows:,} rows, " + ("cached" if ds.cached
                                   else f"generated in {ds.gen_seconds:.1f} s"))
    print(f"  machine: {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"pyarrow {pa.__version__}, deltalake {deltalake.__version__}; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  targets: {', '.join(targets)}; runs {args.runs} (interleaved); the servers run "
          "on this machine")

    work = Path(tempfile.mkdtemp(prefix="silta-lake-bench-"))
    servers = Servers(work, targets)
    results: dict[str, list[Run]] = {t: [] for t in targets}
    ok = False
    try:
        for rep in range(args.runs):
            for target in targets:
                print(f"  running {target} (run {rep + 1}/{args.runs}) ...", file=sys.stderr,
                      flush=True)
                r = run_one(target, rep, ds, work, servers)
                results[target].append(r)
                d = r.detail
                print(f"    commit {d.get('commit_s', float('nan')):.2f} s, open "
                      f"{d.get('open_s', float('nan')) * 1000:.0f} ms, read "
                      f"{d.get('read_s', float('nan')):.2f} s, rows {d.get('rows')}, exit "
                      f"{r.exit_code}", file=sys.stderr, flush=True)
        ok = report(ds, results)
        print(f"  [{'PASS' if ok else 'FAIL'}] every run committed and read back "
              f"{ds.rows:,} rows")
    finally:
        servers.stop()
        if args.keep or not ok:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
