"""Tests for rest_jax.inspect_grown on a small hand-made Grow step and a real experiment config.

The grown shards are written with GrowStore (the loop's writer) and config.gin the way main.py
writes it (gin.config_str() of the tiny experiment), so every read path is the real one without
paying for a BC run; tests/rest_loop_test.py checks the tool on a real Grow step.
"""

import re

import gin
import numpy as np
import pytest

from rest_jax import grown_data, improve, inspect_grown, main

# Per source: the reference's reward, then its samples' rewards (sample_index 0, 1, 2).
REWARDS = {10: (0.9, [0.2, 0.7, 0.4]), 11: (0.3, [0.6, 0.1, 0.65]), 12: (0.5, [])}


def _records():
  rows = []
  for sid, (ref_reward, sample_rewards) in REWARDS.items():
    rows.append((sid, -1, ref_reward, True, f"reference {sid}"))
    rows += [(sid, j, r, False, f"sample {sid}.{j}") for j, r in enumerate(sample_rewards)]
  n = len(rows)
  column = lambda k, dtype: np.array([r[k] for r in rows], dtype)
  return grown_data.GrownRecords(
      source_id=column(0, np.int64), sample_index=column(1, np.int32),
      reward=column(2, np.float32), is_original=column(3, bool),
      grow_step=np.ones(n, np.int32), policy_step=np.full(n, 12, np.int64),
      seed=np.zeros(n, np.int64), source_tokens=[np.array([5, 1], np.int32)] * n,
      sample_tokens=[np.array([3 + i, 1], np.int32) for i in range(n)],
      behaviour_logprobs=[np.full(2, -0.5, np.float32)] * n,
      source_text=[f"Quelle {r[0]}" for r in rows], sample_text=[r[4] for r in rows])


def _write_config(workdir, *bindings):
  gin.clear_config()
  try:
    main.parse_gin(["test/tiny_e2e.gin"], list(bindings), [main.EXPERIMENTS_DIR])
    (workdir / "config.gin").write_text(gin.config_str())
  finally:
    gin.clear_config()


@pytest.fixture()
def workdir(tmp_path):
  store = grown_data.GrowStore(str(tmp_path / "grown"), 1)
  store.ensure_manifest({"num_shards": 1})
  store.write_shard(0, 1, _records())
  _write_config(tmp_path, "ImproveConfig.filter_schedule = "
                "('threshold:tau=0.3', 'threshold:tau=0.6')")
  return tmp_path


def _run(capsys, *argv):
  code = inspect_grown.main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


def test_prints_rewards_and_the_rounds_filter_from_the_config(workdir, capsys):
  code, out, err = _run(capsys, f"--workdir={workdir}", "--grow_step=1", "--round=1")
  assert code == 0 and not err
  header, *blocks = out.strip().split("\n\n")
  assert "filter 'threshold:tau=0.6' (original_data='keep'; round 1 of config.gin)" in header
  # tau=0.6 keeps rewards > 0.6: samples 10.1 and 11.2; with original_data='keep' all 3 refs.
  assert "keeps 5 of 9 rows (2 policy samples, 3 original pairs) from 3 sources" in header
  assert len(blocks) == 2  # Sources with samples only; source 12 has none.
  assert blocks[0].splitlines() == [
      "source 10: Quelle 10",
      "  reference  reward 0.900  KEPT     reference 10",
      "  sample 1   reward 0.700  KEPT     sample 10.1",
      "  sample 2   reward 0.400  dropped  sample 10.2",
      "  sample 0   reward 0.200  dropped  sample 10.0"]
  assert "  sample 2   reward 0.650  KEPT     sample 11.2" in blocks[1]


def test_marks_equal_the_improve_rounds_selection(workdir, capsys):
  """KEPT lines are exactly the records improve.round_data trains on."""
  records = grown_data.GrowStore(str(workdir / "grown"), 1).read_all()
  for spec in ("threshold:tau=0.3", "top_k:k=1", "percentile:p=50"):
    for original_data in ("keep", "filter", "drop"):
      _, out, _ = _run(capsys, f"--workdir={workdir}", "--grow_step=1", f"--filter={spec}",
                       f"--original_data={original_data}", "--source_ids=10,11,12")
      kept = {line.split()[-1] for line in out.splitlines() if " KEPT " in line}
      data, _ = improve.round_data(records, spec, original_data)
      expected = set() if data is None else {
          records.sample_text[i] for i in range(len(records))
          if any(np.array_equal(records.sample_tokens[i], t) for t in data.targets)}
      assert kept == {t.split()[-1] for t in expected}, (spec, original_data)


def test_source_ids_limit_and_original_data_from_config(tmp_path, workdir, capsys):
  _, out, _ = _run(capsys, f"--workdir={workdir}", "--grow_step=1", "--source_ids=12", "--round=0")
  assert out.strip().split("\n\n")[1].splitlines() == [
      "source 12: Quelle 12", "  reference  reward 0.500  KEPT     reference 12"]
  _, out, _ = _run(capsys, f"--workdir={workdir}", "--grow_step=1", "--limit=1")
  assert out.count("source 1") == 1
  _write_config(workdir, "ImproveConfig.original_data = 'drop'")
  _, out, _ = _run(capsys, f"--workdir={workdir}", "--grow_step=1", "--round=1")
  assert "filter 'threshold:tau=0.1' (original_data='drop'" in out
  assert "  reference  reward 0.900  dropped  reference 10" in out


@pytest.mark.parametrize("args, message", [
    (["--workdir={tmp}/missing", "--grow_step=1"], "workdir {tmp}/missing does not exist"),
    (["--workdir={tmp}", "--grow_step=2"], "no grown data for Grow step 2 in {tmp}/grown "
     r"\(Grow steps with shards: \[1\]\)"),
    (["--workdir={tmp}", "--grow_step=1", "--filter=threshhold:tau=0.5"],
     "bad --filter='threshhold:tau=0.5': .*threshold"),
    (["--workdir={tmp}", "--grow_step=1", "--filter=threshold:tau=2"], "bad --filter="),
    (["--workdir={tmp}", "--grow_step=1", "--round=5"], "Improve step 6 has no filter"),
    (["--workdir={tmp}", "--grow_step=1", "--source_ids=10,99"], r"--source_ids \[99\]"),
    (["--workdir={tmp}", "--grow_step=1", "--limit=0"], "--limit=0 is invalid"),
])
def test_clear_one_line_errors(workdir, capsys, args, message):
  code, out, err = _run(capsys, *[a.format(tmp=workdir) for a in args])
  assert code == 2 and not out
  assert err.count("\n") == 1 and err.startswith("inspect_grown: error: ")
  assert re.search(message.format(tmp=workdir), err), err


def test_without_a_config_the_filter_must_be_given(workdir, capsys):
  (workdir / "config.gin").unlink()
  code, _, err = _run(capsys, f"--workdir={workdir}", "--grow_step=1")
  assert code == 2 and "no config.gin or operative_config.gin" in err and "--filter" in err
  code, out, _ = _run(capsys, f"--workdir={workdir}", "--grow_step=1", "--filter=top_k:k=1")
  assert code == 0 and "filter 'top_k:k=1' (original_data='keep'; --filter)" in out
