"""The lrsup supervisor: the ``lrsup`` command, one supervised run, its run directory,
the reports, and the trainer-side agent (``lrsup.supervisor.agent``) with the protocol
both sides share (``lrsup.supervisor.protocol``). See docs/architecture.md.
"""
