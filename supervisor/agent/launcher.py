"""Run a training script as ``__main__`` with one LrsupCallback added to every ``Model.fit``.

Usage (what ``lrsup run train.py -- ARGS`` spawns)::

    python -m lrsup.supervisor.agent.launcher train.py --epochs 5

Like ``coverage run``: ``sys.argv`` becomes ``[SCRIPT, *ARGS]``, ``sys.path[0]`` the script's
directory, and the script runs through ``runpy.run_path(SCRIPT, run_name="__main__")``.
The launcher does not import keras: scripts set ``KERAS_BACKEND`` and friends at their top.
Instead an import hook waits for the top-level ``keras`` module to finish importing (``import
keras``, ``from keras import ...``, or ``tf.keras``, which imports ``keras`` in TF >= 2.16) and
then wraps ``keras.Model.fit``.

The LR range test probe: when the supervisor sets ``$LRSUP_PROBE`` (its stack holds an
``lr_find`` that has not run yet) and ``$LRSUP_RESTORE`` is unset (not a restored attempt),
the process's first ``fit`` call is preceded by a hidden probe fit on the same model and
data, after which model, optimizer and random states are put back exactly
(``lrsup.supervisor.agent.probe``). Later fits, and every fit of a restored attempt, get
none: the LR found holds for the run.

Exit status: the script's ``SystemExit`` passes through; an exception prints its traceback
to stderr and exits 1, as ``python`` does; otherwise 0.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import os
import runpy
import sys
import traceback
from typing import Any, Mapping, Sequence

from lrsup.supervisor.protocol.wire import ENV_PROBE, ENV_RESTORE

USAGE = "usage: python -m lrsup.supervisor.agent.launcher SCRIPT [ARGS...]"

# Set on the wrapped fit so that keras.Model.fit is never wrapped twice.
_PATCHED = "__lrsup_patched__"

# The process's calls of the wrapped fit so far (the first may get the LR range test probe).
_calls = {"fit": 0}


def probe_wanted(environ: Mapping[str, str], calls: int) -> bool:
    """True when fit call number ``calls`` (1-based) gets the LR range test probe.

    The supervisor asks for it (``$LRSUP_PROBE`` is "1"), this is the process's first fit
    call, and the attempt restores no checkpoint (``$LRSUP_RESTORE`` unset).
    """
    return calls == 1 and environ.get(ENV_PROBE) == "1" and not environ.get(ENV_RESTORE)


class _FitPatchLoader(importlib.abc.Loader):
    """Runs the real loader of ``keras``, then patches ``keras.Model.fit``."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        uninstall_keras_hook()
        # From here on keras is the real loader's module, as if no hook had been there.
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        try:
            patch_keras_fit(module)
        except Exception as exc:  # never break the script's import of keras
            message = f"cannot patch keras.Model.fit ({type(exc).__name__}: {exc}); training runs unsupervised"
            print(f"lrsup: {message}", file=sys.stderr, flush=True)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ... of the real loader
        return getattr(self._loader, name)


class KerasImportHook(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that hands ``keras`` a loader which patches fit once it is imported.

    It finds nothing itself: it asks the other finders for keras's spec and wraps the
    loader. It stays in ``sys.meta_path`` until keras has been executed, because a spec may
    be asked for and not loaded (TensorFlow calls ``importlib.util.find_spec("keras")``).
    """

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "keras":
            return None
        for finder in sys.meta_path:
            if isinstance(finder, KerasImportHook):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _FitPatchLoader(spec.loader)
                return spec
        return None


def install_keras_hook() -> None:
    """Patch fit now if keras is already imported, else when it is."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "Model"):
        patch_keras_fit(keras)
    elif not any(isinstance(finder, KerasImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, KerasImportHook())


def uninstall_keras_hook() -> None:
    """Remove the hook from ``sys.meta_path`` (keras has been imported, or a test is done)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, KerasImportHook)]


def patch_keras_fit(keras: Any) -> None:
    """Wrap ``keras.Model.fit`` (the method resolved on keras.Model) so each call gets one LrsupCallback.

    Args:
        keras: the imported top-level keras module.
    """
    model_cls = keras.Model
    original = model_cls.fit
    if getattr(original, _PATCHED, False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)  # let fit raise its own error
        from lrsup.supervisor.agent.keras_callback import LrsupCallback, restore_initial_epoch, skipped_history

        callbacks, callback = with_lrsup_callback(bound.arguments.get("callbacks"), self, LrsupCallback)
        callbacks = arrange_lr_callbacks(callbacks, callback)
        bound.arguments["callbacks"] = callbacks
        initial_epoch = bound.arguments.get("initial_epoch", 0)
        resumed = restore_initial_epoch(initial_epoch, bound.arguments.get("epochs", 1))
        if resumed != initial_epoch:  # $LRSUP_RESTORE: continue the epoch numbering (or skip a completed fit)
            bound.arguments["initial_epoch"] = resumed
        _calls["fit"] += 1
        if probe_wanted(os.environ, _calls["fit"]):
            from lrsup.supervisor.agent.probe import run_probe

            run_probe(original, self, bound.arguments, callback)
        try:
            return skipped_history(original(*bound.args, **bound.kwargs))
        except BaseException:
            try:
                callback.report_exception()
            except Exception as exc:  # the script's exception is the one to see
                print(f"lrsup: cannot write the end record: {exc}", file=sys.stderr, flush=True)
            raise

    setattr(fit, _PATCHED, True)
    model_cls.fit = fit


def with_lrsup_callback(callbacks: Any, model: Any, cls: type) -> tuple[Any, Any]:
    """``callbacks`` as fit should get it, holding exactly one LrsupCallback, and that callback.

    Args:
        callbacks: what the script passed: None, a callback, a (nested) list or tuple, or a
            keras CallbackList (appended to in place, as Keras uses it as is).
        model: the model being fit (for a CallbackList, whose callbacks fit does not set up).
        cls: type, the LrsupCallback class (instantiated with no arguments when none is there).

    The script's list is not modified; a new list is returned.
    """
    holder = getattr(callbacks, "callbacks", None)
    if isinstance(holder, list):  # a CallbackList
        existing = _find(holder, cls)
        if existing is not None:
            return callbacks, existing
        callback = cls()
        callback.set_model(model)
        callback.set_params(getattr(callbacks, "params", None) or {})
        holder.append(callback)
        return callbacks, callback
    if callbacks is None:
        items: list[Any] = []
    elif isinstance(callbacks, (list, tuple)):
        items = list(callbacks)
    else:
        items = [callbacks]
    existing = _find(items, cls)
    if existing is not None:
        return callbacks, existing
    callback = cls()
    return items + [callback], callback


def arrange_lr_callbacks(callbacks: Any, callback: Any) -> Any:
    """``callbacks`` for this fit under the run's ``[run] lr_owner``; ``callback.lr_callbacks`` says what was found.

    ``"script"`` (default): the script's LR callbacks stay (lrsup's LR tuning stands down).
    ``"lrsup"``: they are left out of this fit (a new list; the script's own is untouched).
    """
    from lrsup.supervisor.agent.lr_control import leave_out_lr_callbacks, lr_callback_names
    from lrsup.supervisor.agent.settings import load_lr_owner

    names = lr_callback_names(callbacks)
    left_out = False
    if names and getattr(callback, "run_dir", None) and load_lr_owner(callback.run_dir) == "lrsup":
        callbacks, left_out = leave_out_lr_callbacks(callbacks)
    callback.lr_callbacks = (names, left_out)
    return callbacks


def _find(items: Sequence[Any], cls: type) -> Any:
    for item in items:
        if isinstance(item, (list, tuple)):
            found = _find(item, cls)
            if found is not None:
                return found
        elif isinstance(item, cls):
            return item
    return None


def _user_traceback(tb: Any) -> Any:
    """``tb`` without the launcher's and runpy's own frames at its head."""
    own = {os.path.abspath(__file__), os.path.abspath(runpy.__file__)}

    def is_own(filename: str) -> bool:
        return filename.startswith("<frozen runpy") or os.path.abspath(filename) in own

    while tb is not None and is_own(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script named by ``argv[0]`` with the rest as its arguments; return the exit status.

    Args:
        argv: list of str or None, ``[SCRIPT, *ARGS]`` (default: ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    script = argv[0]
    if not os.path.isfile(script):
        print(f"lrsup launcher: no such script: {script!r}", file=sys.stderr)
        return 2
    install_keras_hook()
    sys.argv = [script, *argv[1:]]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, _user_traceback(exc.__traceback__))
        return 1
    finally:
        _flush()
    return 0


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


if __name__ == "__main__":
    # Run from the module under its real name, so the hook's classes are importable ones
    # (while the script runs, sys.modules["__main__"] is the script).
    from lrsup.supervisor.agent import launcher

    sys.exit(launcher.main())
