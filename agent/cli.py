"""The `silta` command line. Results go to stdout, logs to stderr.

Exit codes: 0 done; 1 the work failed (a batch, a run); 2 bad input (config, arguments,
names): the message says what to fix, never a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from agent.config import LoadedConfig, default_config_path, json_schema, load_config
from agent.logs import setup_logging
from connectors.errors import (
    ConfigError,
    LockHeldError,
    NotFoundError,
    SiltaError,
    UnsafeNameError,
    UsageError,
)
from connectors.names import safe_display

log = logging.getLogger("silta.cli")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage; keep it, say what to do
        self.print_usage(sys.stderr)
        sys.stderr.write(f"silta: error: {message}\nsee `{self.prog} --help`\n")
        raise SystemExit(EXIT_USAGE)


def load(args: argparse.Namespace) -> LoadedConfig:
    """The config named by ``--config`` (or the default), with logging set up from it."""
    return _config(args)


def _config(args: argparse.Namespace) -> LoadedConfig:
    loaded = load_config(default_config_path(args.config))
    setup_logging(args.log_level or loaded.config.agent.log_level,
                  args.log_format or loaded.config.agent.log_format)
    return loaded


# -- commands -----------------------------------------------------------------------------
def cmd_config_check(args: argparse.Namespace) -> int:
    loaded = _config(args)
    c = loaded.config
    ml = (f", {len(c.models)} model(s), {len(c.trainings)} training(s), "
          f"{len(c.predictions)} prediction(s)") if c.models else ""
    sys.stdout.write(f"{loaded.path}: ok ({len(c.connectors)} connector(s), "
                     f"{len(c.syncs)} sync(s){ml})\n")
    return EXIT_OK


def cmd_config_schema(args: argparse.Namespace) -> int:
    from agent.output import print_json

    print_json(json_schema())
    return EXIT_OK


def cmd_agent_run(args: argparse.Namespace) -> int:
    from agent.service import Agent

    loaded = _config(args)
    if loaded.log_path is not None:
        from agent.logs import add_log_file

        add_log_file(loaded.log_path, args.log_format or loaded.config.agent.log_format)
    agent = Agent(loaded)
    if args.once:
        code = agent.run_once()
        _print_outcomes(agent.outcomes, args.json)
        return code
    return agent.run_forever()


def _print_outcomes(outcomes: Sequence[Any], as_json: bool) -> None:
    from agent.jobs_cli import print_job_outcomes
    from agent.outcome import JobOutcome, SyncOutcome
    from agent.output import human_bytes, print_json, print_table

    if as_json:
        print_json([o.as_dict() for o in outcomes])
        return
    syncs = [o for o in outcomes if isinstance(o, SyncOutcome)]
    jobs = [o for o in outcomes if isinstance(o, JobOutcome)]
    rows = [{**o.as_dict(), "bytes": human_bytes(o.bytes), "version": o.table_version}
            for o in syncs]
    if syncs or not jobs:
        print_table(rows, ["sync", "status", "batches", "files", "rows", "bytes", "version"],
                    title="sync runs", empty="no syncs ran")
    for o in syncs:
        if o.skipped:
            sys.stdout.write(f"{o.sync}: {o.skipped} file(s) skipped: identical content "
                             "already committed\n")
        if o.waiting:
            sys.stdout.write(f"{o.sync}: {o.waiting} file(s) not settled yet; read on a later "
                             "run\n")
        for path, reason in o.quarantined:
            # The reason may quote the file's content (a parse error): escaped too.
            sys.stdout.write(safe_display(f"{o.sync}: quarantined {path}: {reason}") + "\n")
        if o.error:
            sys.stdout.write(safe_display(f"{o.sync}: failed: {o.error}") + "\n")
    if jobs:
        print_job_outcomes(jobs, False)


def cmd_connectors(args: argparse.Namespace) -> int:
    from agent.connector_check import describe, test_connector
    from agent.output import print_json, print_table

    loaded = _config(args)
    if args.connectors_cmd == "list":
        rows = describe(loaded)
        if args.json:
            print_json(rows)
        else:
            print_table(rows, ["name", "type", "where", "auth", "syncs"], title="connectors",
                        empty="no connectors configured")
        return EXIT_OK
    result = test_connector(loaded, args.name)
    if args.json:
        print_json(result)
    elif result["ok"]:
        sys.stdout.write(f"{args.name}: ok in {result['latency_ms']} ms: "
                         f"{safe_display(result['detail'])}\n")
    else:
        sys.stdout.write(f"{args.name}: FAILED after {result['latency_ms']} ms: "
                         f"{safe_display(result['error'])}\n")
    return EXIT_OK if result["ok"] else EXIT_FAILED


def cmd_sync_list(args: argparse.Namespace) -> int:
    from agent.output import print_json, print_table

    loaded = _config(args)
    rows = [{"name": s.name, "source": s.source, "target": s.target, "format": s.format,
             "mode": s.mode, "schedule": s.schedule, "watch": s.watch, "enabled": s.enabled}
            for s in loaded.config.syncs]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, list(rows[0]) if rows else [], title="syncs", empty="no syncs")
    return EXIT_OK


def cmd_sync_run(args: argparse.Namespace) -> int:
    import threading

    from agent.jobs_cli import lock_or_queue
    from agent.progress import ProgressReporter
    from agent.state import StateStore
    from agent.stores import open_lake, open_store
    from agent.sync import SyncEngine

    loaded = _config(args)
    conf = loaded.config.sync(args.name)
    lock = lock_or_queue(loaded, "sync.run", {"sync": conf.name}, conf.name, "silta status")
    if lock is None:
        return EXIT_OK
    try:
        state = StateStore(loaded.state_dir)
        engine = SyncEngine(loaded, state, open_lake(loaded),
                            {conf.connector: open_store(loaded, conf.connector)},
                            loaded.config.agent.name)
        cancel = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: cancel.set())
        signal.signal(signal.SIGINT, lambda *_: cancel.set())
        with ProgressReporter(conf.name) as progress:
            outcome = engine.run(conf.name, trigger=f"cli:{getpass.getuser()}", cancel=cancel,
                                 on_progress=progress.update)
    finally:
        lock.release()
    _print_outcomes([outcome], args.json)
    return EXIT_FAILED if outcome.failed else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from agent.status import collect_status, print_status

    loaded = _config(args)
    status = collect_status(loaded)
    if args.json:
        from agent.output import print_json

        print_json(status)
    else:
        print_status(status)
    return EXIT_OK


def _subcommand(module: str, pick: Callable[[argparse.Namespace], str]
                ) -> Callable[[argparse.Namespace], int]:
    """A handler that runs ``agent.MODULE.cmd_<pick(args)>`` with the loaded config."""
    def run(args: argparse.Namespace) -> int:
        import importlib

        loaded = _config(args)
        handler: Callable[[LoadedConfig, argparse.Namespace], int] = getattr(
            importlib.import_module(f"agent.{module}"), f"cmd_{pick(args)}")
        return handler(loaded, args)
    return run


cmd_tables = _subcommand("tables", lambda a: str(a.tables_cmd))
cmd_models = _subcommand("models_cli", lambda a: str(a.models_cmd))
cmd_runs = _subcommand("runs_cli", lambda a: str(a.runs_cmd))
cmd_lineage = _subcommand("runs_cli", lambda a: "lineage")
cmd_jobs = _subcommand("jobs_cli", lambda a: str(a.jobs_cmd))
cmd_monitors = _subcommand("monitors_cli", lambda a: str(a.monitors_cmd))
cmd_alerts = _subcommand("alerts_cli", lambda a: str(a.alerts_cmd))
cmd_health = _subcommand("health", lambda a: "health")
cmd_service = _subcommand("service_unit", lambda a: str(a.service_cmd))


def cmd_demo_init(args: argparse.Namespace) -> int:
    from agent.demo import WRITERS

    loaded = _config(args)
    written = WRITERS[args.demo_cmd](loaded, seed=args.seed, files=args.files,
                                     rows=args.rows, force=args.force)
    for path in written:
        sys.stdout.write(f"{path}\n")
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------
#: adds subcommands of a layer above (the TUI's `silta tui`) to the parser
Extension = Callable[[Any, argparse.ArgumentParser, type[argparse.ArgumentParser]], None]


def build_parser(extend: Extension | None = None) -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the subcommand is not reset by the subparser.
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", "-c", metavar="FILE",
                        help="config file (default: $SILTA_CONFIG, then ./silta.toml)")
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    common.add_argument("--log-format", choices=["text", "json"])
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")

    p = _Parser(prog="silta", description="Silta: on-prem data to a versioned Delta lake, "
                "exactly once; a model registry; scheduled training and prediction.",
                parents=[common])
    p.set_defaults(config=None, log_level=None, log_format=None, debug=False)
    p.add_argument("--version", action="version", version=f"silta {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    cfg = sub.add_parser("config", help="check or describe the configuration")
    cfg_sub = cfg.add_subparsers(dest="config_cmd", required=True, parser_class=_Parser)
    cfg_sub.add_parser("check", parents=[common], help="validate; every problem at once"
                       ).set_defaults(func=cmd_config_check)
    cfg_sub.add_parser("schema", parents=[common], help="print the config's JSON schema"
                       ).set_defaults(func=cmd_config_schema)

    ag = sub.add_parser("agent", help="the agent service")
    ag_sub = ag.add_subparsers(dest="agent_cmd", required=True, parser_class=_Parser)
    run = ag_sub.add_parser("run", parents=[common, as_json], help="run the agent")
    run.add_argument("--once", action="store_true",
                     help="run every sync once and exit (1 if any batch failed)")
    run.set_defaults(func=cmd_agent_run)
    health = ag_sub.add_parser("health", parents=[common, as_json],
                               help="exit 0 when the agent is alive and its jobs are well, 1 "
                               "otherwise (for monitoring systems)")
    health.add_argument("--max-failed", type=_non_negative, default=0, metavar="N",
                        help="jobs whose last run failed that still count as healthy "
                        "(default 0)")
    health.set_defaults(func=cmd_health)

    sv = sub.add_parser("service", help="run the agent under systemd")
    sv_sub = sv.add_subparsers(dest="service_cmd", required=True, parser_class=_Parser)
    unit = sv_sub.add_parser("unit", parents=[common],
                             help="print the systemd unit for this install (paths filled in)")
    unit.add_argument("--user", default=None, help="the account the agent runs as "
                      "(default: the one running this command)")
    unit.set_defaults(func=cmd_service)

    sy = sub.add_parser("sync", help="syncs")
    sy_sub = sy.add_subparsers(dest="sync_cmd", required=True, parser_class=_Parser)
    sy_sub.add_parser("list", parents=[common, as_json], help="configured syncs"
                      ).set_defaults(func=cmd_sync_list)
    sr = sy_sub.add_parser("run", parents=[common, as_json], help="run one sync now")
    sr.add_argument("name")
    sr.set_defaults(func=cmd_sync_run)

    co = sub.add_parser("connectors", help="on-prem stores")
    co_sub = co.add_subparsers(dest="connectors_cmd", required=True, parser_class=_Parser)
    co_sub.add_parser("list", parents=[common, as_json], help="configured connectors"
                      ).set_defaults(func=cmd_connectors)
    ct = co_sub.add_parser("test", parents=[common, as_json],
                           help="connect, list or read a sample, report the latency")
    ct.add_argument("name")
    ct.set_defaults(func=cmd_connectors)

    sub.add_parser("status", parents=[common, as_json],
                   help="agent heartbeat and each sync's last run").set_defaults(func=cmd_status)

    tb = sub.add_parser("tables", help="Delta tables in the lake")
    tb_sub = tb.add_subparsers(dest="tables_cmd", required=True, parser_class=_Parser)
    tl = tb_sub.add_parser("list", parents=[common, as_json], help="tables, versions, rows")
    tl.add_argument("--all", action="store_true", help="include Silta's own _silta/ tables")
    th = tb_sub.add_parser("history", parents=[common, as_json], help="a table's versions")
    th.add_argument("table")
    th.add_argument("--limit", type=_positive, default=None)
    ts = tb_sub.add_parser("show", parents=[common, as_json], help="rows at a version")
    ts.add_argument("table")
    ts.add_argument("--version", type=_non_negative, default=None, dest="at_version",
                    help="time travel to this version (or use --tag)")
    ts.add_argument("--tag", default=None, help="time travel to a named snapshot")
    ts.add_argument("--limit", type=_non_negative, default=20)
    tt = tb_sub.add_parser("tag", parents=[common], help="name a version (a snapshot)")
    tt.add_argument("table")
    tt.add_argument("version", type=_non_negative)
    tt.add_argument("name")
    tt.add_argument("--note", default="")
    tg = tb_sub.add_parser("tags", parents=[common, as_json], help="a table's named snapshots")
    tg.add_argument("table")
    tb.set_defaults(func=cmd_tables)
    for sp in (tl, th, ts, tt, tg):
        sp.set_defaults(func=cmd_tables)

    from agent import alerts_cli, jobs_cli, models_cli, monitors_cli, runs_cli

    jobs_cli.add_parser(sub, common, as_json, _Parser, cmd_jobs)
    models_cli.add_parser(sub, common, as_json, _Parser, cmd_models, _positive)
    runs_cli.add_parsers(sub, common, as_json, _Parser, cmd_runs, cmd_lineage, _positive)
    monitors_cli.add_parser(sub, common, as_json, _Parser, cmd_monitors)
    alerts_cli.add_parser(sub, common, as_json, _Parser, cmd_alerts, _positive)

    dm = sub.add_parser("demo", help="the embedded demo")
    dm_sub = dm.add_subparsers(dest="demo_cmd", required=True, parser_class=_Parser)
    di = dm_sub.add_parser("init", parents=[common],
                           help="write the demo's on-prem files (deterministic, seeded)")
    dd = dm_sub.add_parser("drift", parents=[common],
                           help="add a later month that has drifted (new job titles, "
                                "shifted categories) and its coded sample")
    for d, files in ((di, 6), (dd, 4)):
        d.add_argument("--seed", type=int, default=2026)
        d.add_argument("--files", type=_positive, default=files)
        d.add_argument("--rows", type=_positive, default=400, help="rows per file")
        d.add_argument("--force", action="store_true", help="overwrite existing demo files")
        d.set_defaults(func=cmd_demo_init)
    if extend is not None:
        extend(sub, common, _Parser)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("silta")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None, extend: Extension | None = None) -> int:
    args = build_parser(extend).parse_args(argv)
    setup_logging(args.log_level or "info", args.log_format or "text")
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        sys.stderr.write(f"silta: {e.msg}\n")
        if e.problems != [e.msg]:
            for problem in e.problems:
                sys.stderr.write(f"  {problem}\n")
        sys.stderr.write("fix these and run `silta config check` again\n")
        return EXIT_USAGE
    except (UsageError, NotFoundError, UnsafeNameError) as e:
        if args.debug:
            log.exception("details")
        prefix = "" if isinstance(e, NotFoundError) else f"{e.title.lower()}: "
        sys.stderr.write(f"silta: {prefix}{e.msg}\n")
        return EXIT_USAGE
    except LockHeldError as e:
        sys.stderr.write(f"silta: {e.msg}\n")
        return EXIT_FAILED
    except SiltaError as e:
        if args.debug:
            log.exception("details")
        sys.stderr.write(f"silta: {e.title.lower()}: {e.msg}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("silta: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:
        if args.debug:
            log.exception("internal error")
        sys.stderr.write(f"silta: internal error: {type(e).__name__}: {e} (run again with "
                         "--debug for details, and report it)\n")
        return EXIT_FAILED


def entry(extend: Extension | None = None) -> NoReturn:
    """The console script: ``main``, then leave without interpreter finalization.

    deltalake 1.6.6 with pyarrow 26 sometimes aborts the process while native thread pools
    are torn down at exit ("terminate called without an active exception", exit 134), after
    all work is done. Flushing and calling ``os._exit`` keeps the exit code honest.
    """
    try:
        code = main(extend=extend)
    except SystemExit as e:  # argparse's usage errors and --help
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
