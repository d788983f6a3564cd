"""Tests for jattn.tasks_induction: induction-heads data."""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from jattn import tasks
from tests.test_tasks import assert_batch_interface
from tests.test_tasks import assert_seeded
from tests.test_tasks import make_batch_jit
from tests.test_tasks import scored_right

SMALL = dict(seq_len=12, alphabet_size=4)


@functools.cache
def _batch(**kwargs):
  task = tasks.InductionTask(**{**SMALL, **kwargs})
  batch = make_batch_jit(task, jax.random.key(5), 64)
  return task, {k: np.asarray(v) for k, v in batch.items()}


def solve(inputs_N, task):
  """A NumPy solver from the inputs alone: at the second trigger, the token
  that followed the first one.

  Returns (outputs (N,), (scored position, source position))."""
  outputs = np.zeros_like(inputs_N)
  first, second = np.flatnonzero(inputs_N == task.trigger)
  outputs[second] = inputs_N[first + 1]
  return outputs, (second, first + 1)


def _solve_all(task, batch):
  results = [solve(row, task) for row in batch["inputs"]]
  return np.stack([r[0] for r in results]), [r[1] for r in results]


def test_defaults_layout_and_vocabulary():
  task = tasks.InductionTask()
  assert (task.seq_len, task.length_range, task.alphabet_size) == (
      64, (64, 64), 16)
  assert task.vocab_size == 19 and (task.trigger, task.pad) == (17, 18)
  assert task.baseline_loss == pytest.approx(math.log(16) / 64)
  assert not task.variable_length and task.held_out() is None
  task, batch = _batch()
  assert_batch_interface(batch, 64, 12)
  inputs = batch["inputs"]
  assert np.all(batch["token_mask"])
  assert np.all((inputs == task.trigger).sum(axis=1) == 2)
  assert np.all(inputs[:, -1] == task.trigger)  # the second one ends it
  others = inputs[inputs != task.trigger]
  assert set(others) == {1, 2, 3, 4}
  np.testing.assert_array_equal(batch["copy_mask"][:, -1], True)
  assert batch["copy_mask"].sum() == 64
  firsts = np.argmax(inputs == task.trigger, axis=1)
  assert set(firsts) == set(range(10))  # every position 0 .. N-3


@pytest.mark.parametrize("min_seq_len", [0, 5])
def test_a_numpy_solver_gets_every_answer_right(min_seq_len):
  task, batch = _batch(min_seq_len=min_seq_len)
  assert_batch_interface(batch, 64, 12)
  outputs, _ = _solve_all(task, batch)
  assert scored_right(batch, outputs) == 1.0


def test_variable_lengths_are_right_padded_and_cover_the_range():
  task, batch = _batch(min_seq_len=5)
  assert task.variable_length
  lengths = batch["token_mask"].sum(axis=1)
  assert set(lengths) == set(range(5, 13))
  assert np.all(np.diff(batch["token_mask"].astype(int), axis=1) <= 0)
  rows = np.arange(64)
  assert np.all(batch["inputs"][rows, lengths - 1] == task.trigger)
  assert np.all(batch["copy_mask"][rows, lengths - 1])
  assert np.all(batch["inputs"][~batch["token_mask"]] == task.pad)
  assert np.all(batch["targets"][~batch["token_mask"]] == 0)
  got = float(tasks.batch_baseline_loss(task, batch))
  assert got == pytest.approx(64 * math.log(4) / lengths.sum(), rel=1e-6)
  assert got > task.baseline_loss


def test_the_seed_decides_the_batch():
  assert_seeded(tasks.InductionTask(**SMALL), 32, seed=1)


def test_longer_sequences_put_the_answer_farther_back():
  distance = {}
  for seq_len in (8, 40):
    task, batch = _batch(seq_len=seq_len)
    _, pairs = _solve_all(task, batch)
    distance[seq_len] = np.mean([q - s for q, s in pairs])
    assert min(q - s for q, s in pairs) >= 1
  assert distance[40] > distance[8] + 10


def test_held_out_lengths():
  task = tasks.InductionTask(seq_len=64, ood_max_seq_len=128)
  assert task.held_out() == tasks.InductionTask(seq_len=128, min_seq_len=65,
                                                alphabet_size=16)
  assert task.held_out().held_out() is None
  assert tasks.max_seq_len(task) == 128
  short = tasks.InductionTask(seq_len=64, min_seq_len=32, ood_min_seq_len=8,
                              ood_max_seq_len=31)
  assert short.held_out().length_range == (8, 31)
  assert tasks.max_seq_len(short) == 64
  assert tasks.InductionTask(ood_min_seq_len=100).held_out() is None
  assert tasks.from_config({"name": "induction", "ood_max_seq_len": 128}) == (
      task)


@pytest.mark.parametrize("kwargs,words", [
    (dict(seq_len=2), ["seq_len", ">= 3", "got 2"]),
    (dict(min_seq_len=2), ["min_seq_len", ">= 3", "got 2"]),
    (dict(min_seq_len=13), ["min_seq_len", "<= seq_len=12", "got 13"]),
    (dict(alphabet_size=1), ["alphabet_size", ">= 2", "got 1"]),
    (dict(ood_max_seq_len=12), ["ood_min_seq_len",
                                "<= ood_max_seq_len=12", "got 13"]),
    (dict(min_seq_len=6, ood_min_seq_len=4, ood_max_seq_len=8),
     ["outside the training range 6..12", "got 4..8"]),
    (dict(ood_min_seq_len=2, ood_max_seq_len=4), ["ood_min_seq_len",
                                                  ">= 3"]),
])
def test_invalid_settings_name_the_field(kwargs, words):
  with pytest.raises(ValueError) as info:
    tasks.InductionTask(**{**SMALL, **kwargs})
  for word in words:
    assert word in str(info.value)


def test_no_loop_over_examples():
  task = tasks.InductionTask(**SMALL, min_seq_len=4)
  eqns = lambda b: len(jax.make_jaxpr(
      lambda k: tasks.make_batch(task, k, b))(jax.random.key(0)).eqns)
  assert eqns(2) == eqns(64)
