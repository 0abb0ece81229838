"""Tests of lrsup.supervisor.schedules, the schedule policies and their Keras equivalence."""
