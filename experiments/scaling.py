"""Weak and strong scaling of the copy-task train step over 1, 2, 4, 8 devices.

    python experiments/scaling.py --out experiments/scaling/results
    python experiments/scaling.py --out /tmp/scaling --quick      # smoke
    python experiments/scaling.py --report OUT/scaling.json       # tables

Each device count runs in its own subprocess, because XLA reads XLA_FLAGS
(--xla_force_host_platform_device_count=p, for p fake CPU devices) only when
JAX starts. On a host with p real GPUs or TPU cores the subprocess uses the
first p of them instead (--real). Per device count p it measures, on the
self-attention model of configs/copy.py (d = 64, 2 layers, 4 heads, RoPE):

  data parallelism  mesh data=p: strong (global batch 32) and weak (8 per
                    device) scaling at N = 120 tokens (delay 100);
  sequence          mesh seq=p (ring attention): strong (N = 1024) and weak
  parallelism       (N = 256 per device) scaling, batch 2;

the median time of a jitted train step (forward, backward, AdamW; the batch
already placed; compilation timed apart), its per-device memory (XLA's
compiled memory analysis), and the longest sequence whose train step fits a
per-device memory budget on a seq=p mesh (per-device memory is nearly affine
in N / p: the line through the two seq cases is aimed at 93% of the budget,
that length compiled, and corrected by the secant until one fits).
Writes OUT/scaling.json and OUT/scaling.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEVICE_COUNTS = (1, 2, 4, 8)
MEMORY_BUDGET = 256 * 2**20  # bytes per device for "longest sequence"


def cases(p: int, quick: bool):
  """(mode, regime, mesh, batch size, sequence length) for p devices."""
  n_seq = 256 if quick else 1024
  per_device = 96 if quick else 384  # != n_seq / p: two memory probes
  return [
      ("data", "strong", {"data": p}, 32, 120),
      ("data", "weak", {"data": p}, 8 * p, 120),
      ("seq", "strong", {"data": 1, "seq": p}, 2, n_seq),
      ("seq", "weak", {"data": 1, "seq": p}, 2, per_device * p),
  ]


# ---------------------------------------------------------------------------
# Worker: one device count, in a fresh process.


def _config(batch: int, seq_len: int, mesh: dict):
  spec = importlib.util.spec_from_file_location("copy_config",
                                                ROOT / "configs" / "copy.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("attention")
  with config.unlocked():
    config.task.delay = seq_len - 2 * config.task.num_symbols
    config.train.batch_size = batch
    config.mesh.update({"data": 1, "seq": 1, "model": 1, **mesh})
  return config


def worker(p: int, quick: bool, steps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jattn import analysis  # pylint: disable=g-import-not-at-top
  from jattn import models  # pylint: disable=g-import-not-at-top
  from jattn import parallel  # pylint: disable=g-import-not-at-top
  from jattn import tasks  # pylint: disable=g-import-not-at-top
  from jattn import train  # pylint: disable=g-import-not-at-top

  if jax.device_count() < p:
    raise SystemExit(f"need {p} devices, JAX sees {jax.device_count()}")
  base = _config(8, 120, {})
  model = base.model.to_dict()
  optimizer = train.make_optimizer(base.train)
  task = tasks.from_config(base.task)
  # RoPE models have no length-dependent params: one init for every case.
  params = models.init_model(jax.random.key(0), model, task.vocab_size,
                             task.seq_len)
  state0 = {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": optimizer.init(params)}
  rng = jax.random.key(1)

  def place(state, mesh):
    state = jax.tree.map(jnp.copy, state)
    if mesh is None:
      return jax.device_put(state, jax.devices()[0])
    return jax.device_put(state, parallel.param_shardings(state, mesh))

  def make(mesh_spec, batch, seq_len):
    config = _config(batch, seq_len, mesh_spec)
    task = tasks.from_config(config.task)
    mesh = parallel.make_mesh(config.mesh)
    mesh = None if mesh.size == 1 else mesh
    step = train.make_train_step(model, optimizer, mesh)
    host = jax.device_get(train.make_batch_fn(task, batch)(rng, 0))
    if mesh is None:
      placed = jax.device_put(host, jax.devices()[0])
    else:
      placed = parallel.shard_batch(host, mesh, process_local=False)
    return step, mesh, placed

  def compile_case(mesh_spec, batch, seq_len):
    """(compiled step, its per-device bytes, state, batch, seconds)."""
    step, mesh, batch_arrays = make(mesh_spec, batch, seq_len)
    state = place(state0, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch_arrays, rng).compile()
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    used = int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    return compiled, used, state, batch_arrays, seconds

  rows, probes = [], {}
  for mode, regime, mesh_spec, batch, seq_len in cases(p, quick):
    step, used, state, batch_arrays, compile_s = compile_case(
        mesh_spec, batch, seq_len)
    if mode == "seq":
      probes[seq_len] = used
    state, metrics = step(state, batch_arrays, rng)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = step(state, batch_arrays, rng)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    rows.append({
        "devices": p, "mode": mode, "regime": regime,
        "mesh": parallel.mesh_shape(mesh_spec, p), "batch": batch,
        "seq_len": seq_len, "step_s": step_s, "step_s_min": min(times),
        "tokens_per_s": batch * seq_len / step_s, "compile_s": compile_s,
        "bytes_per_device": used, "loss": float(metrics["loss"])})
    print(f"p={p} {mode:4s} {regime:6s} B={batch:3d} N={seq_len:5d}: "
          f"{1e3 * step_s:8.1f} ms/step, compile {compile_s:.1f} s, "
          f"{used / 2**20:.1f} MiB/device", flush=True)

  # Longest sequence within MEMORY_BUDGET per device (seq=p mesh, batch
  # 2): per-device memory is nearly affine in N (slightly convex); aim the
  # line through the last two compiled lengths at 93% of the budget, compile
  # there, and stop at the first length that fits (so the result is within
  # about 10% of the true longest).
  (n_a, m_a), (n_b, m_b) = sorted(probes.items())
  longest, fits = None, False
  for _ in range(3):
    target = 0.93 * MEMORY_BUDGET
    n = int(n_b + (target - m_b) * (n_b - n_a) / (m_b - m_a))
    n = max(8 * p, n // (8 * p) * (8 * p))
    used = compile_case({"data": 1, "seq": p}, 2, n)[1]
    probes[n] = used
    print(f"p={p}: N={n}: {used / 2**20:.1f} MiB/device", flush=True)
    if used <= MEMORY_BUDGET:
      longest, fits = n, True
      break
    (n_a, m_a), (n_b, m_b) = (n_b, m_b), (n, used)
  memory = {"devices": p, "budget_bytes": MEMORY_BUDGET, "batch": 2,
            "measured": {str(n): b for n, b in sorted(probes.items())},
            "longest_seq_len": longest, "fits": fits}
  machine = analysis.describe_device()
  return {"devices": p, "rows": rows, "memory": memory,
          "device": machine["device"], "device_kind": machine["device_kind"],
          "platform": machine["platform"], "jax": jax.__version__}


# ---------------------------------------------------------------------------
# Driver.


def run_all(args) -> dict:
  # The host half of `analysis.describe_device` (the workers name their
  # devices): the driver initialises no JAX backend, so it holds no device
  # memory the workers need.
  sys.path.insert(0, str(ROOT))
  from jattn.analysis import machine as machine_lib  # pylint: disable=g-import-not-at-top

  results = {"machine": {"python": platform.python_version(),
                         "cpu": machine_lib.cpu_model(),
                         "cpu_count": os.cpu_count(),
                         "load_before": machine_lib.load_average(),
                         "fake_devices": not args.real},
             "memory_budget_bytes": MEMORY_BUDGET, "runs": []}
  start = time.perf_counter()
  for p in args.devices:
    env = dict(os.environ)
    if not args.real:
      flags = [f for f in env.get("XLA_FLAGS", "").split()
               if "xla_force_host_platform_device_count" not in f]
      env["XLA_FLAGS"] = " ".join(
          flags + [f"--xla_force_host_platform_device_count={p}"])
      env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, __file__, "--worker", str(p), "--steps",
               str(args.steps)] + (["--quick"] if args.quick else [])
    print(f"--- {p} device(s): {' '.join(command)}", flush=True)
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=args.timeout)
    sys.stdout.write(proc.stdout)
    if proc.returncode:
      sys.stderr.write(proc.stderr[-4000:])
      raise SystemExit(f"worker for {p} devices failed")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    results["runs"].append(json.loads(line[len("RESULT "):]))
  results["machine"]["load_after"] = machine_lib.load_average()
  results["seconds"] = time.perf_counter() - start
  return results


def _markdown(results: dict) -> str:
  runs = results["runs"]
  kind = {r["devices"]: f"{r['platform']} ({r['device_kind']})" for r in runs}
  m = results["machine"]
  where = ("fake CPU devices (XLA_FLAGS=--xla_force_host_platform_"
           "device_count=p) on one host" if m["fake_devices"] else
           "real devices")
  lines = [
      "# Scaling of the copy-task train step",
      "",
      f"Devices: {where}; host CPU {m['cpu']}, {m['cpu_count']} cores, "
      f"load average "
      f"{m['load_before']} before and {m['load_after']} after the run "
      f"(times under load are upper bounds). jax {runs[0]['jax']}. "
      f"Total run time {results['seconds']:.0f} s.",
      "",
      "Median step time (ms) of the jitted train step over the timed steps "
      "(batch already placed), throughput in tokens/s, compile time of the "
      "step, and its per-device memory (compiled memory analysis).",
      "",
      "| devices | device | mode | regime | mesh (data, seq) | batch | N | "
      "ms/step | tokens/s | compile (s) | MiB/device |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for run in runs:
    for r in run["rows"]:
      lines.append(
          f"| {r['devices']} | {kind[r['devices']]} | {r['mode']} | "
          f"{r['regime']} | ({r['mesh']['data']}, {r['mesh']['seq']}) | "
          f"{r['batch']} | {r['seq_len']} | {1e3 * r['step_s']:.1f} | "
          f"{r['tokens_per_s']:,.0f} | {r['compile_s']:.1f} | "
          f"{r['bytes_per_device'] / 2**20:.1f} |")
  lines += [
      "",
      "Strong-scaling efficiency t(1) / (p t(p)) and weak-scaling efficiency "
      "t(1) / t(p):",
      "",
      "| mode | regime | " + " | ".join(f"p={r['devices']}" for r in runs)
      + " |",
      "|---|---|" + "---|" * len(runs),
  ]
  for mode in ("data", "seq"):
    for regime in ("strong", "weak"):
      t = {run["devices"]: [r for r in run["rows"] if r["mode"] == mode and
                            r["regime"] == regime][0]["step_s"]
           for run in runs}
      one = t.get(1)
      cells = []
      for run in runs:
        p = run["devices"]
        if one is None:
          cells.append("-")
        elif regime == "strong":
          cells.append(f"{one / (p * t[p]):.2f}")
        else:
          cells.append(f"{one / t[p]:.2f}")
      lines.append(f"| {mode} | {regime} | " + " | ".join(cells) + " |")
  budget = results["memory_budget_bytes"] / 2**20
  lines += [
      "",
      f"Longest sequence whose train step (batch 2, ring attention on a "
      f"seq=p mesh; one device: blockwise attention) fits {budget:.0f} MiB "
      "per device, from XLA's compiled memory analysis (arguments + outputs "
      "+ temporaries - aliased, per device; compiled, not run):",
      "",
      "| devices | device | per-device MiB at the compiled lengths N | "
      "longest N | MiB at longest N | longest N / p |",
      "|---|---|---|---|---|---|",
  ]
  for run in runs:
    mem, p = run["memory"], run["devices"]
    probes = ", ".join(f"{n}: {b / 2**20:.1f}"
                       for n, b in mem["measured"].items())
    n = mem["longest_seq_len"]
    lines.append(
        f"| {p} | {kind[p]} | {probes} | "
        + (f"{n:,} | {mem['measured'][str(n)] / 2**20:.1f} | {n // p:,} |"
           if n else "none found | - | - |"))
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="output directory (driver)")
  parser.add_argument("--quick", action="store_true", help="small sizes")
  parser.add_argument("--real", action="store_true",
                      help="use the host's real devices, no fake CPU devices")
  parser.add_argument("--devices", type=int, nargs="+",
                      default=list(DEVICE_COUNTS))
  parser.add_argument("--steps", type=int, default=10,
                      help="timed steps per case")
  parser.add_argument("--timeout", type=float, default=300,
                      help="seconds per device count")
  parser.add_argument("--report", metavar="JSON",
                      help="print the tables of a scaling.json and exit")
  parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.report:
    print(_markdown(json.loads(pathlib.Path(args.report).read_text())),
          end="")
    return 0
  if args.worker:
    sys.path.insert(0, str(ROOT))
    result = worker(args.worker, args.quick, args.steps)
    print("RESULT " + json.dumps(result), flush=True)
    return 0
  if not args.out:
    parser.error("--out is required")
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  results = run_all(args)
  (out / "scaling.json").write_text(json.dumps(results, indent=1) + "\n")
  table = _markdown(results)
  (out / "scaling.md").write_text(table)
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
