"""A protocol-speaking trainer that misbehaves on request, for the fault tests (tests/faults).

Like fake_trainer.py (no TensorFlow; one float learning rate) but without checkpoints
(a restart starts from scratch) and with faults:

    --die-at-epoch N      SIGKILL itself right after writing epoch N's record, before
                          acknowledging anything (only in attempt 1, $LRSUP_ATTEMPT)
    --stall-at-epoch N    stop making steps at epoch N (heartbeats go on): a stall
    --import-error        fail at import time, before any record (a broken script)
    --start-delay S       sleep S seconds before the start record (data loading that
                          hangs before fit; only in attempt 1)
    --stubborn-child      start a child in the trainer's process group that ignores SIGINT
                          and SIGTERM (a data loader that outlives its parent); it prints
                          ``fault: child pid C``
    --request E:OP[:LR]   play the operator: append an ``OP`` request (set_lr with LR, hold,
                          release; exploit with LR: a PBT exploit of its own epoch-0001) to
                          requests.jsonl at the end of epoch E, before its epoch record
                          (repeatable; only in attempt 1). ``E:donate:MEMBER:CHECKPOINT`` and
                          ``E:donation_done:MEMBER:CHECKPOINT``: the PBT coordinator's requests to
                          a donor (MEMBER: the name of a run directory beside this one)
    --leave-temp          print the checkpoints/.tmp-* files it finds at its start (``fault: temp [...]``),
                          then leave one of its own there, as a trainer killed mid-save does
    --session-child       start a child in a session of its own (``start_new_session=True``),
                          outside the trainer's process group; it prints ``fault: session child pid C``

Other options: --epochs, --steps, --lr, --val-loss "a,b,c" (last repeats), --sleep S
(seconds per step). It prints ``fault: pid P attempt A`` first, so tests can find it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from lrsup.supervisor.agent.core import Agent
from lrsup.supervisor.protocol.wire import EpochRecord

STUBBORN_CHILD = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "print(f'fault: child pid {os.getpid()}', flush=True)\n"
    "time.sleep(600)\n"
)


class Optimizer:
    """The OptimizerHandle of a plain float learning rate (no checkpoint support)."""

    def __init__(self, lr: float) -> None:
        self.lr, self.stop_requested = lr, False

    def get_lr(self) -> float:
        return self.lr

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)

    def scale_lr(self, factor: float) -> None:
        self.lr *= float(factor)

    def set_hparam(self, name: str, value: float) -> None:
        raise ValueError(f"no hyperparameter {name!r}")

    def request_stop(self) -> None:
        self.stop_requested = True


def operator_request(spec: str, epoch: int) -> None:
    """``E:OP[:LR]``: the request line ``lrsup OP`` would append, if ``E`` is ``epoch``."""
    at, op, *lr = spec.split(":")
    if int(at) != epoch:
        return
    from lrsup.supervisor.run.operator import send_request

    run_dir = os.environ["LRSUP_RUN_DIR"]
    if op in ("donate", "donation_done"):  # to a donor: keep (release) CHECKPOINT for the member
        member, name = lr
        peer = os.path.join(os.path.dirname(os.path.abspath(run_dir)), member)
        fields = {"peer": peer, "checkpoint": name, "epoch": int(at), "hparams": {"lr": 0.01}}
        send_request(run_dir, op, who="lrsup-pbt", why=f"epoch {at}", **fields)
        return
    if op == "exploit":  # PBT's request, copying the run's own epoch-0001 (refused: this trainer keeps none)
        hparams = {"lr": float(lr[0]), "momentum": 0.9}
        peer = os.path.abspath(run_dir)
        send_request(run_dir, op, who="ops@fault", peer=peer, checkpoint="epoch-0001", epoch=int(at), hparams=hparams)
        return
    send_request(run_dir, op, lr=float(lr[0]) if lr else None, who="ops@fault", why=f"epoch {at}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="misbehaving lrsup trainer")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--val-loss", default="1.0")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--die-at-epoch", type=int, default=None)
    p.add_argument("--stall-at-epoch", type=int, default=None)
    p.add_argument("--import-error", action="store_true")
    p.add_argument("--start-delay", type=float, default=0.0)
    p.add_argument("--stubborn-child", action="store_true")
    p.add_argument("--request", action="append", default=[])
    p.add_argument("--session-child", action="store_true")
    p.add_argument("--leave-temp", action="store_true")
    args = p.parse_args(argv)
    attempt = os.environ.get("LRSUP_ATTEMPT", "1")
    print(f"fault: pid {os.getpid()} attempt {attempt}", flush=True)
    if args.leave_temp:
        folder = os.path.join(os.environ["LRSUP_RUN_DIR"], "checkpoints")
        os.makedirs(folder, exist_ok=True)
        print(f"fault: temp {sorted(n for n in os.listdir(folder) if n.startswith('.tmp-'))}", flush=True)
        with open(os.path.join(folder, f".tmp-epoch-0001-{os.getpid()}.weights.h5"), "wb") as f:
            f.write(b"half a checkpoint")
    if args.import_error:
        import lrsup_no_such_module  # noqa: F401  (the broken script)
    if args.stubborn_child:
        subprocess.Popen([sys.executable, "-c", STUBBORN_CHILD])  # same process group, output to the log
    if args.session_child:
        code = STUBBORN_CHILD.replace("child pid", "session child pid")
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True)  # its own session and group
    if args.start_delay and attempt == "1":
        time.sleep(args.start_delay)  # hangs before fit: no start record, no heartbeat
    losses = [float(x) for x in args.val_loss.split(",")]
    opt, agent = Optimizer(args.lr), Agent.from_env()
    assert agent is not None, "run me under lrsup"
    agent.start(opt, optimizer="FaultSGD", steps_per_epoch=args.steps, epochs=args.epochs, checkpoint=False)
    step, reason = 0, "completed"
    for epoch in range(args.epochs):
        loss = losses[min(epoch, len(losses) - 1)]
        if args.stall_at_epoch == epoch and attempt == "1":
            while True:  # no more steps; the heartbeat thread keeps beating
                time.sleep(1)
        for batch in range(args.steps):
            time.sleep(args.sleep)
            step += 1
            agent.batch_end(opt, epoch=epoch, batch=batch, step=step, logs={"loss": loss + 0.1})
        logs = {"loss": loss + 0.1, "val_loss": loss}
        if attempt == "1":
            for spec in args.request:
                operator_request(spec, epoch)
        if args.die_at_epoch == epoch and attempt == "1":
            agent.records.write(EpochRecord(time=time.time(), epoch=epoch, step=step, lr=opt.lr, logs=logs))
            time.sleep(1.0)  # the supervisor decides and writes its commands; none is applied
            os.kill(os.getpid(), signal.SIGKILL)
        agent.epoch_end(opt, epoch=epoch, step=step, logs=logs)
        print(f"fault: epoch {epoch} lr={opt.lr:g}", flush=True)
        if opt.stop_requested:
            reason = "stopped"
            break
    agent.end(reason=reason, epoch=epoch, step=step)
    agent.close()
    print(f"fault: done ({reason}) lr={opt.lr:g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
