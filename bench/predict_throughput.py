"""Prediction throughput: a Silta predict run against the same model applied by hand.

The input is the demo's occupation survey, generated larger (free-text job titles in
Finnish, Swedish and English, language, sector; ``--rows`` answers) and written once to
a local Delta table in ``bench/out/predict/``; the occupation coder is trained once on
the first ``--train-rows`` coded answers and registered. Each path then predicts every
answer into a fresh predictions table, in its own child process:

  silta   ``silta jobs run code_answers``: the registry resolves model@champion, the
          artifact's sha256 is checked, rows stream through in ``batch_rows`` batches
          into one Delta commit with its app transaction (what the agent's worker does)
  bare    the same artifact loaded with skops, the whole input read at once, one
          ``predict_proba`` over it, top-3 with numpy, ``write_deltalake``: what a person
          writes by hand, with no bookkeeping and memory growing with the input

Measured per child: wall seconds (interpreter start and imports included, as an operator
sees it), rows/s, and peak RSS (``ru_maxrss`` from ``os.wait4``, exact). With ``--runs N``
the runs are interleaved and the medians shown; the ratio silta/bare is taken per round
(these machines are shared: compare within a run, not across runs).

Usage::

    .venv/bin/python bench/predict_throughput.py                 # 300k answers, 1 run
    .venv/bin/python bench/predict_throughput.py --rows 1000000 --runs 2
    .venv/bin/python bench/predict_throughput.py --rows 100000 --batch-rows 16384
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "predict"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _child import run_child  # noqa: E402

CONFIG = """
[agent]
name = "bench"
state_dir = "state"
[lake]
uri = "lake"
[models.coder]
training_table = "raw/answers"
labels_table = "raw/codes"
key = ["response_id"]
label = "isco08"
text_features = ["job_title"]
features = ["language", "sector"]
seed = 1
promotion = "auto"
min_confidence = 0.6
[[trainings]]
name = "train_coder"
model = "coder"
[[predictions]]
name = "code_answers"
model = "coder@champion"
input = "raw/answers"
output = "{output}"
top_k = 3
batch_rows = {batch_rows}
"""


def _prepare(rows: int, train_rows: int) -> dict[str, Any]:
    """The input table and a trained champion, cached between runs with the same sizes."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    from deltalake import write_deltalake

    from agent.demo import generate

    marker = OUT / "prepared.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("rows") == rows and meta.get("train_rows") == train_rows:
            return dict(meta)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    per_file = 10_000
    files = generate(2026, max(1, rows // per_file), per_file)
    answers = []
    coded = None
    for rel, data, _ in files:
        table = pcsv.read_csv(pa.py_buffer(data), parse_options=pcsv.ParseOptions(
            delimiter=";"), convert_options=pcsv.ConvertOptions(
            column_types={"isco08": pa.string(), "weekly_hours": pa.string()}))
        if rel.startswith("responses/"):
            answers.append(table.select(["response_id", "language", "sector", "job_title"]))
        else:
            coded = table.select(["response_id", "isco08"])
    data = pa.concat_tables(answers).slice(0, rows)
    assert coded is not None
    ids = set(data.column("response_id").slice(0, train_rows).to_pylist())
    codes = coded.filter(pa.compute.is_in(coded.column("response_id"),
                                          value_set=pa.array(sorted(ids))))
    write_deltalake(str(OUT / "lake" / "raw" / "answers"), data)
    write_deltalake(str(OUT / "lake" / "raw" / "codes"), codes)
    config = OUT / "silta.toml"
    config.write_text(CONFIG.format(output="predictions/warmup", batch_rows=65536))
    from agent.config import load_config
    from agent.ml.execute import execute_job

    out = execute_job(load_config(config), "train", "train_coder", "bench-train")
    if out.status != "ok":
        raise SystemExit(f"training failed: {out.error}")
    from agent.ml.registry import ModelRegistry
    from connectors.lake import DeltaLake

    v = ModelRegistry(DeltaLake(str(OUT / "lake"))).resolve("coder@champion")
    meta = {"rows": data.num_rows, "train_rows": train_rows, "labelled": len(codes),
            "artifact": v.artifact.uri, "sha256": v.artifact.sha256,
            "features": v.params["feature_spec"], "classes": len(v.signature["outputs"]
                                                                ["classes"])}
    marker.write_text(json.dumps(meta))
    return meta


BARE = r"""
import json, sys, time
import numpy as np, pyarrow as pa, skops.io as sio
from deltalake import DeltaTable, write_deltalake
args = json.loads(sys.argv[1])
t0 = time.monotonic()
data = open(args["artifact"], "rb").read()
model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
table = DeltaTable(args["input"]).to_pyarrow_dataset().to_table()
frame = table.select(args["columns"]).to_pandas()
for c in args["columns"]:
    frame[c] = frame[c].fillna("").astype(object)
proba = model.predict_proba(frame)
classes = np.asarray(model.classes_).astype(str)
top = np.argsort(-proba, axis=1, kind="stable")[:, :3]
best = top[:, 0]
out = pa.table({"response_id": table.column("response_id"),
                "predicted": pa.array(classes[best]),
                "confidence": pa.array(proba[np.arange(len(best)), best]),
                "top_codes": pa.array(classes[top].tolist())})
write_deltalake(args["output"], out)
print("BENCH_RESULT " + json.dumps({"rows": out.num_rows, "work_s": time.monotonic() - t0}))
sys.stdout.flush()
import os; os._exit(0)
"""


def run_silta(batch_rows: int, round_no: int) -> dict[str, Any]:
    output = f"predictions/silta_{round_no}"
    (OUT / "silta.toml").write_text(CONFIG.format(output=output, batch_rows=batch_rows))
    silta = Path(sys.executable).with_name("silta")
    result = run_child([str(silta), "jobs", "run", "code_answers", "--json", "--config",
                     "silta.toml"], OUT)
    from deltalake import DeltaTable

    result["rows"] = DeltaTable(str(OUT / "lake" / output)).to_pyarrow_dataset().count_rows()
    return result


def run_bare(meta: dict[str, Any], round_no: int) -> dict[str, Any]:
    columns = [*meta["features"]["text"], *meta["features"]["numeric"],
               *meta["features"]["categorical"]]
    args = {"artifact": meta["artifact"], "input": str(OUT / "lake" / "raw" / "answers"),
            "output": str(OUT / "lake" / "predictions" / f"bare_{round_no}"),
            "columns": columns}
    return run_child([sys.executable, "-c", BARE, json.dumps(args)], OUT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--train-rows", type=int, default=20_000)
    p.add_argument("--batch-rows", type=int, default=65_536)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    t = time.monotonic()
    meta = _prepare(args.rows, args.train_rows)
    print(f"input: {meta['rows']} answers; model trained on {meta['labelled']} coded answers "
          f"({meta['classes']} classes); prepared in {time.monotonic() - t:.1f} s")
    results: dict[str, list[dict[str, Any]]] = {"silta": [], "bare": []}
    ratios: list[float] = []
    rss_ratios: list[float] = []
    for r in range(args.runs):
        for name in ("silta", "bare"):
            shutil.rmtree(OUT / "lake" / "predictions", ignore_errors=True)
            res = run_silta(args.batch_rows, r) if name == "silta" else run_bare(meta, r)
            if res["rows"] != meta["rows"]:
                raise SystemExit(f"{name} predicted {res['rows']} rows of {meta['rows']}")
            results[name].append(res)
        ratios.append(results["silta"][-1]["seconds"] / results["bare"][-1]["seconds"])
        rss_ratios.append(results["silta"][-1]["rss_mib"] / results["bare"][-1]["rss_mib"])
    print(f"\n{'path':<8}{'seconds':>10}{'rows/s':>12}{'peak RSS MiB':>15}")
    for name, runs in results.items():
        sec = statistics.median(x["seconds"] for x in runs)
        rss = statistics.median(x["rss_mib"] for x in runs)
        print(f"{name:<8}{sec:>10.1f}{meta['rows'] / sec:>12.0f}{rss:>15.0f}")
    print(f"\nsilta / bare: time {statistics.median(ratios):.2f}x, peak RSS "
          f"{statistics.median(rss_ratios):.2f}x (batch_rows {args.batch_rows}; "
          f"median of {args.runs} round(s))")


if __name__ == "__main__":
    main()
