"""The launcher, run in a subprocess on small scripts, as the supervisor runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lrsup.supervisor.protocol.jsonl import iter_objects
from lrsup.supervisor.protocol.wire import ENV_RUN_DIR, METRICS_FILE, parse_record

pytestmark = pytest.mark.timeout(180)


def launch(cwd: Path, script: str, *args: str, env: dict | None = None, timeout: float = 60):
    """Run the launcher on ``script`` as the supervisor does; a CompletedProcess with text output."""
    full_env = {k: v for k, v in os.environ.items() if k != ENV_RUN_DIR}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lrsup.supervisor.agent.launcher", script, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_argv_name_and_path_are_those_of_the_script(tmp_path):
    write(tmp_path / "proj" / "helper.py", "VALUE = 42\n")
    write(
        tmp_path / "proj" / "train.py",
        """
        import json, sys
        import helper  # a sibling module: sys.path[0] is the script's directory
        print(json.dumps({"argv": sys.argv, "name": __name__, "path0": sys.path[0], "helper": helper.VALUE}))
        """,
    )
    result = launch(tmp_path, "proj/train.py", "--epochs", "3", "two words")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["argv"] == ["proj/train.py", "--epochs", "3", "two words"]
    assert out["name"] == "__main__"
    assert out["path0"] == str((tmp_path / "proj").resolve())
    assert out["helper"] == 42


@pytest.mark.parametrize(
    "body, code, in_stderr",
    [
        ("print('done', end='')", 0, None),
        ("import sys; sys.exit(3)", 3, None),
        ("raise SystemExit(None)", 0, None),
        ("import sys; sys.exit('bad thing')", 1, "bad thing"),
        ("def train():\n    raise ValueError('broken 42')\ntrain()", 1, "ValueError: broken 42"),
    ],
)
def test_exit_status_is_the_scripts(tmp_path, body, code, in_stderr):
    write(tmp_path / "train.py", body + "\n")
    result = launch(tmp_path, "train.py")
    assert result.returncode == code, result.stderr
    if in_stderr:
        assert in_stderr in result.stderr
    if code == 0 and "done" in body:
        assert result.stdout == "done"  # flushed though it has no newline


def test_a_traceback_shows_the_script_not_the_launcher(tmp_path):
    write(tmp_path / "train.py", "def train():\n    raise ValueError('broken')\ntrain()\n")
    stderr = launch(tmp_path, "train.py").stderr
    assert stderr.startswith("Traceback (most recent call last):")
    assert 'train.py", line 3' in stderr and 'train.py", line 2, in train' in stderr
    assert "launcher.py" not in stderr and "runpy" not in stderr


def test_a_missing_script_or_no_script_is_an_error(tmp_path):
    result = launch(tmp_path, "nope.py")
    assert result.returncode == 2 and "nope.py" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "lrsup.supervisor.agent.launcher"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "usage" in result.stderr


def test_keras_is_not_imported_before_the_scripts_first_line(tmp_path):
    write(
        tmp_path / "train.py",
        """\
        import sys; early = sorted({"keras", "tensorflow"} & set(sys.modules)); assert not early, early
        print("ok")
        """,
    )
    result = launch(tmp_path, "train.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_fit_is_patched_when_keras_is_imported_even_after_a_find_spec(tmp_path):
    # A stand-in keras next to the script; TensorFlow asks find_spec("keras") before importing it.
    write(tmp_path / "keras" / "__init__.py", "class Model:\n    def fit(self, x=None):\n        pass\n")
    write(tmp_path / "keras" / "layers.py", "")
    write(
        tmp_path / "train.py",
        """
        import importlib.util, sys
        importlib.util.find_spec("keras")
        assert "keras" not in sys.modules
        import keras.layers
        print(getattr(keras.Model.fit, "__lrsup_patched__", False), type(keras.__spec__.loader).__name__)
        print(sum(type(f).__name__ == "KerasImportHook" for f in sys.meta_path))
        """,
    )
    result = launch(tmp_path, "train.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "SourceFileLoader", "0"]


@pytest.mark.keras
def test_a_real_keras_script_gets_one_agent_per_fit(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(
        json.dumps({"agent": {"verdict_timeout": 0, "batch_every": 2, "batch_min_interval": 0}})
    )
    write(
        tmp_path / "train.py",
        """
        import sys
        early = sorted({"keras", "tensorflow"} & set(sys.modules))
        import os
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import numpy as np
        import tensorflow as tf
        from lrsup.supervisor.agent.keras_callback import LrsupCallback

        keras = tf.keras  # keras 3 through tf.keras
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        x, y = np.ones((16, 2), "float32"), np.zeros((16, 1), "float32")
        print("early", early, flush=True)
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        model.fit(x, y, batch_size=4, epochs=2, initial_epoch=1, verbose=0, callbacks=[LrsupCallback()])

        class Boom(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                raise RuntimeError("boom")

        model.fit(x, y, batch_size=4, epochs=3, initial_epoch=2, verbose=0, callbacks=[Boom()])
        """,
    )
    result = launch(tmp_path, "train.py", env={ENV_RUN_DIR: str(run_dir)}, timeout=150)
    assert result.returncode == 1, result.stderr
    assert "early []" in result.stdout
    assert "RuntimeError: boom" in result.stderr
    records = [parse_record(obj) for obj in iter_objects(run_dir / METRICS_FILE)]
    starts = [r for r in records if r.type == "start"]
    ends = [r for r in records if r.type == "end"]
    assert [(s.initial_epoch, s.step, s.steps_per_epoch) for s in starts] == [(0, 0, 4), (1, 4, 4), (2, 8, 4)]
    assert [(e.reason, e.step) for e in ends] == [("completed", 4), ("completed", 8), ("exception", 12)]
    assert [r.step for r in records if r.type == "batch"] == [2, 4, 6, 8, 10, 12]
