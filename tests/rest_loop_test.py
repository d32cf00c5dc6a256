"""End-to-end ReST runs on the tiny gin experiment: every loss, resume, and input errors."""

import dataclasses
import math
import os
import shutil

import gin
import numpy as np
import pytest

from rest_jax import configs, grown_data, improve, inspect_grown, main, train
from rest_jax.losses import registry as loss_registry

LOSSES = ["bc", "reward_weighted_nll", "gold_s", "gold_p", "bvmpo", "oac"]
METRICS = ("mean_reward", "bleu", "chrf", "length_ratio", "distinct_1", "distinct_2",
           "repetition_rate")

pytestmark = pytest.mark.slow


def run_experiment(workdir, *bindings, gin_file="test/tiny_e2e.gin"):
  gin.clear_config()
  main.parse_gin([gin_file], list(bindings), [main.EXPERIMENTS_DIR])
  try:
    return gin.get_configurable("rest_loop.run")(workdir=str(workdir))
  finally:
    gin.clear_config()


def _metrics(rows):
  return {(r["run"], r["split"]): tuple(r[m] for m in METRICS) for r in rows}


@pytest.fixture(scope="module")
def grown_workdir(tmp_path_factory):
  """BC and Grow once; every loss test continues from a copy of this workdir."""
  workdir = tmp_path_factory.mktemp("base")
  run_experiment(workdir, "rest_loop.run.stop_after_phase = 'grow1'")
  return workdir


@pytest.mark.parametrize("loss", LOSSES)
def test_tiny_g1_i2_run_for_each_loss(grown_workdir, tmp_path, loss):
  workdir = tmp_path / loss
  shutil.copytree(grown_workdir, workdir)
  rows = run_experiment(workdir, f"ImproveConfig.losses = ('{loss}',)")
  by_run = {(r["run"], r["split"]): r for r in rows}
  for run in ("G0I0", "G1I0", "G1I1"):
    for split in ("validation", "test"):
      row = by_run[(run, split)]
      assert all(math.isfinite(row[m]) for m in METRICS)
  assert by_run[("G1I1", "validation")]["loss"] == loss
  assert by_run[("G1I0", "validation")]["num_grown"] == 64
  # 2 samples for each of 32 sources, each scored, and every source's reference scored.
  references = int(grown_data.GrowStore(str(workdir / "grown"), 1).read_all().is_original.sum())
  assert by_run[("G1I1", "test")]["samples_drawn"] == 64
  assert by_run[("G1I1", "test")]["reward_calls"] == 64 + references
  # Wall seconds after BC: Grow step 1 (its shards' times), then each round's training on top.
  grow_wall = grown_data.GrowStore(str(workdir / "grown"), 1).wall_seconds()
  assert 0 < grow_wall < by_run[("G1I0", "test")]["wall_s"] < by_run[("G1I1", "test")]["wall_s"]
  assert os.path.exists(workdir / "results.md") and os.path.exists(workdir / "reward_per_step.png")
  assert os.path.exists(workdir / "reward_vs_chrf.png")
  # The value phase ran exactly for the losses that need a critic.
  assert os.path.isdir(workdir / "tensorboard")
  events = "".join(open(os.path.join(dp, f), "rb").read().decode("latin-1")
                   for dp, _, fs in os.walk(workdir / "tensorboard") for f in fs)
  assert ("train/value1/" in events) == loss_registry.get_loss(loss).needs_value_head


def test_several_test_splits_and_diagnostics(grown_workdir, tmp_path, capsys):
  """Every listed test split gets rows and a table; results.md carries the reward-hacking check
  and sample translations; inspect_grown reads the real Grow step."""
  workdir = shutil.copytree(grown_workdir, tmp_path / "splits")
  rows = run_experiment(workdir, "DataConfig.test_splits = ('test', 'train')",
                        "ImproveConfig.filter_schedule = ('threshold:tau=0.1',)")
  assert {(r["run"], r["split"]) for r in rows} == {
      ("G0I0", "validation"), ("G0I0", "test"),  # BC ran before test_splits changed.
      ("G1I0", "validation"), ("G1I0", "test"), ("G1I0", "train")}
  out = capsys.readouterr().out
  assert "train:\n| run | reward |" in out and "## Reward-hacking check" in out
  text = open(workdir / "results.md").read()
  assert text.index("## Validation") < text.index("## Test\n") < text.index(
      "## Test split `train`") < text.index("## Reward-hacking check") < text.index(
          "## Sample translations")
  assert "   - G=1 I=0: " in text.split("## Sample translations")[1]
  assert os.path.exists(workdir / "samples" / "G1I0_train.jsonl")

  assert inspect_grown.main([f"--workdir={workdir}", "--grow_step=1", "--limit=3",
                             "--filter=threshold:tau=0.1"]) == 0
  out = capsys.readouterr().out
  records = grown_data.GrowStore(str(workdir / "grown"), 1).read_all()
  result = improve.filter_round(records, "threshold:tau=0.1", "keep")
  assert f"keeps {result.num_kept} of {len(records)} rows" in out
  blocks = out.strip().split("\n\n")[1:]
  assert len(blocks) == 3 and all(b.count("  sample ") == 2 for b in blocks)


def _records_key(records):
  return sorted(zip(records.source_id.tolist(), records.sample_index.tolist()))


def test_resume_after_interruptions_equals_uninterrupted(grown_workdir, tmp_path, monkeypatch):
  reference = run_experiment(shutil.copytree(grown_workdir, tmp_path / "reference"))
  store = grown_data.GrowStore(str(tmp_path / "reference" / "grown"), 1)
  reference_records = store.read_all()

  workdir = tmp_path / "interrupted"

  class Interrupt(Exception):
    pass

  # 1) Stop at a phase boundary (after BC).
  run_experiment(workdir, "rest_loop.run.stop_after_phase = 'bc'")
  # 2) Crash mid-Grow, after the first of two shards is written.
  original_write = grown_data.GrowStore.write_shard

  def write_then_crash(self, *args, **kwargs):
    original_write(self, *args, **kwargs)
    raise Interrupt()

  monkeypatch.setattr(grown_data.GrowStore, "write_shard", write_then_crash)
  with pytest.raises(Interrupt):
    run_experiment(workdir)
  assert len(grown_data.GrowStore(str(workdir / "grown"), 1).shard_files()) == 1
  monkeypatch.setattr(grown_data.GrowStore, "write_shard", original_write)
  # 3) Crash mid-Improve, right after the first evaluation checkpoint of round 0.
  original_eval = train._evaluate_and_checkpoint

  def eval_then_crash(*args, **kwargs):
    original_eval(*args, **kwargs)
    raise Interrupt()

  monkeypatch.setattr(train, "_evaluate_and_checkpoint", eval_then_crash)
  with pytest.raises(Interrupt):
    run_experiment(workdir)
  monkeypatch.setattr(train, "_evaluate_and_checkpoint", original_eval)
  # 4) Finish.
  resumed = run_experiment(workdir)

  assert _metrics(resumed) == _metrics(reference)
  records = grown_data.GrowStore(str(workdir / "grown"), 1).read_all()
  assert _records_key(records) == _records_key(reference_records)
  assert len(set(_records_key(records))) == len(records)  # No duplicated record.
  np.testing.assert_array_equal(np.sort(records.reward), np.sort(reference_records.reward))


def test_empty_filtered_round_gives_a_clear_message_and_stops(grown_workdir, tmp_path, capsys):
  workdir = shutil.copytree(grown_workdir, tmp_path / "empty")
  rows = run_experiment(workdir, "ImproveConfig.filter_schedule = "
                        "('threshold:tau=0.98', 'threshold:tau=0.99')",
                        "ImproveConfig.original_data = 'drop'")
  out = capsys.readouterr().out
  assert "improve1.0" in out and "kept no" in out.lower() or "0 of" in out
  assert {r["run"] for r in rows} == {"G0I0"}  # Both rounds of Grow step 1 were stopped.


@pytest.mark.parametrize("binding, message", [
    ("ImproveConfig.filter_schedule = ('threshold:tau=0.8', 'threshold:tau=0.7')",
     "increasing"),
    ("ImproveConfig.losses = ('ppo',)", "valid losses"),
    ("ImproveConfig.filter_schedule = ('thresh:tau=0.5',)", "threshold"),
    ("ImproveConfig.original_data = 'maybe'", "keep"),
    ("rest_loop.run.model_preset = 'huge'", "allowed"),
    ("rest_loop.run.bc_selection_metric = 'loss'", r"allowed: \['mean_reward', 'bleu', 'chrf'\]"),
    ("DataConfig.test_splits = ()", r"test_splits=\(\) is invalid: it is not a non-empty tuple"),
    ("DataConfig.test_splits = 'test'", "a one-split tuple needs its comma"),
    ("DataConfig.test_splits = ('test', 'validation')", "always evaluated"),
    ("DataConfig.test_splits = ('test_dict',)",
     r"task 'ding_de_en' has no split \['test_dict'\]; its splits: \['test', 'train'"),
])
def test_bad_experiment_config_fails_before_any_work(tmp_path, binding, message):
  with pytest.raises(Exception, match=message):
    run_experiment(tmp_path / "bad", binding)
  assert not os.path.exists(tmp_path / "bad" / "checkpoints")


def test_bc_and_best_checkpoints_are_loadable_policies(grown_workdir):
  """checkpoints_bc/ (and checkpoints_best/) carry the model in their meta, so the BC policy can
  be sampled on its own, e.g. to make reward-model training data."""
  from rest_jax.rewards import reward_model_training  # pylint: disable=g-import-not-at-top
  policy = reward_model_training.load_policy_for_sampling(
      str(grown_workdir / "checkpoints_bc"))
  assert policy.step == 0 and policy.vocabulary_name == "task:ding_de_en"
  # Saved as JSON (tuples come back as lists); model_config_dict restores the field types.
  assert configs.model_config_dict(policy.meta["fingerprint"]["model"]) == dataclasses.asdict(
      policy.model.config)
  best = reward_model_training.load_policy_for_sampling(str(grown_workdir / "checkpoints_best"))
  assert best.model.config == policy.model.config


def test_bc_selects_its_checkpoint_on_the_configured_metric(tmp_path):
  """With bc_selection_metric='chrf' and the early-stopping subset equal to the validation set,
  the BC row's selection score is its validation corpus chrF, not its reward."""
  rows = run_experiment(tmp_path / "chrf", "rest_loop.run.bc_selection_metric = 'chrf'",
                        "DataConfig.early_stopping_examples = 32",
                        "rest_loop.run.reward = 'bleu'",
                        "rest_loop.run.stop_after_phase = 'bc'")
  (row,) = [r for r in rows if r["split"] == "validation"]
  assert row["run"] == "G0I0"
  assert row["early_stopping_reward"] == pytest.approx(row["chrf"], abs=1e-6)
  assert row["early_stopping_reward"] != pytest.approx(row["mean_reward"], abs=1e-3)
