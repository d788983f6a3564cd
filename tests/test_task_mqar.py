"""Tests for jattn.tasks_mqar: multi-query associative recall data."""

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

SMALL = dict(num_pairs=4, seq_len=20, num_keys=6, num_values=5)


@functools.cache
def _batch(**kwargs):
  task = tasks.MQARTask(**{**SMALL, **kwargs})
  batch = make_batch_jit(task, jax.random.key(7), 64)
  return task, {k: np.asarray(v) for k, v in batch.items()}


def solve(inputs_N, task):
  """A NumPy solver from the inputs alone: a key followed by a value is a
  pair; any later key is a query, answered with its pair's value.

  Returns (outputs (N,), [(query position, its pair's key position)])."""
  K = task.num_keys
  is_key = (inputs_N >= 1) & (inputs_N <= K)
  is_value = inputs_N > K
  outputs = np.zeros_like(inputs_N)
  value_of, where_of, pairs = {}, {}, []
  for i, token in enumerate(inputs_N):
    if is_key[i] and i + 1 < len(inputs_N) and is_value[i + 1]:
      value_of[token], where_of[token] = inputs_N[i + 1], i
    elif is_key[i]:
      outputs[i] = value_of[token]
      pairs.append((i, where_of[token]))
  return outputs, pairs


def _solve_all(task, batch):
  results = [solve(row, task) for row in batch["inputs"]]
  return np.stack([r[0] for r in results]), [r[1] for r in results]


def test_defaults_layout_and_vocabulary():
  task = tasks.MQARTask()
  assert (task.num_pairs, task.queries, task.seq_len) == (8, 8, 64)
  assert task.vocab_size == 32 + 32 + 1
  assert not task.variable_length and task.held_out() is None
  assert task.baseline_loss == pytest.approx(8 * math.log(32) / 64)
  task, batch = _batch()
  assert_batch_interface(batch, 64, 20)
  prefix = batch["inputs"][:, :8]
  keys, values = prefix[:, 0::2], prefix[:, 1::2]
  assert np.all((keys >= 1) & (keys <= 6))
  assert np.all((values >= 7) & (values <= 11))
  assert all(len(set(row)) == 4 for row in keys)  # distinct keys
  rest = batch["inputs"][:, 8:]
  assert np.all((rest == 0) | ((rest >= 1) & (rest <= 6)))  # blank or key
  assert np.all(batch["copy_mask"] == (batch["inputs"] != 0) & (
      np.arange(20) >= 8))
  assert np.all(batch["copy_mask"].sum(axis=1) == 4)
  assert np.all(batch["token_mask"])
  # Every key and value id is drawn, across the batch.
  assert set(keys.ravel()) == set(range(1, 7))
  assert set(values.ravel()) == set(range(7, 12))


def test_a_numpy_solver_gets_every_query_right():
  for kwargs in ({}, {"num_queries": 2}):
    task, batch = _batch(**kwargs)
    outputs, _ = _solve_all(task, batch)
    assert scored_right(batch, outputs) == 1.0


def test_queries_ask_distinct_keys_in_random_order():
  task, batch = _batch(num_queries=3)
  assert np.all(batch["copy_mask"].sum(axis=1) == 3)
  _, pairs = _solve_all(task, batch)
  orders = set()
  for row in pairs:
    sources = [source for _, source in row]
    assert len(set(sources)) == 3  # each queried pair once
    orders.add(tuple(np.argsort(sources)))
  assert len(orders) == 6  # all 3! orders of the queried pairs occur
  first = {int(np.flatnonzero(row)[0]) for row in batch["copy_mask"]}
  assert len(first) > 3  # the query positions really are random


def test_the_seed_decides_the_batch():
  assert_seeded(tasks.MQARTask(**SMALL), 16, seed=3)


def test_more_pairs_more_keys_and_longer_sequences_farther_queries():
  for num_pairs in (2, 6):
    task, batch = _batch(num_pairs=num_pairs)
    keys = batch["inputs"][:, :2 * num_pairs:2]
    assert all(len(set(row)) == num_pairs for row in keys)
    assert np.all(batch["copy_mask"].sum(axis=1) == num_pairs)
  distance = {}
  for seq_len in (12, 40):
    task, batch = _batch(seq_len=seq_len)
    _, pairs = _solve_all(task, batch)
    distance[seq_len] = np.mean([q - k for row in pairs for q, k in row])
  assert distance[40] > distance[12] + 10


def test_held_out_settings():
  task = tasks.MQARTask(**SMALL, ood_seq_len=40)
  assert task.held_out() == tasks.MQARTask(**{**SMALL, "seq_len": 40})
  assert tasks.max_seq_len(task) == 40
  more = tasks.MQARTask(**SMALL, ood_num_pairs=6)
  assert more.held_out().num_pairs == 6 and more.held_out().seq_len == 20
  assert more.held_out().held_out() is None
  fewer = tasks.MQARTask(**SMALL, num_queries=3, ood_num_pairs=2)
  assert fewer.held_out().queries == 2
  assert tasks.from_config({"name": "mqar", **SMALL,
                            "ood_seq_len": 40}) == task


@pytest.mark.parametrize("kwargs,words", [
    (dict(num_pairs=7), ["num_pairs", "<= num_keys=6", "got 7"]),
    (dict(num_queries=5), ["num_queries", "<= num_pairs=4", "got 5"]),
    (dict(seq_len=11), ["seq_len", ">= 2 num_pairs + num_queries = 12",
                        "got 11"]),
    (dict(num_values=1), ["num_values", ">= 2", "got 1"]),
    (dict(ood_seq_len=20), ["other than the training one"]),
    (dict(ood_num_pairs=7), ["ood_num_pairs", "<= num_keys=6", "got 7"]),
    (dict(ood_seq_len=12, ood_num_pairs=6),
     ["ood_seq_len", ">= 2 ood_num_pairs + num_queries = 18", "got 12"]),
    (dict(num_pairs=2.0), ["num_pairs", "expected a Python int"]),
])
def test_invalid_settings_name_the_field(kwargs, words):
  with pytest.raises((ValueError, TypeError)) as info:
    tasks.MQARTask(**{**SMALL, **kwargs})
  for word in words:
    assert word in str(info.value)


def test_baseline_and_no_loop_over_examples():
  task, batch = _batch()
  got = float(tasks.batch_baseline_loss(task, batch))
  assert got == pytest.approx(task.baseline_loss, rel=1e-6)
  assert task.baseline_loss == pytest.approx(4 * math.log(5) / 20)
  eqns = lambda b: len(jax.make_jaxpr(
      lambda k: tasks.make_batch(task, k, b))(jax.random.key(0)).eqns)
  assert eqns(2) == eqns(64)
