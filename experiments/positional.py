"""Which positional encoding lets attention generalise to unseen delays.

    python experiments/positional.py --out experiments/tasks     # recorded
    python experiments/positional.py --out /tmp/pos --quick       # smoke

Trains `configs/copy.py:attention,variable_copy` (delays 1..100 drawn per
example) once per positional setting: rope, sinusoidal, learned and none
(non-causal), and none with causal attention (the mask alone orders the
positions), each until 99% in-range accuracy or the config's step budget.
Then evaluates each trained model on bands of delays: the training range
and three bands it never saw (101..120, 121..150, 151..200), 8 fresh
batches of 16 each. Writes OUT/positional.json and OUT/positional.md, with
the device and the load average beside every time.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402  pylint: disable=wrong-import-position

from jattn import analysis  # noqa: E402  pylint: disable=wrong-import-position
from jattn import checkpoint  # noqa: E402  pylint: disable=wrong-import-position
from jattn import tasks  # noqa: E402  pylint: disable=wrong-import-position
from jattn import train  # noqa: E402  pylint: disable=wrong-import-position
from jattn.configs import copy as copy_config  # noqa: E402  pylint: disable=wrong-import-position

SETTINGS = (("rope", False), ("sinusoidal", False), ("learned", False),
            ("none", False), ("none", True))
BANDS = ((1, 100), (101, 120), (121, 150), (151, 200))


def _load() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def band_accuracy(params, config, lo: int, hi: int, num_batches: int) -> float:
  """Copied-symbol accuracy of `params` on variable_copy with delays lo..hi."""
  task_config = config.task.copy_and_resolve_references()
  with task_config.unlocked():
    task_config.min_delay, task_config.delay = lo, hi
    task_config.ood_max_delay = 0
  task = tasks.from_config(task_config)
  eval_fn = train.make_eval_fn(dict(config.model), task,
                               config.train.batch_size, num_batches)
  return float(eval_fn(params, jax.random.key(7))["accuracy"])


def run(positional: str, causal: bool, workdir: pathlib.Path,
        quick: bool) -> dict:
  config = copy_config.get_config("attention,variable_copy")
  with config.unlocked():
    config.model.positional, config.model.causal = positional, causal
    if quick:
      config.train.num_steps = 4
      config.train.log_every = config.train.eval_every = 2
      config.train.eval_batches = 1
  before = _load()
  final = train.train_and_evaluate(config, workdir)
  params, _ = checkpoint.load_params(workdir)
  bands = BANDS if not quick else BANDS[:2]
  return {"positional": positional, "causal": causal,
          "steps": final["steps"], "stopped": final["stopped"],
          "seconds": final["seconds"], "num_params": final["num_params"],
          "eval_accuracy": final["eval_accuracy"],
          "bands": [{"delays": [lo, hi],
                     "accuracy": band_accuracy(params, config, lo, hi,
                                               1 if quick else 8)}
                    for lo, hi in bands],
          "load_before": before, "load_after": _load()}


def markdown(results) -> str:
  rows = results["rows"]
  bands = [b["delays"] for b in rows[0]["bands"]] if rows else []
  lines = [
      "| positional encoding | " + " | ".join(
          f"delays {lo}..{hi}" + (" (trained)" if i == 0 else "")
          for i, (lo, hi) in enumerate(bands))
      + " | steps | seconds | load before / after |",
      "|---|" + "---|" * (len(bands) + 3)]
  for r in rows:
    name = r["positional"] + (", causal" if r["causal"] else "")
    cells = [f"{100 * b['accuracy']:.1f}%" for b in r["bands"]]
    lines.append(f"| {name} | " + " | ".join(cells) +
                 f" | {r['steps']} ({r['stopped']}) | {r['seconds']:.1f} | "
                 f"{r['load_before'][0]} / {r['load_after'][0]} |")
  return (f"Device: {results['device']}; seed 0; copied-symbol accuracy, "
          f"{results['eval_batches']} fresh batches of 16 per band; chance "
          "12.5%.\n\n"
          + "\n".join(lines) + "\n")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args(argv)
  machine = analysis.describe_device()
  settings = SETTINGS[:2] if args.quick else SETTINGS
  with tempfile.TemporaryDirectory() as tmp:
    rows = [run(p, c, pathlib.Path(tmp) / f"{p}-{int(c)}", args.quick)
            for p, c in settings]
  results = {"device": machine["device"], "task": "variable_copy",
             "eval_batches": 1 if args.quick else 8, "rows": rows}
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "positional.json").write_text(json.dumps(results, indent=1)
                                            + "\n")
  (args.out / "positional.md").write_text(markdown(results))
  print(markdown(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
