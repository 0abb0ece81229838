"""lrsup: an automated training supervisor for Keras 3.

This is the root package; it holds the version and nothing else. Its two
subpackages live in the repository's ``supervisor/`` and ``policies/`` folders and
install as ``lrsup.supervisor`` (the supervisor, the trainer-side agent and the
protocol they share) and ``lrsup.policies`` (the pure decision rules); setup.py maps
them and derives the package list from the folders.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
