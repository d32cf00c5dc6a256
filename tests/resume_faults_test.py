"""Resume after faults: a kill between two writes, damaged checkpoints, shards and results.

Each scenario breaks a tiny G=1 x I=2 run in one way, runs the same experiment again and checks
that it finishes with the uninterrupted run's results and exactly one row per (run, split) in
results.jsonl and results.csv, and that the damage was reported in one WARNING line naming the
file. (tests/kill_resume_test.py kills whole processes with SIGKILL at random moments.)
"""

import csv
import glob
import json
import logging
import os
import shutil

import pytest

from rest_jax import checkpointing, grown_data, train
from rest_loop_test import _metrics, run_experiment  # The tiny e2e run and its metrics.

POINTS = {(run, split) for run in ("G0I0", "G1I0", "G1I1") for split in ("validation", "test")}
# Phases of test/tiny_e2e.gin: bc (0), grow1 (1), improve1.0 (2), improve1.1 (3).
IMPROVE_1_0 = 2

pytestmark = pytest.mark.slow


class Interrupt(Exception):
  pass




def _assert_one_row_per_point(workdir, reference_rows):
  with open(os.path.join(workdir, "results.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(line) for line in f if line.strip()]
  with open(os.path.join(workdir, "results.csv"), newline="", encoding="utf-8") as f:
    csv_rows = list(csv.DictReader(f))
  assert sorted((r["run"], r["split"]) for r in lines) == sorted(POINTS)
  assert sorted((r["run"], r["split"]) for r in csv_rows) == sorted(POINTS)
  assert _metrics(lines) == _metrics(reference_rows)
  markdown = open(os.path.join(workdir, "results.md"), encoding="utf-8").read()
  assert markdown.count("| G=1 I=0 |") == 2  # One line in the validation and the test table.


def _warnings(caplog, text):
  return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  return run_experiment(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def after_bc(tmp_path_factory):
  """A workdir stopped after BC; every scenario continues from a copy of it."""
  workdir = tmp_path_factory.mktemp("after_bc")
  run_experiment(workdir, "rest_loop.run.stop_after_phase = 'bc'")
  return workdir


def test_kill_after_a_phase_report_before_its_checkpoint_records_each_point_once(
    after_bc, reference, tmp_path, monkeypatch):
  """The resumed run evaluates improve1.0 again and records G1I0 again: still one row each."""
  workdir = shutil.copytree(after_bc, tmp_path / "w")
  original_save = checkpointing.Checkpointer.save

  def save_or_die(self, step, state, meta):
    if meta.get("kind") == "policy" and meta["phase_index"] == IMPROVE_1_0 + 1:
      raise Interrupt()  # improve1.0's rows are written, its boundary checkpoint is not.
    original_save(self, step, state, meta)

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_or_die)
  with pytest.raises(Interrupt):
    run_experiment(workdir)
  monkeypatch.setattr(checkpointing.Checkpointer, "save", original_save)
  rows = run_experiment(workdir)
  assert _metrics(rows) == _metrics(reference)
  _assert_one_row_per_point(workdir, reference)


def test_truncated_mid_phase_checkpoint_falls_back_to_the_previous_one(
    after_bc, reference, tmp_path, monkeypatch, caplog):
  workdir = shutil.copytree(after_bc, tmp_path / "w")
  original_eval = train._evaluate_and_checkpoint

  def eval_then_crash(*args, **kwargs):
    original_eval(*args, **kwargs)
    raise Interrupt()

  monkeypatch.setattr(train, "_evaluate_and_checkpoint", eval_then_crash)
  with pytest.raises(Interrupt):
    run_experiment(workdir)
  monkeypatch.setattr(train, "_evaluate_and_checkpoint", original_eval)
  latest = max(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())
  assert latest // 10**6 == IMPROVE_1_0 and latest % 10**6 > 0  # A mid-phase state.
  # Every data file loses its second half: which arrays land in which file (and which of them
  # a restore reads first) is TensorStore's choice and differs between hosts.
  data = [f for f in glob.glob(str(workdir / "checkpoints" / str(latest) / "state" / "**" / "*"),
                               recursive=True) if os.path.isfile(f) and "/d/" in f]
  assert data
  for path in data:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)

  with caplog.at_level(logging.WARNING):
    rows = run_experiment(workdir)
  (warning,) = _warnings(caplog, "is unreadable")
  message = warning.getMessage()
  assert f"checkpoints/{latest} is unreadable (" in message and "\n" not in message
  assert os.path.isdir(workdir / "checkpoints" / f"{latest}.unreadable")
  assert _metrics(rows) == _metrics(reference)
  _assert_one_row_per_point(workdir, reference)


def test_deleted_checkpoint_files_and_a_garbled_results_line(after_bc, reference, tmp_path,
                                                             caplog):
  """The phase-boundary checkpoint after BC loses its meta; BC's last state is the fallback, so
  BC is reported again, which also restores the row whose results.jsonl line was garbled."""
  workdir = shutil.copytree(after_bc, tmp_path / "w")
  for path in glob.glob(str(workdir / "checkpoints" / str(10**6) / "meta" / "*")):
    os.remove(path)
  with open(workdir / "results.jsonl", encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert len(lines) == 2
  with open(workdir / "results.jsonl", "w", encoding="utf-8") as f:
    f.write(lines[0][:40] + "\x00garbled\n" + lines[1] + "\n")

  with caplog.at_level(logging.WARNING):
    rows = run_experiment(workdir)
  assert len(_warnings(caplog, f"checkpoints/{10**6} is unreadable")) == 1
  assert len(_warnings(caplog, "results.jsonl line 1 is not a valid results row")) == 1
  with open(workdir / "results.jsonl.rejected", encoding="utf-8") as f:
    assert "garbled" in f.read()
  assert _metrics(rows) == _metrics(reference)
  _assert_one_row_per_point(workdir, reference)


def test_unreadable_grown_shard_is_regrown_alone(after_bc, reference, tmp_path, caplog):
  """A shard damaged after its Grow step is sampled again by the saved Grow policy, equal to
  the original; the other shards are not rewritten."""
  workdir = shutil.copytree(after_bc, tmp_path / "w")
  run_experiment(workdir, "rest_loop.run.stop_after_phase = 'improve1.0'")
  store = grown_data.GrowStore(str(workdir / "grown"), 1)
  first, *others = store.shard_files()
  original = store.read_shard(first)
  mtimes = [os.stat(path).st_mtime_ns for path in others]
  with open(first, "r+b") as f:
    f.truncate(os.path.getsize(first) // 3)

  with caplog.at_level(logging.WARNING):
    rows = run_experiment(workdir)
  (warning,) = _warnings(caplog, "Grown shard")
  assert first in warning.getMessage() and "set aside" in warning.getMessage()
  assert os.path.exists(first + ".unreadable")
  assert [os.stat(path).st_mtime_ns for path in others] == mtimes
  regrown = store.read_shard(first)
  assert regrown.source_id.tolist() == original.source_id.tolist()
  assert regrown.reward.tolist() == original.reward.tolist()
  assert regrown.sample_text == original.sample_text
  assert regrown.policy_step.tolist() == original.policy_step.tolist()
  assert _metrics(rows) == _metrics(reference)
  _assert_one_row_per_point(workdir, reference)
