"""Tests of lrsup.supervisor.protocol.schedules, the schedule policies and their Keras equivalence."""
