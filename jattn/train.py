"""Training and evaluation on the copy task, with checkpoints and resume.

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

A non-finite loss (or non-finite parameters) stops the run with
`NonFiniteError` (a FloatingPointError) naming the step; it is checked at
every log, eval and checkpoint step (never every step: that would wait for
the device), so a checkpoint never holds a non-finite state and the last
good one stays on disk.

A resumed run appends to metrics.jsonl, so steps logged after the last
checkpoint of the interrupted run appear twice (same values for the training
metrics, as the data and parameters are the same).
"""

from __future__ import annotations

import functools
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from jattn import _checks
from jattn import checkpoint as checkpoint_lib
from jattn import metrics as metrics_lib
from jattn import models
from jattn import tasks

SCHEDULES = ("cosine", "constant")


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
  return t


def make_optimizer(train_config) -> optax.GradientTransformation:
  """AdamW with linear warmup then cosine decay (or constant), and clipping.

  Reads learning_rate (the peak), warmup_steps (linear from 0), num_steps
  (the cosine decays to 0 at num_steps), schedule ("cosine" or "constant"
  after the warmup), weight_decay (AdamW's, on every parameter) and
  grad_clip (global-norm clipping; 0 switches it off) from the train config
  (a ConfigDict or dict).
  """
  o = _optimizer_settings(train_config)
  lr, warmup, steps = o["learning_rate"], o["warmup_steps"], o["num_steps"]
  if o["schedule"] == "cosine" and warmup < steps:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=steps, end_value=0.0)
  elif warmup:
    schedule = optax.linear_schedule(0.0, lr, transition_steps=warmup)
  else:
    schedule = optax.constant_schedule(lr)
  parts = []
  if o["grad_clip"] > 0:
    parts.append(optax.clip_by_global_norm(o["grad_clip"]))
  parts.append(optax.adamw(schedule, weight_decay=o["weight_decay"]))
  return optax.chain(*parts)


def _strong(tree):
  """The same arrays without weak types, so a fresh and a restored state
  compile the same program."""
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), tree)


def init_state(key, model_config, task: tasks.CopyTask,
               optimizer: optax.GradientTransformation) -> dict:
  """{"step": int32 0, "params": init_model(...), "opt_state": ...}."""
  params = models.init_model(key, model_config, task.vocab_size, task.seq_len)
  return _strong({"step": jnp.zeros((), jnp.int32), "params": params,
                  "opt_state": optimizer.init(params)})


# --------------------------------------------------------------------------
# Loss, steps, evaluation


def _forward(params, batch, *, model_config, dropout_key, deterministic):
  """(B, N, V) logits of a batch (apply_model vmapped over examples)."""
  inputs_BN = batch["inputs"]
  B = inputs_BN.shape[0]
  apply = functools.partial(models.apply_model, model_config=model_config,
                            deterministic=deterministic)
  if deterministic:
    return jax.vmap(lambda t, m: apply(params, t, m))(
        inputs_BN, batch["token_mask"])
  keys_B = jax.random.split(dropout_key, B)
  return jax.vmap(lambda t, m, k: apply(params, t, m, dropout_key=k))(
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
            deterministic=True):
  """(mean cross-entropy over real tokens, {"loss", "accuracy", ...})."""
  logits_BNV = _forward(params, batch, model_config=model_config,
                        dropout_key=dropout_key, deterministic=deterministic)
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


def make_train_step(model_config, optimizer: optax.GradientTransformation):
  """A jitted `train_step(state, batch, rng) -> (state, metrics)`.

  `state` is donated (its buffers are reused for the new state). `rng` is
  the run's dropout key; the step's key is fold_in(rng, state["step"]), so
  dropout depends on the step only. Metrics: loss, accuracy, exact_match,
  grad_norm (before clipping) and `finite` (the loss and the new params are
  all finite).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch, rng):
    step_key = jax.random.fold_in(rng, state["step"])
    (_, metrics), grads = grad_fn(
        state["params"], batch, model_config=model_config,
        dropout_key=step_key, deterministic=False)
    updates, opt_state = optimizer.update(grads, state["opt_state"],
                                          state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = _strong({"step": state["step"] + 1, "params": params,
                         "opt_state": opt_state})
    metrics = dict(metrics, grad_norm=_global_norm(grads))
    metrics["finite"] = jnp.isfinite(metrics["loss"]) & _all_finite(params)
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0)


def make_batch_fn(task: tasks.CopyTask, batch_size: int):
  """A jitted `batch_fn(key, i) -> make_batch(task, fold_in(key, i), B)`."""
  return jax.jit(lambda key, i: tasks.make_batch(
      task, jax.random.fold_in(key, i), batch_size))


def make_eval_fn(model_config, task: tasks.CopyTask, batch_size: int,
                 num_batches: int):
  """A jitted `eval_fn(params, key) -> {"loss", "accuracy", "exact_match"}`.

  The metrics pool the held-out batches make_batch(task, fold_in(key, i)),
  i < num_batches, generated inside the compiled function.
  """
  def eval_fn(params, key):
    def one(i):
      batch = tasks.make_batch(task, jax.random.fold_in(key, i), batch_size)
      logits_BNV = _forward(params, batch, model_config=model_config,
                            dropout_key=None, deterministic=True)
      return _sums(logits_BNV, batch)
    sums = jax.lax.map(one, jnp.arange(num_batches, dtype=jnp.int32))
    return _ratios(jax.tree.map(jnp.sum, sums))
  return jax.jit(eval_fn)


# Compiled functions reused by later train_and_evaluate calls with the same
# settings in one process (a notebook rerun, a resume, tests): jit caches by
# function object, so rebuilding them would compile again.
_OPTIMIZER_FIELDS = ("learning_rate", "schedule", "warmup_steps", "num_steps",
                     "weight_decay", "grad_clip")


@functools.lru_cache(maxsize=8)
def _cached_train_step(model_json: str, optimizer_json: str):
  return make_train_step(json.loads(model_json),
                         make_optimizer(json.loads(optimizer_json)))


@functools.lru_cache(maxsize=8)
def _cached_batch_fn(task: tasks.CopyTask, batch_size: int):
  return make_batch_fn(task, batch_size)


@functools.lru_cache(maxsize=8)
def _cached_eval_fn(model_json: str, task: tasks.CopyTask, batch_size: int,
                    num_batches: int):
  return make_eval_fn(json.loads(model_json), task, batch_size, num_batches)


def _baseline(task: tasks.CopyTask, batch_fn, key, num_batches: int):
  """The memoryless baseline loss pooled over the evaluation batches."""
  if task.variant != "variable":
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
  for name in ("grad_norm", "steps_per_second"):
    if name in record:
      parts.append(f"{name} {record[name]:.3g}")
  return f"step {record['step']}: " + ", ".join(parts)


def train_and_evaluate(config, workdir) -> dict:
  """Trains the configured model on the copy task; returns the final metrics.

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
    "stopped", "resumed_from", "device", "backend", "num_params"}. `steps` is
    the number of optimizer steps taken in all, `seconds` the wall-clock time
    of this call (compilation included), `stopped` why it ended ("num_steps",
    "stop_at_accuracy" or "time_budget_s").

  Raises:
    NonFiniteError: the loss became NaN or infinite (the last checkpoint with
      a finite state stays on disk).
  """
  start_time = time.perf_counter()
  t = _train_settings(config.train)
  task = tasks.from_config(config.task)
  model_dict = _as_dict(config.model)
  model_json = json.dumps(model_dict, sort_keys=True)
  B, num_steps = t["batch_size"], t["num_steps"]
  device = jax.devices()[0]
  print(f"jattn.train: devices {jax.devices()}, training on {device}",
        flush=True)
  model_line = models.describe(model_dict, task.vocab_size, task.seq_len)
  print(f"jattn.train: {model_line}; {task}", flush=True)

  data_key, eval_key, dropout_key, init_key = jax.random.split(
      jax.random.key(t["seed"]), 4)
  optimizer_json = json.dumps(_optimizer_settings(t), sort_keys=True)
  state = init_state(init_key, model_dict, task,
                     make_optimizer(json.loads(optimizer_json)))
  # Committed to the device like a restored state, so that both hit the same
  # compiled train_step (jit keys its cache on committed-ness too).
  state = jax.device_put(state, device)
  num_params = models.count_params(state["params"])
  train_step = _cached_train_step(model_json, optimizer_json)
  batch_fn = _cached_batch_fn(task, B)
  eval_fn = _cached_eval_fn(model_json, task, B, t["eval_batches"])
  baseline = _baseline(task, batch_fn, eval_key, t["eval_batches"])

  def evaluate(params) -> dict:
    return {"eval_" + k: v for k, v in _host(eval_fn(params, eval_key)).items()}

  ckpt = checkpoint_lib.Checkpointer(
      checkpoint_lib.checkpoint_dir(workdir), save_every=t["checkpoint_every"],
      keep=t["keep_checkpoints"])
  writer = metrics_lib.MetricWriter(workdir)
  bar = None
  try:
    start = ckpt.latest_step() or 0
    last_saved = start or None
    if start:
      state = ckpt.restore(state, start)
      print(f"jattn.train: resumed from step {start} in {ckpt.directory}",
            flush=True)
    bar = tqdm.tqdm(total=num_steps, initial=min(start, num_steps),
                    desc="train", disable=not sys.stderr.isatty(),
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
    tick, tick_step = time.perf_counter(), start
    while step < num_steps and stopped == "num_steps":
      state, metrics = train_step(state, batch_fn(data_key, step), dropout_key)
      step += 1
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
          host["steps_per_second"] = (step - tick_step) / (now - tick)
          tick, tick_step = now, step
          record.update({k: v for k, v in host.items() if k != "finite"})
      if is_eval:
        eval_metrics, eval_step = evaluate(state["params"]), step
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
    final = writer.write({
        "final": True, "step": step, "steps": step, **eval_metrics,
        "baseline_loss": baseline, "seconds": seconds,
        "steps_per_second": (step - start) / seconds, "stopped": stopped,
        "resumed_from": start, "device": str(device),
        "backend": jax.default_backend(), "num_params": num_params})
  finally:
    if bar is not None:
      bar.close()
    writer.close()
    ckpt.close()
  return final


def summary_line(final: dict) -> str:
  """One line for the end of a run: eval accuracy vs baseline, steps, time."""
  return (f"final: eval accuracy {final['eval_accuracy']:.4f} on copied "
          f"symbols (exact match {final['eval_exact_match']:.4f}), eval loss "
          f"{final['eval_loss']:.4f} vs memoryless baseline "
          f"{final['baseline_loss']:.4f}, {final['steps']} steps "
          f"({final['stopped']}), {final['seconds']:.1f} s on "
          f"{final['device']}")
