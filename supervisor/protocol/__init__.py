"""The run-directory contract that the supervisor, the agent and the policies share.

Standard library only: the agent imports it inside the training process. ``wire``
holds the versioned line formats (records, commands, file names, environment
variables); ``jsonl`` the torn-line-safe reading and single-write appends;
``doorbell`` the mapped ``control.bell``; ``schedules`` the schedule specs and their
evaluation. The wire format's names are re-exported here, so
``from lrsup.supervisor import protocol`` then ``protocol.METRICS_FILE`` reads as before.
See docs/protocol.md.
"""

from lrsup.supervisor.protocol.wire import (
    BELL_FILE,
    CADENCE_FIELDS,
    CHECKPOINT_DIR,
    COMMAND_SPECS,
    CONFIG_FILE,
    CONTROL_FILE,
    DEFAULT_BATCH_MIN_INTERVAL,
    ENV_RUN_DIR,
    HOUSEKEEPING_ACTIONS,
    HOUSEKEEPING_COMMANDS,
    JOURNAL_FILE,
    MAX_LINE_BYTES,
    METRICS_FILE,
    PROTOCOL_VERSION,
    RECORD_TYPES,
    STATE_FILE,
    TRAINER_LOG,
    AckRecord,
    BatchRecord,
    CheckpointRecord,
    EndRecord,
    EpochRecord,
    ErrorRecord,
    HeartbeatRecord,
    ProtocolError,
    Record,
    StartRecord,
    dumps,
    is_checkpoint_name,
    loads,
    loads_many,
    make_command,
    parse_fast,
    parse_record,
    register_record_type,
    validate_command,
)

__all__ = [
    "BELL_FILE", "CADENCE_FIELDS", "CHECKPOINT_DIR", "COMMAND_SPECS", "CONFIG_FILE", "CONTROL_FILE",
    "DEFAULT_BATCH_MIN_INTERVAL", "ENV_RUN_DIR", "HOUSEKEEPING_ACTIONS", "HOUSEKEEPING_COMMANDS",
    "JOURNAL_FILE", "MAX_LINE_BYTES", "METRICS_FILE", "PROTOCOL_VERSION", "RECORD_TYPES", "STATE_FILE",
    "TRAINER_LOG", "AckRecord", "BatchRecord", "CheckpointRecord", "EndRecord", "EpochRecord",
    "ErrorRecord", "HeartbeatRecord", "ProtocolError", "Record", "StartRecord", "dumps",
    "is_checkpoint_name", "loads", "loads_many", "make_command", "parse_fast", "parse_record",
    "register_record_type", "validate_command",
]
