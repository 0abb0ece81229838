"""The trainer side of lrsup: what a training loop calls, inside the training process.

Keras-free (standard library and ``lrsup.supervisor.protocol`` only), except
``keras_callback`` and ``launcher``, which are not imported here. ``lrsup run`` adds the Keras
callback to every ``Model.fit`` on its own; a custom training loop drives ``Agent`` with its
own ``OptimizerHandle``::

    from lrsup.supervisor.agent import Agent

    agent = Agent.from_env()              # None when not run under lrsup
    agent.start(handle, optimizer="SGD", steps_per_epoch=100, epochs=10, step=0)
    ...                                   # batch_end after each step, epoch_end after each epoch
    agent.end(reason="completed", epoch=9, step=step)
    agent.close()

``Agent`` is composed of the collaborators exported below (``agent.records``,
``agent.commands``, ``agent.checkpointer``, ``agent.lr_control``, ``agent.heartbeats``).
"""

from lrsup.supervisor.agent.checkpointing import Checkpointer
from lrsup.supervisor.agent.checkpoints import CheckpointEntry, CheckpointError, CheckpointStore
from lrsup.supervisor.agent.control import CommandHandler, ControlReader
from lrsup.supervisor.agent.core import Agent
from lrsup.supervisor.agent.handle import OptimizerHandle
from lrsup.supervisor.agent.heartbeat import Heartbeats
from lrsup.supervisor.agent.lr_control import LrControl
from lrsup.supervisor.agent.records import Logs, RecordWriter, metrics_of
from lrsup.supervisor.agent.settings import AgentError, Settings, load_settings
from lrsup.supervisor.protocol.wire import ENV_ATTEMPT, ENV_RESTORE

__all__ = [
    "Agent",
    "AgentError",
    "CheckpointEntry",
    "CheckpointError",
    "CheckpointStore",
    "Checkpointer",
    "CommandHandler",
    "ControlReader",
    "ENV_ATTEMPT",
    "ENV_RESTORE",
    "Heartbeats",
    "Logs",
    "LrControl",
    "OptimizerHandle",
    "RecordWriter",
    "Settings",
    "load_settings",
    "metrics_of",
]
