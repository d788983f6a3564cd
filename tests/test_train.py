"""Tests for jattn.train: a tiny end-to-end run, metrics, non-finite losses.

Training runs with x64 off (like the CLI) and the `smoke` config of
configs/copy.py; the compiled step is cached across calls in one process, so
the runs here (and in test_checkpoint.py) compile it once.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jattn import checkpoint
from jattn import metrics as metrics_lib
from jattn import train
from tests.helpers import get_config

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor



def test_smoke_run_learns_writes_metrics_and_resumes_when_done(x32, tmp_path):
  config = get_config("smoke")
  config.train.keep_checkpoints = 2
  final = train.train_and_evaluate(config, tmp_path)

  # The loss falls well below the memoryless baseline.
  assert final["baseline_loss"] == pytest.approx(4 * math.log(4) / 16)
  assert final["eval_loss"] < 0.25 * final["baseline_loss"]
  assert final["eval_accuracy"] > 0.9
  assert final["steps"] == 300 and final["stopped"] == "num_steps"
  assert final["seconds"] > 0 and final["resumed_from"] == 0

  lines = metrics_lib.read_metrics(tmp_path)
  assert lines[-1] == final and lines[-1]["final"] is True
  for key in ("eval_accuracy", "eval_loss", "baseline_loss", "steps",
              "seconds"):
    assert key in final
  logged = [r for r in lines[:-1] if "loss" in r]
  assert [r["step"] for r in logged] == [50, 100, 150, 200, 250, 300]
  for r in lines[:-1]:
    assert r["baseline_loss"] == final["baseline_loss"]
  for r in logged:
    assert {"loss", "accuracy", "exact_match", "grad_norm", "learning_rate",
            "wall_time", "elapsed_s"} <= set(r)
  # Training steps only: the first window (compilation) has no rate.
  assert "steps_per_second" not in logged[0]
  for r in logged[1:]:
    assert r["steps_per_second"] > 0 and r["eta_s"] >= 0
    assert 0 <= r["accuracy"] <= 1 and 0 <= r["exact_match"] <= 1
  assert logged[-1]["loss"] < logged[0]["loss"]
  assert [r["step"] for r in lines if "eval_loss" in r] == [100, 200, 300,
                                                            300]

  # keep_checkpoints=2 of the saves at 100, 200, 300.
  ckpt = checkpoint.Checkpointer(checkpoint.checkpoint_dir(tmp_path),
                                 read_only=True)
  assert ckpt.all_steps() == [200, 300]
  ckpt.close()

  # Rerunning a finished run says so and returns its final metrics, without
  # evaluating again or writing a second final line.
  again = train.train_and_evaluate(config, tmp_path)
  assert again == final
  assert metrics_lib.read_metrics(tmp_path) == lines
  # Asking for more steps trains on from the verified latest checkpoint.
  config.train.num_steps = 350
  more = train.train_and_evaluate(config, tmp_path)
  assert more["resumed_from"] == 300 and more["steps"] == 350


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    x32, tmp_path, monkeypatch):
  config = get_config("smoke")
  config.train.checkpoint_every = 50
  bad_from = 120  # batches from this step on have NaN loss weights
  real_batch_fn = train._cached_batch_fn

  def poisoned_batch_fn(task, batch_size):
    make = real_batch_fn(task, batch_size)

    def batch_fn(key, i):
      batch = make(key, i)
      if i >= bad_from:
        batch = dict(batch, weights=batch["weights"] * jnp.float32(jnp.nan))
      return batch
    return batch_fn

  monkeypatch.setattr(train, "_cached_batch_fn", poisoned_batch_fn)
  with pytest.raises(train.NonFiniteError,
                     match=r"non-finite training loss .*step 150.*step 100"):
    train.train_and_evaluate(config, tmp_path)

  ckpt = checkpoint.Checkpointer(checkpoint.checkpoint_dir(tmp_path),
                                 read_only=True)
  assert ckpt.all_steps() == [50, 100]
  ckpt.close()
  params, step = checkpoint.load_params(tmp_path)
  assert step == 100
  assert all(np.isfinite(np.asarray(x)).all()
             for x in jax.tree.leaves(params))
  assert not any(r.get("final") for r in metrics_lib.read_metrics(tmp_path))


def _metrics_oracle(logits, targets, weights, copy):
  """float64 NumPy loss / copy accuracy / exact match of a batch."""
  logits = logits.astype(np.float64)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  B, N, _ = logits.shape
  ce = np.zeros((B, N))
  right = np.zeros((B, N), bool)
  for b in range(B):
    for n in range(N):
      ce[b, n] = -logp[b, n, targets[b, n]]
      right[b, n] = np.argmax(logits[b, n]) == targets[b, n]
  loss = (ce * weights).sum() / weights.sum()
  accuracy = (right & copy).sum() / copy.sum()
  exact = np.mean([all(right[b, n] for n in range(N) if copy[b, n])
                   for b in range(B)])
  return loss, accuracy, exact


def test_loss_and_metrics_match_a_numpy_oracle():
  rng = np.random.default_rng(0)
  B, N, V = 3, 5, 4
  logits = rng.standard_normal((B, N, V)).astype(np.float32)
  targets = rng.integers(0, V, (B, N)).astype(np.int32)
  targets[0, 3:] = np.argmax(logits[0, 3:], -1)  # example 0 copies all right
  copy = np.zeros((B, N), bool)
  copy[:, 3:] = True
  weights = np.ones((B, N), np.float32)
  weights[2, 4] = 0.0  # padding
  batch = {"targets": jnp.asarray(targets), "weights": jnp.asarray(weights),
           "copy_mask": jnp.asarray(copy)}
  got = jax.jit(lambda l, b: train._ratios(train._sums(l, b)))(
      jnp.asarray(logits), batch)
  loss, accuracy, exact = _metrics_oracle(logits, targets, weights, copy)
  np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
  np.testing.assert_allclose(got["accuracy"], accuracy, rtol=1e-6)
  np.testing.assert_allclose(got["exact_match"], exact, rtol=1e-6)
  assert exact >= 1 / 3


def test_optimizer_warms_up_then_decays_by_cosine():
  config = get_config("smoke").train
  config.learning_rate, config.warmup_steps, config.num_steps = 0.1, 10, 30
  config.grad_clip, config.weight_decay = 0.0, 0.0
  opt = train.make_optimizer(config)
  x = {"w": jnp.zeros((), jnp.float32)}
  state = opt.init(x)
  update = jax.jit(opt.update)
  lrs = []
  for _ in range(30):
    # With a constant gradient Adam's bias-corrected step is exactly the lr.
    updates, state = update({"w": jnp.float32(1.0)}, state, x)
    lrs.append(-float(updates["w"]))
  # Warmup: linear from 0; the peak at step 10; cosine to 0 at step 30.
  assert lrs[0] == pytest.approx(0.0, abs=1e-7)
  assert lrs[5] == pytest.approx(0.05, rel=1e-3)
  assert lrs[10] == pytest.approx(0.1, rel=1e-3)
  assert lrs[20] == pytest.approx(0.05, rel=1e-3)
  assert lrs[29] < 0.01


def test_bad_train_settings_name_the_field():
  config = get_config("smoke")
  config.train.batch_size = 0
  with pytest.raises(ValueError, match="train.batch_size"):
    train.train_and_evaluate(config, "/nonexistent/never/created")
  config = get_config("smoke")
  config.train.schedule = "linear"
  with pytest.raises(ValueError, match="train.schedule"):
    train.make_optimizer(config.train)


@pytest.mark.slow  # a traced training run: 10 s
def test_profile_steps_writes_a_jax_profiler_trace(x32, tmp_path):
  config = get_config("smoke")
  config.train.num_steps = 6
  config.train.profile_steps = 2
  train.train_and_evaluate(config, tmp_path)
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  # Off by default: no profile folder.
  config = get_config("smoke")
  config.train.num_steps = 6
  train.train_and_evaluate(config, tmp_path / "plain")
  assert not (tmp_path / "plain" / "profile").exists()
  config.train.profile_steps = -1
  with pytest.raises(ValueError, match="train.profile_steps"):
    train.train_and_evaluate(config, tmp_path / "bad")
