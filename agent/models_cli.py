"""`silta models ...`: the registry's models, versions, aliases and model cards."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from typing import Any

from agent.config import LoadedConfig
from agent.ml.artifacts import check_model_name, read_version_file
from agent.ml.registry import (
    AWAITING_APPROVAL,
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    ModelRegistry,
    ModelVersion,
)
from agent.output import print_json, print_table
from agent.stores import open_lake
from connectors.errors import NotFoundError, UsageError
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
    return _move(loaded, args.model, CHAMPION_ALIAS, args.version, args.reason or
                 f"promoted by {getpass.getuser()}")


def cmd_alias(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    return _move(loaded, args.model, args.alias, args.version, args.reason or "")


def _move(loaded: LoadedConfig, model: str, alias: str, version: int, reason: str) -> int:
    reg = _registry(loaded)
    before = reg.aliases(check_model_name(model)).get(alias)
    if before == version:
        raise UsageError(f"{model}@{alias} is version {version} already")
    reg.set_alias(model, alias, version, by=_who(), reason=reason)
    was = f" (was {before})" if before is not None else ""
    sys.stdout.write(f"{model}@{alias} is now version {version}{was}\n")
    return 0


def waiting_version(reg: ModelRegistry, model: str) -> int | None:
    """The challenger a training left for an operator, if the champion has not moved since.

    The challenger alias is never removed: after an approval it points at the champion,
    and after a rollback at the version rolled back from; neither is waiting any more.
    """
    last = {c.alias: c for c in reg.alias_history(model)}  # oldest first: the last wins
    challenger, champion = last.get(CHALLENGER_ALIAS), last.get(CHAMPION_ALIAS)
    if challenger is None or (champion is not None and champion.seq > challenger.seq):
        return None
    return challenger.version


def cmd_approve(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """An operator's approval of the version a manual promotion left waiting."""
    reg = _registry(loaded)
    model = check_model_name(args.model)
    if reg.aliases(model).get(CHAMPION_ALIAS) == args.version:
        raise UsageError(f"{model}@{args.version} is the {CHAMPION_ALIAS} already")
    waiting = waiting_version(reg, model)
    if waiting != args.version:
        what = (f"the version waiting is {waiting}" if waiting is not None
                else "no version is waiting")
        raise UsageError(f"{model}@{args.version} is not waiting for approval ({what}); "
                         f"`silta models promote {model} {args.version}` promotes any version")
    why = next((c.reason for c in reversed(reg.alias_history(model, CHALLENGER_ALIAS))
                if c.version == args.version), "")
    if AWAITING_APPROVAL not in why:
        # the gate said no (worse, or a segment fell): approving would skip governance
        raise UsageError(f"{model}@{args.version} was not left waiting for approval; its "
                         f"training decided: {why or 'nothing recorded'}. `silta models "
                         f"promote {model} {args.version} --reason ...` overrides the gate")
    reason = f"approved by {getpass.getuser()}" + (f": {args.reason}" if args.reason else "")
    return _move(loaded, model, CHAMPION_ALIAS, args.version,
                 f"{reason} (training said: {why})" if why else reason)


def cmd_rollback(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """Point the champion back at the version it pointed at before its last move."""
    reg = _registry(loaded)
    model = check_model_name(args.model)
    moves = reg.alias_history(model, CHAMPION_ALIAS)
    if not moves:
        raise UsageError(f"{model} has no {CHAMPION_ALIAS} to roll back")
    current = moves[-1]
    previous = current.previous_version
    if previous is None:
        raise UsageError(f"{model}@{current.version} is the first {CHAMPION_ALIAS}; there is "
                         "no earlier one to go back to")
    if previous in reg.archived(model):
        raise UsageError(f"{model}@{previous} (the previous {CHAMPION_ALIAS}) is archived; "
                         f"`silta models archive {model} {previous} --undo` first")
    reason = (f"rollback by {getpass.getuser()} from v{current.version}"
              + (f": {args.reason}" if args.reason else ""))
    return _move(loaded, model, CHAMPION_ALIAS, previous, reason)


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
