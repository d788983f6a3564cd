r"""The copy task with self-attention, CNN, TCN and recurrent models.

Run (from the repository root; DIR collects metrics.jsonl and checkpoints,
and rerunning the same command resumes from the latest checkpoint):

  python -m jattn.main --config=configs/copy.py:attention --workdir=/tmp/copy

`:ARG` picks the model: attention (the default when omitted), cnn, tcn
(dilated convolutions), rnn, gru, lstm, the sub-quadratic attention
stacks local (sliding window), linear (elu + 1 features) and performer
(FAVOR+ random features), or smoke (a tiny attention run for
CI, a few seconds). Override any field on the command line, e.g.

  python -m jattn.main --config=configs/copy.py:lstm --workdir=/tmp/lstm \
      --config.task.delay=200 --config.train.num_steps=5000

A misspelt field is an error naming it (the config is locked).

On several devices (GPUs of a host, TPU cores, or fake CPU devices with
XLA_FLAGS=--xla_force_host_platform_device_count=8) `mesh` splits the batch
over "data" (default: every device), the sequence over "seq" (attention
becomes ring attention) and attention heads over "model", e.g.
--config.mesh.data=2 --config.mesh.seq=4 (jattn.parallel.make_mesh).

The task (jattn.tasks): read num_symbols symbols, wait `delay` positions,
write them back after a delimiter; sequences have delay + 2 num_symbols
tokens. Every model has the same width, embedding and classifier and differs
only in its layers, so the comparison is the one of d2l's "Self-Attention and
Positional Encoding" table: attention connects any two positions in one
layer; the plain CNN's receptive field (1 + L (k - 1) = 17 positions here)
cannot reach back 100 positions, so it stays near the memoryless baseline;
the TCN's dilations 1, 3, 9, 27, 81 cover the sequence; recurrent models must
carry the symbols through 100 sequential steps.

Training stops early once the held-out copy accuracy reaches
train.stop_at_accuracy (0.99), so `steps` in the final line measures steps
to solve.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

ARCHITECTURES = ("attention", "cnn", "tcn", "rnn", "gru", "lstm", "local",
                 "linear", "performer", "smoke")


def _task() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "delay": 100,
      "num_symbols": 10,
      "alphabet_size": 8,
      "variant": "fixed",  # "fixed", "variable" or "selective"
      "min_delay": 1,  # smallest delay of the "variable" variant
  })


def _model(kind: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "kind": kind,
      "d_model": 64,
      "num_layers": 2,
      "num_heads": 4,  # attention only
      "d_ff": 128,  # attention only
      "kernel_size": 5,  # cnn / tcn only
      "positional": "rope",  # attention only: rope|sinusoidal|learned
      "causal": False,  # attention and convolutions (recurrences always are)
      "pre_norm": True,  # attention only
      "dropout_rate": 0.0,
      "window": 32,  # local only: query i sees keys |j - i| < window
      "num_features": 64,  # performer only: random features per head
  })


def _mesh() -> ml_collections.ConfigDict:
  # Device mesh axis sizes; -1 = all the devices the other axes leave.
  return ml_collections.ConfigDict({"data": -1, "seq": 1, "model": 1})


def _train() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "seed": 0,
      "batch_size": 16,  # small batches: fewest seconds to solve on a CPU
      "num_steps": 2000,
      "learning_rate": 3e-3,
      "schedule": "cosine",  # linear warmup, then "cosine" or "constant"
      "warmup_steps": 50,
      "weight_decay": 1e-4,
      "grad_clip": 1.0,  # global-norm clipping; 0 = off
      "log_every": 50,
      "eval_every": 50,
      "eval_batches": 8,  # held-out batches of batch_size sequences
      "checkpoint_every": 500,
      "keep_checkpoints": 3,
      "stop_at_accuracy": config_dict.placeholder(float),  # None = never
      "time_budget_s": config_dict.placeholder(float),  # None = no limit
  })


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config for `arg` in ARCHITECTURES (None = "attention")."""
  arg = arg or "attention"
  if arg not in ARCHITECTURES:
    raise ValueError(
        f"arg: expected one of {list(ARCHITECTURES)}, got {arg!r}")
  config = ml_collections.ConfigDict()
  config.task = _task()
  config.model = _model("attention" if arg == "smoke" else arg)
  config.train = _train()
  config.mesh = _mesh()
  config.train.stop_at_accuracy = 0.99
  m, t = config.model, config.train

  if arg == "cnn":
    m.num_layers = 4  # receptive field 1 + 4 * 4 = 17 < delay
  elif arg == "tcn":
    m.kernel_size = 3
    m.num_layers = 5  # dilations 1, 3, 9, 27, 81: receptive field 243
  elif arg in ("rnn", "gru", "lstm"):
    # Depths that bring parameter counts near the attention model's 68k:
    # Elman 4 layers ~36k, GRU 3 layers ~76k, LSTM 2 layers ~68k.
    m.num_layers = {"rnn": 4, "gru": 3, "lstm": 2}[arg]
    t.num_steps = 3000
  elif arg == "smoke":
    config.task.delay = 8
    config.task.num_symbols = 4
    config.task.alphabet_size = 4
    m.d_model, m.num_heads, m.d_ff = 32, 4, 64
    t.batch_size = 32
    t.num_steps = 300
    t.warmup_steps = 20
    t.log_every = 50
    t.eval_every = 100
    t.eval_batches = 2
    t.checkpoint_every = 100
    t.stop_at_accuracy = None
  config.lock()
  return config
