"""Fault injection on real training runs (the CLI in subprocesses): killed
during a checkpoint write, a corrupted newest checkpoint, two runs on one
workdir, a read-only workdir. Each resumed run must end with parameters
byte-identical to an uninterrupted run's."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jattn import checkpoint

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "copy.py"
# A constant learning rate after the warm-up: a run that goes on to more
# steps takes the same updates as one that planned them from the start.
SETTINGS = [f"--config={CONFIG}:smoke", "--config.train.schedule=constant",
            "--config.train.checkpoint_every=30",
            "--config.train.keep_checkpoints=3",
            "--config.train.eval_every=30", "--config.train.log_every=30"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")


def _command(workdir, steps):
  return [sys.executable, "-m", "jattn.main", *SETTINGS,
          f"--config.train.num_steps={steps}", f"--workdir={workdir}"]


def _run(workdir, steps, timeout=600):
  return subprocess.run(_command(workdir, steps), capture_output=True,
                        text=True, timeout=timeout, env=ENV, cwd=ROOT)


def _leaves(workdir):
  params, step = checkpoint.load_params(workdir)
  import jax  # noqa: PLC0415
  return step, [np.asarray(x) for x in jax.tree.leaves(params)]


def _assert_identical(workdir, reference):
  step, leaves = _leaves(workdir)
  ref_step, ref_leaves = reference
  assert step == ref_step and len(leaves) == len(ref_leaves)
  for a, b in zip(leaves, ref_leaves):
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The parameters of an uninterrupted 150-step run."""
  workdir = tmp_path_factory.mktemp("reference")
  done = _run(workdir, 150)
  assert done.returncode == 0, done.stderr[-2000:]
  return _leaves(workdir)


def _steps_dir(workdir):
  return pathlib.Path(workdir) / "checkpoints"


def test_kill_during_a_checkpoint_write_resumes_bit_identically(
    tmp_path, reference):
  proc = subprocess.Popen(_command(tmp_path, 150), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
  caught_writing = False
  deadline = time.monotonic() + 300
  while proc.poll() is None and time.monotonic() < deadline:
    names = [p.name for p in _steps_dir(tmp_path).glob("*")] if \
        _steps_dir(tmp_path).is_dir() else []
    # orbax writes a step into a temporary folder, then renames it.
    if any("tmp" in n and not n.startswith("30") for n in names):
      caught_writing = True
      break
    time.sleep(0.002)
  assert proc.poll() is None, "the run ended before a checkpoint write"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert caught_writing
  resumed = _run(tmp_path, 150)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from step" in resumed.stdout
  _assert_identical(tmp_path, reference)


def _flip_bytes(path: pathlib.Path, count: int = 64) -> None:
  raw = bytearray(path.read_bytes())
  middle = len(raw) // 2
  raw[middle:middle + count] = bytes(b ^ 0xFF for b in
                                     raw[middle:middle + count])
  path.write_bytes(bytes(raw))


def test_a_corrupted_newest_checkpoint_is_skipped_in_one_line(
    tmp_path, reference):
  first = _run(tmp_path, 120)
  assert first.returncode == 0, first.stderr[-2000:]
  # 64 bytes flipped in every array-data file of the newest step (orbax's
  # OCDBT keeps the arrays in d/ folders; some copies are never read).
  data = [p for p in (_steps_dir(tmp_path) / "120").rglob("*")
          if p.is_file() and p.parent.name == "d"]
  assert data
  for path in data:
    _flip_bytes(path)
  resumed = _run(tmp_path, 150)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  skips = [line for line in resumed.stdout.splitlines()
           if "skipping step 120" in line]
  assert len(skips) == 1, resumed.stdout[-3000:]
  assert "resumed from step 90" in resumed.stdout
  assert (_steps_dir(tmp_path) / "90").is_dir()  # the good one is kept
  _assert_identical(tmp_path, reference)


def test_a_second_run_on_a_workdir_in_use_refuses_up_front(tmp_path):
  first = subprocess.Popen(_command(tmp_path, 100000),
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
  try:
    deadline = time.monotonic() + 120
    while not (tmp_path / ".lock").exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    start = time.monotonic()
    second = _run(tmp_path, 100000, timeout=120)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 1
    assert len(lines) == 1, lines
    assert f"in use by process {first.pid}" in lines[0]
    assert time.monotonic() - start < 60
  finally:
    first.kill()
    first.wait()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes through read-only permissions "
                    "(tests/test_run_lock.py simulates it instead)")
def test_a_read_only_workdir_fails_within_seconds_naming_it(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  workdir.chmod(0o500)
  try:
    start = time.monotonic()
    done = _run(workdir, 120, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, lines
    assert str(workdir) in lines[0]
    assert time.monotonic() - start < 60
  finally:
    workdir.chmod(0o700)
