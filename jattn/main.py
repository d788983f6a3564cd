r"""Command line: train a model on the copy task from a config file.

  python -m jattn.main --config=configs/copy.py:attention --workdir=/tmp/copy \
      [--config.task.delay=200 --config.train.num_steps=5000 ...]

On several hosts (TPU pod slices, GPU clusters), run the same command on
every host with --distributed, which calls jax.distributed.initialize()
before JAX touches any device.

The config is locked: an override of a field that does not exist is an error
naming it. Rerunning the same command resumes from WORKDIR's latest
checkpoint. The last line printed is the final summary (eval accuracy vs the
memoryless baseline, steps, seconds, device); the full final metrics are the
last line of WORKDIR/metrics.jsonl.
"""

from __future__ import annotations

import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jattn import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/copy.py:attention.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for metrics.jsonl and checkpoints/ (resumes).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() first (one process per host of a TPU "
    "pod or GPU cluster; arguments come from the environment).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _DISTRIBUTED.value:
    jax.distributed.initialize()  # before anything else touches devices
  print(f"jax {jax.__version__}", flush=True)
  print(_CONFIG.value, flush=True)
  try:
    final = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except train.NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  print(train.summary_line(final), flush=True)


def parse_flags(argv):
  """absl's flag parsing, but a bad --config (an unknown field in an
  override, an unknown config argument) exits with one line naming it."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError, ValueError) as e:  # from config_flags
    while isinstance(e, (AttributeError, KeyError)) and e.args and isinstance(
        e.args[0], BaseException):
      e = e.args[0]  # config_flags wraps ConfigDict's KeyError
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    sys.exit(f"error: bad --config: {' '.join(text.split())}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
