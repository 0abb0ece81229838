"""The coordinator inside ``queue run``: members' records in, exploit/donate requests out, state in
runs/.queue/pbt/G.json so that a coordinator that dies and comes back never repeats an exploit."""

from __future__ import annotations

import json
from pathlib import Path

from lrsup.supervisor import protocol
from lrsup.supervisor.config import PopulationSettings
from lrsup.supervisor.queue.population import (
    DONATION_TIMEOUT,
    FollowedRecords,
    MemberRecords,
    MemberReporter,
    Population,
    ReportedRecords,
    create_population,
    population_path,
)
from lrsup.supervisor.queue.store import NewEntry, QueueStore, Status

SHA = "0" * 64


def write_member(run_dir: Path, val_losses: list[float], lr: float) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / protocol.CONFIG_FILE).write_text("{}")
    lines = []
    for epoch, loss in enumerate(val_losses):
        step = 10 * (epoch + 1)
        lines.append(
            {"v": 1, "type": "epoch", "time": 1.0, "epoch": epoch, "step": step, "lr": lr, "logs": {"val_loss": loss}}
        )
        lines.append({"v": 1, "type": "checkpoint", "time": 1.0, "name": f"epoch-{epoch:04d}", "epoch": epoch,
                      "step": step, "file": f"checkpoints/epoch-{epoch:04d}.json", "sha256": SHA})  # fmt: skip
    (run_dir / protocol.METRICS_FILE).write_text("".join(protocol.dumps(x) + "\n" for x in lines))


def requests(run_dir: Path) -> list[dict]:
    path = run_dir / "requests.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_population_sends_exploit_and_donate_and_survives_its_death(tmp_path: Path):
    runs = tmp_path / "runs"
    store = QueueStore.open(runs)
    losses = {"a": [0.5, 0.3], "b": [0.6, 0.5], "c": [0.7, 0.6], "d": [2.0, 1.9]}
    for name, vals in losses.items():
        entry_id = store.add(NewEntry("train.py", name=name, group="g", params={"lr": 0.1}))
        run_dir = runs / f"q{entry_id}-{name}"
        write_member(run_dir, vals, lr={"a": 0.05}.get(name, 0.1))
        store.claim(entry_id, run_dir=str(run_dir), gpus="")
    settings = PopulationSettings(interval=2, mutations={"lr": {"values": [0.025, 0.05, 0.1]}})
    path = create_population(runs, "g", settings)
    emitted = []

    def emit(event, entry, detail):
        emitted.append((event, detail))

    population = Population(path, json.loads(path.read_text()))
    entries = store.entries(group="g")
    assert all(e.status is Status.RUNNING for e in entries)
    (decision,) = population.tick(entries, emit)
    assert (decision.member, decision.donor, decision.checkpoint) == ("q4-d", "q1-a", "epoch-0001")
    d_dir, a_dir = runs / "q4-d", runs / "q1-a"
    (exploit,) = requests(d_dir)
    assert exploit["op"] == "exploit" and exploit["peer"] == str(a_dir.resolve())
    assert exploit["hparams"]["lr"] in (0.025, 0.1) and exploit["old"] == {"lr": 0.1}
    (donate,) = requests(a_dir)
    assert donate["op"] == "donate" and donate["peer"] == str(d_dir.resolve())
    assert emitted and emitted[0][0] == "pbt_exploit"
    # the coordinator dies; a new one reads the file and does not decide that boundary again
    again = Population(population_path(runs, "g"), json.loads(path.read_text()))
    assert again.tick(store.entries(group="g"), emit) == []
    assert len(requests(d_dir)) == 1
    store.close()


def test_the_donor_is_told_when_the_member_answered_its_rollback_or_gave_no_answer_in_time(tmp_path: Path):
    runs = tmp_path / "runs"
    store = QueueStore.open(runs)
    losses = {"a": [0.5, 0.3], "b": [0.6, 0.5], "c": [0.7, 0.6], "d": [2.0, 1.9]}
    for name, vals in losses.items():
        entry_id = store.add(NewEntry("train.py", name=name, group="g", params={"lr": 0.1}))
        write_member(runs / f"q{entry_id}-{name}", vals, lr=0.1)
        store.claim(entry_id, run_dir=str(runs / f"q{entry_id}-{name}"), gpus="")
    settings = PopulationSettings(interval=2, mutations={"lr": {"values": [0.025, 0.05, 0.1]}})
    path = create_population(runs, "g", settings)
    population = Population(path, json.loads(path.read_text()))
    (decision,) = population.tick(store.entries(group="g"), lambda *a: None, now=100.0)
    d_dir, a_dir = runs / "q4-d", runs / "q1-a"
    assert [r["op"] for r in requests(a_dir)] == ["donate"]
    assert json.loads(path.read_text())["donations"][0]["donor"] == "q1-a"  # saved: survives the coordinator
    population.tick(store.entries(group="g"), lambda *a: None, now=200.0)
    assert [r["op"] for r in requests(a_dir)] == ["donate"]  # no answer yet: still kept
    ack = {"v": 1, "type": "ack", "time": 2.0, "seq": 5, "cmd": "rollback", "epoch": 1, "step": 20, "lr": 0.05}
    with (d_dir / protocol.METRICS_FILE).open("a") as f:
        f.write(protocol.dumps(ack) + "\n")
    again = Population(path, json.loads(path.read_text()))  # a new coordinator reads the open donation back
    again.tick(store.entries(group="g"), lambda *a: None, now=201.0)
    done = requests(a_dir)[-1]
    assert done["op"] == "donation_done" and done["peer"] == str(d_dir.resolve())
    assert done["checkpoint"] == decision.checkpoint and json.loads(path.read_text())["donations"] == []
    # a member that never answers: released after the timeout
    again.donations.append({**again.request_fields(decision), "member": "q4-d", "donor": "q1-a",
                            "rollbacks": 99, "time": 0.0})  # fmt: skip
    again.tick(store.entries(group="g"), lambda *a: None, now=DONATION_TIMEOUT - 1)
    assert len(requests(a_dir)) == 2
    again.tick(store.entries(group="g"), lambda *a: None, now=DONATION_TIMEOUT + 1)
    assert requests(a_dir)[-1]["op"] == "donation_done" and not again.donations
    store.close()


def test_a_member_never_donates_a_checkpoint_from_before_its_own_exploit(tmp_path: Path):
    run_dir = tmp_path / "q1-a"
    write_member(run_dir, [0.9, 0.8, 0.7, 0.6], lr=0.1)  # epoch-0000..0003 at steps 10..40
    base = {"v": 1, "type": "checkpoint", "time": 2.0, "name": "exploit-0004-epoch-0005", "epoch": 3, "step": 60,
            "file": "checkpoints/exploit-0004-epoch-0005.json", "sha256": SHA}  # fmt: skip
    ack = {"v": 1, "type": "ack", "time": 2.0, "seq": 9, "cmd": "rollback", "epoch": 3, "step": 60, "lr": 0.05}
    epoch = {"v": 1, "type": "epoch", "time": 3.0, "epoch": 4, "step": 70, "lr": 0.05, "logs": {"val_loss": 0.5}}
    member, source = MemberRecords(), FollowedRecords()
    try:
        member.feed(source.read("q1-a", run_dir), "val_loss")
        assert member.known_good() == "epoch-0003"
        with (run_dir / protocol.METRICS_FILE).open("a") as f:
            f.write(protocol.dumps(ack) + "\n" + protocol.dumps(base) + "\n")
        member.feed(source.read("q1-a", run_dir), "val_loss")
        # it loaded a donor's state at step 60: its checkpoints up to step 40 hold abandoned weights,
        # and its last score (step 40) vouches for none of its checkpoints now
        assert member.known_good() is None and member.rollbacks == 1
        with (run_dir / protocol.METRICS_FILE).open("a") as f:
            f.write(protocol.dumps(epoch) + "\n")
        member.feed(source.read("q1-a", run_dir), "val_loss")
        assert member.known_good() == "exploit-0004-epoch-0005"
    finally:
        source.close("q1-a")


def test_reported_records_arrive_once_and_in_order_even_when_the_inbox_starts_again():
    epochs = [
        protocol.EpochRecord(time=1.0, epoch=e, step=10 * (e + 1), lr=0.1, logs={"val_loss": 1.0}) for e in range(4)
    ]
    inbox = ReportedRecords()
    assert inbox.report("q1-a", 0, epochs[:2]) == 2
    assert inbox.report("q1-a", 0, epochs[:2]) == 2  # a repeat (its answer was lost): not taken twice
    assert inbox.report("q1-a", 3, epochs[3:]) == 2  # a gap: the reporter is told to send from 2
    assert inbox.report("q1-a", 2, epochs[2:]) == 4
    assert inbox.read("q1-a", Path("unused")) == epochs and inbox.read("q1-a", Path("unused")) == []
    restarted = ReportedRecords()  # the actor came back with an empty inbox: everything is sent again
    assert restarted.report("q1-a", 4, []) == 0
    assert restarted.report("q1-a", 0, epochs) == 4


def test_a_population_fed_by_reports_decides_as_one_that_reads_the_files(tmp_path: Path):
    runs = tmp_path / "runs"
    store = QueueStore.open(runs)
    losses = {"a": [0.5, 0.3], "b": [0.6, 0.5], "c": [0.7, 0.6], "d": [2.0, 1.9]}
    for name, vals in losses.items():
        entry_id = store.add(NewEntry("train.py", name=name, group="g", params={"lr": 0.1}))
        run_dir = runs / f"q{entry_id}-{name}"
        write_member(run_dir, vals, lr=0.1)
        store.claim(entry_id, run_dir=str(run_dir), gpus="")
    settings = PopulationSettings(interval=2, mutations={"lr": {"values": [0.025, 0.05, 0.1]}})
    path = create_population(runs, "g", settings)
    inbox = ReportedRecords()
    for entry in store.entries(group="g"):  # what each member's reporter would send: no batch records
        source = FollowedRecords()
        name = Path(entry.run_dir).name
        inbox.report(name, 0, source.read(name, Path(entry.run_dir)))
        source.close(name)
    fed = Population(path, json.loads(path.read_text()), inbox)
    (decision,) = fed.tick(store.entries(group="g"), lambda *a: None)
    assert (decision.member, decision.donor, decision.checkpoint) == ("q4-d", "q1-a", "epoch-0001")
    assert [r["op"] for r in requests(runs / "q4-d")] == ["exploit"]
    store.close()


def test_a_reporter_sends_coordinated_records_once_and_again_to_an_inbox_that_restarted(tmp_path: Path):
    run_dir = tmp_path / "q1-a"
    write_member(run_dir, [0.9, 0.8], lr=0.1)  # 2 epochs, 2 checkpoints
    with (run_dir / protocol.METRICS_FILE).open("a") as f:
        f.write(protocol.dumps({"v": 1, "type": "batch", "time": 1.0, "epoch": 2, "batch": 0, "step": 21,
                                "lr": 0.1, "logs": {"loss": 0.5}}) + "\n")  # fmt: skip
    calls = []
    inbox = ReportedRecords()
    down = False

    def send(name, start, records):
        calls.append((name, start, len(records)))
        if down:
            raise ConnectionError("the actor is restarting")
        return inbox.report(name, start, records)

    reporter = MemberReporter(run_dir, send)
    try:
        reporter.poll(now=0.0)
        assert calls == [("q1-a", 0, 4)]  # 2 epochs + 2 checkpoints; the batch record stays home
        reporter.poll(now=1.0)
        assert len(calls) == 1  # nothing new, and no ping yet
        down = True
        with (run_dir / protocol.METRICS_FILE).open("a") as f:
            f.write(protocol.dumps({"v": 1, "type": "epoch", "time": 1.0, "epoch": 2, "step": 30, "lr": 0.1,
                                    "logs": {"val_loss": 0.7}}) + "\n")  # fmt: skip
        reporter.poll(now=2.0)  # lost: sent again later
        down, inbox = False, ReportedRecords()  # the actor came back empty
        reporter.poll(now=3.0)
        assert calls[-2:] == [("q1-a", 4, 1), ("q1-a", 0, 5)]  # told it has 0: everything again
        assert len(inbox.read("q1-a", run_dir)) == 5
        # a resumed member's new reporter reads the same file: the inbox has those records already
        again = MemberReporter(run_dir, send)
        again.poll(now=20.0)
        assert calls[-1] == ("q1-a", 0, 5) and again.acked == 5 and inbox.read("q1-a", run_dir) == []
        again.close()
    finally:
        reporter.close()
