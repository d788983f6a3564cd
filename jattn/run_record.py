"""What a workdir holds: the run record written when a run starts.

WORKDIR/config.json holds the resolved config, the command line and the
versions (jax, jaxlib, flax, optax, orbax-checkpoint, jattn, Python) and the
devices, as big_vision's run records do. A rerun on the same workdir
compares its config with the stored one: fields that may change on resume
(RESUMABLE_FIELDS: the step budget, logging and checkpoint cadence, early
stopping, the time budget) may differ; any other difference is refused in
one line naming the fields, before anything is restored. `jattn.plot`
reads the stored config, so plotting needs no --config.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys

import jax
from etils import epath

from jattn import workdir as workdir_lib

RECORD_NAME = "config.json"
# Fields that may change when a run is resumed (dotted paths in the config).
RESUMABLE_FIELDS = (
    "train.num_steps", "train.log_every", "train.eval_every",
    "train.eval_batches", "train.checkpoint_every", "train.keep_checkpoints",
    "train.stop_at_accuracy", "train.time_budget_s", "train.profile_steps",
    "mesh.data", "mesh.seq", "mesh.model",
)
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex",
             "jattn")


class ConfigMismatch(ValueError):
  """The workdir holds a run with another config."""


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def versions() -> dict:
  """The versions of Python and the packages a run depends on."""
  out = {"python": platform.python_version()}
  out.update({name: _version(name) for name in _PACKAGES})
  return out


def devices() -> list[str]:
  """One "platform:kind" string per JAX device."""
  return [f"{d.platform}:{getattr(d, 'device_kind', d.platform)}"
          for d in jax.devices()]


def config_dict(config) -> dict:
  """The config as plain JSON data (ConfigDicts and dicts alike)."""
  to_dict = getattr(config, "to_dict", None)
  data = to_dict() if to_dict is not None else dict(config)
  return json.loads(json.dumps(data, default=str))


def _flatten(data: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in data.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = value
  return out


def differences(stored: dict, new: dict) -> list[str]:
  """Dotted names of the fields whose values differ (resumable ones
  excluded), sorted."""
  a, b = _flatten(stored), _flatten(new)
  return sorted(name for name in set(a) | set(b)
                if a.get(name) != b.get(name) and name not in RESUMABLE_FIELDS)


def path(workdir) -> epath.Path:
  """WORKDIR/config.json (local or remote, `jattn.workdir`)."""
  return workdir_lib.as_path(workdir) / RECORD_NAME


def read(workdir) -> dict | None:
  """The stored record, or None when the workdir has none."""
  record = path(workdir)
  if not record.is_file():
    return None
  return json.loads(record.read_text())


def check_or_write(workdir, config, *, argv=None) -> dict:
  """Writes the run record of a new run, or checks a rerun against it.

  Raises ConfigMismatch naming the differing fields (one line) when the
  workdir holds a run with another config. Returns the record.
  """
  new = config_dict(config)
  stored = read(workdir)
  if stored is not None:
    diff = differences(stored["config"], new)
    if diff:
      stored_flat, new_flat = _flatten(stored["config"]), _flatten(new)
      shown = ", ".join(f"{name} ({stored_flat.get(name)!r} stored, "
                        f"{new_flat.get(name)!r} now)" for name in diff[:5])
      more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
      raise ConfigMismatch(
          f"config: expected the config stored in {path(workdir)} (this "
          f"workdir holds another run), got different {shown}{more}; use "
          "another --workdir, or change only "
          f"{', '.join(RESUMABLE_FIELDS[:4])}, ... on resume")
  record = {
      "config": new,
      "command": list(sys.argv if argv is None else argv),
      "versions": versions(),
      "devices": devices(),
      "resumed_from": None if stored is None else stored.get("command"),
  }
  if jax.process_index() == 0:
    target = path(workdir)
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_text_atomic(target, json.dumps(record, indent=1) + "\n")
  return record
