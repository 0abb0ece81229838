"""Which records the supervisor believes: the trainer's word is checked before it steers anything.

A line in metrics.jsonl is written by the agent, but anything that can write the run
directory can append one. Two kinds of record would steer the run if believed: an epoch
record far ahead of the training (its verdict would release every later epoch barrier of
the fit at once) and an ``ack`` for a command never sent (the journal would say "applied").
``Credence.doubt`` names what is wrong with such a record; the runner journals it as an
``unbelievable`` event and gives it to nothing else (not the engine, the lifecycle, the
barrier or the journal's ``applied``).

Example::

    credence = Credence()
    reason = credence.doubt(record, sent=channel.seq)   # None: believe it
"""

from __future__ import annotations

from lrsup.supervisor.protocol.wire import AckRecord, EpochRecord, Record, StartRecord


class Credence:
    """The epoch a record may claim next (after a start record or an epoch record) and the seqs sent.

    Keras counts epochs one by one from a fit's ``initial_epoch``; a restarted trainer sends a
    start record first. So after a start record with ``initial_epoch`` i the next epoch record
    is at most i, after epoch e at most e + 1 (lower is a rollback of attempts, believed).
    Before any start record (a resume that replays from a snapshot) every epoch is believed.
    """

    def __init__(self) -> None:
        self._next_epoch: int | None = None

    def doubt(self, record: Record, sent: int) -> str | None:
        """Why ``record`` is not believed, or None. ``sent``: the highest command seq sent so far."""
        if isinstance(record, StartRecord):
            self._next_epoch = record.initial_epoch
        elif isinstance(record, EpochRecord):
            if self._next_epoch is not None and record.epoch > self._next_epoch:
                return (
                    f"epoch record for epoch {record.epoch + 1} where epoch {self._next_epoch + 1} comes next at most"
                )
            self._next_epoch = record.epoch + 1
        elif isinstance(record, AckRecord) and not 0 < record.seq <= sent:
            return f"ack of command seq {record.seq}, which was never sent (seqs sent: 1 to {sent})"
        return None
