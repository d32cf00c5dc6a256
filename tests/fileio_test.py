"""Workdir files work on local and cloud-style paths (TensorFlow's ram:// stands in for gs://)."""

import uuid

import numpy as np
import pytest

from rest_jax import fileio, grown_data, report


@pytest.fixture(params=["local", "remote"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path)
  return f"ram://rest_jax_test/{uuid.uuid4().hex}"


def test_primitives(root):
  path = f"{root}/sub/file.txt"
  fileio.makedirs(f"{root}/sub")
  assert not fileio.exists(path)
  fileio.write_atomic(path, b"abc")
  assert fileio.read_bytes(path) == b"abc"
  fileio.append_line(path, "def")
  assert fileio.read_bytes(path) == b"abcdef\n"
  fileio.truncate(path, 3)
  assert fileio.read_bytes(path) == b"abc"
  assert fileio.glob(f"{root}/sub/*.txt") == [path]
  assert fileio.abspath(root) == root if fileio.is_remote(root) else fileio.abspath(root)


def _records(n):
  return grown_data.GrownRecords(
      source_id=np.arange(n, dtype=np.int64)[::-1].copy(), sample_index=np.zeros(n, np.int32),
      reward=np.linspace(0, 1, n).astype(np.float32), is_original=np.zeros(n, bool),
      grow_step=np.ones(n, np.int32), policy_step=np.full(n, 7, np.int64),
      seed=np.zeros(n, np.int64), source_tokens=[np.array([5, 1], np.int32)] * n,
      sample_tokens=[np.arange(i + 1, dtype=np.int32) for i in range(n)],
      behaviour_logprobs=[np.full(i + 1, -0.5, np.float32) for i in range(n)],
      source_text=["Guten Tag."] * n, sample_text=[f"hello {i} ü" for i in range(n)])


def test_grown_store_round_trip_and_canonical_order(root):
  store = grown_data.GrowStore(f"{root}/grown", 1)
  store.ensure_manifest({"n": 1, "num_shards": 2})
  store.write_shard(1, 2, _records(3))
  with pytest.raises(ValueError, match="1 of 2 shards"):
    store.read_all()
  store.write_shard(0, 2, _records(2))
  records = store.read_all()
  assert len(records) == 5
  assert np.all(np.diff(records.source_id) >= 0)
  assert "ü" in records.sample_text[-1]
  with pytest.raises(ValueError, match="different settings"):
    store.ensure_manifest({"n": 2, "num_shards": 2})


def test_results_log_and_report_files(root):
  log = report.ResultsLog(root)
  row = {"run": "G0I0", "grow_step": 0, "improve_step": 0, "split": "validation",
         "mean_reward": 50.0, "bleu": 10.0, "chrf": 40.0}
  log.record(row)
  log.record(dict(row, mean_reward=51.0))
  again = report.ResultsLog(root)
  assert [r["mean_reward"] for r in again.rows] == [51.0]
  assert fileio.exists(f"{root}/results.csv")
  report.write_markdown(root, again.rows)
  assert b"51.00" in fileio.read_bytes(f"{root}/results.md")
  png = report.plot_reward_per_step(again.rows, f"{root}/plots/reward.png")
  assert fileio.read_bytes(png)[:8] == b"\x89PNG\r\n\x1a\n"
