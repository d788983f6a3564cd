"""Nine architectures on the copy task under equal budgets, 3 seeds each.

    python experiments/sweep.py --out experiments/sweep/results   # recorded
    python experiments/sweep.py --out /tmp/sweep --quick           # smoke

Every architecture of configs/copy.py (attention, local, linear, performer,
cnn, tcn, rnn, gru, lstm) gets its width `d_model` chosen so that its
parameter count is within 10% of the attention model's (the widths and
counts are in the results), then trains on the task at each delay, once per
seed, under two separate budgets:

  steps  the same number of optimizer steps for everyone (`--steps`; the
         learning rate decays over them)
  wall   the same wall-clock seconds for everyone (`--wall-s`, evaluations
         included, compilation not: the probe below compiles first;
         checked after every step; constant learning rate after the
         warm-up), so fast models take more steps

Both stop at the first evaluation (every 50 steps, 8 fresh batches of 16
sequences) with >= 99% copied-symbol accuracy. Before a cell's seeds run,
its time is estimated from a probe (compilation plus `--probe-steps` timed
steps); a cell whose estimate for all seeds exceeds `--max-cell-s` is not
run but listed with its estimate. Writes OUT/sweep.json (every run, the
summaries: mean and sample standard deviation over seeds, the probes, the
cells not run, the device and the load average beside every time),
OUT/sweep.md and the error-bar plots OUT/accuracy_vs_delay_steps.png and
OUT/accuracy_vs_delay_wall.png, drawn by `jattn.plot.write_sweep_plots`
(`python -m jattn.plot OUT` redraws them). Finished runs in OUT/runs are
read back, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position

from jattn import analysis  # noqa: E402  pylint: disable=wrong-import-position
from jattn import models  # noqa: E402  pylint: disable=wrong-import-position
from jattn import parallel  # noqa: E402  pylint: disable=wrong-import-position
from jattn import tasks  # noqa: E402  pylint: disable=wrong-import-position
from jattn import train  # noqa: E402  pylint: disable=wrong-import-position
from jattn.configs import copy as copy_config  # noqa: E402  pylint: disable=wrong-import-position

ARCHS = ("attention", "local", "linear", "performer", "cnn", "tcn", "rnn",
         "gru", "lstm")
ATTENTION_ARCHS = ("attention", "local", "linear", "performer")
MODES = ("steps", "wall")
PARAM_TOLERANCE = 0.10


def _load() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def base_config(arch: str, task: str, delay: int):
  """configs/copy.py's config for `arch` on `task` at `delay` (no held-out
  evaluation: the sweep measures the training setting)."""
  config = copy_config.get_config(f"{arch},{task}")
  with config.unlocked():
    config.task.delay = delay
    config.task.ood_max_delay = 0
  return config


def param_count(config) -> int:
  task = tasks.from_config(config.task)
  return models.num_params(dict(config.model), task.vocab_size,
                           tasks.max_seq_len(task))


def match_width(config, target: int) -> tuple[int, int]:
  """(d_model, params) of the width whose parameter count is closest to
  `target`; attention models keep d_ff = 2 d_model and d_model a multiple
  of 2 num_heads (an even head width for RoPE).

  Raises:
    ValueError: no width brings the count within PARAM_TOLERANCE.
  """
  step = 2 * config.model.num_heads if config.model.kind in ATTENTION_ARCHS else 2
  widths = range(step, 257, step)

  def count(d: int) -> int:
    with config.unlocked():
      config.model.d_model = d
      if config.model.kind in ATTENTION_ARCHS:
        config.model.d_ff = 2 * d
    return param_count(config)

  # The count grows with the width: bisect for the first width at or above
  # the target, then take it or the one before, whichever is closer.
  lo, hi = 0, len(widths) - 1
  while lo < hi:
    mid = (lo + hi) // 2
    if count(widths[mid]) >= target:
      hi = mid
    else:
      lo = mid + 1
  candidates = [(widths[i], count(widths[i])) for i in {max(lo - 1, 0), lo}]
  best = min(candidates, key=lambda dn: (abs(dn[1] - target), dn[0]))
  count(best[0])   # leave the config at the chosen width
  if abs(best[1] - target) > PARAM_TOLERANCE * target:
    raise ValueError(f"target_params: expected a count some width of "
                     f"{config.model.kind} reaches within 10%, got {target}")
  return best


def run_config(arch, task, delay, seed, mode, width, args):
  config = base_config(arch, task, delay)
  with config.unlocked():
    config.model.d_model = width
    if arch in ATTENTION_ARCHS:
      config.model.d_ff = 2 * width
    t = config.train
    t.seed, t.stop_at_accuracy = seed, 0.99
    t.log_every = t.eval_every = 50
    t.eval_batches = 8
    t.keep_checkpoints = 1
    if mode == "steps":
      t.num_steps, t.schedule, t.time_budget_s = args.steps, "cosine", None
    else:
      t.num_steps, t.schedule = 1_000_000, "constant"
      t.time_budget_s = float(args.wall_s)
    t.checkpoint_every = t.num_steps  # only at the end
    if args.quick:
      t.log_every = t.eval_every = 5
      t.eval_batches = 1
  return config


def probe(config, num_steps: int) -> dict:
  """Compilation seconds (train step and evaluation) and seconds per
  training step (the median of `num_steps` timed steps) of `config`'s run.

  It compiles through `train.compiled_functions`, the trainer's own cache,
  so the runs that follow in this process compile nothing: every seed's
  budget is spent on training and evaluating.
  """
  task = tasks.from_config(config.task)
  fns = train.compiled_functions(config)
  optimizer = train.make_optimizer(dict(config.train))
  # Placed like the trainer's state and batches (committed to the device,
  # or sharded over the run's mesh: jit's cache keys on it).
  mesh = fns["mesh"]
  state = train.init_state(jax.random.key(0), dict(config.model), task,
                           optimizer)
  state = jax.device_put(state, jax.devices()[0] if mesh is None else
                         parallel.param_shardings(state, mesh))
  key = jax.random.key(1)

  def batch(i):
    if mesh is None:
      return fns["batch_fn"](key, i)
    host = jax.device_get(fns["batch_fn"](key, i))
    return parallel.shard_batch(host, mesh, process_local=False)

  start = time.perf_counter()
  state, metrics = fns["train_step"](state, batch(0), key)
  jax.block_until_ready((metrics, fns["eval_fn"](state["params"], key)))
  compile_s = time.perf_counter() - start
  times = []
  for i in range(num_steps):
    batch_i = jax.block_until_ready(batch(i + 1))
    start = time.perf_counter()
    state, metrics = fns["train_step"](state, batch_i, key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return {"compile_s": compile_s, "step_s": float(np.median(times)),
          "load_average": _load()}


def estimate_seconds(mode, found, args, num_seeds) -> float:
  """The cell's estimated seconds for all seeds: steps (10% more for the
  evaluations), or the wall-clock budget."""
  if mode == "wall":
    return num_seeds * args.wall_s
  return num_seeds * 1.1 * args.steps * found["step_s"]


def run_one(config, workdir: pathlib.Path, cell: dict) -> dict:
  final = train.train_and_evaluate(config, workdir)
  solved = final["stopped"] == "stop_at_accuracy"
  row = {**cell, "eval_accuracy": final["eval_accuracy"],
         "eval_exact_match": final["eval_exact_match"],
         "eval_loss": final["eval_loss"],
         "baseline_loss": final["baseline_loss"], "steps": final["steps"],
         "seconds": final["seconds"],
         "steps_per_second": final["steps_per_second"],
         "stopped": final["stopped"], "solved": solved,
         "num_params": final["num_params"], "device": final["device"],
         "load_average": _load()}
  print(json.dumps(row), flush=True)
  return row


def summarise(rows) -> dict:
  """{mode: {arch: {delay: mean/std accuracy, solved, steps, seconds}}}."""
  cells = {}
  for r in rows:
    cells.setdefault((r["mode"], r["arch"], r["delay"]), []).append(r)
  summary = {}
  for (mode, arch, delay), runs in sorted(cells.items()):
    acc = np.array([r["eval_accuracy"] for r in runs])
    solved = [r for r in runs if r["solved"]]
    summary.setdefault(mode, {}).setdefault(arch, {})[str(delay)] = {
        "seeds": len(runs),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)) if len(runs) > 1 else 0.0,
        "solved": len(solved),
        "steps_mean": float(np.mean([r["steps"] for r in runs])),
        "steps_to_solve_median": (float(np.median([r["steps"] for r in solved]))
                                  if solved else None),
        "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
        "seconds_max": float(np.max([r["seconds"] for r in runs])),
    }
  return summary


def _cell_text(c) -> str:
  return (f"{100 * c['accuracy_mean']:.1f} ± {100 * c['accuracy_std']:.1f}"
          f" ({c['solved']}/{c['seeds']})")


def accuracy_table(results, mode: str) -> list[str]:
  """Markdown rows: mean ± std accuracy (solved seeds) per arch and delay."""
  delays, s = results["delays"], results["summary"].get(mode, {})
  lines = ["| architecture (d_model, params) | "
           + " | ".join(f"delay {d}" for d in delays) + " |",
           "|---|" + "---|" * len(delays)]
  for arch in results["archs"]:
    w = results["widths"][arch]
    cells = [_cell_text(s[arch][str(d)]) if str(d) in s.get(arch, {})
             else _missing(results, mode, arch, d) for d in delays]
    lines.append(f"| {arch} ({w['d_model']}, {w['num_params']:,}) | "
                 + " | ".join(cells) + " |")
  return lines


def _missing(results, mode, arch, delay) -> str:
  for c in results["not_run"]:
    if (c["mode"], c["arch"], c["delay"]) == (mode, arch, delay):
      return f"not run (est. {c['estimated_s']:.0f} s)"
  return "not run"


def steps_table(results, mode: str) -> list[str]:
  """Markdown rows: mean steps taken / mean seconds per run."""
  delays, s = results["delays"], results["summary"].get(mode, {})
  lines = ["| architecture | " + " | ".join(f"delay {d}" for d in delays)
           + " |", "|---|" + "---|" * len(delays)]
  for arch in results["archs"]:
    cells = []
    for d in delays:
      c = s.get(arch, {}).get(str(d))
      cells.append("not run" if c is None else
                   f"{c['steps_mean']:.0f} / {c['seconds_mean']:.1f} s")
    lines.append(f"| {arch} | " + " | ".join(cells) + " |")
  return lines


def budget_text(results, mode: str) -> str:
  if mode == "steps":
    return f"{results['steps']} steps each"
  return f"{results['wall_s']:.0f} s of wall-clock each (compiled beforehand)"


def markdown(results) -> str:
  """sweep.md: one accuracy table and one steps/seconds table per budget."""
  lines = [
      "# Copy task: nine architectures under equal budgets", "",
      f"Device: {results['device']}; load average {results['load_start']} at "
      f"the start, {results['load_end']} at the end; seeds "
      f"{results['seeds']}. Parameter counts matched within 10% of "
      f"{results['target_params']:,} (the attention model's).",
      ""]
  for mode in results["modes"]:
    lines += [f"## Budget: {budget_text(results, mode)}", "",
              "Copy accuracy on fresh batches (%), mean ± sample std over seeds "
              "(seeds that reached 99%):", ""]
    lines += accuracy_table(results, mode)
    lines += ["", "Mean steps taken / mean seconds per run:", ""]
    lines += steps_table(results, mode)
    lines.append("")
  if results["not_run"]:
    lines += ["## Cells not run (estimated time over the limit)", "",
              f"Limit: {results['max_cell_s']:.0f} s per cell (all seeds); "
              "estimate = seeds x 1.1 x steps x probed seconds per step "
              "(the 10% for evaluations).", "",
              "| budget | architecture | delay | probed s/step | estimated s |",
              "|---|---|---|---|---|"]
    for c in results["not_run"]:
      lines.append(f"| {c['mode']} | {c['arch']} | {c['delay']} | "
                   f"{c['step_s']:.4f} | {c['estimated_s']:.0f} |")
    lines.append("")
  lines += ["Chance is 1/8 = 12.5%; the memoryless baseline cross-entropy "
            "10 ln 8 / (delay + 20) is "
            + ", ".join(f"{10 * math.log(8) / (d + 20):.4f} (delay {d})"
                        for d in results["delays"]) + ".", ""]
  return "\n".join(lines)


def write_plots(out, results) -> list[str]:
  try:
    from jattn import plot as jattn_plot  # noqa: PLC0415
    written = jattn_plot.write_sweep_plots(results, out)
  except ImportError as e:  # matplotlib is an optional extra
    print(f"skipping the plots: {e}", file=sys.stderr)
    return []
  return [pathlib.Path(path).name for path in written]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--archs", default=",".join(ARCHS))
  parser.add_argument("--task", default="copy",
                      choices=("copy", "variable_copy", "selective_copy"))
  parser.add_argument("--delays", default="10,100,200")
  parser.add_argument("--wall-delays", default=None,
                      help="delays of the wall-clock budget (default: "
                      "--delays)")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--modes", default="steps,wall")
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--wall-s", type=float, default=20.0)
  parser.add_argument("--max-cell-s", type=float, default=600.0)
  parser.add_argument("--probe-steps", type=int, default=5)
  parser.add_argument("--quick", action="store_true",
                      help="tiny runs for a CI smoke test")
  args = parser.parse_args(argv)
  if args.quick:
    args.archs, args.delays, args.seeds = "attention,gru", "5", "0,1"
    args.steps, args.wall_s, args.probe_steps = 10, 3.0, 2
  archs = args.archs.split(",")
  unknown = sorted(set(archs) - set(ARCHS))
  if unknown:
    parser.error(f"--archs: expected names from {list(ARCHS)}, got {unknown}")
  modes = args.modes.split(",")
  delays = [int(d) for d in args.delays.split(",")]
  wall_delays = ([int(d) for d in args.wall_delays.split(",")]
                 if args.wall_delays else delays)
  seeds = [int(s) for s in args.seeds.split(",")]
  args.out.mkdir(parents=True, exist_ok=True)
  machine = analysis.describe_device()
  start = time.perf_counter()

  target = param_count(base_config("attention", args.task, max(delays)))
  widths = {}
  for arch in archs:
    d, n = match_width(base_config(arch, args.task, max(delays)), target)
    widths[arch] = {"d_model": d, "num_params": n,
                    "relative_to_target": n / target - 1}
  print(json.dumps({"target_params": target, "widths": widths}), flush=True)

  rows, probes, not_run = [], [], []
  for mode in modes:
    for delay in (delays if mode == "steps" else wall_delays):
      for arch in archs:
        cell = {"mode": mode, "arch": arch, "delay": delay,
                "d_model": widths[arch]["d_model"]}
        config = run_config(arch, args.task, delay, seeds[0], mode,
                            widths[arch]["d_model"], args)
        found = {**cell, **probe(config, args.probe_steps)}
        found["estimated_s"] = estimate_seconds(mode, found, args, len(seeds))
        probes.append(found)
        if found["estimated_s"] > args.max_cell_s:
          print(f"not run (estimated {found['estimated_s']:.0f} s): "
                f"{json.dumps(cell)}", flush=True)
          not_run.append(found)
          continue
        for seed in seeds:
          workdir = args.out / "runs" / f"{mode}-{arch}-delay{delay}-seed{seed}"
          config = run_config(arch, args.task, delay, seed, mode,
                              widths[arch]["d_model"], args)
          rows.append(run_one(config, workdir, {**cell, "seed": seed}))

  results = {
      "device": machine["device"], "load_start": machine["load_average"],
      "load_end": _load(), "task": args.task, "archs": archs,
      "delays": sorted(set(delays) | set(wall_delays)),
      "modes": modes, "seeds": seeds,
      "steps": args.steps, "wall_s": args.wall_s,
      "max_cell_s": args.max_cell_s, "target_params": target,
      "widths": widths, "rows": rows, "probes": probes, "not_run": not_run,
      "summary": summarise(rows), "seconds": time.perf_counter() - start,
      "command": " ".join(["python", "experiments/sweep.py"]
                          + list(sys.argv[1:] if argv is None else argv))}
  (args.out / "sweep.json").write_text(json.dumps(results, indent=1) + "\n")
  results["plots"] = write_plots(args.out, results)
  (args.out / "sweep.json").write_text(json.dumps(results, indent=1) + "\n")
  (args.out / "sweep.md").write_text(markdown(results))
  print(markdown(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
