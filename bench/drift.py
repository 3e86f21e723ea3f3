"""Drift monitor throughput: a Silta monitoring run against the bare scipy/numpy computation.

Two Delta tables of ``--rows`` rows each (default 1M) are written once to
``bench/out/drift/``: a reference and a current sample, with 20 monitored columns:
10 numeric, 9 categorical, and one free-text job title (the demo's occupations, with
new titles in the current sample). A few columns are shifted so there is drift to find.
Then, each in its own child process:

  silta   ``silta monitors run bench``: reads both tables as Arrow batches, profiles
          every column in one pass (numbers kept for the exact KS/Wasserstein, counts for
          categories, lengths and token counts for text), computes the drift statistics
          (normalized Wasserstein, Jensen-Shannon, text length, OOV rate, token drift),
          records every figure in ``_silta/metrics`` and the alerts in the state store
  bare    both tables read whole with pandas, then per column the scipy/numpy calls a
          person writes by hand: ``wasserstein_distance / std``, ``value_counts`` +
          ``jensenshannon``, ``str.len``, ``str.findall(r"\\w+")`` + ``explode`` for tokens

Measured per child: wall seconds (interpreter start and imports included), and peak
RSS (``ru_maxrss`` from ``os.wait4``). The values of both paths are compared: they must
agree to 1e-9 (relative), or the benchmark fails. With ``--runs N`` the runs are
interleaved and medians shown; the ratio silta/bare is taken per round (these machines
are shared: compare within a run, not across runs).

Usage::

    .venv/bin/python bench/drift.py                      # 1M rows x 20 columns, 1 run
    .venv/bin/python bench/drift.py --rows 200000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "drift"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _child import run_child  # noqa: E402

NUMERIC = [f"num_{i}" for i in range(10)]
CATEGORICAL = [f"cat_{i}" for i in range(9)]
TEXT = "job_title"

CONFIG = """
[agent]
name = "bench"
state_dir = "state"
[lake]
uri = "lake"
[[monitors]]
name = "bench"
input = "raw/current"
reference = "raw/reference@0"
window = "all"
drift_columns = {columns}
batch_rows = 262144
[monitors.columns.job_title]
kind = "text"
"""


def _frame(rows: int, seed: int, drifted: bool) -> Any:
    import numpy as np
    import pyarrow as pa

    from agent.demo import NEW_OCCUPATIONS, OCCUPATIONS

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {"id": pa.array(np.arange(rows, dtype=np.int64))}
    for i, name in enumerate(NUMERIC):
        shift = 0.3 if drifted and i < 3 else 0.0  # three columns move
        cols[name] = pa.array(rng.normal(10.0 * i + shift * (i + 1), 1.0 + i, rows))
    for i, name in enumerate(CATEGORICAL):
        k = 8 + 5 * i
        weights = np.linspace(1.0, 3.0 if drifted and i < 2 else 1.0, k)
        values = np.array([f"{name}_v{j:02d}" for j in range(k)], dtype=object)
        cols[name] = pa.array(rng.choice(values, rows, p=weights / weights.sum()))
    occupations = OCCUPATIONS + (NEW_OCCUPATIONS if drifted else [])
    titles = np.array([t for o in occupations for t in o[1:]]
                      + [f"senior {o[3]}" for o in occupations]
                      + [f"{o[1]} (osa-aikainen)" for o in occupations], dtype=object)
    cols[TEXT] = pa.array(rng.choice(titles, rows))
    return pa.table(cols)


def _prepare(rows: int) -> None:
    from deltalake import write_deltalake

    marker = OUT / f"prepared-{rows}"
    if marker.exists():
        return
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "lake" / "raw").mkdir(parents=True)
    write_deltalake(str(OUT / "lake" / "raw" / "reference"), _frame(rows, 1, False))
    write_deltalake(str(OUT / "lake" / "raw" / "current"), _frame(rows, 2, True))
    marker.write_text("ok")


BARE = r"""
import json, re, sys, time
t0 = time.monotonic()
import numpy as np, pandas as pd
from deltalake import DeltaTable
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance
args = json.loads(sys.argv[1])
ref = DeltaTable(args["reference"]).to_pandas()
cur = DeltaTable(args["current"]).to_pandas()
out = {}
for c in args["numeric"]:
    r, k = ref[c].dropna().to_numpy(), cur[c].dropna().to_numpy()
    out[c] = wasserstein_distance(r, k) / np.std(r)
def js(r, k):
    keys = sorted(set(r.index) | set(k.index))
    p = r.reindex(keys, fill_value=0).to_numpy(float)
    q = k.reindex(keys, fill_value=0).to_numpy(float)
    return float(jensenshannon(p / p.sum(), q / q.sum()))
for c in args["categorical"]:
    out[c] = js(ref[c].value_counts(), cur[c].value_counts())
t = args["text"]
rl, kl = ref[t].str.len().to_numpy(float), cur[t].str.len().to_numpy(float)
out[t + ":length"] = wasserstein_distance(rl, kl) / np.std(rl)
rt = ref[t].str.lower().str.findall(r"\w+").explode().value_counts()
kt = cur[t].str.lower().str.findall(r"\w+").explode().value_counts()
out[t + ":oov_rate"] = float(kt[~kt.index.isin(rt.index)].sum() / kt.sum())
top = sorted(rt.items(), key=lambda kv: (-kv[1], kv[0]))[:1000]
vocab = [w for w, _ in top]
p = np.array([n for _, n in top] + [rt.sum() - sum(n for _, n in top)], float)
q = np.array([kt.get(w, 0) for w in vocab] + [0], float); q[-1] = kt.sum() - q[:-1].sum()
out[t + ":tokens"] = float(jensenshannon(p / p.sum(), q / q.sum()))
print("BENCH_RESULT " + json.dumps({"values": out, "work_s": time.monotonic() - t0}))
sys.stdout.flush()
import os; os._exit(0)
"""


def run_silta() -> dict[str, Any]:
    shutil.rmtree(OUT / "state", ignore_errors=True)
    shutil.rmtree(OUT / "lake" / "_silta", ignore_errors=True)
    columns = json.dumps([*NUMERIC, *CATEGORICAL, TEXT])
    (OUT / "silta.toml").write_text(CONFIG.format(columns=columns))
    silta = Path(sys.executable).with_name("silta")
    result = run_child([str(silta), "monitors", "run", "bench", "--json", "--config",
                     "silta.toml"], OUT)
    from deltalake import DeltaTable

    figures = DeltaTable(str(OUT / "lake" / "_silta" / "metrics")).to_pyarrow_table(
        columns=["check", "target", "value", "status"]).to_pylist()
    result["values"] = {f["target"]: f["value"] for f in figures if f["check"] == "drift"}
    result["breaches"] = sorted(f["target"] for f in figures if f["status"] == "breach")
    return result


def run_bare() -> dict[str, Any]:
    args = {"reference": str(OUT / "lake" / "raw" / "reference"),
            "current": str(OUT / "lake" / "raw" / "current"),
            "numeric": NUMERIC, "categorical": CATEGORICAL, "text": TEXT}
    return run_child([sys.executable, "-c", BARE, json.dumps(args)], OUT)


def _compare(silta: dict[str, float], bare: dict[str, float]) -> float:
    if set(silta) != set(bare):
        raise SystemExit(f"different figures: silta {sorted(silta)} vs bare {sorted(bare)}")
    worst = 0.0
    for k, v in bare.items():
        worst = max(worst, abs(silta[k] - v) / max(abs(v), 1e-12))
    if worst > 1e-9 or math.isnan(worst):
        raise SystemExit(f"values differ (max relative difference {worst:.2e}): "
                         f"silta {silta} bare {bare}")
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    t = time.monotonic()
    _prepare(args.rows)
    print(f"input: reference and current of {args.rows} rows x 20 columns "
          f"({len(NUMERIC)} numeric, {len(CATEGORICAL)} categorical, 1 text); "
          f"prepared in {time.monotonic() - t:.1f} s")
    results: dict[str, list[dict[str, Any]]] = {"silta": [], "bare": []}
    ratios: list[float] = []
    rss_ratios: list[float] = []
    worst = 0.0
    for _ in range(args.runs):
        for name in ("silta", "bare"):
            results[name].append(run_silta() if name == "silta" else run_bare())
        worst = max(worst, _compare(results["silta"][-1]["values"],
                                    results["bare"][-1]["values"]))
        ratios.append(results["silta"][-1]["seconds"] / results["bare"][-1]["seconds"])
        rss_ratios.append(results["silta"][-1]["rss_mib"] / results["bare"][-1]["rss_mib"])
    print(f"\n{'path':<8}{'seconds':>10}{'peak RSS MiB':>15}")
    for name, runs in results.items():
        sec = statistics.median(x["seconds"] for x in runs)
        rss = statistics.median(x["rss_mib"] for x in runs)
        print(f"{name:<8}{sec:>10.1f}{rss:>15.0f}")
    print(f"\nsilta / bare: time {statistics.median(ratios):.2f}x, peak RSS "
          f"{statistics.median(rss_ratios):.2f}x (median of {args.runs} round(s)); "
          f"{len(results['bare'][-1]['values'])} drift figures equal to {worst:.1e}; "
          f"drifted: {', '.join(results['silta'][-1]['breaches'])}")


if __name__ == "__main__":
    main()
