"""No orphan on any exit path: ``process.reap_group`` and the runner's use of it, on fakes.

``reap_group`` is tested with a FakeHandle and a FakeClock (no processes, no real time);
the runner's exit paths (a normal exit leaving children, a stop during backoff or while a
new attempt starts, a second signal, a display writing to a closed pipe) with the
FakeSpawner. Two small real-process tests check the /proc view of a group (a zombie is
not a live member).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lrsup.supervisor.run.process import group_alive, group_members, reap_group
from tests.fakes import FakeClock, FakeHandle
from tests.run.test_runner import RecordingDisplay, ScriptedTrainer, journal, make_runner


def reaped(handle: FakeHandle, grace: float = 10.0, **kw) -> tuple[str, FakeClock, list[tuple[str, str]]]:
    clock, told = FakeClock(), []
    result = reap_group(handle, clock, grace, lambda event, detail: told.append((event, detail)), **kw)
    return result, clock, told


def exited_leaving_children(exit_on=None) -> FakeHandle:
    handle = FakeHandle(4242, exit_on=exit_on)
    handle.exit(0, leave_children=2)
    return handle


# -- reap_group ----------------------------------------------------------------
def test_nothing_left_sends_nothing_and_reports_nothing():
    handle = FakeHandle(4242)
    handle.exit(0)
    result, clock, told = reaped(handle)
    assert (result, handle.group_signals, told, clock.now) == ("none", [], [], 0.0)


def test_children_that_leave_on_sigterm_get_no_sigkill():
    handle = exited_leaving_children(exit_on={signal.SIGTERM: 0})
    result, clock, told = reaped(handle)
    assert result == "terminated" and handle.group_signals == [signal.SIGTERM]
    assert [e for e, _ in told] == ["leftovers", "leftovers_gone"]
    assert "pgid 4242" in told[0][1] and clock.now < 1.0


def test_children_ignoring_sigterm_are_killed_after_the_grace_period_and_waited_for():
    handle = exited_leaving_children()  # ignores SIGTERM
    result, clock, told = reaped(handle, grace=7.0)
    assert result == "killed" and handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert handle.group_members == 0
    assert 7.0 <= clock.now < 7.5  # the whole grace period, then SIGKILL at once
    assert [e for e, _ in told] == ["leftovers", "leftovers_killed", "leftovers_gone"]
    assert "still there after 7 s: SIGKILL" in told[1][1]


def test_a_group_surviving_sigkill_is_reported_and_the_wait_is_bounded():
    handle = exited_leaving_children()
    handle.unkillable = True
    result, clock, told = reaped(handle, grace=2.0, kill_wait=3.0)
    assert result == "survived" and handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert 5.0 <= clock.now < 5.5
    assert told[-1][0] == "leftovers_survived"


def test_a_failing_reporter_never_stops_the_signals():
    handle = exited_leaving_children()

    def broken(event: str, detail: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")  # stdout's reader died

    assert reap_group(handle, FakeClock(), 1.0, broken) == "killed"
    assert handle.group_signals == [signal.SIGTERM, signal.SIGKILL] and handle.group_members == 0


def test_hurry_sigkills_without_waiting_out_the_grace_period():
    handle = exited_leaving_children()
    clock = FakeClock()
    result = reap_group(handle, clock, 30.0, hurry=lambda: clock.now >= 0.5)
    assert result == "killed" and handle.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert clock.now < 1.0


def test_a_handle_without_group_alive_falls_back_to_signal_zero():
    class Minimal:
        pid = 77

        def __init__(self) -> None:
            self.sent: list[int] = []
            self.members = 1

        def signal_group(self, sig: int) -> bool:
            if not self.members:
                return False
            if sig:
                self.sent.append(sig)
            if sig == signal.SIGKILL:
                self.members = 0
            return True

    handle = Minimal()
    assert reap_group(handle, FakeClock(), 1.0) == "killed" and handle.sent == [signal.SIGTERM, signal.SIGKILL]


# -- the /proc view of a group (real processes) ----------------------------------
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


@needs_proc
def test_a_zombie_is_not_a_live_member_of_its_group():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    try:
        deadline = 100
        while deadline and group_members(proc.pid):  # exited, not yet reaped: a zombie
            deadline -= 1
            os.sched_yield() if hasattr(os, "sched_yield") else None
            __import__("time").sleep(0.05)
        assert group_members(proc.pid) == [] and not group_alive(proc.pid)
        os.killpg(proc.pid, 0)  # killpg still sees the zombie: why /proc is asked
    finally:
        proc.wait(timeout=10)


@needs_proc
def test_group_members_lists_the_leader_and_its_children():
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '30']); print('ok', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ok"
        members = group_members(proc.pid)
        assert proc.pid in members and len(members) == 2 and group_alive(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()


# -- the runner's exit paths ---------------------------------------------------------
class HookDisplay(RecordingDisplay):
    """Calls ``hook(state, detail)`` on each state line (to inject signals, time or a broken pipe)."""

    def __init__(self, hook) -> None:
        super().__init__()
        self.hook = hook

    def on_state(self, state: str, detail: str) -> None:
        super().on_state(state, detail)
        self.hook(state, detail)


def events(runner) -> list[str]:
    return [e["event"] for e in journal(runner, "event")]


def leaves_stubborn_children(holder: dict, losses=(1.0,)):
    """A ScriptedTrainer whose process exits leaving a child that ignores SIGTERM."""

    def factory(root):
        trainer = ScriptedTrainer(root, list(losses))

        def step():
            rc = trainer()
            if rc is not None:
                holder["spawner"].handle.exit(rc, leave_children=1)
            return rc

        return step

    return factory


def test_a_normal_exit_leaving_a_child_that_ignores_sigterm_ends_with_the_group_gone(tmp_path):
    holder: dict = {}
    clock = FakeClock()
    runner, spawner, _ = make_runner(tmp_path, leaves_stubborn_children(holder), clock=clock, grace=4.0)
    holder["spawner"] = spawner
    assert runner.run() == 0
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL] and spawner.handle.group_members == 0
    names = events(runner)
    assert names[-4:] == ["leftovers", "leftovers_killed", "leftovers_gone", "finished"]
    assert clock.now >= 4.0  # the configured grace, not a shortened one


def test_a_display_on_a_closed_pipe_cannot_leave_the_group_behind(tmp_path):
    """The incident: the journal's last line was ``leftovers``, then the display raised, nothing was killed.

    Since issue 17 a display failing is switched off (the run goes on without it) instead of raising.
    """
    holder: dict = {}

    def hook(state: str, detail: str) -> None:
        if "trainer's group" in detail or state == "exited":
            raise BrokenPipeError(32, "Broken pipe")

    runner, spawner, _ = make_runner(tmp_path, leaves_stubborn_children(holder), display=HookDisplay(hook), grace=1.0)
    holder["spawner"] = spawner
    runner.run()
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL] and spawner.handle.group_members == 0
    assert "leftovers_gone" in events(runner)  # journaled even though the display failed
    assert "output_closed" in events(runner) and events(runner)[-1] == "finished"


class BreakingDisplay(RecordingDisplay):
    """A display whose every ``on_*`` raises BrokenPipeError once ``broken["on"]`` (stdout's reader died)."""

    def __init__(self, broken: dict) -> None:
        super().__init__()
        self._broken = broken

    def __getattribute__(self, name):
        if name.startswith("on_") and object.__getattribute__(self, "_broken")["on"]:
            raise BrokenPipeError(32, "Broken pipe")
        return super().__getattribute__(name)


def test_a_display_breaking_during_a_stop_still_ends_in_sigkill(tmp_path):
    holder: dict = {}
    broken = {"on": False}

    def extra(poll):
        if poll == 3:
            holder["runner"].signals.append(signal.SIGTERM)
            broken["on"] = True

    runner, spawner, _ = make_runner(
        tmp_path,
        lambda root: ScriptedTrainer(root, [1.0], extra=extra, hang_after_start=True),
        display=BreakingDisplay(broken),
        grace=1.0,
    )
    holder["runner"] = runner
    with pytest.raises(BrokenPipeError):
        runner.run()
    assert signal.SIGKILL in spawner.handle.group_signals and spawner.handle.group_members == 0


def test_sigterm_during_backoff_leaves_nothing_and_does_not_restart(tmp_path):
    holder: dict = {}

    def crash():
        holder["spawner"].handle.exit(1, leave_children=1)  # fails at once, a child left behind
        return 1

    def hook(state: str, detail: str) -> None:
        if state == "backoff":
            holder["runner"].signals.append(signal.SIGTERM)

    runner, spawner, _ = make_runner(tmp_path, lambda root: crash, display=HookDisplay(hook))
    holder.update(spawner=spawner, runner=runner)
    assert runner.run() == 130
    assert len(spawner.spawned) == 1
    assert spawner.handle.group_signals == [signal.SIGKILL] and spawner.handle.group_members == 0
    names = events(runner)
    assert names.index("leftovers") < names.index("backoff")  # journaled by the lifecycle
    assert "SIGKILL to what attempt 1 left" in next(
        e["detail"] for e in journal(runner, "event") if e["event"] == "leftovers"
    )


def test_sigterm_while_the_next_attempt_is_starting_reaps_that_attempt_too(tmp_path):
    holder: dict = {}
    clock = FakeClock()

    def step():
        handle = holder["spawner"].handle
        if len(holder["spawner"].spawned) == 1:
            return 1  # attempt 1 crashes
        if signal.SIGINT in handle.signals:
            handle.exit(-signal.SIGINT, leave_children=1)  # its child ignores SIGINT and SIGTERM
            return handle.returncode
        return None  # attempt 2 never writes its start record

    def hook(state: str, detail: str) -> None:
        if state == "backoff":
            clock.advance(60.0)
        if state == "starting" and detail.startswith("trainer pid") and "attempt 2" in detail:
            holder["runner"].signals.append(signal.SIGTERM)

    runner, spawner, _ = make_runner(tmp_path, lambda root: step, display=HookDisplay(hook), clock=clock, grace=3.0)
    holder.update(spawner=spawner, runner=runner)
    assert runner.run() == 130
    second = spawner.spawned[1][3]
    assert second.signals == [signal.SIGINT]
    assert second.group_signals == [signal.SIGTERM, signal.SIGKILL] and second.group_members == 0
    assert len(spawner.spawned) == 2


def test_a_second_signal_while_reaping_sigkills_at_once(tmp_path):
    holder: dict = {}
    clock = FakeClock()

    def hook(state: str, detail: str) -> None:
        if "SIGKILL after" in detail:  # the leftovers line: the user presses Ctrl-C again
            holder["runner"].signals.append(signal.SIGINT)

    runner, spawner, _ = make_runner(
        tmp_path, leaves_stubborn_children(holder), display=HookDisplay(hook), clock=clock, grace=60.0
    )
    holder.update(spawner=spawner, runner=runner)
    assert runner.run() == 0
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL] and spawner.handle.group_members == 0
    assert clock.now < 5.0  # not the 60 s grace
    killed = next(e["detail"] for e in journal(runner, "event") if e["event"] == "leftovers_killed")
    assert "asked again to stop" in killed


def test_an_exception_after_the_trainer_exited_still_reaps_the_group(tmp_path):
    """_cleanup reaps whatever the state: _finish may have failed before it got to it."""
    holder: dict = {}
    runner, spawner, _ = make_runner(tmp_path, leaves_stubborn_children(holder), grace=1.0)
    holder["spawner"] = spawner

    def failing_finish() -> None:
        raise RuntimeError("drain failed")

    runner._finish = failing_finish
    with pytest.raises(RuntimeError, match="drain failed"):
        runner.run()
    assert spawner.handle.group_signals == [signal.SIGTERM, signal.SIGKILL] and spawner.handle.group_members == 0


def test_display_close_on_a_closed_pipe_does_not_replace_the_status(tmp_path):
    class ClosedStdout(RecordingDisplay):
        def close(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    runner, _, _ = make_runner(tmp_path, lambda root: ScriptedTrainer(root, [1.0]), display=ClosedStdout())
    assert runner.run() == 0
    assert Path(runner.paths.journal).exists()


def test_a_supervisor_failing_mid_run_never_restarts_the_trainer_while_shutting_down(tmp_path):
    """The incident as it happened: stdout's reader died, lrsup failed in its loop, the shutdown
    SIGTERMed the trainer, took that exit for a crash, spawned a new attempt, then failed again
    on the ``leftovers`` line before signalling it: the new trainer was orphaned."""
    broken = {"on": False}

    def extra(poll):
        if poll == 3:
            broken["on"] = True

    runner, spawner, _ = make_runner(
        tmp_path,
        lambda root: ScriptedTrainer(root, [1.0] * 50, extra=extra),
        display=BreakingDisplay(broken),
        exit_on={signal.SIGTERM: -signal.SIGTERM},
        grace=1.0,
    )
    with pytest.raises(BrokenPipeError):
        runner.run()
    assert len(spawner.spawned) == 1, "a new attempt was spawned during the shutdown"
    assert spawner.handle.group_signals == [signal.SIGTERM] and spawner.handle.group_members == 0
    assert "backoff" not in events(runner) and "restarted" not in events(runner)
