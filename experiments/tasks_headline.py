"""The attention model on the content-dependent copy tasks, as README runs it.

    python experiments/tasks_headline.py --out experiments/tasks
    python experiments/tasks_headline.py --out experiments/tasks \
        --configs attention,copy      # one run, merged into the results

Trains `configs/copy.py:attention` (README's first command),
`configs/copy.py:attention,variable_copy` and
`configs/copy.py:attention,selective_copy` (each until 99% held-out copy
accuracy or its step budget), exactly as the README commands do, and writes
results.json and results.md: accuracy in the training range, accuracy on
delays never seen in training (the held-out setting), steps, seconds, and
the device and the host load beside every time. `--quick` runs a few steps.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jattn import analysis  # noqa: E402  pylint: disable=wrong-import-position
from jattn import train  # noqa: E402  pylint: disable=wrong-import-position
from jattn.configs import copy as copy_config  # noqa: E402  pylint: disable=wrong-import-position

RUNS = ("attention,copy", "attention,variable_copy",
        "attention,selective_copy")
KEYS = ("eval_accuracy", "eval_exact_match", "eval_ood_accuracy",
        "eval_ood_exact_match", "steps", "stopped", "seconds",
        "steps_per_second", "num_params", "ood_task")


def run(arg: str, workdir: pathlib.Path, quick: bool) -> dict:
  config = copy_config.get_config(arg)
  if quick:
    with config.unlocked():
      config.train.num_steps = 4
      config.train.log_every = config.train.eval_every = 2
      config.train.eval_batches = 1
  before = analysis.describe_device()
  final = train.train_and_evaluate(config, workdir / arg.replace(",", "_"))
  after = analysis.describe_device()
  return {"config": arg, "task": config.task.to_dict(),
          "model": config.model.to_dict(),
          **{k: final.get(k) for k in KEYS},
          "device": before["device"], "load_before": before["load_average"],
          "load_after": after["load_average"]}


def markdown(rows) -> str:
  lines = ["| config | training delays | in-range accuracy | held-out delays | "
           "held-out accuracy | steps | seconds | load before / after |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    t = r["task"]
    trained = (f"{t['delay']}" if t["name"] in ("copy", "selective_copy")
               else f"{t['min_delay']}..{t['delay']}")
    ood = r["eval_ood_accuracy"]
    lines.append(
        f"| `{r['config']}` | {trained} | {r['eval_accuracy']:.4f} | "
        f"{t['ood_min_delay']}..{t['ood_max_delay']} | "
        f"{'-' if ood is None else f'{ood:.4f}'} | {r['steps']} "
        f"({r['stopped']}) | {r['seconds']:.1f} | {r['load_before']} / "
        f"{r['load_after']} |")
  device = rows[0]["device"] if rows else ""
  return f"Device: {device}.\n\n" + "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--configs", default=None,
                      help="only these configs (';'-separated), replacing "
                      "their rows in OUT/results.json and keeping the others")
  args = parser.parse_args(argv)
  chosen = args.configs.split(";") if args.configs else list(RUNS)
  with tempfile.TemporaryDirectory() as tmp:
    new = {arg: run(arg, pathlib.Path(tmp), args.quick) for arg in chosen}
  previous = args.out / "results.json"
  old = ({r["config"]: r for r in json.loads(previous.read_text())}
         if args.configs and previous.exists() else {})
  rows = [new.get(arg) or old[arg] for arg in RUNS
          if arg in new or arg in old]
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
  (args.out / "results.md").write_text(markdown(rows))
  print(markdown(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
