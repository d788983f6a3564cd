"""Tests for jattn.tasks: the copying-memory task data (its fixed, variable,
selective and variable selective variants), the task registry
(`from_config`, `make_batch`, `max_seq_len`) and the held-out settings.

`assert_batch_interface`, `assert_seeded` and `scored_right` are shared with
tests/test_task_mqar.py and tests/test_task_induction.py.
"""

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
SEED = {"fixed": 0, "variable": 5, "selective": 9, "selective_variable": 11}


def assert_batch_interface(batch, batch_size, seq_len):
  """The five (B, N) arrays of every task, with their dtypes; weights are
  the token mask, nothing is scored on padding."""
  assert sorted(batch) == sorted(KEYS)
  for name, dtype in zip(KEYS, DTYPES):
    assert batch[name].shape == (batch_size, seq_len), name
    assert batch[name].dtype == dtype, name
  np.testing.assert_array_equal(batch["weights"],
                                batch["token_mask"].astype(np.float32))
  assert not np.any(batch["copy_mask"] & ~batch["token_mask"])
  assert np.all(batch["copy_mask"].sum(axis=1) >= 1)


def assert_seeded(task, batch_size, seed):
  """Same key -> the same batch; another key -> another one."""
  a = _np(make_batch_jit(task, jax.random.key(seed), batch_size))
  b = _np(make_batch_jit(task, jax.random.key(seed), batch_size))
  c = _np(make_batch_jit(task, jax.random.key(seed + 1), batch_size))
  for name in KEYS:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert not np.array_equal(a["inputs"], c["inputs"])
  assert not np.array_equal(a["targets"], c["targets"])
  return a


def scored_right(batch, predicted):
  """The fraction of scored positions a solver's (B, N) outputs get right;
  also checks that they are right (blank) on every other real token."""
  copy, real = batch["copy_mask"], batch["token_mask"]
  np.testing.assert_array_equal(predicted[real & ~copy],
                                batch["targets"][real & ~copy])
  return float(np.mean(predicted[copy] == batch["targets"][copy]))


def solve_copy(inputs_N, task):
  """A NumPy solver of every copy variant from the inputs alone: the symbols
  read before the delimiter, in order, written right after it.

  Returns (outputs (N,), [(scored position, its source position)])."""
  outputs = np.zeros_like(inputs_N)
  delimiter = int(np.flatnonzero(inputs_N == task.delimiter)[0])
  read = inputs_N[:delimiter]
  sources = np.flatnonzero((read >= 1) & (read <= task.alphabet_size))
  scored = delimiter + 1 + np.arange(len(sources))
  outputs[scored] = read[sources]
  return outputs, list(zip(scored, sources))


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
  assert task.variable_length == (variant in ("variable",
                                              "selective_variable"))
  if task.variable_length:
    assert got >= task.baseline_loss
  else:
    assert got == pytest.approx(task.baseline_loss, rel=1e-6)


def test_from_config_accepts_configdict_and_dict():
  cfg = ml_collections.ConfigDict(
      {"delay": 20, "num_symbols": 4, "alphabet_size": 5,
       "variant": "variable", "min_delay": 3})
  task = tasks.from_config(cfg)
  assert task == tasks.CopyTask(20, 4, 5, "variable", 3)
  assert task.held_out() is None  # no ood_* fields: no held-out setting
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


# --------------------------------------------------------------------------
# Well-posed, seeded, knobs that do what they say


@pytest.mark.parametrize("variant", tasks.VARIANTS)
def test_a_numpy_solver_gets_every_scored_position_right(variant):
  task, batch = _task(variant), _batch(variant)
  assert_batch_interface(batch, 64, task.seq_len)
  outputs = np.stack([solve_copy(row, task)[0] for row in batch["inputs"]])
  assert scored_right(batch, outputs) == 1.0


def test_the_seed_decides_the_batch_for_every_variant():
  for variant in tasks.VARIANTS:
    assert_seeded(_task(variant), 64, SEED[variant])


def _mean_distance(task, seed=3, batch_size=32):
  """The mean distance from a scored position back to its source."""
  batch = _np(make_batch_jit(task, jax.random.key(seed), batch_size))
  pairs = [p for row in batch["inputs"] for p in solve_copy(row, task)[1]]
  return np.mean([scored - source for scored, source in pairs])


@pytest.mark.parametrize("variant", ["fixed", "selective"])
def test_a_longer_delay_puts_the_answers_farther_from_their_sources(variant):
  near = _mean_distance(tasks.CopyTask(**dict(SMALL, delay=4),
                                       variant=variant))
  far = _mean_distance(tasks.CopyTask(**dict(SMALL, delay=20),
                                      variant=variant))
  assert far > near + 5  # selective: (20 - 4) / 2 farther on average
  if variant == "fixed":  # every symbol comes back delay + S positions on
    assert (near, far) == (4 + 3, 20 + 3)


def _delays(task, batch):
  """Each example's delay, read off its delimiter."""
  where = np.argmax(batch["inputs"] == task.delimiter, axis=1)
  return where - task.num_symbols + 1


@pytest.mark.parametrize("variant", ["variable", "selective_variable"])
def test_variable_delays_cover_exactly_min_delay_to_delay(variant):
  task = tasks.CopyTask(delay=9, num_symbols=2, alphabet_size=3,
                        variant=variant, min_delay=5)
  batch = _np(make_batch_jit(task, jax.random.key(2), 128))
  delays = _delays(task, batch)
  assert set(delays) == {5, 6, 7, 8, 9}
  np.testing.assert_array_equal(batch["token_mask"].sum(axis=1),
                                delays + 2 * 2)


def test_selective_variable_keeps_the_symbols_before_each_delimiter():
  task = _task("selective_variable")
  batch = _batch("selective_variable")
  delays = _delays(task, batch)
  assert set(delays) == set(range(2, 8))
  first_positions = set()
  for b in range(64):
    inputs = batch["inputs"][b]
    positions = np.flatnonzero((inputs >= 1) & (inputs <= 4))
    assert positions.size == 3 and positions.max() < 3 + delays[b] - 1
    first_positions.add(int(positions[0]))
    want = _oracle(inputs[positions], int(delays[b]), 3, 4, task.seq_len,
                   positions=positions)
    for name in KEYS:
      np.testing.assert_array_equal(batch[name][b], want[name],
                                    err_msg=f"{name}[{b}]")
  assert len(first_positions) > 2


# --------------------------------------------------------------------------
# Held-out settings


def test_held_out_copy_tasks_are_variable_delay_tasks_outside_the_range():
  fixed = tasks.CopyTask(delay=100, ood_max_delay=200)
  assert fixed.held_out() == tasks.CopyTask(
      delay=200, variant="variable", min_delay=101)
  assert fixed.held_out().held_out() is None
  below = tasks.CopyTask(delay=100, ood_min_delay=1, ood_max_delay=99)
  assert below.held_out().delay_range == (1, 99)
  variable = tasks.CopyTask(delay=100, variant="variable", min_delay=1,
                            ood_max_delay=200)
  assert variable.delay_range == (1, 100)
  assert variable.held_out().delay_range == (101, 200)
  selective = tasks.CopyTask(delay=50, variant="selective",
                             ood_min_delay=60, ood_max_delay=80)
  assert selective.held_out() == tasks.CopyTask(
      delay=80, variant="selective_variable", min_delay=60)
  # ood_max_delay = 0 switches it off, whatever ood_min_delay says.
  assert tasks.CopyTask(ood_min_delay=150).held_out() is None
  assert tasks.max_seq_len(fixed) == 220
  assert tasks.max_seq_len(tasks.CopyTask()) == 120
  assert tasks.max_seq_len(below) == 120


@pytest.mark.parametrize("kwargs,words", [
    (dict(delay=100, ood_max_delay=100), ["ood_min_delay",
                                          "expected an int <= ood_max_delay"]),
    (dict(delay=100, ood_min_delay=50, ood_max_delay=150),
     ["outside the training range 100..100", "got 50..150"]),
    (dict(delay=100, variant="variable", min_delay=10, ood_min_delay=5,
          ood_max_delay=20), ["training range 10..100", "got 5..20"]),
    (dict(ood_max_delay=-1), ["ood_max_delay", "got -1"]),
])
def test_held_out_delays_must_miss_the_training_delays(kwargs, words):
  with pytest.raises(ValueError) as info:
    tasks.CopyTask(**kwargs)
  for word in words:
    assert word in str(info.value)


# --------------------------------------------------------------------------
# The registry


@pytest.mark.parametrize("name,cls,variant", [
    ("copy", tasks.CopyTask, "fixed"),
    ("variable_copy", tasks.CopyTask, "variable"),
    ("selective_copy", tasks.CopyTask, "selective"),
    ("mqar", tasks.MQARTask, None),
    ("induction", tasks.InductionTask, None),
])
def test_from_config_picks_the_task_by_name(name, cls, variant):
  task = tasks.from_config(ml_collections.ConfigDict({"name": name}))
  assert type(task) is cls and tasks.from_config({"name": name}) == task
  if variant:
    assert task.variant == variant
  assert name in tasks.TASK_NAMES


def test_from_config_names_what_is_wrong():
  with pytest.raises(ValueError, match="name: expected one of.*'recall'"):
    tasks.from_config({"name": "recall"})
  with pytest.raises(ValueError, match="variant: expected 'selective'"):
    tasks.from_config({"name": "selective_copy", "variant": "fixed"})
  assert tasks.from_config({"name": "variable_copy", "variant": "variable",
                            "min_delay": 3}).min_delay == 3
  # A copy section with its name switched to mqar: the copy fields are
  # unknown to MQAR, and the message says how to pick the task instead.
  with pytest.raises(ValueError) as info:
    tasks.from_config({"name": "mqar", "delay": 100, "num_symbols": 10})
  text = str(info.value)
  assert "task 'mqar'" in text and "['delay', 'num_symbols']" in text
  assert "configs/copy.py:MODEL,TASK" in text


def test_make_batch_accepts_every_task_type_only():
  with pytest.raises(TypeError, match="MQARTask or InductionTask, got dict"):
    tasks.make_batch({"name": "mqar"}, jax.random.key(0), 2)
  with pytest.raises(TypeError, match="task: expected"):
    tasks.max_seq_len("copy")
  with pytest.raises(TypeError, match="task: expected"):
    tasks.batch_baseline_loss(None, {})
