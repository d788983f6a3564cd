"""Tests for jattn.checkpoint and resuming: a killed run, rerun, ends with
bit-identical parameters and optimizer state."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jattn import checkpoint
from jattn import metrics as metrics_lib
from jattn import train
from tests.helpers import get_config

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _assert_trees_identical(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()  # bit for bit (NaN-safe)


def _state(seed):
  rng = np.random.default_rng(seed)
  params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
            "layers": {"b": jnp.asarray(rng.standard_normal((2, 4)),
                                        jnp.float32)}}
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  opt_state = opt.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = opt.update(grads, opt_state, params)
  return {"step": jnp.asarray(seed, jnp.int32), "params": params,
          "opt_state": opt_state}


def test_save_restore_round_trip_is_exact_and_keeps_the_last_few(tmp_path):
  directory = checkpoint.checkpoint_dir(tmp_path)
  assert directory == tmp_path.absolute() / "checkpoints"
  with checkpoint.Checkpointer(directory, save_every=2, keep=2) as ckpt:
    assert ckpt.latest_step() is None
    assert not ckpt.save(3, _state(3))  # not a multiple of save_every
    for step in (2, 4, 6):
      assert ckpt.save(step, _state(step))
    assert ckpt.save(7, _state(7), force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7
    # Restored into a fresh state's structure: optax's named tuples, dtypes.
    restored = ckpt.restore(_state(0))
    _assert_trees_identical(restored, _state(7))
    _assert_trees_identical(ckpt.restore(_state(0), step=6), _state(6))
  params, step = checkpoint.load_params(tmp_path)
  assert step == 7
  _assert_trees_identical(params, _state(7)["params"])
  with pytest.raises(FileNotFoundError, match="workdir"):
    checkpoint.load_params(tmp_path / "missing")


def _finished_steps(directory: pathlib.Path) -> list[int]:
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _kill_after_first_checkpoint(proc, checkpoints, log, outcome):
  """Polls until a checkpoint is complete, then SIGKILLs the process."""
  deadline = time.monotonic() + 240
  try:
    while not _finished_steps(checkpoints):
      if proc.poll() is not None:
        outcome["error"] = "the run exited early:\n" + log.read_text()
        return
      if time.monotonic() > deadline:
        outcome["error"] = "no checkpoint within 240 s"
        return
      time.sleep(0.01)
  finally:
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_killed_run_resumes_to_bit_identical_params(x32, tmp_path):
  killed, uninterrupted = tmp_path / "killed", tmp_path / "uninterrupted"
  log = tmp_path / "log.txt"
  # 1. The CLI in a subprocess, killed (SIGKILL) once a checkpoint exists;
  #    meanwhile an uninterrupted run of the same config in this process.
  command = [sys.executable, "-m", "jattn.main",
             "--config=configs/copy.py:smoke", f"--workdir={killed}",
             "--config.train.checkpoint_every=10", "--config.mesh.data=1"]
  outcome = {}
  with open(log, "w") as log_file:
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log_file,
                            stderr=subprocess.STDOUT)
    watcher = threading.Thread(target=_kill_after_first_checkpoint, args=(
        proc, killed / "checkpoints", log, outcome))
    watcher.start()
    try:
      reference = train.train_and_evaluate(get_config("smoke"), uninterrupted)
    finally:
      watcher.join()
  assert "error" not in outcome, outcome["error"]
  assert reference["resumed_from"] == 0 and reference["steps"] == 300
  assert not any(r.get("final") for r in metrics_lib.read_metrics(killed)), (
      "the run finished before it could be killed")
  steps_on_disk = _finished_steps(killed / "checkpoints")
  assert steps_on_disk and max(steps_on_disk) < 300
  # Each step on disk has its integrity record already (a kill between two
  # saves used to leave the last one unverifiable).
  for step in steps_on_disk:
    assert (killed / "checkpoints_integrity" / f"{step}.json").is_file()

  # 2. The same command again (here in-process) resumes and finishes; the
  #    checkpoint cadence does not change the result.
  resumed = train.train_and_evaluate(get_config("smoke"), killed)
  assert 0 < resumed["resumed_from"] < 300 and resumed["steps"] == 300

  states = []
  for workdir in (killed, uninterrupted):
    ckpt = checkpoint.Checkpointer(checkpoint.checkpoint_dir(workdir),
                                   read_only=True)
    assert ckpt.latest_step() == 300
    states.append(ckpt.restore_raw())
    ckpt.close()
  _assert_trees_identical(states[0], states[1])
  assert resumed["eval_loss"] == reference["eval_loss"]
