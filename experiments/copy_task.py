"""Which architectures solve the copy task at which delays.

    python experiments/copy_task.py --out experiments/copy/results
    python experiments/copy_task.py --out /tmp/copy --quick          # smoke
    python experiments/copy_task.py --out experiments/copy/results \
        --symbols 5,10,20,40 --symbols-delay 10    # + accuracy vs symbols

For every architecture of configs/copy.py and every delay, trains from the
config with the same step and time budget (compilation included), stopping
at the first evaluation with >= 99% copied-symbol accuracy on held-out
batches, and records final accuracy, steps-to-solve and seconds-to-solve.
Finished runs are read back from their metrics.jsonl, so an interrupted sweep
resumes where it stopped. Writes OUT/copy.md, OUT/copy.json, OUT/accuracy_vs_
delay.png and OUT/gradient_vs_position.png (gradient norm of the copy loss
with respect to each input position, at initialisation and after training),
drawn by `jattn.plot.write_copy_plots` (`python -m jattn.plot OUT` redraws
them from OUT/copy.json).

`--symbols` adds a second sweep at one delay (`--symbols-delay`): accuracy
against the number of symbols to copy, for `--symbols-archs`, under the same
budget (OUT/accuracy_vs_symbols.png and a second table). Fixed-size-state
models (recurrent, linear and Performer attention) must hold every symbol in
their state until it is copied; the table shows where each stops coping.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jattn import analysis
from jattn import metrics as metrics_lib
from jattn import models
from jattn import plot as jattn_plot
from jattn import tasks
from jattn import train

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_config_module():
  spec = importlib.util.spec_from_file_location("copy_config",
                                                ROOT / "configs" / "copy.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_config(arch: str, delay: int, seed: int, args,
               num_symbols: int | None = None):
  config = load_config_module().get_config(arch)
  with config.unlocked():
    config.task.delay = delay
    if num_symbols is not None:
      config.task.num_symbols = num_symbols
    config.train.seed = seed
    config.train.num_steps = args.max_steps
    config.train.time_budget_s = float(args.budget_s)
    config.train.stop_at_accuracy = 0.99
    config.train.checkpoint_every = args.max_steps  # only at the end
    if args.quick:
      config.train.eval_every = config.train.log_every = 25
  return config


def run_dir(out: pathlib.Path, arch, delay, seed, num_symbols=None):
  """runs/ARCH-delayD-seedS (the config's number of symbols) or
  runs/ARCH-delayD-symN-seedS."""
  default = load_config_module().get_config(arch).task.num_symbols
  sym = "" if num_symbols in (None, default) else f"-sym{num_symbols}"
  return out / "runs" / f"{arch}-delay{delay}{sym}-seed{seed}"


def run_one(arch, delay, seed, args, out: pathlib.Path,
            num_symbols=None) -> dict:
  workdir = run_dir(out, arch, delay, seed, num_symbols)
  previous = [r for r in (metrics_lib.read_metrics(workdir)
                          if (workdir / "metrics.jsonl").exists() else [])
              if r.get("final")]
  if previous:
    print(f"{workdir.name}: done before, reading its metrics", flush=True)
    final = previous[-1]
  else:
    final = train.train_and_evaluate(
        run_config(arch, delay, seed, args, num_symbols), workdir)
  solved = final["stopped"] == "stop_at_accuracy"
  if num_symbols is None:
    num_symbols = load_config_module().get_config(arch).task.num_symbols
  row = {"arch": arch, "delay": delay, "seed": seed,
         "num_symbols": num_symbols,
         "eval_accuracy": final["eval_accuracy"],
         "eval_loss": final["eval_loss"],
         "baseline_loss": final["baseline_loss"], "steps": final["steps"],
         "seconds": final["seconds"], "solved": solved,
         "steps_to_solve": final["steps"] if solved else None,
         "seconds_to_solve": final["seconds"] if solved else None,
         "num_params": final["num_params"], "device": final["device"]}
  print(json.dumps(row), flush=True)
  return row


def input_gradient_norms(arch: str, delay: int, params, config) -> np.ndarray:
  """||d copy-loss / d embedded input at position j||, averaged over a batch.

  Returns (N,) for the N input positions.
  """
  task = tasks.from_config(config.task)
  batch = tasks.make_batch(task, jax.random.key(123), 16)
  model = dict(config.model)

  def copy_loss(x_ND, tokens_N, targets_N, copy_N):
    logits = models.apply_embedded(params, x_ND, None, model_config=model)
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, targets_N[:, None], axis=-1)[:, 0]
    return jnp.sum(jnp.where(copy_N, nll, 0.0)) / jnp.sum(copy_N)

  def per_example(tokens_N, targets_N, copy_N):
    x_ND = models.embed(params, tokens_N, model_config=model)
    g_ND = jax.grad(copy_loss)(x_ND, tokens_N, targets_N, copy_N)
    return jnp.linalg.norm(g_ND, axis=-1)

  norms = jax.jit(jax.vmap(per_example))(batch["inputs"], batch["targets"],
                                         batch["copy_mask"])
  return np.asarray(norms.mean(axis=0))


def gradient_study(archs, delay, args, out: pathlib.Path) -> dict:
  """Gradient norms per input position at init and after a run at `delay`."""
  from jattn import checkpoint as checkpoint_lib

  study = {}
  for arch in archs:
    config = run_config(arch, delay, 0, args)
    task = tasks.from_config(config.task)
    init = models.init_model(jax.random.key(0), dict(config.model),
                             task.vocab_size, task.seq_len)
    workdir = out / "runs" / f"{arch}-delay{delay}-seed0"
    trained, step = checkpoint_lib.load_params(workdir)
    study[arch] = {
        "init": input_gradient_norms(arch, delay, init, config).tolist(),
        "trained": input_gradient_norms(arch, delay, trained, config).tolist(),
        "trained_step": step,
    }
  return study


def summarise(rows, key="delay"):
  table = {}
  for row in rows:
    table.setdefault(row["arch"], {}).setdefault(row[key], []).append(row)
  summary = {}
  for arch, by_delay in table.items():
    for delay, runs in sorted(by_delay.items()):
      solved = [r for r in runs if r["solved"]]
      summary.setdefault(arch, {})[delay] = {
          "accuracy_mean": float(np.mean([r["eval_accuracy"] for r in runs])),
          "accuracy_min": float(np.min([r["eval_accuracy"] for r in runs])),
          "solved": f"{len(solved)}/{len(runs)}",
          "steps_to_solve": (float(np.median([r["steps_to_solve"]
                                              for r in solved]))
                             if solved else None),
          "seconds_to_solve": (float(np.median([r["seconds_to_solve"]
                                                for r in solved]))
                               if solved else None),
          "num_params": runs[0]["num_params"],
      }
  return summary


def write_markdown(out, results):
  s = results["summary"]
  delays = results["delays"]
  lines = [
      "# Copy task: accuracy, steps and seconds to solve",
      "",
      f"Device: {results['device']}; {len(results['seeds'])} seed(s) "
      f"{results['seeds']}; budget per run: {results['max_steps']} steps or "
      f"{results['budget_s']:.0f} s wall-clock, compilation included; solved "
      "= first held-out evaluation with >= 99% copied-symbol accuracy. "
      "Cells: mean final accuracy (runs solved) / median steps to solve / "
      "median seconds to solve.",
      "",
      "| architecture (params) | " + " | ".join(f"delay {d}" for d in delays)
      + " |",
      "|---|" + "---|" * len(delays),
  ]
  for arch in results["archs"]:
    cells = []
    for d in delays:
      c = s.get(arch, {}).get(d)
      if c is None:
        cells.append("not run")
        continue
      steps = "-" if c["steps_to_solve"] is None else f"{c['steps_to_solve']:.0f}"
      secs = ("-" if c["seconds_to_solve"] is None
              else f"{c['seconds_to_solve']:.0f} s")
      cells.append(f"{100 * c['accuracy_mean']:.1f}% ({c['solved']}) / "
                   f"{steps} / {secs}")
    params = next(iter(s.get(arch, {}).values()), {}).get("num_params", "?")
    lines.append(f"| {arch} ({params}) | " + " | ".join(cells) + " |")
  lines += ["", "Memoryless baseline cross-entropy 10 ln 8 / (delay + 20): " +
            ", ".join(f"delay {d}: {10 * math.log(8) / (d + 20):.4f}"
                      for d in delays), ""]
  if results.get("symbols"):
    lines += symbols_markdown(results)
  (out / "copy.md").write_text("\n".join(lines) + "\n")


def symbols_markdown(results) -> list[str]:
  """The table of the accuracy-vs-symbols sweep."""
  sweep = results["symbols"]
  counts, s = sweep["num_symbols"], sweep["summary"]
  lines = [
      f"## Accuracy vs number of symbols (delay {sweep['delay']})", "",
      "Same budget and stopping rule; sequences have delay + 2 S tokens. "
      "Cells: mean final accuracy (runs solved) / median steps to solve / "
      "median seconds to solve.", "",
      "| architecture (params) | " + " | ".join(f"S = {n}" for n in counts)
      + " |", "|---|" + "---|" * len(counts)]
  for arch in sweep["archs"]:
    cells = []
    for n in counts:
      c = s.get(arch, {}).get(n)
      if c is None:
        cells.append("not run")
        continue
      steps = ("-" if c["steps_to_solve"] is None
               else f"{c['steps_to_solve']:.0f}")
      secs = ("-" if c["seconds_to_solve"] is None
              else f"{c['seconds_to_solve']:.0f} s")
      cells.append(f"{100 * c['accuracy_mean']:.1f}% ({c['solved']}) / "
                   f"{steps} / {secs}")
    params = next(iter(s.get(arch, {}).values()), {}).get("num_params", "?")
    lines.append(f"| {arch} ({params}) | " + " | ".join(cells) + " |")
  lines += ["", "Chance is 1/8 = 12.5% (alphabet of 8 symbols).", ""]
  return lines


def write_plots(out, results) -> list[str]:
  """OUT/*.png drawn by `jattn.plot.write_copy_plots`; their names."""
  try:
    written = jattn_plot.write_copy_plots(results, out)
  except ImportError as e:  # matplotlib is an optional extra
    print(f"skipping the plots: {e}", file=sys.stderr)
    return []
  return [pathlib.Path(path).name for path in written]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--archs", default="attention,tcn,cnn,gru,lstm,rnn")
  parser.add_argument("--delays", default="10,50,100,200,500")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--max-steps", type=int, default=3000)
  parser.add_argument("--budget-s", type=float, default=120.0)
  parser.add_argument("--gradient-delay", type=int, default=50)
  parser.add_argument("--symbols", default="",
                      help="comma-separated numbers of symbols to copy: a "
                      "second sweep at --symbols-delay")
  parser.add_argument("--symbols-delay", type=int, default=10)
  parser.add_argument("--symbols-archs",
                      default="attention,local,linear,performer,gru,lstm")
  parser.add_argument("--quick", action="store_true",
                      help="two tiny runs for a CI smoke test")
  args = parser.parse_args(argv)
  if args.quick:
    args.archs, args.delays, args.seeds = "attention,gru", "5", "0"
    args.max_steps, args.budget_s, args.gradient_delay = 50, 60.0, 5
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  archs = args.archs.split(",")
  delays = [int(d) for d in args.delays.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  start = time.perf_counter()
  machine = analysis.describe_device()
  rows = [run_one(a, d, s, args, out) for d in delays for a in archs
          for s in seeds]
  results = {"device": machine["device"],
             "load_average": machine["load_average"], "archs": archs,
             "delays": delays, "seeds": seeds, "max_steps": args.max_steps,
             "budget_s": args.budget_s, "rows": rows,
             "summary": summarise(rows)}
  if args.gradient_delay in delays:
    results["gradient_delay"] = args.gradient_delay
    results["gradients"] = gradient_study(archs, args.gradient_delay, args,
                                          out)
  if args.symbols:
    counts = [int(n) for n in args.symbols.split(",")]
    sym_archs = args.symbols_archs.split(",")
    sym_rows = [run_one(a, args.symbols_delay, s, args, out, num_symbols=n)
                for n in counts for a in sym_archs for s in seeds]
    results["symbols"] = {"delay": args.symbols_delay, "num_symbols": counts,
                          "archs": sym_archs, "rows": sym_rows,
                          "summary": summarise(sym_rows, key="num_symbols")}
  results["seconds"] = time.perf_counter() - start
  results["load_average_end"] = analysis.describe_device()["load_average"]
  results["plots"] = write_plots(out, results)
  write_markdown(out, results)
  (out / "copy.json").write_text(json.dumps(results, indent=1, default=str))
  print((out / "copy.md").read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
