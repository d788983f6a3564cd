"""A gs:// workdir end to end, on a mocked object store.

The mock: an fsspec filesystem registered for gs:// that keeps the objects
of gs://BUCKET/... under a local folder (etils.epath reaches gs:// through
fsspec, as it does with gcsfs installed). orbax writes array data through
tensorstore's own GCS driver, which no fsspec mock reaches: its
CheckpointManager is handed the same local folder. Everything jattn writes
itself (config.json, metrics.jsonl, .lock, integrity records, plots) goes
through the gs:// path.
"""

from __future__ import annotations

import os
import pathlib

import fsspec
import orbax.checkpoint as ocp
import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations import local

from jattn import metrics as metrics_lib
from jattn import run_lock
from jattn import run_record
from jattn import train
from jattn import workdir as workdir_lib
from tests.helpers import get_config

pytestmark = pytest.mark.floor


class _BucketsOnDisk(local.LocalFileSystem):
  """gs://BUCKET/KEY stored as ROOT/BUCKET/KEY (ROOT set per test)."""

  protocol = ("gs", "gcs")
  root = None

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    if path.startswith(str(cls.root)):
      return path
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        path = path[len(prefix):]
    return os.path.join(str(cls.root), path.lstrip("/"))

  def _uri(self, path: str) -> str:
    return os.path.relpath(path, str(self.root))

  def glob(self, path, **kwargs):
    return [self._uri(p) for p in super().glob(path, **kwargs)]

  def ls(self, path, detail=False, **kwargs):
    found = super().ls(path, detail=detail, **kwargs)
    if detail:
      return [dict(entry, name=self._uri(entry["name"])) for entry in found]
    return [self._uri(p) for p in found]


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """gs://bucket on disk: returns the local folder of gs://bucket/."""
  root = tmp_path / "objects"
  root.mkdir()
  monkeypatch.setattr(_BucketsOnDisk, "root", root)
  fsspec.register_implementation("gs", _BucketsOnDisk, clobber=True)
  fsspec.register_implementation("gcs", _BucketsOnDisk, clobber=True)
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs",  # pylint: disable=protected-access
                      epath_backend.fsspec_backend)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  real_manager = ocp.CheckpointManager

  def manager_on_disk(directory, *args, **kwargs):
    directory = os.fspath(directory)
    if directory.startswith("gs://"):
      directory = root / directory[len("gs://"):]
    return real_manager(directory, *args, **kwargs)

  monkeypatch.setattr(ocp, "CheckpointManager", manager_on_disk)
  monkeypatch.chdir(tmp_path)  # a stray local "gs:" folder would land here
  yield root / "bucket"
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def test_paths_keep_their_scheme_and_local_ones_become_absolute(tmp_path):
  assert os.fspath(workdir_lib.as_path("gs://bucket/run")) == "gs://bucket/run"
  assert workdir_lib.is_remote("gs://bucket/run")
  local_path = workdir_lib.as_path("rel/run")
  assert not workdir_lib.is_remote(local_path) and local_path.is_absolute()


def test_metrics_append_on_an_object_store_keeps_every_line(bucket):
  with metrics_lib.MetricWriter("gs://bucket/m", tensorboard=False) as w:
    w.write({"step": 1})
  with metrics_lib.MetricWriter("gs://bucket/m", tensorboard=False) as w:
    w.write({"step": 2})  # a resumed run: the object is rewritten, not reset
  assert [r["step"] for r in metrics_lib.read_metrics("gs://bucket/m")] == [1, 2]
  assert (bucket / "m" / metrics_lib.METRICS_FILE).is_file()


def test_a_remote_lock_refuses_a_second_run(bucket):
  with run_lock.RunLock("gs://bucket/run", settle_s=0.0) as lock:
    assert lock.held and (bucket / "run" / run_lock.LOCK_NAME).is_file()
    other = run_lock.RunLock("gs://bucket/run", settle_s=0.0)
    # Same host, live pid: refused, naming the process.
    with pytest.raises(run_lock.WorkdirInUse, match=f"process {os.getpid()}"):
      other.acquire()
  assert not (bucket / "run" / run_lock.LOCK_NAME).exists()


@pytest.mark.slow  # two training runs: 20-34 s
def test_training_on_gs_writes_everything_there_and_resumes(x32, bucket):
  config = get_config("smoke")
  config.train.num_steps = 60
  config.train.checkpoint_every = 30
  final = train.train_and_evaluate(config, "gs://bucket/run")
  assert final["steps"] == 60
  run = bucket / "run"
  assert (run / run_record.RECORD_NAME).is_file()
  assert (run / "checkpoints" / "60").is_dir()
  assert (run / "checkpoints_integrity" / "60.json").is_file()
  records = metrics_lib.read_metrics("gs://bucket/run")
  assert records[-1]["final"] and records[-1]["steps"] == 60
  assert not pathlib.Path("gs:").exists()  # nothing written locally

  # A rerun with more steps resumes from the verified step 60 on gs://.
  config.train.num_steps = 90
  resumed = train.train_and_evaluate(config, "gs://bucket/run")
  assert resumed["resumed_from"] == 60 and resumed["steps"] == 90


def test_plots_of_a_gs_workdir_land_there(x32, bucket):
  pytest.importorskip("matplotlib")
  from jattn.plot import workdir as plot_workdir  # noqa: PLC0415
  with metrics_lib.MetricWriter("gs://bucket/p", tensorboard=False) as w:
    for step in (10, 20):
      w.write({"step": step, "loss": 1.0 / step, "accuracy": 0.5})
  written = plot_workdir.write_plots("gs://bucket/p", say=lambda _: None)
  assert written == ["gs://bucket/p/training_curves.png"]
  png = bucket / "p" / "training_curves.png"
  assert png.read_bytes()[:4] == b"\x89PNG"


def test_gs_without_gcsfs_is_one_clear_error(monkeypatch):
  def no_gcsfs(self, name):
    raise ImportError("Please install gcsfs to access Google Storage")

  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs",  # pylint: disable=protected-access
                      epath_backend.fsspec_backend)
  monkeypatch.setattr(type(epath_backend.fsspec_backend), "_get_filesystem",
                      no_gcsfs)
  with pytest.raises(run_lock.WorkdirNotWritable,
                     match=r"got 'gs://bucket/run' .*pip install gcsfs"):
    run_lock.check_writable("gs://bucket/run")
