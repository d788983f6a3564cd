"""Tests for jattn.tasks: the copying-memory task data."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import ml_collections
import numpy as np
import pytest

from jattn import tasks

KEYS = ("inputs", "targets", "token_mask", "copy_mask", "weights")
DTYPES = (np.int32, np.int32, np.bool_, np.bool_, np.float32)
SMALL = dict(delay=7, num_symbols=3, alphabet_size=4)
make_batch_jit = jax.jit(tasks.make_batch, static_argnums=(0, 2))
SEED = {"fixed": 0, "variable": 5, "selective": 9}


def _task(variant):
  return tasks.CopyTask(**SMALL, variant=variant, min_delay=2)


@functools.cache
def _batch(variant):
  """A batch of 64 small examples per variant (one compilation each)."""
  return _np(make_batch_jit(_task(variant), jax.random.key(SEED[variant]),
                            64))


def _np(batch):
  return {k: np.asarray(v) for k, v in batch.items()}


def _oracle(symbols, delay, num_symbols, alphabet_size, seq_len,
            positions=None):
  """One example laid out from the docstring's equations with plain loops.

  positions: where the symbols sit in the input (default 0 .. S-1).
  """
  S, A = num_symbols, alphabet_size
  blank, delimiter, pad = 0, A + 1, A + 2
  length = delay + 2 * S
  positions = list(range(S)) if positions is None else list(positions)
  inputs = [blank] * length + [pad] * (seq_len - length)
  for p, s in zip(positions, symbols):
    inputs[p] = s
  inputs[S + delay - 1] = delimiter
  targets = [blank] * seq_len
  copy = [False] * seq_len
  for j, s in enumerate(symbols):
    targets[S + delay + j] = s
    copy[S + delay + j] = True
  token = [i < length for i in range(seq_len)]
  return {"inputs": inputs, "targets": targets, "token_mask": token,
          "copy_mask": copy, "weights": [float(t) for t in token]}


def test_defaults_are_the_classic_task_and_the_baseline_is_10_ln8_over_120():
  task = tasks.CopyTask()
  assert (task.delay, task.num_symbols, task.alphabet_size) == (100, 10, 8)
  assert task.seq_len == 120
  assert task.vocab_size == 11
  assert (task.blank, task.delimiter, task.pad) == (0, 9, 10)
  assert task.baseline_loss == pytest.approx(10 * math.log(8) / 120,
                                             rel=1e-15)
  assert task.baseline_loss == pytest.approx(0.17328679513998632, rel=1e-12)
  other = tasks.CopyTask(delay=500, num_symbols=5, alphabet_size=3)
  assert other.seq_len == 510
  assert other.baseline_loss == pytest.approx(5 * math.log(3) / 510,
                                              rel=1e-15)


@pytest.mark.parametrize("variant", tasks.VARIANTS)
def test_shapes_and_dtypes(variant):
  batch = _batch(variant)
  for name, dtype in zip(KEYS, DTYPES):
    assert batch[name].shape == (64, _task(variant).seq_len), name
    assert batch[name].dtype == dtype, name


def test_jit_equals_eager():
  # Eager dispatch compiles every op separately, so check one variant only.
  eager = _np(tasks.make_batch(_task("fixed"), jax.random.key(0), 64))
  for name in KEYS:
    np.testing.assert_array_equal(_batch("fixed")[name], eager[name],
                                  err_msg=name)


def test_fixed_layout_matches_the_oracle_and_symbols_are_uniform():
  task = _task("fixed")
  batch = _batch("fixed")
  symbols = batch["inputs"][:, :3]
  for b in range(64):
    want = _oracle(symbols[b], 7, 3, 4, task.seq_len)
    for name in KEYS:
      np.testing.assert_array_equal(batch[name][b], want[name],
                                    err_msg=f"{name}[{b}]")
  # The delimiter sits at S + delay - 1 and the copies fill the last S slots.
  assert np.all(batch["inputs"][:, 3 + 7 - 1] == task.delimiter)
  assert np.all(batch["copy_mask"][:, -3:]) and batch["copy_mask"].sum() == 192
  # All A symbols are drawn, nothing else, each roughly 1/A of the time.
  counts = np.bincount(symbols.ravel(), minlength=6)
  assert counts[0] == 0 and counts[5] == 0
  assert np.all(counts[1:5] > 192 / 4 * 0.5)


def test_default_task_layout_positions():
  task = tasks.CopyTask()
  batch = _np(make_batch_jit(task, jax.random.key(1), 2))
  inputs, targets = batch["inputs"], batch["targets"]
  assert np.all((inputs[:, :10] >= 1) & (inputs[:, :10] <= 8))
  assert np.all(inputs[:, 10:109] == 0)
  assert np.all(inputs[:, 109] == 9)
  assert np.all(inputs[:, 110:] == 0)
  assert np.all(targets[:, :110] == 0)
  np.testing.assert_array_equal(targets[:, 110:], inputs[:, :10])
  assert np.all(batch["weights"] == 1.0) and np.all(batch["token_mask"])


def test_same_key_same_batch_different_key_different_batch():
  task = _task("variable")
  a = _batch("variable")
  b = _np(make_batch_jit(task, jax.random.key(5), 64))
  c = _np(make_batch_jit(task, jax.random.key(43), 64))
  for name in KEYS:
    np.testing.assert_array_equal(a[name], b[name])
  assert not np.array_equal(a["inputs"], c["inputs"])
  # Legacy uint32 keys give the same data as typed keys with the same bits.
  legacy = _np(make_batch_jit(task, jax.random.PRNGKey(5), 64))
  np.testing.assert_array_equal(legacy["inputs"], a["inputs"])


def test_variable_delay_masks_padding_and_layout():
  task = _task("variable")
  N, S = task.seq_len, 3
  batch = _batch("variable")
  delays = []
  for b in range(64):
    # Recover this example's delay from its delimiter, then rebuild it.
    where = np.flatnonzero(batch["inputs"][b] == task.delimiter)
    assert where.size == 1
    delay = int(where[0]) - S + 1
    delays.append(delay)
    assert 2 <= delay <= 7
    want = _oracle(batch["inputs"][b, :S], delay, S, 4, N)
    for name in KEYS:
      np.testing.assert_array_equal(batch[name][b], want[name],
                                    err_msg=f"{name}[{b}]")
  # Several delays, both ends of the range included.
  assert {2, 7} <= set(delays) and len(set(delays)) >= 4
  pad = ~batch["token_mask"]
  assert pad.any()
  assert np.all(batch["inputs"][pad] == task.pad)
  assert np.all(batch["targets"][pad] == task.blank)
  assert np.all(batch["weights"][pad] == 0.0)
  assert not np.any(batch["copy_mask"] & pad)
  # Right padding: once padding starts it continues to the end.
  assert np.all(np.diff(batch["token_mask"].astype(int), axis=1) <= 0)
  assert np.all(batch["copy_mask"].sum(axis=1) == S)


def test_selective_copy_layout():
  task = _task("selective")
  N, S = task.seq_len, 3
  batch = _batch("selective")
  first_positions = set()
  for b in range(64):
    inputs = batch["inputs"][b]
    assert inputs[S + 7 - 1] == task.delimiter
    positions = np.flatnonzero((inputs >= 1) & (inputs <= 4))
    assert positions.size == S  # distinct positions, no symbol overwritten
    assert positions.max() < S + 7 - 1
    first_positions.add(int(positions[0]))
    want = _oracle(inputs[positions], 7, S, 4, N, positions=positions)
    for name in KEYS:
      np.testing.assert_array_equal(batch[name][b], want[name],
                                    err_msg=f"{name}[{b}]")
  assert len(first_positions) > 2  # the positions really are random


@pytest.mark.parametrize("variant", tasks.VARIANTS)
def test_batch_baseline_loss(variant):
  task = _task(variant)
  batch = _batch(variant)
  got = float(tasks.batch_baseline_loss(task, batch))
  lengths = batch["token_mask"].sum(axis=1)
  want = 3 * 64 * math.log(4) / lengths.sum()
  assert got == pytest.approx(want, rel=1e-6)
  if variant == "variable":
    assert got >= task.baseline_loss
  else:
    assert got == pytest.approx(task.baseline_loss, rel=1e-6)


def test_from_config_accepts_configdict_and_dict():
  cfg = ml_collections.ConfigDict(
      {"delay": 20, "num_symbols": 4, "alphabet_size": 5,
       "variant": "variable", "min_delay": 3})
  task = tasks.from_config(cfg)
  assert task == tasks.CopyTask(20, 4, 5, "variable", 3)
  assert tasks.from_config({"delay": 20}) == tasks.CopyTask(delay=20)
  assert tasks.from_config(task) is task
  hash(task)  # a static jit argument
  with pytest.raises(dataclasses.FrozenInstanceError):
    task.delay = 3


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(delay=0), ValueError, ["delay", "expected an int >= 1", "got 0"]),
    (dict(delay=2.5), TypeError, ["delay", "expected a Python int"]),
    (dict(num_symbols=0), ValueError, ["num_symbols", "got 0"]),
    (dict(alphabet_size=1), ValueError, ["alphabet_size", ">= 2", "got 1"]),
    (dict(variant="random"), ValueError, ["variant", "'random'", "fixed"]),
    (dict(delay=5, min_delay=6), ValueError, ["min_delay", "delay=5",
                                              "got 6"]),
    (dict(min_delay=0), ValueError, ["min_delay", "got 0"]),
])
def test_invalid_settings_name_the_field(kwargs, error, words):
  with pytest.raises(error) as info:
    tasks.CopyTask(**kwargs)
  for word in words:
    assert word in str(info.value)


def test_bad_arguments():
  with pytest.raises(ValueError, match="task_config.*unknown.*'dealy'"):
    tasks.from_config({"dealy": 3})
  with pytest.raises(TypeError, match="task_config"):
    tasks.from_config(3)
  with pytest.raises(TypeError, match="task: expected a CopyTask"):
    tasks.make_batch({"delay": 3}, jax.random.key(0), 2)
  with pytest.raises(ValueError, match="batch_size"):
    tasks.make_batch(tasks.CopyTask(), jax.random.key(0), 0)


def test_batches_are_generated_without_a_loop_over_examples():
  # The traced program has the same equations whatever the batch size.
  task = tasks.CopyTask(**SMALL, variant="selective")
  eqns = lambda b: len(jax.make_jaxpr(
      lambda k: tasks.make_batch(task, k, b))(jax.random.key(0)).eqns)
  assert eqns(2) == eqns(64)
