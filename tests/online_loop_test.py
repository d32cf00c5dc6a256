"""The online-RL experiments: their gin files build valid configs, and a tiny run end to end."""

import json
import os

import gin
import pytest

from rest_jax import grow as grow_lib
from rest_jax import main, online, pretrained_policies, train
from rest_jax import rest_loop  # noqa: F401  (registers the configurables)

class _Killed(Exception):
  pass


EXPERIMENTS = ("de_en/online_reinforce.gin", "de_en/online_ppo.gin", "arith/online_reinforce.gin",
               "arith/online_ppo.gin", "test/tiny_online.gin")


def _parse(gin_file, *bindings):
  gin.clear_config()
  main.parse_gin([gin_file], list(bindings), [main.EXPERIMENTS_DIR], finalize=False)


@pytest.mark.parametrize("gin_file", EXPERIMENTS)
def test_online_experiment_builds_valid_configs(gin_file):
  try:
    _parse(gin_file)
    config = gin.query_parameter("rest_loop.run.online").scoped_configurable_fn()
    assert isinstance(config, online.OnlineConfig)
    assert gin.query_parameter("%NUM_GROW_STEPS") == 0
    for arg in ("mesh", "data", "bc", "grow", "improve_config", "evaluation"):
      gin.query_parameter(f"rest_loop.run.{arg}").scoped_configurable_fn()
    assert not config.train.dropout  # PPO's first-epoch ratio is exactly 1.
    if gin_file.startswith("de_en/"):  # The same BC policy as the de_en ReST runs.
      assert gin.query_parameter("rest_loop.run.init_policy") == "pretrained=de_en_small"
      pretrained_policies.resolve("pretrained=de_en_small")
    if not gin_file.startswith("test/"):
      assert config.loss == gin_file.split("/online_")[1][:-len(".gin")]
      config.check_layout(num_batch_shards=8)
  finally:
    gin.clear_config()


def test_rest_sample_counts_match_the_online_definition():
  """A Grow step draws N samples per sampled source and scores each once, plus each reference."""
  config = grow_lib.GrowConfig(num_samples=4, max_sources=10)
  assert grow_lib.sample_counts(config, 25) == (40, 65)
  assert grow_lib.sample_counts(grow_lib.GrowConfig(num_samples=3), 7) == (21, 28)


@pytest.mark.slow
def test_tiny_online_run_resumes_mid_phase(tmp_path, monkeypatch):
  """BC, then 4 PPO steps; the run is killed after the online phase's first evaluation and
  resumed: the results carry the counters, the curve one line per evaluation."""
  bindings = ["OnlineConfig.loss = 'ppo'", "OnlineConfig.loss_overrides = {}",
              "OnlineConfig.inner_epochs = 2", "OnlineConfig.minibatches = 2",
              "bc/TrainPhaseConfig.max_steps = 4", "bc/TrainPhaseConfig.eval_every = 4"]

  def run():
    _parse("test/tiny_online.gin", *bindings)
    try:
      return gin.get_configurable("rest_loop.run")(workdir=str(tmp_path))
    finally:
      gin.clear_config()

  original = train._evaluate_and_checkpoint

  def evaluate_then_crash(state, config, hooks, progress, clock):
    original(state, config, hooks, progress, clock)
    if config.batch_size == 8 and progress.step == 2:  # The online phase's first evaluation.
      raise _Killed()

  monkeypatch.setattr(train, "_evaluate_and_checkpoint", evaluate_then_crash)
  with pytest.raises(_Killed):
    run()
  monkeypatch.setattr(train, "_evaluate_and_checkpoint", original)
  rows = {(r["run"], r["split"]): r for r in run()}
  final = rows[("online_ppo", "validation")]
  assert final["samples_drawn"] == final["reward_calls"] == 4 * 8 * 2
  assert final["online_steps"] == 4 and final["loss"] == "ppo"
  assert "grow_step" not in final and ("G0I0", "test") in rows
  curve = [json.loads(line) for line in open(tmp_path / online.CURVE_NAME)]
  assert [row["step"] for row in curve] == [0, 2, 4]
  assert [row["samples_drawn"] for row in curve] == [0, 32, 64]
  assert curve[0]["wall_s"] <= curve[1]["wall_s"] <= curve[2]["wall_s"]
  assert "online_ppo" in open(tmp_path / "results.md").read()
  events = "".join(open(os.path.join(d, f), "rb").read().decode("latin-1")
                   for d, _, fs in os.walk(tmp_path / "tensorboard") for f in fs)
  for tag in ("samples_drawn", "reward_calls", "wall_s", "sample_reward", "clip_fraction"):
    assert f"train/online/{tag}" in events, tag
