"""Which machine a measurement ran on, for the experiments' results files.

`describe_device()` names the default JAX device the same way for every
experiment, e.g. "cpu: Intel(R) Xeon(R) Processor, 2 cores" or
"gpu: NVIDIA H200", and reads the host's load average (as `uptime` shows it):
times taken while other jobs share the cores are upper bounds.
"""

from __future__ import annotations

import os
import platform

import jax


def cpu_model() -> str:
  """The host CPU's model name (/proc/cpuinfo), else platform's guess."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float] | None:
  """[1, 5, 15]-minute load averages of the host, or None where the OS has
  none."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except (AttributeError, OSError):
    return None


def describe_device() -> dict:
  """The default JAX device and the host's load now.

  Returns:
    {"device": str, "cpu: <CPU model>, <n> cores" on CPU, else
     "<platform>: <device kind>" (e.g. "gpu: NVIDIA H200");
     "platform": jax's platform ("cpu", "gpu", "tpu");
     "device_kind": jax's device kind ("cpu" on CPU);
     "device_count": jax.device_count() (fake CPU devices included);
     "cpu": the host CPU model; "cpu_count": os.cpu_count();
     "load_average": `load_average()`, [1, 5, 15]-minute averages or None}.
  """
  device = jax.devices()[0]
  kind = getattr(device, "device_kind", device.platform)
  cpu, cores = cpu_model(), os.cpu_count()
  name = (f"cpu: {cpu}, {cores} cores" if device.platform == "cpu"
          else f"{device.platform}: {kind}")
  return {"device": name, "platform": device.platform, "device_kind": kind,
          "device_count": jax.device_count(), "cpu": cpu, "cpu_count": cores,
          "load_average": load_average()}
