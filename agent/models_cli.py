"""`silta models ...`: the registry's models, versions, aliases and model cards."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from typing import Any

from agent.config import LoadedConfig
from agent.ml import governance
from agent.ml.artifacts import check_model_name, read_version_file
from agent.ml.registry import CHAMPION_ALIAS, ModelRegistry, ModelVersion
from agent.output import print_json, print_table
from agent.stores import open_lake
from connectors.errors import NotFoundError
from connectors.names import safe_display


def _registry(loaded: LoadedConfig) -> ModelRegistry:
    return ModelRegistry(open_lake(loaded))


def _who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _primary(v: ModelVersion) -> tuple[str | None, float | None]:
    metric = v.metrics.get("primary_metric")
    value = (v.metrics.get("overall") or {}).get(metric) if isinstance(metric, str) else None
    return (metric if isinstance(metric, str) else None,
            float(value) if isinstance(value, int | float) else None)


def version_row(v: ModelVersion, aliases: dict[str, int], archived: set[int]
                ) -> dict[str, Any]:
    """One version as stable keys (the JSON of `silta models show`)."""
    metric, value = _primary(v)
    return {
        "model": v.model, "version": v.version,
        "aliases": sorted(a for a, n in aliases.items() if n == v.version),
        "state": "archived" if v.version in archived else "active",
        "primary_metric": metric, "value": value,
        "metrics": (v.metrics.get("overall") or {}),
        "training_data": v.training_data, "artifact_uri": v.artifact.uri,
        "artifact_sha256": v.artifact.sha256, "code_version": v.code_version,
        "config_hash": v.config_hash, "created_by": v.created_by,
        "created_at": v.created_at, "estimator": v.params.get("estimator"),
        "signature": v.signature,
    }


def cmd_list(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    reg = _registry(loaded)
    rows: list[dict[str, Any]] = []
    for model in reg.models():
        versions = reg.versions(model)
        aliases = reg.aliases(model)
        latest = versions[-1]
        metric, value = _primary(latest)
        rows.append({"model": model, "versions": len(versions), "latest": latest.version,
                     "aliases": aliases, "primary_metric": metric, "latest_value": value,
                     "last_trained": latest.created_at})
    if args.json:
        print_json(rows)
        return 0
    view = [{**r, "aliases": " ".join(f"{a}={v}" for a, v in sorted(r["aliases"].items()))
             or "-", "metric": f"{r['primary_metric']} {r['latest_value']:.3f}"
             if r["latest_value"] is not None else "-"} for r in rows]
    print_table(view, ["model", "versions", "latest", "aliases", "metric", "last_trained"],
                title="models", empty="no model is registered yet (see `silta jobs list`)")
    return 0


def cmd_show(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    reg = _registry(loaded)
    model, at, _ = args.model.partition("@")
    check_model_name(model)
    aliases, archived = reg.aliases(model), reg.archived(model)
    if at:  # MODEL@ names one version; resolve() refuses an empty reference after '@'
        v = reg.resolve(args.model)
        row = version_row(v, aliases, archived)
        if args.json:
            print_json({**row, "params": v.params, "libraries": v.libraries,
                        "metrics_all": v.metrics})
            return 0
        _print_version(row, v)
        return 0
    rows = [version_row(v, aliases, archived) for v in reg.versions(model)]
    history = [{"alias": c.alias, "version": c.version, "previous": c.previous_version,
                "set_by": c.set_by, "set_at": c.set_at, "reason": c.reason}
               for c in reg.alias_history(model)]
    if args.json:
        print_json({"model": model, "versions": rows, "alias_history": history})
        return 0
    view = [{**r, "aliases": ",".join(r["aliases"]) or "-",
             "metric": f"{r['value']:.3f}" if r["value"] is not None else "-",
             "data": f"{r['training_data'].get('table')}@{r['training_data'].get('version')}"}
            for r in rows]
    print_table(view, ["version", "aliases", "state", "metric", "data", "created_by",
                       "created_at"], title=f"versions of {model} (metric: "
                f"{rows[-1]['primary_metric'] if rows else '-'})")
    print_table(history, ["alias", "version", "previous", "set_by", "set_at", "reason"],
                title="alias moves", empty="no alias set yet")
    return 0


def _print_version(row: dict[str, Any], v: ModelVersion) -> None:
    lines = [
        f"model:        {row['model']}@{row['version']} ({row['state']}"
        + (f"; {', '.join(row['aliases'])}" if row["aliases"] else "") + ")",
        f"estimator:    {row['estimator']}",
        f"trained on:   {_data(v.training_data)}",
        "metrics:      " + ", ".join(f"{k} {val:.4f}" if isinstance(val, float) else
                                      f"{k} {val}" for k, val in row["metrics"].items()),
        f"artifact:     {row['artifact_uri']}",
        f"sha256:       {row['artifact_sha256']}",
        f"code:         {row['code_version']}",
        f"config hash:  {row['config_hash']}",
        f"created:      {row['created_at']} by {row['created_by']}",
        f"card:         silta models card {row['model']}@{row['version']}",
    ]
    sys.stdout.write("".join(safe_display(line) + "\n" for line in lines))


def _data(training: dict[str, Any]) -> str:
    parts = [f"{i.get('table')}@{i.get('version')} ({i.get('role')}, {i.get('rows')} rows)"
             for i in training.get("inputs", [])]
    return "; ".join(parts) + f"; {training.get('rows')} labelled rows, content " \
        f"{str(training.get('content_hash'))[:16]}"


def cmd_card(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    reg = _registry(loaded)
    v = reg.resolve(args.model)
    name = "card.json" if args.json else "card.md"
    try:
        data = read_version_file(reg.lake.uri, reg.lake.storage_options, v.model, v.version,
                                 name)
    except NotFoundError:
        raise NotFoundError("model card", f"{v.model}@{v.version}",
                            "it is written when the version is registered by a training "
                            "run") from None
    text = data.decode("utf-8")
    if args.json:
        print_json(json.loads(text))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_promote(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    return _said(governance.promote(_registry(loaded), args.model, args.version, by=_who(),
                                    reason=args.reason or "", operator=getpass.getuser()))


def cmd_alias(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    return _said(governance.move_alias(_registry(loaded), args.model, args.alias,
                                       args.version, by=_who(), reason=args.reason or ""))


def cmd_approve(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """An operator's approval of the version a manual promotion left waiting."""
    return _said(governance.approve(_registry(loaded), args.model, args.version, by=_who(),
                                    reason=args.reason or "", operator=getpass.getuser()))


def cmd_rollback(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """Point the champion back at the version it pointed at before its last move."""
    return _said(governance.rollback(_registry(loaded), args.model, by=_who(),
                                     reason=args.reason or "", operator=getpass.getuser()))


def _said(moved: governance.AliasMoved) -> int:
    sys.stdout.write(moved.message + "\n")
    return 0


def cmd_archive(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    reg = _registry(loaded)
    state = "active" if args.undo else "archived"
    reg.set_state(args.model, args.version, state, by=_who(), reason=args.reason or "")
    sys.stdout.write(f"{args.model}@{args.version} is {state}\n")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser,
               parser_class: type[argparse.ArgumentParser], func: Any,
               positive: Any) -> None:
    """`silta models ...` on the main parser (kept here, beside the handlers)."""
    md = sub.add_parser("models", help="the model registry: versions, aliases, cards")
    md_sub = md.add_subparsers(dest="models_cmd", required=True, parser_class=parser_class)
    md_sub.add_parser("list", parents=[common, as_json], help="registered models"
                      ).set_defaults(func=func)
    ms = md_sub.add_parser("show", parents=[common, as_json],
                           help="a model's versions and alias moves, or one version")
    ms.add_argument("model", help="MODEL, or MODEL@VERSION / MODEL@ALIAS for one version")
    mc = md_sub.add_parser("card", parents=[common, as_json],
                           help="a version's model card (Markdown; --json for the data)")
    mc.add_argument("model", help="MODEL@VERSION, MODEL@ALIAS or MODEL (its latest)")
    mp = md_sub.add_parser("promote", parents=[common],
                           help=f"make a version the {CHAMPION_ALIAS} (an operator's approval)")
    mp.add_argument("model")
    mp.add_argument("version", type=positive)
    mp.add_argument("--reason", default="", help="why (recorded with who and when)")
    ma = md_sub.add_parser("alias", parents=[common], help="point any alias at a version")
    ma.add_argument("model")
    ma.add_argument("alias")
    ma.add_argument("version", type=positive)
    ma.add_argument("--reason", default="", help="why (recorded with who and when)")
    mv = md_sub.add_parser("approve", parents=[common],
                           help="approve the version a manual promotion left waiting")
    mv.add_argument("model")
    mv.add_argument("version", type=positive)
    mv.add_argument("--reason", default="", help="why (recorded with who and when)")
    mb = md_sub.add_parser("rollback", parents=[common],
                           help=f"point {CHAMPION_ALIAS} back at the previous one")
    mb.add_argument("model")
    mb.add_argument("--reason", default="", help="why (recorded with who and when)")
    mr = md_sub.add_parser("archive", parents=[common],
                           help="archive a version (no alias may point at it)")
    mr.add_argument("model")
    mr.add_argument("version", type=positive)
    mr.add_argument("--reason", default="")
    mr.add_argument("--undo", action="store_true", help="make an archived version active")
    for p in (md, ms, mc, mp, ma, mv, mb, mr):
        p.set_defaults(func=func)
