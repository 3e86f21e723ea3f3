"""Operator commands through the state store's queue: every kind carried out by
``agent.commands.execute`` against a real state store and lake, by the agent's service
loop in a thread, and by `silta agent run --once`. Nothing is mocked."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.alerts import AlertBook
from agent.commands import COMMAND_KINDS, CommandContext, execute, validate
from agent.config import LoadedConfig, load_config
from agent.service import Agent
from agent.state import StateStore
from agent.stores import open_lake
from connectors.errors import UsageError
from tests.agent.ml_env import MlEnv
from tests.agent.test_alerts import breach
from tests.agent.test_service import put, running, wait_for
from tests.conftest import write_config

HOST = "ops-host-1"


class Queue:
    """A real state store and lake in ``tmp_path``, and a way through the queue."""

    def __init__(self, loaded: LoadedConfig, state: StateStore, ctx: CommandContext) -> None:
        self.loaded, self.state, self.ctx = loaded, state, ctx
        self.book = ctx.book

    def alert(self, target: str = "job_title") -> int:
        [alert_id] = self.book.observe("answers_drift", "coder", [breach(target=target)],
                                       "run-1").fired
        return alert_id

    def carry_out(self, kind: str, args: Any, user: str = "anna") -> tuple[str, str]:
        """Queue, claim, execute and record one command; (status, result) as stored."""
        cid = self.state.enqueue_command(kind, args, os_user=user)
        [claimed] = self.state.claim_commands()
        assert (claimed["id"], claimed["os_user"]) == (cid, user)
        self.state.finish_command(cid, *execute(claimed, self.ctx))
        return stored(self.state, cid)


def stored(state: StateStore, cid: int) -> tuple[str, str]:
    row = next(c for c in state.commands(limit=500) if c["id"] == cid)
    return str(row["status"]), str(row["result"])


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    loaded = load_config(write_config(tmp_path, [{"name": "s"}]))
    state = StateStore(loaded.state_dir)
    book = AlertBook(state, loaded.config.alerts, "test-agent")
    yield Queue(loaded, state, CommandContext(book=book, lake=open_lake(loaded),
                                              jobs=frozenset({"sync:s"}), host=HOST))
    state.close()


def _utc(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


# -- alerts -------------------------------------------------------------------------------
def test_ack_records_the_queued_os_user_and_comment(queue: Queue) -> None:
    alert_id = queue.alert()
    assert queue.carry_out("alert.ack", {"alert": alert_id, "comment": "looking at it"},
                           user="operator-7") == (
        "done", f"alert {alert_id} acknowledged by operator-7")
    alert = queue.book.get(alert_id)
    assert (alert["state"], alert["acked_by"], alert["ack_comment"]) == (
        "acknowledged", "operator-7", "looking at it")
    assert (alert["events"][-1]["event"], alert["events"][-1]["by"],
            alert["events"][-1]["detail"]) == ("acknowledged", "operator-7", "looking at it")

    # twice is refused, with who acked it; a comment may be left out
    status, result = queue.carry_out("alert.ack", {"alert": alert_id}, user="bob")
    assert status == "refused"
    assert result == (f"alert {alert_id} was acknowledged by operator-7 at "
                      f"{alert['acked_at']}")
    assert queue.book.get(alert_id)["acked_by"] == "operator-7"
    assert queue.carry_out("alert.ack", {"alert": 99}) == (
        "refused", "alert '99' not found; see `silta alerts list`")


def test_silence_holds_notifications_for_the_seconds_asked(queue: Queue) -> None:
    alert_id = queue.alert()
    before = dt.datetime.now(dt.UTC)
    # an int is a fine number of seconds
    status, result = queue.carry_out("alert.silence", {"alert": alert_id, "seconds": 7200,
                                                       "comment": "maintenance"}, user="bob")
    after = dt.datetime.now(dt.UTC)
    alert = queue.book.get(alert_id)
    until = _utc(alert["silenced_until"])
    assert before + dt.timedelta(seconds=7199) <= until <= after + dt.timedelta(seconds=7201)
    assert (status, result) == ("done", f"alert {alert_id} silenced by bob until "
                                        f"{alert['silenced_until']}")
    assert (alert["events"][-1]["event"], alert["events"][-1]["by"],
            alert["events"][-1]["detail"]) == (
        "silenced", "bob", f"until {alert['silenced_until']}: maintenance")
    assert alert["state"] == "firing"  # a silence is not an acknowledgement

    assert queue.carry_out("alert.silence", {"alert": alert_id, "seconds": 0}) == (
        "refused", "alert.silence: arg 'seconds' must be more than 0 and at most 316224000 "
                   "(ten years), not 0")


def test_resolve_ends_the_alert_and_a_second_resolve_is_refused(queue: Queue) -> None:
    alert_id = queue.alert()
    assert queue.carry_out("alert.resolve", {"alert": alert_id, "comment": "fixed upstream"},
                           user="carol") == ("done", f"alert {alert_id} resolved by carol")
    alert = queue.book.get(alert_id)
    assert (alert["state"], alert["resolved_by"]) == ("resolved", "carol")
    assert [(e["event"], e["by"], e["detail"]) for e in alert["events"]
            if e["event"] == "resolved"] == [("resolved", "carol", "fixed upstream")]
    assert queue.carry_out("alert.resolve", {"alert": alert_id}) == (
        "refused", f"alert {alert_id} is already resolved (carol at {alert['resolved_at']}); "
                   "there is nothing to resolve")


def test_a_store_that_refuses_writes_is_a_failure_not_a_refusal(queue: Queue) -> None:
    alert_id = queue.alert()
    readonly = StateStore(queue.loaded.state_dir, readonly=True)
    ctx = CommandContext(book=AlertBook(readonly), lake=queue.ctx.lake, host=HOST)
    status, result = execute({"id": 1, "kind": "alert.ack", "args": {"alert": alert_id},
                              "os_user": "anna"}, ctx)
    readonly.close()
    assert status == "failed"
    assert result == (f"State store error: state store {queue.loaded.state_dir / 'silta.db'}: "
                      "attempt to write a readonly database")
    assert queue.book.get(alert_id)["state"] == "firing"


def test_a_bug_in_a_command_is_recorded_and_does_not_escape(queue: Queue) -> None:
    # a context whose lake is not one: the registry breaks with an AttributeError
    broken = CommandContext(book=queue.book, lake=object(), host=HOST)  # type: ignore[arg-type]
    assert execute({"id": 5, "kind": "model.rollback", "args": {"model": "coder"},
                    "os_user": "anna"}, broken) == (
        "failed", "internal error (AttributeError); see the agent's log")


# -- what is refused before anything is done --------------------------------------------
BAD: list[tuple[Any, Any, str]] = [
    ("alert.nuke", {"alert": 1},
     "unknown command kind 'alert.nuke'; known: " + ", ".join(COMMAND_KINDS)),
    ("alert.ack", ["1"], "alert.ack: args must be an object with alert (int), comment (str, "
                         "optional)"),
    ("alert.ack", {"comment": "x"}, "alert.ack: arg 'alert' is missing (int); it takes "
                                    "alert (int), comment (str, optional)"),
    ("alert.ack", {"alert": "1"}, "alert.ack: arg 'alert' must be a whole number, not text "
                                  "('1')"),
    ("alert.ack", {"alert": True}, "alert.ack: arg 'alert' must be a whole number, not "
                                   "true/false (True)"),
    ("alert.ack", {"alert": 1.0}, "alert.ack: arg 'alert' must be a whole number, not a "
                                  "number (1.0)"),
    ("alert.ack", {"alert": 0}, "alert.ack: arg 'alert' must be 1 or more, not 0"),
    ("alert.ack", {"alert": 1, "comment": None}, "alert.ack: arg 'comment' must be text, "
                                                 "not null (None)"),
    ("alert.silence", {"alert": 1, "seconds": "2h"},
     "alert.silence: arg 'seconds' must be a number, not text ('2h')"),
    ("alert.silence", {"alert": 1, "seconds": False},
     "alert.silence: arg 'seconds' must be a number, not true/false (False)"),
    ("alert.silence", {"alert": 1}, "alert.silence: arg 'seconds' is missing (float); it "
                                    "takes alert (int), seconds (float), comment (str, "
                                    "optional)"),
    ("alert.silence", {"alert": 1, "seconds": -5},
     "alert.silence: arg 'seconds' must be more than 0 and at most 316224000 (ten years), "
     "not -5"),
    ("model.promote", {"model": "coder", "version": 2, "force": True},
     "model.promote: unknown arg 'force'; it takes model (str), version (int), reason (str, "
     "optional)"),
    ("model.promote", {"model": "coder", "version": 0},
     "model.promote: arg 'version' must be 1 or more, not 0"),
    ("model.rollback", {"model": " "}, "model.rollback: arg 'model' must not be empty"),
    ("sync.run", {}, "sync.run: arg 'sync' is missing (str); it takes sync (str)"),
    ("run.replay", {"run": 7}, "run.replay: arg 'run' must be text, not a whole number (7)"),
]


@pytest.mark.parametrize(("kind", "args", "message"), BAD)
def test_bad_input_is_refused_naming_the_key(queue: Queue, kind: Any, args: Any,
                                             message: str) -> None:
    with pytest.raises(UsageError) as raised:
        validate(kind, args)
    assert str(raised.value) == message
    assert queue.carry_out(kind, args) == ("refused", message)


def test_validate_fills_optional_text_and_makes_seconds_a_float() -> None:
    clean = validate("alert.silence", {"alert": 3, "seconds": 60})
    assert clean == {"alert": 3, "seconds": 60.0, "comment": ""}
    assert type(clean["seconds"]) is float
    assert validate("model.rollback", {"model": "coder"}) == {"model": "coder", "reason": ""}


def test_runs_are_refused_where_nobody_takes_them_and_unknown_jobs_always(queue: Queue
                                                                           ) -> None:
    assert queue.carry_out("sync.run", {"sync": "nope"}) == (
        "refused", "job 'sync:nope' not found; jobs: sync:s")
    assert queue.carry_out("job.run", {"job": "train:nope"}) == (
        "refused", "job 'train:nope' not found; jobs: sync:s")
    assert queue.carry_out("sync.run", {"sync": "s"}) == (
        "refused", "sync.run is not taken here; the agent service runs it")
    asked: list[tuple[str, str]] = []
    ctx = CommandContext(book=queue.book, lake=queue.ctx.lake, jobs=frozenset({"sync:s"}),
                         request=lambda job, trigger: asked.append((job, trigger)), host=HOST)
    assert execute({"id": 1, "kind": "sync.run", "args": {"sync": "s"}, "os_user": "ann"},
                   ctx) == ("done", "queued a run of sync:s")
    assert asked == [("sync:s", "operator:ann")]


# -- models -------------------------------------------------------------------------------
def test_model_commands_move_the_champion_like_the_cli(tmp_path: Path) -> None:
    env = MlEnv(tmp_path, promotion="manual", params="{ C = 0.01 }")
    env.sync()
    assert env.train().status == "ok"
    assert env.registry.aliases("coder") == {"challenger": 1}
    state = env.state()
    q = Queue(env.loaded, state, CommandContext(book=AlertBook(state), lake=env.lake,
                                                host=HOST))

    assert q.carry_out("model.rollback", {"model": "coder"}) == (
        "refused", "coder has no champion to roll back")
    assert q.carry_out("model.approve", {"model": "coder", "version": 2}) == (
        "refused", "coder@2 is not waiting for approval (the version waiting is 1); `silta "
                   "models promote coder 2` promotes any version")
    assert env.registry.aliases("coder") == {"challenger": 1}

    assert q.carry_out("model.approve", {"model": "coder", "version": 1,
                                         "reason": "checked the card"}) == (
        "done", "coder@champion is now version 1")
    (move,) = env.registry.alias_history("coder", "champion")
    assert (move.version, move.previous_version, move.set_by) == (
        1, None, f"anna@{HOST} (queued)")
    assert move.reason.startswith("approved by anna: checked the card (training said: no "
                                  "champion yet; macro_f1 "), move.reason
    assert q.carry_out("model.approve", {"model": "coder", "version": 1}) == (
        "refused", "coder@1 is the champion already")

    # a second version waits; a promotion (no reason given) makes it the champion
    env.configure(params="{ C = 10.0 }")
    assert env.train().status == "ok"
    assert env.registry.aliases("coder") == {"challenger": 2, "champion": 1}
    assert q.carry_out("model.promote", {"model": "coder", "version": 2}, user="bob") == (
        "done", "coder@champion is now version 2 (was 1)")
    promoted = env.registry.alias_history("coder", "champion")[-1]
    assert (promoted.version, promoted.previous_version, promoted.set_by,
            promoted.reason) == (2, 1, f"bob@{HOST} (queued)", "promoted by bob")
    assert q.carry_out("model.promote", {"model": "coder", "version": 2}) == (
        "refused", "coder@champion is version 2 already")
    assert q.carry_out("model.promote", {"model": "coder", "version": 9}) == (
        "refused", "model version 'coder@9' not found; versions of 'coder': 1, 2")

    # the rollback restores the champion before the last move
    assert q.carry_out("model.rollback", {"model": "coder", "reason": "odd codes"},
                       user="carol") == ("done", "coder@champion is now version 1 (was 2)")
    back = env.registry.alias_history("coder", "champion")[-1]
    assert (back.version, back.previous_version, back.set_by, back.reason) == (
        1, 2, f"carol@{HOST} (queued)", "rollback by carol from v2: odd codes")
    assert env.registry.aliases("coder") == {"challenger": 2, "champion": 1}
    assert q.carry_out("model.approve", {"model": "coder", "version": 2}) == (
        "refused", "coder@2 is not waiting for approval (no version is waiting); `silta "
                   "models promote coder 2` promotes any version")
    assert q.carry_out("model.promote", {"model": "nobody", "version": 1})[0] == "refused"
    env.close()


# -- the service loop and --once ----------------------------------------------------------
def test_the_service_acks_a_queued_alert_within_seconds_and_survives_bad_ones(
        tmp_path: Path) -> None:
    loaded = load_config(write_config(tmp_path, [{"name": "s"}]))
    state = StateStore(loaded.state_dir)
    book = AlertBook(state)
    [alert_id] = book.observe("answers_drift", None, [breach()], "run-1").fired
    agent = Agent(loaded)
    with running(agent):
        wait_for(lambda: bool(state.heartbeats()))
        broken = state.enqueue_command("alert.ack", {"alert": "one"}, os_user="operator-9")
        unknown = state.enqueue_command("cluster.reboot", {}, os_user="operator-9")
        cid = state.enqueue_command("alert.ack", {"alert": alert_id, "comment": "on it"},
                                    os_user="operator-9")
        wait_for(lambda: stored(state, cid)[0] != "queued"
                 and stored(state, cid)[0] != "running", timeout=5)
    assert stored(state, cid) == ("done", f"alert {alert_id} acknowledged by operator-9")
    alert = book.get(alert_id)
    assert (alert["state"], alert["acked_by"], alert["ack_comment"]) == (
        "acknowledged", "operator-9", "on it")
    assert stored(state, broken) == (
        "refused", "alert.ack: arg 'alert' must be a whole number, not text ('one')")
    assert stored(state, unknown) == (
        "refused", "unknown command kind 'cluster.reboot'; known: " + ", ".join(COMMAND_KINDS))
    state.close()


def test_once_applies_commands_queued_while_the_agent_was_down(tmp_path: Path) -> None:
    loaded = load_config(write_config(tmp_path, [
        {"name": "s"}, {"name": "off", "enabled": False, "target": "lake:raw/off"}]))
    put(tmp_path / "inbox", "a.csv", "id\n1\n2\n")
    state = StateStore(loaded.state_dir)
    book = AlertBook(state)
    [alert_id] = book.observe("answers_drift", None, [breach()], "run-1").fired
    ack = state.enqueue_command("alert.ack", {"alert": alert_id, "comment": "overnight"},
                                os_user="night-shift")
    run = state.enqueue_command("sync.run", {"sync": "s"}, os_user="night-shift")
    off = state.enqueue_command("sync.run", {"sync": "off"}, os_user="night-shift")
    nope = state.enqueue_command("sync.run", {"sync": "nope"}, os_user="night-shift")

    assert Agent(loaded).run_once() == 0
    alert = book.get(alert_id)
    assert (alert["state"], alert["acked_by"], alert["ack_comment"]) == (
        "acknowledged", "night-shift", "overnight")
    assert stored(state, ack) == ("done", f"alert {alert_id} acknowledged by night-shift")
    assert stored(state, run) == ("done", "ran in the --once pass: ok")
    # a disabled job runs when an operator asks for it, as the service does
    assert stored(state, off) == ("done", "ran in the --once pass: ok")
    assert stored(state, nope) == ("refused", "job 'sync:nope' not found; jobs: sync:off, "
                                              "sync:s")
    runs = {r["name"]: (r["trigger"], r["status"], r["rows"]) for r in state.runs()}
    assert runs == {"s": ("operator:night-shift", "ok", 2),
                    "off": ("operator:night-shift", "ok", 2)}
    state.close()


def test_the_service_replays_a_training_off_its_command_loop(tmp_path: Path) -> None:
    env = MlEnv(tmp_path)
    env.sync()
    train = env.train()
    eval_rows = env.registry.get("coder", 1).training_data["eval_rows"]
    state = env.state()
    agent = Agent(env.loaded)
    with running(agent):
        wait_for(lambda: bool(state.heartbeats()))
        replay = state.enqueue_command("run.replay", {"run": train.run_id}, os_user="anna")
        missing = state.enqueue_command("run.replay", {"run": "0123456789abcdef"},
                                        os_user="anna")
        wait_for(lambda: all(stored(state, c)[0] not in ("queued", "running")
                             for c in (replay, missing)), timeout=120)
    status, result = stored(state, replay)
    assert status == "done", result
    assert re.fullmatch(rf"replay of train run {train.run_id} \(train_coder, coder@1\): "
                        rf"identical, {eval_rows} row\(s\), content hash [0-9a-f]{{16}} both "
                        "times", result), result
    assert stored(state, missing) == (
        "refused", "run '0123456789abcdef' not found; list runs with `silta runs list`")
    env.close()
