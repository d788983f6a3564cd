"""Training and evaluation on the tasks of `jattn.tasks` (the copy task and
its variants, MQAR, induction heads), with checkpoints and resume.

`train_and_evaluate(config, workdir)` is the whole job: it builds the task
(`jattn.tasks`) and the model (`jattn.models`, used only through
`init_model` / `apply_model`), trains with optax, evaluates on held-out
batches, writes metrics to WORKDIR/metrics.jsonl and checkpoints to
WORKDIR/checkpoints, and returns the final metrics.

Reproducibility. Everything random is a pure function of (config, step):

  data_key, eval_key, dropout_key, init_key = split(key(train.seed), 4)
  training batch of step s   make_batch(task, fold_in(data_key, s), B)
  dropout of step s          fold_in(dropout_key, s), one key per example
  evaluation batches         make_batch(task, fold_in(eval_key, i), B),
                             i < eval_batches (held out: a separate key)
  length-generalisation      make_batch(task.held_out(), fold_in(ood_key, i),
  batches                    B), i < eval_batches, ood_key =
                             fold_in(eval_key, OOD_STREAM)

The state {"step", "params", "opt_state"} is checkpointed whole, so a run
that is interrupted and started again with the same command restores the
latest checkpoint and ends, on the same device, with exactly the parameters
of an uninterrupted run. Nothing in the state depends on wall-clock time or
on how often the run was restarted (only `time_budget_s`, off by default,
makes *where* a run stops depend on time).

Losses and metrics (per batch; evaluation sums over all its batches):

  loss         softmax cross-entropy averaged over real tokens (`weights`)
  accuracy     argmax == target, over the copy positions (`copy_mask`)
  exact_match  fraction of sequences whose copy positions are all right
  grad_norm    global norm of the gradient before clipping
  baseline_loss  the memoryless baseline (`jattn.tasks`), beside every loss

Length generalisation. When the task has a held-out setting outside its
training range (`task.held_out()`: longer delays or sequences, more MQAR
pairs), the run ends by evaluating it too: the final metrics then hold
eval_ood_loss, eval_ood_accuracy and eval_ood_exact_match (with
ood_baseline_loss and ood_task) beside the in-range eval_* ones. It is never
used to stop early. Learned positional tables are sized for the longer of
the two (`jattn.tasks.max_seq_len`), so their rows past the training length
stay untrained.

A non-finite loss (or non-finite parameters) stops the run with
`NonFiniteError` (a FloatingPointError) naming the step; it is checked at
every log, eval and checkpoint step (never every step: that would wait for
the device), so a checkpoint never holds a non-finite state and the last
good one stays on disk.

A resumed run appends to metrics.jsonl, so steps logged after the last
checkpoint of the interrupted run appear twice (same values for the training
metrics, as the data and parameters are the same).

Devices. `config.mesh` (see `jattn.parallel.make_mesh`; default, or when the
config has no `mesh`: every device on "data") picks a mesh. On one device
the loop is the plain single-device one. On several, the state is placed
with `jattn.parallel.param_shardings` (replicated; attention heads split
over "model"), each batch is generated on the host CPU and placed with
`jax.make_array_from_process_local_data` (batch over "data", tokens over
"seq"), the steps are jitted under the mesh (`jax.set_mesh`), where the
model's attention becomes ring attention when "seq" > 1, and jit partitions
the rest. The data, init and dropout keys are the same as on one device, so
a sharded run computes the same steps (up to floating-point summation
order). Multi-host: call `jax.distributed.initialize()` first (README).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import auto as tqdm_auto

from jattn import _checks
from jattn import _compat
from jattn import checkpoint as checkpoint_lib
from jattn import metrics as metrics_lib
from jattn import models
from jattn import parallel
from jattn import run_lock
from jattn import run_record
from jattn import tasks
from jattn import tensorboard as tensorboard_lib

SCHEDULES = ("cosine", "constant")
# fold_in(eval_key, OOD_STREAM) keys the held-out-setting batches; the
# in-range ones use fold_in(eval_key, i) for i < eval_batches.
OOD_STREAM = 2**31 - 1


class NonFiniteError(FloatingPointError):
  """The training loss or parameters became NaN or infinite."""


# --------------------------------------------------------------------------
# Config


def _as_dict(section) -> dict:
  return dict(section.to_dict() if hasattr(section, "to_dict") else section)


def _require(t: dict, names) -> None:
  missing = [n for n in names if n not in t]
  if missing:
    raise ValueError(
        f"train: expected the fields {missing} in the train config, got "
        f"{sorted(t)}")


def _number(t: dict, name: str) -> float:
  value = t[name]
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      value >= 0):
    raise ValueError(f"train.{name}: expected a number >= 0, got {value!r}")
  return float(value)


def _optimizer_settings(train_config) -> dict:
  """The validated optimizer fields of the train section."""
  t = _as_dict(train_config)
  _require(t, ("learning_rate", "warmup_steps", "num_steps", "weight_decay",
               "grad_clip"))
  o = {name: _number(t, name)
       for name in ("learning_rate", "weight_decay", "grad_clip")}
  _checks.check_positive_int(t["num_steps"], "train.num_steps")
  _checks.check_positive_int(t["warmup_steps"], "train.warmup_steps",
                             minimum=0)
  o["num_steps"], o["warmup_steps"] = t["num_steps"], t["warmup_steps"]
  o["schedule"] = t.get("schedule", "cosine")
  if o["schedule"] not in SCHEDULES:
    raise ValueError(
        f"train.schedule: expected one of {list(SCHEDULES)}, got "
        f"{o['schedule']!r}")
  return o


def _train_settings(train_config) -> dict:
  """The validated train section as a plain dict."""
  t = _as_dict(train_config)
  ints = ("batch_size", "log_every", "eval_every", "eval_batches",
          "checkpoint_every", "keep_checkpoints")
  _require(t, ints + ("seed",))
  t.update(_optimizer_settings(t))
  for name in ints:
    _checks.check_positive_int(t[name], f"train.{name}")
  _checks.check_positive_int(t["seed"], "train.seed", minimum=0)
  stop = t.get("stop_at_accuracy")
  if stop is not None and (isinstance(stop, bool) or not 0.0 < stop <= 1.0):
    raise ValueError(
        f"train.stop_at_accuracy: expected None or a number in (0, 1], got "
        f"{stop!r}")
  t["stop_at_accuracy"] = stop
  budget = t.get("time_budget_s")
  if budget is not None and not budget > 0:
    raise ValueError(
        f"train.time_budget_s: expected None or a number > 0, got {budget!r}")
  t["time_budget_s"] = budget
  t["profile_steps"] = t.get("profile_steps", 0)
  _checks.check_positive_int(t["profile_steps"], "train.profile_steps",
                             minimum=0)
  return t


def make_schedule(train_config):
  """The learning rate as a function of the step: linear warmup from 0 to
  learning_rate over warmup_steps, then cosine decay to 0 at num_steps (or
  constant)."""
  o = _optimizer_settings(train_config)
  lr, warmup, steps = o["learning_rate"], o["warmup_steps"], o["num_steps"]
  if o["schedule"] == "cosine" and warmup < steps:
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=steps, end_value=0.0)
  if warmup:
    return optax.linear_schedule(0.0, lr, transition_steps=warmup)
  return optax.constant_schedule(lr)


def make_optimizer(train_config) -> optax.GradientTransformation:
  """AdamW with linear warmup then cosine decay (or constant), and clipping.

  Reads learning_rate (the peak), warmup_steps (linear from 0), num_steps
  (the cosine decays to 0 at num_steps), schedule ("cosine" or "constant"
  after the warmup), weight_decay (AdamW's, on every parameter) and
  grad_clip (global-norm clipping; 0 switches it off) from the train config
  (a ConfigDict or dict).
  """
  o = _optimizer_settings(train_config)
  schedule = make_schedule(o)
  parts = []
  if o["grad_clip"] > 0:
    parts.append(optax.clip_by_global_norm(o["grad_clip"]))
  parts.append(optax.adamw(schedule, weight_decay=o["weight_decay"]))
  return optax.chain(*parts)


def _strong(tree):
  """The same arrays without weak types, so a fresh and a restored state
  compile the same program."""
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), tree)


def init_state(key, model_config, task: tasks.Task,
               optimizer: optax.GradientTransformation) -> dict:
  """{"step": int32 0, "params": init_model(...), "opt_state": ...}.

  The model's max_len is `tasks.max_seq_len(task)`: long enough for the
  held-out setting too.
  """
  params = models.init_model(key, model_config, task.vocab_size,
                             tasks.max_seq_len(task))
  return _strong({"step": jnp.zeros((), jnp.int32), "params": params,
                  "opt_state": optimizer.init(params)})


# --------------------------------------------------------------------------
# Loss, steps, evaluation


def _forward(params, batch, *, model_config, dropout_key, deterministic,
             batch_axis=None):
  """(B, N, V) logits of a batch (apply_model vmapped over examples).

  `batch_axis`: the mesh axis the batch is split over (vmap's
  spmd_axis_name), so that ring attention's shard_map keeps it split.
  """
  inputs_BN = batch["inputs"]
  B = inputs_BN.shape[0]
  apply = functools.partial(models.apply_model, model_config=model_config,
                            deterministic=deterministic)
  vmap = functools.partial(jax.vmap, spmd_axis_name=batch_axis)
  if deterministic:
    return vmap(lambda t, m: apply(params, t, m))(
        inputs_BN, batch["token_mask"])
  keys_B = jax.random.split(dropout_key, B)
  return vmap(lambda t, m, k: apply(params, t, m, dropout_key=k))(
      inputs_BN, batch["token_mask"], keys_B)


def _sums(logits_BNV, batch) -> dict:
  """Sums over a batch from which every metric is a ratio."""
  weights_BN = batch["weights"].astype(jnp.float32)
  copy_BN = batch["copy_mask"]
  ce_BN = optax.softmax_cross_entropy_with_integer_labels(
      logits_BNV.astype(jnp.float32), batch["targets"])
  right_BN = jnp.argmax(logits_BNV, axis=-1) == batch["targets"]
  exact_B = jnp.all(right_BN | ~copy_BN, axis=1)
  return {
      "loss_sum": jnp.sum(ce_BN * weights_BN),
      "weight_sum": jnp.sum(weights_BN),
      "right_sum": jnp.sum((right_BN & copy_BN).astype(jnp.float32)),
      "copy_sum": jnp.sum(copy_BN.astype(jnp.float32)),
      "exact_sum": jnp.sum(exact_B.astype(jnp.float32)),
      "num_seqs": jnp.asarray(exact_B.shape[0], jnp.float32),
  }


def _ratios(sums: dict) -> dict:
  return {
      "loss": sums["loss_sum"] / jnp.maximum(sums["weight_sum"], 1.0),
      "accuracy": sums["right_sum"] / jnp.maximum(sums["copy_sum"], 1.0),
      "exact_match": sums["exact_sum"] / jnp.maximum(sums["num_seqs"], 1.0),
  }


def loss_fn(params, batch, *, model_config, dropout_key=None,
            deterministic=True, batch_axis=None):
  """(mean cross-entropy over real tokens, {"loss", "accuracy", ...})."""
  logits_BNV = _forward(params, batch, model_config=model_config,
                        dropout_key=dropout_key, deterministic=deterministic,
                        batch_axis=batch_axis)
  metrics = _ratios(_sums(logits_BNV, batch))
  return metrics["loss"], metrics


def _global_norm(tree):
  """sqrt of the sum of squares of every leaf (float32)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                      for x in jax.tree.leaves(tree)))


def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _in_mesh(fn, mesh):
  """Jitted `fn` called (and `.lower`ed) with `mesh` as the current mesh
  (no-op for mesh=None)."""
  if mesh is None:
    return fn

  @functools.wraps(fn)
  def call(*args, **kwargs):
    with _compat.use_mesh(mesh):
      return fn(*args, **kwargs)

  def lower(*args, **kwargs):
    with _compat.use_mesh(mesh):
      return fn.lower(*args, **kwargs)

  call.lower = lower
  return call


def _batch_axis(mesh):
  """"data" when the mesh has it (vmap's spmd_axis_name), else None."""
  return "data" if mesh is not None and "data" in mesh.axis_names else None


def make_train_step(model_config, optimizer: optax.GradientTransformation,
                    mesh=None):
  """A jitted `train_step(state, batch, rng) -> (state, metrics)`.

  `state` is donated (its buffers are reused for the new state). `rng` is
  the run's dropout key; the step's key is fold_in(rng, state["step"]), so
  dropout depends on the step only. Metrics: loss, accuracy, exact_match,
  grad_norm (before clipping) and `finite` (the loss and the new params are
  all finite).

  With a `mesh` (`jattn.parallel.make_mesh`) the step runs under it: the
  batch is constrained to `parallel.batch_shardings`, the new state to
  `parallel.param_shardings` (so it comes back laid out like the state
  passed in), and the model sees the mesh (ring attention when "seq" > 1).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  batch_axis = _batch_axis(mesh)

  def train_step(state, batch, rng):
    if mesh is not None:
      batch = parallel.constrain(batch, parallel.batch_shardings(batch, mesh))
    step_key = jax.random.fold_in(rng, state["step"])
    (_, metrics), grads = grad_fn(
        state["params"], batch, model_config=model_config,
        dropout_key=step_key, deterministic=False, batch_axis=batch_axis)
    updates, opt_state = optimizer.update(grads, state["opt_state"],
                                          state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = _strong({"step": state["step"] + 1, "params": params,
                         "opt_state": opt_state})
    if mesh is not None:
      new_state = parallel.constrain(
          new_state, parallel.param_shardings(new_state, mesh))
    metrics = dict(metrics, grad_norm=_global_norm(grads))
    metrics["finite"] = jnp.isfinite(metrics["loss"]) & _all_finite(params)
    return new_state, metrics

  return _in_mesh(jax.jit(train_step, donate_argnums=0), mesh)


def make_batch_fn(task: tasks.Task, batch_size: int):
  """A jitted `batch_fn(key, i) -> make_batch(task, fold_in(key, i), B)`."""
  return jax.jit(lambda key, i: tasks.make_batch(
      task, jax.random.fold_in(key, i), batch_size))


def make_eval_fn(model_config, task: tasks.Task, batch_size: int,
                 num_batches: int, mesh=None):
  """A jitted `eval_fn(params, key) -> {"loss", "accuracy", "exact_match"}`.

  The metrics pool the held-out batches make_batch(task, fold_in(key, i)),
  i < num_batches, generated inside the compiled function (with a `mesh`,
  each one sharded like a training batch).
  """
  def eval_fn(params, key):
    def one(i):
      batch = tasks.make_batch(task, jax.random.fold_in(key, i), batch_size)
      if mesh is not None:
        batch = parallel.constrain(batch,
                                   parallel.batch_shardings(batch, mesh))
      logits_BNV = _forward(params, batch, model_config=model_config,
                            dropout_key=None, deterministic=True,
                            batch_axis=_batch_axis(mesh))
      return _sums(logits_BNV, batch)
    sums = jax.lax.map(one, jnp.arange(num_batches, dtype=jnp.int32))
    return _ratios(jax.tree.map(jnp.sum, sums))
  return _in_mesh(jax.jit(eval_fn), mesh)


# Compiled functions reused by later train_and_evaluate calls with the same
# settings in one process (a notebook rerun, a resume, tests): jit caches by
# function object, so rebuilding them would compile again.
_OPTIMIZER_FIELDS = ("learning_rate", "schedule", "warmup_steps", "num_steps",
                     "weight_decay", "grad_clip")


@functools.lru_cache(maxsize=8)
def _cached_train_step(model_json: str, optimizer_json: str, mesh=None):
  return make_train_step(json.loads(model_json),
                         make_optimizer(json.loads(optimizer_json)), mesh)


@functools.lru_cache(maxsize=8)
def _cached_batch_fn(task: tasks.Task, batch_size: int):
  return make_batch_fn(task, batch_size)


@functools.lru_cache(maxsize=8)
def _cached_eval_fn(model_json: str, task: tasks.Task, batch_size: int,
                    num_batches: int, mesh=None):
  return make_eval_fn(json.loads(model_json), task, batch_size, num_batches,
                      mesh)


def _baseline(task: tasks.Task, batch_fn, key, num_batches: int):
  """The memoryless baseline loss pooled over the evaluation batches."""
  if not task.variable_length:
    return float(task.baseline_loss)
  total = weight = 0.0
  for i in range(num_batches):
    batch = batch_fn(key, i)
    w = float(jnp.sum(batch["weights"]))
    total += float(tasks.batch_baseline_loss(task, batch)) * w
    weight += w
  return total / weight


# --------------------------------------------------------------------------
# The loop


def _host(metrics: dict) -> dict:
  """Device metrics as Python scalars (waits for them)."""
  return {k: np.asarray(v).item() for k, v in jax.device_get(metrics).items()}


def _check_finite(metrics: dict, step: int, last_saved: int | None) -> None:
  if not metrics["finite"]:
    kept = (f"the last good checkpoint is step {last_saved}"
            if last_saved else "no checkpoint was saved")
    raise NonFiniteError(
        f"non-finite training loss or parameters detected at step {step} "
        f"(loss={metrics['loss']}, grad_norm={metrics['grad_norm']}; checked "
        f"at log, eval and checkpoint steps): stopping, {kept}. Try a lower "
        "train.learning_rate or train.grad_clip.")


def _format(record: dict) -> str:
  """'step 100: loss 0.1234 (baseline 0.1733), accuracy 0.51, ...'."""
  parts = []
  for prefix in ("", "eval_"):
    if prefix + "loss" in record:
      parts.append(
          f"{prefix}loss {record[prefix + 'loss']:.4f} (baseline "
          f"{record['baseline_loss']:.4f}), {prefix}accuracy "
          f"{record[prefix + 'accuracy']:.4f}, {prefix}exact_match "
          f"{record[prefix + 'exact_match']:.3f}")
  for name in ("grad_norm", "learning_rate", "steps_per_second"):
    if name in record:
      parts.append(f"{name} {record[name]:.3g}")
  if "eta_s" in record:
    parts.append(f"eta {record['eta_s']:.0f} s")
  return f"step {record['step']}: " + ", ".join(parts)


def _interactive() -> bool:
  """A terminal or a notebook: show a progress bar (plain log lines, with an
  ETA, always go to stdout)."""
  if sys.stderr.isatty():
    return True
  try:
    from IPython import get_ipython  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  shell = get_ipython()
  return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _held_out_metrics(held_out: tasks.Task, model_json: str, params,
                      eval_key, t: dict, mesh) -> dict:
  """The held-out task's eval_ood_{loss, accuracy, exact_match}, with its
  ood_baseline_loss and ood_task (its repr)."""
  B, n = t["batch_size"], t["eval_batches"]
  key = jax.random.fold_in(eval_key, OOD_STREAM)
  eval_fn = _cached_eval_fn(model_json, held_out, B, n, mesh)
  metrics = {"eval_ood_" + k: v
             for k, v in _host(eval_fn(params, key)).items()}
  metrics["ood_baseline_loss"] = _baseline(
      held_out, _cached_batch_fn(held_out, B), key, n)
  metrics["ood_task"] = repr(held_out)
  return metrics


def _mesh_from_config(config, batch_size: int, seq_lens):
  """The mesh of `config.mesh` (default: every device on "data"), or None
  when it has one device. seq_lens: the task's (and its held-out task's)
  sequence lengths, each a multiple of mesh.seq."""
  mesh = parallel.make_mesh(config.mesh if "mesh" in config else None)
  if mesh.size == 1:
    return None
  data = parallel.axis_size(mesh, "data")
  seq = parallel.axis_size(mesh, "seq")
  if batch_size % data:
    raise ValueError(
        f"mesh.data: expected a divisor of train.batch_size={batch_size}, "
        f"got {data}")
  for seq_len, which in zip(seq_lens, ("the task", "the held-out task")):
    if seq_len % seq:
      raise ValueError(
          f"mesh.seq: expected a divisor of the sequence length {seq_len} of "
          f"{which}, got {seq}")
  return mesh


def _describe_mesh(mesh) -> str:
  """'mesh data=2, seq=4, model=1 of 8 cpu devices'."""
  axes = ", ".join(f"{a}={n}" for a, n in zip(mesh.axis_names,
                                              mesh.axis_sizes))
  return f"mesh {axes} of {mesh.size} {jax.default_backend()} devices"


def _batch_source(batch_fn, data_key, mesh):
  """`next_batch(step)`: training batch `step` on the device, or, with a
  mesh, generated on the host CPU and placed by `parallel.shard_batch`
  (`jax.make_array_from_process_local_data`; every process computes the
  same global batch, a pure function of the key and the step)."""
  if mesh is None:
    return lambda step: batch_fn(data_key, step)
  key = jax.device_put(data_key, jax.local_devices(backend="cpu")[0])

  def next_batch(step):
    host = jax.device_get(batch_fn(key, step))
    return parallel.shard_batch(host, mesh, process_local=False)
  return next_batch


def train_and_evaluate(config, workdir) -> dict:
  """Trains the configured model on the configured task; returns the final
  metrics.

  Before anything else: the workdir must be writable (one-line error
  naming it otherwise), no other live run may hold it (`jattn.run_lock`),
  and its run record (WORKDIR/config.json, `jattn.run_record`) must match
  the config up to the resumable fields. A run that already finished (its
  final record matches the latest checkpoint and the config asks for
  nothing more) says so and returns its final metrics without evaluating
  again. Resuming restores the newest checkpoint that passes its integrity
  check (`Checkpointer.restore_verified`).

  Args:
    config: an ml_collections ConfigDict with sections `task`
      (`jattn.tasks.from_config`), `model` (`jattn.models`) and `train`
      (fields in configs/copy.py).
    workdir: folder for metrics.jsonl and checkpoints/; a rerun with the same
      workdir resumes from its latest checkpoint.

  Returns:
    The final metrics object (also the last line of metrics.jsonl):
    {"final": True, "step", "steps", "eval_loss", "eval_accuracy",
    "eval_exact_match", "baseline_loss", "seconds", "steps_per_second",
    "stopped", "resumed_from", "device", "backend", "num_params", "mesh"},
    plus, when the task has a held-out setting (`task.held_out()`),
    "eval_ood_loss", "eval_ood_accuracy", "eval_ood_exact_match",
    "ood_baseline_loss", "ood_task" and "ood_seconds" (the held-out
    evaluation's wall-clock time, compilation included, not in `seconds`).
    `steps` is the number of optimizer steps taken in all, `seconds` the
    wall-clock time of this call (compilation included) up to the end of
    the in-range evaluation, `stopped` why it ended ("num_steps",
    "stop_at_accuracy" or "time_budget_s"), `mesh` the mesh's axis sizes
    ({"data": 1, "seq": 1, "model": 1} on one device).

  Raises:
    NonFiniteError: the loss became NaN or infinite (the last checkpoint with
      a finite state stays on disk).
    run_lock.WorkdirInUse, run_lock.WorkdirNotWritable,
    run_record.ConfigMismatch: see above.
  """
  start_time = time.perf_counter()
  run_lock.check_writable(workdir)
  lock = (run_lock.RunLock(workdir, log=functools.partial(print, flush=True))
          if jax.process_index() == 0 else contextlib.nullcontext())
  with lock:
    run_record.check_or_write(workdir, config)
    done = finished_run(workdir, config)
    if done is not None:
      print(f"jattn.train: the run in {workdir} has finished (step "
            f"{done['step']}, {done['stopped']}); nothing to do", flush=True)
      return done
    return _train_and_evaluate(config, workdir, start_time)


def finished_run(workdir, config) -> dict | None:
  """The final metrics of the run in `workdir` when it has finished and
  `config` asks for nothing more (same or smaller num_steps, the same early
  stop reached), else None."""
  try:
    records = metrics_lib.read_metrics(workdir)
  except FileNotFoundError:
    return None
  finals = [r for r in records if r.get("final")]
  if not finals:
    return None
  final = finals[-1]
  t = _train_settings(config.train)
  directory = checkpoint_lib.checkpoint_dir(workdir)
  if not directory.is_dir():
    return None
  ckpt = checkpoint_lib.Checkpointer(directory, keep=None, read_only=True)
  try:
    latest = ckpt.latest_step()
  finally:
    ckpt.close()
  if latest != final.get("step"):
    return None
  if final.get("stopped") == "num_steps":
    return final if final["step"] >= t["num_steps"] else None
  if final.get("stopped") == "stop_at_accuracy":
    target = t["stop_at_accuracy"]
    return (final if target is not None
            and final.get("eval_accuracy", 0.0) >= target else None)
  return None  # a time budget: a rerun trains on


def compiled_functions(config) -> dict:
  """The jitted functions `train_and_evaluate(config, ...)` runs, from the
  process-wide cache it uses, so that calling them first (a warm-up, a
  timing probe) leaves nothing for the run to compile.

  Returns:
    {"train_step": make_train_step(...), "batch_fn": make_batch_fn(task, B),
    "eval_fn": make_eval_fn(..., eval_batches), "mesh": the run's mesh or
    None on one device, "optimizer_json": the optimizer settings as JSON,
    "settings": the resolved train settings, "task": the task,
    "model_json": the model settings as JSON}.
  """
  t = _train_settings(config.train)
  task = tasks.from_config(config.task)
  held_out = task.held_out()
  B = t["batch_size"]
  mesh = _mesh_from_config(config, B, [task.seq_len] + (
      [held_out.seq_len] if held_out else []))
  model_json = json.dumps(_as_dict(config.model), sort_keys=True)
  optimizer_json = json.dumps(_optimizer_settings(t), sort_keys=True)
  return {"train_step": _cached_train_step(model_json, optimizer_json, mesh),
          "batch_fn": _cached_batch_fn(task, B),
          "eval_fn": _cached_eval_fn(model_json, task, B, t["eval_batches"],
                                     mesh),
          "mesh": mesh, "optimizer_json": optimizer_json, "settings": t,
          "task": task, "model_json": model_json}


def _train_and_evaluate(config, workdir, start_time) -> dict:
  """`train_and_evaluate` once the workdir is checked and held."""
  fns = compiled_functions(config)
  t, task, model_json = fns["settings"], fns["task"], fns["model_json"]
  model_dict = _as_dict(config.model)   # tuples kept (JSON makes lists)
  B, num_steps = t["batch_size"], t["num_steps"]
  held_out = task.held_out()
  mesh = fns["mesh"]
  device = jax.devices()[0]
  where = str(device) if mesh is None else _describe_mesh(mesh)
  print(f"jattn.train: devices {jax.devices()}, training on {where}",
        flush=True)
  model_line = models.describe(model_dict, task.vocab_size,
                               tasks.max_seq_len(task))
  print(f"jattn.train: {model_line}; {task}", flush=True)
  if held_out is not None:
    print(f"jattn.train: held-out evaluation at the end on {held_out}",
          flush=True)

  data_key, eval_key, dropout_key, init_key = jax.random.split(
      jax.random.key(t["seed"]), 4)
  state = init_state(init_key, model_dict, task,
                     make_optimizer(json.loads(fns["optimizer_json"])))
  # Committed to the device like a restored state, so that both hit the same
  # compiled train_step (jit keys its cache on committed-ness too).
  state = jax.device_put(state, device if mesh is None else
                         parallel.param_shardings(state, mesh))
  num_params = models.count_params(state["params"])
  train_step, batch_fn = fns["train_step"], fns["batch_fn"]
  next_batch = _batch_source(batch_fn, data_key, mesh)
  eval_fn = fns["eval_fn"]
  baseline = _baseline(task, batch_fn, eval_key, t["eval_batches"])

  def evaluate(params) -> dict:
    return {"eval_" + k: v for k, v in _host(eval_fn(params, eval_key)).items()}

  ckpt = checkpoint_lib.Checkpointer(
      checkpoint_lib.checkpoint_dir(workdir), save_every=t["checkpoint_every"],
      keep=t["keep_checkpoints"])
  # One metrics file per run: only the first process of a multi-host run
  # writes it.
  writer = metrics_lib.MetricWriter(workdir,
                                    enabled=jax.process_index() == 0)
  bar = profiler = None
  try:
    start = 0
    if ckpt.all_steps():
      state, start = ckpt.restore_verified(
          state, log=functools.partial(print, flush=True))
      if start:
        print(f"jattn.train: resumed from step {start} in {ckpt.directory}",
              flush=True)
    last_saved = start or None
    bar = tqdm_auto.tqdm(total=num_steps, initial=min(start, num_steps),
                         desc="train", disable=not _interactive(),
                         dynamic_ncols=True)
    say = functools.partial(print, flush=True) if bar.disable else bar.write
    stop_acc, budget = t["stop_at_accuracy"], t["time_budget_s"]
    stopped, eval_metrics, eval_step = "num_steps", None, None
    if start and stop_acc is not None and start < num_steps:
      # A run that stopped early stays stopped when rerun.
      eval_metrics, eval_step = evaluate(state["params"]), start
      if eval_metrics["eval_accuracy"] >= stop_acc:
        stopped = "stop_at_accuracy"
    step, metrics = start, None
    tick, tick_step, paused = None, start, 0.0  # paused: eval time to drop
    train_time, train_steps = 0.0, 0
    schedule = make_schedule(t)
    profiler = _StepProfiler(workdir, start + 1, t["profile_steps"], say)
    while step < num_steps and stopped == "num_steps":
      profiler.before(step)
      state, metrics = train_step(state, next_batch(step), dropout_key)
      step += 1
      profiler.after(step, metrics)
      bar.update(1)
      if budget is not None and time.perf_counter() - start_time > budget:
        stopped = "time_budget_s"
      is_log = step % t["log_every"] == 0
      is_eval = step % t["eval_every"] == 0 or step == num_steps
      is_save = step % t["checkpoint_every"] == 0 or step == num_steps
      record = {}
      if is_log or is_eval or is_save or stopped != "num_steps":
        host = _host(metrics)
        _check_finite(host, step, last_saved)
        if is_log:
          now = time.perf_counter()
          if tick is not None:  # the first window holds the compilation
            rate = (step - tick_step) / max(now - tick - paused, 1e-9)
            host["steps_per_second"] = rate
            train_time += now - tick - paused
            train_steps += step - tick_step
            host["eta_s"] = (num_steps - step) / rate
          tick, tick_step, paused = now, step, 0.0
          host["learning_rate"] = float(schedule(step - 1))
          host["wall_time"] = time.time()
          host["elapsed_s"] = now - start_time
          record.update({k: v for k, v in host.items() if k != "finite"})
      if is_eval:
        eval_start = time.perf_counter()
        eval_metrics, eval_step = evaluate(state["params"]), step
        paused += time.perf_counter() - eval_start
        record.update(eval_metrics)
        if stop_acc is not None and eval_metrics["eval_accuracy"] >= stop_acc:
          stopped = "stop_at_accuracy"
      if record:
        record = writer.write({"step": step, **record,
                               "baseline_loss": baseline})
        say(_format(record))
        if "loss" in record:
          bar.set_postfix(loss=f"{record['loss']:.4f}",
                          baseline=f"{baseline:.4f}")
      if is_save or stopped != "num_steps":
        # Save a copy: the next step donates (reuses) the state's buffers.
        ckpt.save(step, jax.tree.map(jnp.copy, state), force=True)
        last_saved = step
    if eval_step != step:
      eval_metrics = evaluate(state["params"])
    seconds = time.perf_counter() - start_time
    if held_out is not None:
      eval_metrics = {**eval_metrics, **_held_out_metrics(
          held_out, model_json, state["params"], eval_key, t, mesh)}
      eval_metrics["ood_seconds"] = (time.perf_counter() - start_time
                                     - seconds)
    final = writer.write({
        "final": True, "step": step, "steps": step, **eval_metrics,
        "baseline_loss": baseline, "seconds": seconds,
        "steps_per_second": (train_steps / train_time if train_time
                             else None), "stopped": stopped,
        "resumed_from": start, "device": where,
        "backend": jax.default_backend(), "num_params": num_params,
        "mesh": parallel.mesh_shape(None, 1) if mesh is None else dict(
            zip(mesh.axis_names, mesh.axis_sizes))})
    writer.write_hparams(tensorboard_lib.flat_hparams(config), final)
  finally:
    if profiler is not None:
      profiler.close()
    if bar is not None:
      bar.close()
    writer.close()
    ckpt.close()
  return final


class _StepProfiler:
  """A `jax.profiler` trace of `num_steps` training steps from step `first`
  (after the compiled first step of this call) into WORKDIR/profile, for
  TensorBoard's profile plugin or Perfetto; nothing when num_steps is 0."""

  def __init__(self, workdir, first: int, num_steps: int, say):
    self.directory = os.path.join(os.fspath(workdir), "profile")
    self.first, self.last = first, first + num_steps
    self.active, self.say = False, say
    self.enabled = num_steps > 0

  def before(self, step: int) -> None:
    if self.enabled and not self.active and step == self.first:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step: int, metrics) -> None:
    if self.active and step >= self.last:
      jax.block_until_ready(metrics)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active, self.enabled = False, False
      self.say(f"jattn.train: profiled steps {self.first + 1}.."
               f"{self.last} into {self.directory}")


def summary_line(final: dict) -> str:
  """One line for the end of a run: eval accuracy vs baseline (and the
  held-out setting's, when there is one), steps, time."""
  held_out = ""
  if "eval_ood_accuracy" in final:
    held_out = (f"; held-out setting accuracy {final['eval_ood_accuracy']:.4f}"
                f" (exact match {final['eval_ood_exact_match']:.4f}), loss "
                f"{final['eval_ood_loss']:.4f} vs baseline "
                f"{final['ood_baseline_loss']:.4f}")
  return (f"final: eval accuracy {final['eval_accuracy']:.4f} on scored "
          f"positions (exact match {final['eval_exact_match']:.4f}), eval loss "
          f"{final['eval_loss']:.4f} vs memoryless baseline "
          f"{final['baseline_loss']:.4f}{held_out}, {final['steps']} steps "
          f"({final['stopped']}), {final['seconds']:.1f} s on "
          f"{final['device']}")
