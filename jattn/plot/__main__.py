r"""Command line: write the plots of a run's folder as PNGs.

  python -m jattn.plot WORKDIR [--out=DIR] \
      [--config=configs/copy.py:attention --config.task.delay=200 ...]

Writes training_curves.png from WORKDIR/metrics.jsonl, the complexity plots
when WORKDIR holds complexity.json, the copy-task plots when it holds
copy.json, and, given the run's config (the same
--config flags as the training command: the folder does not record them),
attention heatmaps of its latest checkpoint. PNGs go next to the metrics
unless --out says otherwise; their paths are printed, one a line.
"""

from __future__ import annotations

import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from jattn.plot import _mpl
from jattn.plot import workdir as workdir_lib

USAGE = ("usage: python -m jattn.plot WORKDIR [--out=DIR] "
         "[--config=FILE[:ARG] [--config.FIELD=VALUE ...]] [--seed=S]")


def _parse(argv):
  """(workdir, out, config, seed) from argv, with flags of their own (so
  that `main` can run inside another absl program or a test)."""
  values = flags.FlagValues()
  config = config_flags.DEFINE_config_file(
      "config", None, "The run's config, e.g. configs/copy.py:attention "
      "(needed for the attention heatmaps).", flag_values=values,
      lock_config=True)
  out = flags.DEFINE_string("out", None, "Output folder (default: WORKDIR).",
                            flag_values=values)
  seed = flags.DEFINE_integer("seed", 0, "Copy-task example of the heatmaps.",
                              flag_values=values)
  try:
    rest = values(list(argv))
    if len(rest) != 2:
      raise ValueError(f"expected one WORKDIR argument, got {rest[1:]}")
    return rest[1], out.value, config.value, seed.value
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    while isinstance(e, (AttributeError, KeyError)) and e.args and isinstance(
        e.args[0], BaseException):
      e = e.args[0]  # config_flags wraps ConfigDict's errors
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    if "Traceback" in text:  # a config file that raised: keep its message
      text = text.strip().splitlines()[-1]
    raise SystemExit(f"error: {' '.join(text.split())}\n{USAGE}") from None


def main(argv) -> int:
  """Runs the command line `argv` (argv[0] is the program name)."""
  if any(arg in ("-h", "--help", "--helpshort", "--helpfull")
         for arg in argv[1:]):
    print(__doc__.strip() + "\n\n" + USAGE)
    return 0
  workdir, out, config, seed = _parse(argv)
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  try:
    _mpl.pyplot(force_agg=True)  # files only: never open a window
    written = workdir_lib.write_plots(workdir, out=out, config=config,
                                      seed=seed)
  except (FileNotFoundError, ImportError) as e:
    raise SystemExit(f"error: {e}") from None
  for path in written:
    print(path, flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
