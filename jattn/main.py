r"""Command line: train a model on a task from a config file.

  python -m jattn.main --config=configs/copy.py:attention --workdir=/tmp/copy \
      [--config.task.delay=200 --config.train.num_steps=5000 ...]

On several hosts (TPU pod slices, GPU clusters), run the same command on
every host with --distributed, which calls jax.distributed.initialize()
before JAX touches any device. On Cloud TPU and SLURM it finds the
coordinator itself; elsewhere pass --coordinator_address=HOST:PORT
--num_processes=N --process_id=I (or set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID).

The config is locked: an override of a field that does not exist is an error
naming it. Rerunning the same command resumes from WORKDIR's latest
checkpoint. The last line printed is the final summary (eval accuracy vs the
memoryless baseline, steps, seconds, device); the full final metrics are the
last line of WORKDIR/metrics.jsonl.

--config takes a path, or the name of a config shipped in jattn/configs
(`--config=copy.py:attention`), found from any folder.

A user's mistake (a bad flag, config field, config argument or workdir) is
one line on stderr starting with "error:" and exit status 1; --debug shows
the traceback instead.
"""

from __future__ import annotations

import importlib.resources
import os
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
    "pod or GPU cluster).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "--distributed: HOST:PORT of process 0 (default: found by jax on Cloud "
    "TPU / SLURM, or $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "--distributed: the number of processes.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "--distributed: this process's index, 0 .. N-1.")
_DEBUG = flags.DEFINE_bool(
    "debug", False, "Show the traceback of an error instead of one line.")
flags.mark_flags_as_required(["config", "workdir"])

# Errors that mean "the user asked for something invalid": one line.
USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError,
               NotADirectoryError, PermissionError, OSError, RuntimeError)


def fail(message: str) -> None:
  """Exits with one line on stderr."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr,
        flush=True)
  sys.exit(1)


def initialize_distributed() -> None:
  """jax.distributed.initialize() with the flags (None: jax's defaults)."""
  kwargs = {name: value for name, value in (
      ("coordinator_address", _COORDINATOR.value),
      ("num_processes", _NUM_PROCESSES.value),
      ("process_id", _PROCESS_ID.value)) if value is not None}
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as err:
    if _DEBUG.value:
      raise
    fail(f"--distributed: {err} (pass --coordinator_address=HOST:PORT "
         "--num_processes=N --process_id=I, or set JAX_COORDINATOR_ADDRESS, "
         "JAX_NUM_PROCESSES and JAX_PROCESS_ID; on one host, drop "
         "--distributed)")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _DISTRIBUTED.value:
    initialize_distributed()  # before anything else touches devices
  print(f"jax {jax.__version__}", flush=True)
  try:
    config = _CONFIG.value
    config.keys()  # a config that failed to load raises on first use
    text = str(config)
  except (AttributeError, KeyError, ValueError, TypeError, OSError) as err:
    if _DEBUG.value:
      raise
    fail(_config_message(_innermost(err)))
  print(text, flush=True)
  try:
    final = train.train_and_evaluate(config, _WORKDIR.value)
  except USER_ERRORS as err:
    if _DEBUG.value:
      raise
    fail(err)
  print(train.summary_line(final), flush=True)


def _innermost(err: BaseException) -> BaseException:
  """The error config_flags wrapped (it wraps ConfigDict's and the config
  file's errors in AttributeError / KeyError / OSError)."""
  while (isinstance(err, (AttributeError, KeyError, OSError)) and err.args
         and isinstance(err.args[0], BaseException)):
    err = err.args[0]
  if err.__cause__ is not None and "earlier failure" in str(err):
    return _innermost(err.__cause__)
  return err


def _config_message(err: BaseException) -> str:
  text = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
  if isinstance(err, KeyError):
    return (f"bad --config: no field {text} in the config (the config is "
            "locked: check the spelling)")
  if "No such file or directory" in text or isinstance(err, OSError):
    missing = [line.strip() for line in text.splitlines()
               if line.strip().endswith(".py")]
    return (f"bad --config: no config file {missing[0] if missing else text}"
            " (a path such as configs/copy.py[:ARG])")
  if "Traceback" in text:  # a config file that raised: keep its message
    text = text.strip().splitlines()[-1]
  return f"bad --config: {text}"


def shipped_config(name: str) -> str | None:
  """The path of config file `name` shipped in `jattn.configs`, or None."""
  try:
    found = importlib.resources.files("jattn.configs") / name
  except ModuleNotFoundError:
    return None
  return os.fspath(found) if found.is_file() else None


def resolve_config(argv):
  """argv with --config=NAME[:ARG] pointing at the config shipped in
  jattn/configs when NAME is not a file here (so `--config=copy.py:lstm`, and
  README's `--config=configs/copy.py`, work from any folder after a plain
  `pip install`). A path to one's own config file is left alone."""
  out = []
  for arg in argv:
    if arg.startswith("--config=") and not arg.startswith("--config.="):
      value = arg[len("--config="):]
      name, sep, rest = value.partition(":")
      if not os.path.isfile(name):
        shipped = shipped_config(os.path.basename(name))
        if shipped is not None:
          arg = f"--config={shipped}{sep}{rest}"
    out.append(arg)
  return out


def parse_flags(argv):
  """absl's flag parsing, but a bad flag or --config (an unknown field, a
  value of the wrong type, an unknown config argument, a missing config
  file) exits with one line naming it."""
  debug = "--debug" in argv
  argv = resolve_config(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    if debug:
      raise
    text = str(err)
    if "Traceback" in text:  # the config file raised: its own last line
      text = text.strip().splitlines()[-1]
    fail(text)
  except (AttributeError, KeyError, ValueError, TypeError, OSError) as err:
    if debug:
      raise
    fail(_config_message(_innermost(err)))
  return None


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main, flags_parser=parse_flags)
