"""The ``exploit``/``donate`` operator requests (population-based training) are validated like the others."""

from __future__ import annotations

import pytest

from lrsup.supervisor import protocol
from lrsup.supervisor.run.operator import RequestError, validate_request


def req(**kw):
    base = {"v": protocol.PROTOCOL_VERSION, "op": "exploit", "who": "lrsup-pbt", "time": 1.0,
            "peer": "/runs/q1-a", "checkpoint": "epoch-0003", "epoch": 4, "hparams": {"lr": 0.01}, "old": {"lr": 0.1}}  # fmt: skip
    base.update(kw)
    return base


def test_a_valid_exploit_and_donate():
    r = validate_request(req())
    assert (r.peer, r.checkpoint, r.epoch, r.hparams, r.old) == (
        "/runs/q1-a",
        "epoch-0003",
        4,
        {"lr": 0.01},
        {"lr": 0.1},
    )
    assert validate_request(req(op="donate")).op == "donate"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"peer": "runs/q1-a"}, "absolute"),
        ({"peer": None}, "absolute"),
        ({"checkpoint": "../x"}, "checkpoint"),
        ({"epoch": -1}, "epoch"),
        ({"epoch": True}, "epoch"),
        ({"hparams": {"lr": float("nan")}}, "hparams"),
        ({"hparams": {"lr": -1}}, "hparams"),
        ({"old": [0.1]}, "old"),
        ({"lr": 0.1}, "takes no lr"),
    ],
)
def test_bad_exploit_requests_are_refused(change, message):
    with pytest.raises(RequestError, match=message):
        validate_request(req(**change))


def test_other_ops_take_no_pbt_fields():
    with pytest.raises(RequestError, match="takes no peer"):
        validate_request({"v": protocol.PROTOCOL_VERSION, "op": "hold", "who": "a@b", "time": 1.0, "peer": "/x"})
