"""The decision engine, pure: records and a policy stack in, commands and journal entries out.

``core`` (the Engine), ``composition`` (the priority rules between policies),
``action_commands`` (a typed action to a protocol command), ``checkpoint_book``
(known-good, best, retention), ``decision`` and ``replay`` (a recorded run fed to a
stack again). No IO but replay's reading of a finished run; no clock.
"""
