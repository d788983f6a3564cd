"""Attention speed and memory: jattn's implementations beside jax.nn and Flax.

    python experiments/bench_attention.py --json experiments/attention/results.json
    python experiments/bench_attention.py --quick          # CI smoke, < 1 min
    python experiments/bench_attention.py --subquadratic \
        --json experiments/attention/subquadratic.json \
        --md experiments/attention/subquadratic.md   # sub-quadratic family

For B=4, H=8, K=64 and L = M in 256..8192 (float32 on CPU, bfloat16 on
GPU/TPU) it times, side by side and interleaved (round-robin, best of the
rounds, so that load from other jobs hits every implementation alike):

  jattn        `jattn.dot_product_attention` with automatic dispatch
  jattn-dense, jattn-blockwise (and jattn-pallas on GPU/TPU)
  xla          `jax.nn.dot_product_attention(implementation="xla")`
  cudnn        the same with implementation="cudnn" (GPU only)
  flax         `flax.linen.dot_product_attention`

forward and forward+backward (gradient of <out, w> for q, k, v), each jitted
and, for jattn's per-example API, vmapped over B. The same rounds time a
float32 (2048 x 2048) matmul: its FLOP rate is the ceiling against which the
attention forward's 4 B H L M K FLOPs are compared. Memory: XLA's compiled
temporary-buffer size for every configuration and, in the full run, the peak
resident memory of a fresh subprocess running that configuration once.

Then the longest sequence each implementation can run forward+backward on
(B = H = 1, K = 64): L doubles from 1024 while a subprocess finishes within
the time cap and the memory limit; sizes whose compiled buffers exceed the
limit are not attempted (dense logits at L = 131072 would need 64 GiB).

Prints tables with the ratios (peer time / jattn time) and the fraction of
the matmul rate; --json writes every number.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp

# Run from a checkout: import this repository's jattn, not an installed copy.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_ROOT, "jattn")) and _ROOT not in sys.path[:1]:
  sys.path.insert(0, _ROOT)

import jattn  # pylint: disable=g-import-not-at-top,wrong-import-position
from jattn import analysis  # pylint: disable=g-import-not-at-top,wrong-import-position

GiB = 1024 ** 3
MATMUL_N = 2048


# ---------------------------------------------------------------------------
# Implementations.


def accelerator() -> bool:
  return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def implementations(names_only: bool = False) -> list[str]:
  names = ["jattn", "jattn-dense", "jattn-blockwise"]
  if accelerator():
    names.append("jattn-pallas")
  names.append("xla")
  if jax.default_backend() in ("gpu", "cuda"):
    names.append("cudnn")
  names.append("flax")
  return names


def attention_fn(name: str, causal: bool = False):
  """(q, k, v) of shape (B, L, H, K) -> (B, L, H, K)."""
  if name.startswith("jattn"):
    impl = None if name == "jattn" else name.split("-", 1)[1]
    one = functools.partial(jattn.dot_product_attention, is_causal=causal,
                            implementation=impl)
    return jax.vmap(one)
  if name in ("xla", "cudnn"):
    return functools.partial(jax.nn.dot_product_attention, is_causal=causal,
                             implementation=name)
  if name == "flax":
    import flax.linen as nn  # pylint: disable=g-import-not-at-top

    def flax_attention(q, k, v):
      mask = None
      if causal:
        L, M = q.shape[1], k.shape[1]
        mask = jnp.tril(jnp.ones((L, M), bool))[None, None]
      return nn.dot_product_attention(q, k, v, mask=mask, deterministic=True)
    return flax_attention
  raise ValueError(f"unknown implementation {name!r}")


def benchmark_fn(name: str, mode: str, causal: bool = False):
  """Forward: (q, k, v, w) -> out. Forward+backward: -> (dq, dk, dv)."""
  attend = attention_fn(name, causal)
  if mode == "fwd":
    return lambda q, k, v, w: attend(q, k, v)

  def loss(q, k, v, w):
    return jnp.vdot(attend(q, k, v).astype(jnp.float32), w.astype(jnp.float32))
  return jax.grad(loss, argnums=(0, 1, 2))


def inputs(B, L, H, K, dtype, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  return tuple(jax.random.normal(key, (B, L, H, K), jnp.float32).astype(dtype)
               for key in keys)


def compile_fn(fn, args):
  """Compiled executable and its memory analysis (bytes) or None."""
  compiled = jax.jit(fn).lower(*args).compile()
  stats = compiled.memory_analysis()
  memory = None
  if stats is not None:
    memory = {"temp": int(stats.temp_size_in_bytes),
              "arguments": int(stats.argument_size_in_bytes),
              "outputs": int(stats.output_size_in_bytes)}
  return compiled, memory


def needed_bytes(memory) -> int:
  return 0 if memory is None else sum(memory.values())


def attention_flops(B, H, L, M, K) -> float:
  """The forward's two matmuls: 2 * (2 B H L M K)."""
  return 4.0 * B * H * L * M * K


# ---------------------------------------------------------------------------
# Timing: interleaved rounds, best of each.


def _call(fn, args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def time_interleaved(entries: dict, rounds: int, budget_s: float,
                     min_seconds: float = 0.0, max_rounds: int = 50):
  """entries: name -> (compiled, args). Returns name -> best seconds.

  Every round calls each entry once, in rotating order. At least `rounds`
  rounds run (fewer, but at least two, if `budget_s` is spent first), and
  more, up to `max_rounds`, until `min_seconds` have passed: short
  configurations get many rounds, so their best time is less noisy.
  """
  best = {name: math.inf for name in entries}
  for name, (fn, args) in entries.items():  # warm-up (allocation, caches)
    best[name] = _call(fn, args)
  names = list(entries)
  start = time.perf_counter()
  for r in range(max_rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      fn, args = entries[name]
      best[name] = min(best[name], _call(fn, args))
    spent = time.perf_counter() - start
    if r >= 1 and spent > budget_s:
      break
    if r + 1 >= rounds and spent > min_seconds:
      break
  return best


def matmul_entry():
  a = jax.random.normal(jax.random.key(1), (MATMUL_N, MATMUL_N), jnp.float32)
  fn = jax.jit(lambda a, b: a @ b).lower(a, a).compile()
  return fn, (a, a)


# ---------------------------------------------------------------------------
# Memory: a fresh subprocess per configuration.


def _rss_bytes(field: str) -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def _reset_peak() -> bool:
  """Resets the kernel's peak-RSS counter (VmHWM) of this process."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def worker(spec: dict) -> dict:
  """Runs one configuration once in this (fresh) process; reports memory."""
  import resource  # pylint: disable=g-import-not-at-top
  dtype = jnp.dtype(spec["dtype"])
  B, L, H, K = spec["B"], spec["L"], spec["H"], spec["K"]
  fn = benchmark_fn(spec["impl"], spec["mode"], spec.get("causal", False))
  args = jax.ShapeDtypeStruct((B, L, H, K), dtype)
  compiled, memory = compile_fn(fn, (args,) * 4)
  result = {"compiled_memory": memory}
  if needed_bytes(memory) > spec["memory_limit"]:
    result["skipped"] = (f"compiled buffers need {needed_bytes(memory) / GiB:.1f}"
                         f" GiB > limit {spec['memory_limit'] / GiB:.1f} GiB")
    return result
  data = inputs(B, L, H, K, dtype)
  jax.block_until_ready(data)
  before = _rss_bytes("VmRSS")
  exact = _reset_peak()
  start = time.perf_counter()
  jax.block_until_ready(compiled(*data))
  result["seconds"] = time.perf_counter() - start
  peak = _rss_bytes("VmHWM") if exact else None
  if peak is None:  # fall back to the lifetime peak (includes compilation)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  result.update(peak_rss=peak, rss_before=before,
                peak_increase=None if before is None else peak - before,
                peak_exact=exact)
  return result


def run_worker(spec: dict, timeout_s: float, memory_limit: int) -> dict:
  """Runs `worker(spec)` in a subprocess, killed past the time or memory cap."""
  spec = dict(spec, memory_limit=memory_limit)
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ,
                                              TF_CPP_MIN_LOG_LEVEL="3"))
  killed = {}

  def watch():
    status = f"/proc/{proc.pid}/status"
    start = time.perf_counter()
    while proc.poll() is None:
      try:
        with open(status) as f:
          rss = next((int(l.split()[1]) * 1024 for l in f
                      if l.startswith("VmRSS:")), 0)
      except OSError:
        return
      if rss > memory_limit:
        killed["reason"] = f"RSS {rss / GiB:.1f} GiB > limit"
        proc.kill()
        return
      if time.perf_counter() - start > timeout_s:
        killed["reason"] = f"time cap {timeout_s:.0f} s"
        proc.kill()
        return
      time.sleep(0.05)

  watcher = threading.Thread(target=watch, daemon=True)
  watcher.start()
  out, err = proc.communicate()
  watcher.join()
  if killed:
    return {"failed": killed["reason"]}
  for line in reversed(out.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  tail = err.strip().splitlines()[-1:] or ["no output"]
  return {"failed": f"exit {proc.returncode}: {tail[0][:200]}"}


# ---------------------------------------------------------------------------
# The benchmark.


def memory_limit_bytes(fraction: float = 0.8) -> int:
  """A fraction of the memory available now (other jobs share the machine)."""
  try:
    with open("/proc/meminfo") as f:
      info = {l.split(":")[0]: int(l.split()[1]) * 1024 for l in f}
    return int(fraction * info["MemAvailable"])
  except (OSError, KeyError):
    return 8 * GiB


def run_speed(lengths, *, B, H, K, dtype, rounds, budget_s, memory_limit,
              causal=False, min_seconds=0.0, log=print):
  """Times every implementation at every L; returns a list of rows."""
  rows = []
  names = implementations()
  for L in lengths:
    args = inputs(B, L, H, K, dtype)
    entries, info = {}, {}
    auto = jattn.attention.choose_implementation(L, L, is_causal=causal)
    for name in names:
      for mode in ("fwd", "fwdbwd"):
        key = f"{name}|{mode}"
        if name == f"jattn-{auto}":  # what "jattn" runs: not timed twice
          info[key] = {"same_as": "jattn"}
          continue
        try:
          compiled, memory = compile_fn(benchmark_fn(name, mode, causal), args)
        except Exception as err:  # pylint: disable=broad-except
          info[key] = {"skipped": f"{type(err).__name__}: {str(err)[:120]}"}
          continue
        info[key] = {"compiled_memory": memory}
        if needed_bytes(memory) > memory_limit:
          info[key]["skipped"] = (
              f"compiled buffers need {needed_bytes(memory) / GiB:.1f} GiB > "
              f"limit {memory_limit / GiB:.1f} GiB")
          continue
        entries[key] = (compiled, args)
    mm_fn, mm_args = matmul_entry()
    entries["matmul"] = (mm_fn, mm_args)
    best = time_interleaved(entries, rounds, budget_s, min_seconds)
    matmul_rate = 2.0 * MATMUL_N ** 3 / best.pop("matmul")
    flops = attention_flops(B, H, L, L, K) * (0.5 if causal else 1.0)
    for key, extra in info.items():
      name, mode = key.split("|")
      row = {"L": L, "impl": name, "mode": mode, "causal": causal, **extra}
      if key in best:
        row["seconds"] = best[key]
        if mode == "fwd":
          row["gflops"] = flops / best[key] / 1e9
          row["fraction_of_matmul"] = flops / best[key] / matmul_rate
      row["matmul_gflops"] = matmul_rate / 1e9
      rows.append(row)
    log(f"  L={L}: " + ", ".join(
        f"{k}={v:.3g}s" for k, v in sorted(best.items())) +
        f", matmul {matmul_rate / 1e9:.0f} GFLOP/s")
  return rows


def run_peak_memory(rows, *, B, H, K, dtype, memory_limit, timeout_s,
                    log=print):
  """Adds each configuration's subprocess peak RSS to its row."""
  for row in rows:
    if "seconds" not in row:
      continue
    spec = {"impl": row["impl"], "mode": row["mode"], "B": B, "H": H, "K": K,
            "L": row["L"], "dtype": str(jnp.dtype(dtype)),
            "causal": row["causal"]}
    result = run_worker(spec, timeout_s, memory_limit)
    row["subprocess"] = result
    log(f"  peak memory {row['impl']} {row['mode']} L={row['L']}: " + (
        f"{result['peak_increase'] / 2**20:.0f} MiB over baseline"
        if result.get("peak_increase") is not None else str(result)))


def max_length_search(names, *, start, stop, timeout_s, memory_limit,
                      dtype, causal=False, log=print):
  """Largest L (doubling) whose forward+backward completes, per impl."""
  found = {}
  for name in names:
    trials, best = [], None
    L = start
    while L <= stop:
      spec = {"impl": name, "mode": "fwdbwd", "B": 1, "H": 1, "K": 64, "L": L,
              "dtype": str(jnp.dtype(dtype)), "causal": causal}
      result = run_worker(spec, timeout_s, memory_limit)
      trials.append({"L": L, **result})
      log(f"  {name} L={L}: " + (f"{result['seconds']:.1f} s, peak "
                                 f"{result['peak_rss'] / GiB:.2f} GiB"
                                 if "seconds" in result else
                                 result.get("skipped") or result.get("failed")))
      if "seconds" not in result:
        break
      best = L
      L *= 2
    limit_reason = None
    if trials and "seconds" not in trials[-1]:
      limit_reason = trials[-1].get("skipped") or trials[-1].get("failed")
    elif best is not None:
      limit_reason = f"search stopped at L={stop}"
    found[name] = {"max_L": best, "limit": limit_reason, "trials": trials}
  return found


# ---------------------------------------------------------------------------
# Report.


def _fmt(x, spec=".3g"):
  return "-" if x is None else format(x, spec)


def tables(results) -> str:
  rows = results["speed"]
  device = results["device"]
  lines = [f"Device: {device}; dtype {results['dtype']}; B={results['B']} "
           f"H={results['H']} K={results['K']}"
           + (", causal" if results.get("causal") else "")]
  by = {(r["L"], r["impl"], r["mode"]): r for r in rows}
  lengths = sorted({r["L"] for r in rows})
  names = [n for n in results["implementations"]]
  lines.append("")
  lines.append(f"Time in seconds (best of interleaved rounds), {device}:")
  header = "| L | mode | " + " | ".join(names) + " |"
  lines += [header, "|" + "---|" * (len(names) + 2)]
  for L in lengths:
    for mode in ("fwd", "fwdbwd"):
      cells = []
      for n in names:
        r = by.get((L, n, mode), {})
        r = by.get((L, r["same_as"], mode), {}) if "same_as" in r else r
        cells.append(_fmt(r.get("seconds")) if "seconds" in r else "skip")
      lines.append(f"| {L} | {mode} | " + " | ".join(cells) + " |")
  peers = [n for n in names if not n.startswith("jattn")]
  lines.append("")
  lines.append("Speed-up of jattn (automatic dispatch) = peer time / jattn "
               f"time, {device}:")
  lines += ["| L | " + " | ".join(f"{p} fwd | {p} fwd+bwd" for p in peers)
            + " | jattn fwd GFLOP/s | matmul GFLOP/s | fraction |",
            "|" + "---|" * (2 * len(peers) + 4)]
  for L in lengths:
    cells = []
    for p in peers:
      for mode in ("fwd", "fwdbwd"):
        j, r = by.get((L, "jattn", mode), {}), by.get((L, p, mode), {})
        ok = "seconds" in j and "seconds" in r
        cells.append(_fmt(r["seconds"] / j["seconds"], ".2f") if ok else "-")
    j = by.get((L, "jattn", "fwd"), {})
    cells += [_fmt(j.get("gflops"), ".1f"), _fmt(j.get("matmul_gflops"), ".0f"),
              _fmt(j.get("fraction_of_matmul"), ".0%")]
    lines.append(f"| {L} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append(f"Memory, MiB: compiled temporary buffers / subprocess peak RSS "
               f"increase during the call, {device}:")
  lines += [header, "|" + "---|" * (len(names) + 2)]
  for L in lengths:
    for mode in ("fwd", "fwdbwd"):
      cells = []
      for n in names:
        r = by.get((L, n, mode), {})
        r = by.get((L, r["same_as"], mode), {}) if "same_as" in r else r
        temp = (r.get("compiled_memory") or {}).get("temp")
        sub = r.get("subprocess") or {}
        peak = _fmt(sub.get("peak_increase") and sub["peak_increase"] / 2**20,
                    ".0f")
        if "failed" in sub:
          peak = "killed: " + sub["failed"]
        cells.append("skip" if "skipped" in r else
                     f"{_fmt(temp and temp / 2**20, '.0f')} / {peak}")
      lines.append(f"| {L} | {mode} | " + " | ".join(cells) + " |")
  if results.get("max_length"):
    lines.append("")
    lines.append(f"Longest forward+backward (B=1, H=1, K=64), {device}:")
    lines += ["| implementation | max L | time at max L (s) | peak RSS (GiB) | "
              "stopped because |", "|---|---|---|---|---|"]
    for name, r in results["max_length"].items():
      last = next((t for t in r["trials"] if t["L"] == r["max_L"]), {})
      lines.append(
          f"| {name} | {r['max_L']} | {_fmt(last.get('seconds'), '.1f')} | "
          f"{_fmt(last.get('peak_rss') and last['peak_rss'] / GiB, '.2f')} | "
          f"{r['limit']} |")
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# --subquadratic: sub-quadratic attention against dense and blockwise.

SUBQUADRATIC_IMPLS = ("dense", "blockwise", "local", "linear", "linear-causal",
                 "performer")
SUBQUADRATIC_WINDOW = 256
SUBQUADRATIC_FEATURES = 256
# Growth of the time per call in L, to predict whether the next length fits
# the per-call cap (the quadratic ones need 4x per doubling).
_GROWTH = {"dense": 2.0, "blockwise": 2.0}


def subquadratic_fn(name: str, K: int):
  """(q, k, v) of shape (B, L, H, K) -> (B, L, H, K) for a sub-quadratic core."""
  if name in ("dense", "blockwise"):
    one = functools.partial(jattn.dot_product_attention, implementation=name)
  elif name == "local":
    one = functools.partial(jattn.local_attention, window=SUBQUADRATIC_WINDOW)
  elif name in ("linear", "linear-causal"):
    one = functools.partial(jattn.linear_attention,
                            is_causal=name == "linear-causal")
  elif name == "performer":
    from jattn.attention import performer  # pylint: disable=g-import-not-at-top
    projection = performer.random_features(jax.random.key(0),
                                           SUBQUADRATIC_FEATURES, K)
    one = functools.partial(jattn.performer_attention, projection=projection)
  else:
    raise ValueError(f"unknown subquadratic core {name!r}")
  return jax.vmap(one)


def subquadratic_benchmark_fn(name: str, mode: str, K: int):
  attend = subquadratic_fn(name, K)
  if mode == "fwd":
    return lambda q, k, v, w: attend(q, k, v)

  def loss(q, k, v, w):
    return jnp.vdot(attend(q, k, v).astype(jnp.float32), w.astype(jnp.float32))
  return jax.grad(loss, argnums=(0, 1, 2))


def run_subquadratic(lengths, *, B, H, K, dtype, rounds, cap_s, memory_limit,
                 log=print):
  """Times every sub-quadratic core at every L; skips what would exceed the memory
  limit or (predicted from the previous L) `cap_s` seconds per call."""
  rows, last = [], {}
  for L in lengths:
    args = inputs(B, L, H, K, dtype)
    entries, info = {}, {}
    for name in SUBQUADRATIC_IMPLS:
      for mode in ("fwd", "fwdbwd"):
        key = f"{name}|{mode}"
        if key in last:
          prev_L, prev_s = last[key]
          predicted = prev_s * (L / prev_L) ** _GROWTH.get(name, 1.0)
          if predicted > cap_s:
            info[key] = {"skipped": f"predicted {predicted:.0f} s per call "
                                    f"> cap {cap_s:.0f} s"}
            continue
        elif any(r["impl"] == name and r["mode"] == mode and "skipped" in r
                 for r in rows):
          info[key] = {"skipped": "skipped at a shorter L"}
          continue
        try:
          compiled, memory = compile_fn(subquadratic_benchmark_fn(name, mode, K),
                                        args)
        except Exception as err:  # pylint: disable=broad-except
          info[key] = {"skipped": f"{type(err).__name__}: {str(err)[:120]}"}
          continue
        info[key] = {"compiled_memory": memory}
        if needed_bytes(memory) > memory_limit:
          info[key]["skipped"] = (
              f"compiled buffers need {needed_bytes(memory) / GiB:.1f} GiB > "
              f"limit {memory_limit / GiB:.1f} GiB")
          continue
        entries[key] = (compiled, args)
    best = time_interleaved(entries, rounds, budget_s=3 * cap_s) if entries \
        else {}
    for key, extra in info.items():
      name, mode = key.split("|")
      row = {"L": L, "impl": name, "mode": mode, **extra}
      if key in best:
        row["seconds"] = best[key]
        last[key] = (L, best[key])
      else:
        last.pop(key, None)
      rows.append(row)
    log(f"  L={L}: " + ", ".join(f"{k}={v:.3g}s" for k, v in
                                 sorted(best.items())))
  return rows


def subquadratic_tables(results) -> str:
  rows, device = results["speed"], results["device"]
  by = {(r["L"], r["impl"], r["mode"]): r for r in rows}
  lengths = sorted({r["L"] for r in rows})
  names = list(SUBQUADRATIC_IMPLS)
  head = "| L | mode | " + " | ".join(names) + " |"
  sep = "|" + "---|" * (len(names) + 2)
  lines = [
      f"Device: {device}; jax {results['jax']}; dtype {results['dtype']}; "
      f"B={results['B']} H={results['H']} K={results['K']}; local window "
      f"{results['window']} (|j - i| < w), Performer {results['features']} "
      f"random features; load average at start "
      f"{results['load_average'][0]:.1f} (shared machine: times are upper "
      "bounds).", "",
      f"Time in seconds (best of interleaved rounds), {device}:", "", head,
      sep]
  for L in lengths:
    for mode in ("fwd", "fwdbwd"):
      cells = []
      for n in names:
        r = by.get((L, n, mode), {})
        cells.append(_fmt(r["seconds"]) if "seconds" in r else
                     "skip" if "skipped" in r else "-")
      lines.append(f"| {L} | {mode} | " + " | ".join(cells) + " |")
  lines += ["", f"Compiled temporary memory, MiB, {device}:", "", head, sep]
  for L in lengths:
    for mode in ("fwd", "fwdbwd"):
      cells = []
      for n in names:
        r = by.get((L, n, mode), {})
        temp = (r.get("compiled_memory") or {}).get("temp")
        cells.append("-" if temp is None else format(temp / 2**20, ".1f"))
      lines.append(f"| {L} | {mode} | " + " | ".join(cells) + " |")
  skipped = sorted({(r["impl"], r["mode"], r["L"], r["skipped"])
                    for r in rows if "skipped" in r})
  if skipped:
    lines += ["", "Not timed:", ""]
    lines += [f"- {impl} {mode} at L={L}: {why}"
              for impl, mode, L, why in skipped]
  return "\n".join(lines)


def main_subquadratic(args) -> int:
  B, H, K = 1, 8, 64
  dtype = jnp.bfloat16 if accelerator() else jnp.float32
  lengths = ([int(x) for x in args.lengths.split(",")] if args.lengths else
             [512, 1024] if args.quick else
             [1024 * 2 ** i for i in range(7)])      # 1k .. 64k
  memory_limit = memory_limit_bytes()
  machine = analysis.describe_device()
  device = machine["device"]
  log = lambda msg: print(msg, flush=True)
  log(f"subquadratic: {device}; jax {jax.__version__}; memory limit "
      f"{memory_limit / GiB:.1f} GiB")
  start = time.perf_counter()
  results = {"device": device, "jax": jax.__version__,
             "dtype": str(jnp.dtype(dtype)), "B": B, "H": H, "K": K,
             "window": SUBQUADRATIC_WINDOW, "features": SUBQUADRATIC_FEATURES,
             "implementations": list(SUBQUADRATIC_IMPLS),
             "memory_limit": memory_limit, "quick": args.quick,
             "load_average": machine["load_average"]}
  results["speed"] = run_subquadratic(
      lengths, B=B, H=H, K=K, dtype=dtype,
      rounds=args.rounds or (1 if args.quick else 3),
      cap_s=5.0 if args.quick else args.subquadratic_cap, memory_limit=memory_limit,
      log=log)
  results["seconds"] = time.perf_counter() - start
  results["load_average_end"] = analysis.describe_device()["load_average"]
  text = subquadratic_tables(results)
  results["table"] = text
  print()
  print(text)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1, default=str)
  if args.md:
    with open(args.md, "w") as f:
      f.write("# Sub-quadratic attention against dense and blockwise\n\n"
              "Produced by `python experiments/bench_attention.py --subquadratic "
              f"--json {args.json or 'FILE'} --md {args.md}` in "
              f"{results['seconds']:.0f} s.\n\n" + text + "\n")
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="small smoke run (< 1 min): L in 256, 1024")
  parser.add_argument("--json", help="write all numbers to this file")
  parser.add_argument("--lengths", help="comma-separated L values")
  parser.add_argument("--rounds", type=int, default=None)
  parser.add_argument("--causal", action="store_true")
  parser.add_argument("--no-peak-memory", action="store_true")
  parser.add_argument("--no-max-length", action="store_true")
  parser.add_argument("--max-length-start", type=int, default=1024)
  parser.add_argument("--max-length-stop", type=int, default=131072)
  parser.add_argument("--max-length-cap", type=float, default=1200.0,
                      help="seconds allowed per max-length trial")
  parser.add_argument("--one-core", action="store_true",
                      help="pin this process and its subprocesses to one core")
  parser.add_argument("--report", help="print the tables of a --json file")
  parser.add_argument("--subquadratic", action="store_true",
                      help="local (w=256), linear and Performer attention "
                      "against dense and blockwise, B=1 H=8 K=64, L = 1k to "
                      "64k (with --json and --md)")
  parser.add_argument("--md", help="--subquadratic: write the tables here")
  parser.add_argument("--subquadratic-cap", type=float, default=30.0,
                      help="--subquadratic: skip configurations predicted to "
                      "take longer than this per call (s)")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.report:
    with open(args.report) as f:
      print(tables(json.load(f)))
    return 0
  if args.one_core:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  if args.worker:
    print(json.dumps(worker(json.loads(args.worker))))
    return 0
  if args.subquadratic:
    return main_subquadratic(args)

  B, H, K = 4, 8, 64
  dtype = jnp.bfloat16 if accelerator() else jnp.float32
  quick = args.quick
  lengths = ([int(x) for x in args.lengths.split(",")] if args.lengths else
             [256, 1024] if quick else [256, 512, 1024, 2048, 4096, 8192])
  rounds = args.rounds or (2 if quick else 5)
  memory_limit = memory_limit_bytes()
  machine = analysis.describe_device()
  device = machine["device"]
  log = lambda msg: print(msg, flush=True)
  log(f"{device}; jax {jax.__version__}; memory limit "
      f"{memory_limit / GiB:.1f} GiB")
  if args.one_core:
    device += " (pinned to one core)"
  results = {"device": device, "jax": jax.__version__,
             "dtype": str(jnp.dtype(dtype)), "B": B, "H": H, "K": K,
             "causal": args.causal, "implementations": implementations(),
             "memory_limit": memory_limit, "quick": quick,
             "load_average": machine["load_average"]}
  if not accelerator():
    results["notes"] = ["jattn-pallas is not timed on CPU: there the kernel "
                        "runs in Pallas interpret mode (a correctness tool)."]
  log("speed:")
  results["speed"] = run_speed(
      lengths, B=B, H=H, K=K, dtype=dtype, rounds=rounds,
      budget_s=5.0 if quick else 240.0, memory_limit=memory_limit,
      causal=args.causal, min_seconds=0.0 if quick else 30.0, log=log)
  if not (quick or args.no_peak_memory):
    log("peak memory (one subprocess per configuration):")
    run_peak_memory(results["speed"], B=B, H=H, K=K, dtype=dtype,
                    memory_limit=memory_limit, timeout_s=900, log=log)
  if not args.no_max_length:
    log("longest sequence, forward+backward, B=1 H=1 K=64:")
    names = ["jattn", "jattn-dense", "xla", "flax"]
    start, stop, cap = args.max_length_start, args.max_length_stop, \
        args.max_length_cap
    if quick:
      names, start, stop, cap = ["jattn"], 1024, 1024, 60.0
    results["max_length"] = max_length_search(
        names, start=start, stop=stop, timeout_s=cap,
        memory_limit=memory_limit, dtype=dtype, causal=args.causal, log=log)
  results["load_average_end"] = analysis.describe_device()["load_average"]
  text = tables(results)
  print()
  print(text)
  results["table"] = text
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1, default=str)
  return 0


if __name__ == "__main__":
  sys.exit(main())
