"""jattn.metrics: the metrics.jsonl writer and reader."""

from jattn import metrics


def test_writer_appends_and_reader_reads(tmp_path):
  with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
    written = writer.write({"step": 1, "loss": 2.5})
  with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
    writer.write({"step": 2, "loss": 1.5})
  assert written == {"step": 1, "loss": 2.5}
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2]


def test_disabled_writer_writes_nothing(tmp_path):
  workdir = tmp_path / "other_host"
  with metrics.MetricWriter(workdir, tensorboard=False,
                            enabled=False) as writer:
    assert writer.write({"step": 1, "loss": 2.5}) == {"step": 1, "loss": 2.5}
  assert not workdir.exists()
