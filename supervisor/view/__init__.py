"""The live view of a run: the rich display and the plain line-per-event output."""
