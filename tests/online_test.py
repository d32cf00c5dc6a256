"""The online-RL step on a toy model: 8 fake devices equal 1, resume equals an uninterrupted run."""

import dataclasses

import jax
import numpy as np
import pytest

import toy_setup
from rest_jax import batching, online, optim, sampling, sharding, train
from rest_jax.configs import OptimizerConfig
from rest_jax.losses import registry as loss_registry
from rest_jax.rewards.base import Reward


@dataclasses.dataclass
class _Example:
  source_id: int
  inputs: np.ndarray
  targets: np.ndarray
  source: str
  reference: str


class _Vocab:
  def decode(self, ids):
    return " ".join(str(i) for i in ids)


class _CountReward(Reward):
  """Fraction of the hypothesis's tokens that are 5 (a reward the toy policy can climb)."""
  name = "count5"

  def score(self, sources, hypotheses, references=None):
    return np.array([h.split().count("5") / max(len(h.split()), 1) for h in hypotheses],
                    np.float32)


def _examples(num=16):
  sources, targets = toy_setup.reverse_task(num, 8, seed=3)
  return [_Example(i, src[src != 0], tgt[tgt != 0], f"s{i}", f"r{i}")
          for i, (src, tgt) in enumerate(zip(sources, targets))]


def _config(loss, **changes):
  train_cfg = train.TrainPhaseConfig(batch_size=8, max_steps=4, eval_every=2, log_every=1,
                                       dropout=False)
  fields = dict(loss=loss, num_samples=2, max_decode_len=8, train=train_cfg,
                inner_epochs=2 if loss == "ppo" else 1, minibatches=2 if loss == "ppo" else 1)
  fields.update(changes)
  return online.OnlineConfig(**fields)


class _Setup:
  """A toy policy state, the online step and the phase's data on a mesh of `devices`."""

  def __init__(self, config, devices):
    self.config = config
    self.mesh = toy_setup.mesh(data=devices)
    model = toy_setup.toy_model(value_head=True)
    self.factory, _, state, _ = toy_setup.factory_and_state(model, self.mesh)
    self.tx = optim.make_optimizer(OptimizerConfig(learning_rate=1e-2, warmup_steps=0))
    spec, loss_cfg = config.spec, config.loss_config()
    # A fresh copy each time: the train step donates the state it is given.
    self.fresh_state = lambda: self.factory.start_phase(
        state.params, state.step, self.tx, spec.init_params(loss_cfg),
        {"bc_params": state.params})[0]
    self.start_params = jax.device_get(state.params)
    _, shardings = self.factory.start_phase(state.params, state.step, self.tx,
                                            spec.init_params(loss_cfg),
                                            {"bc_params": state.params})
    update = train.make_train_step(model, spec, loss_cfg, self.tx, shardings, self.mesh,
                                   dropout=False)
    sampler = sampling.make_sampler(model, config.sampling_config(), self.mesh,
                                    self.factory.param_shardings)
    old_policy = online.make_old_policy_fn(model, self.mesh, self.factory.param_shardings)
    self.examples = _examples()
    self.make_step = lambda: online.OnlineStep(config, update, sampler, old_policy,
                                               _CountReward(), self.examples, _Vocab(), self.mesh)
    self.data = online.source_data(self.examples)
    self.lengths = (8, 8)


def _one_step(setup):
  schedule = batching.BatchSchedule(setup.data, setup.config.train.batch_size, 0, *setup.lengths)
  batch = sharding.shard_batch(schedule.batch(0), setup.mesh)
  state, metrics = setup.make_step()(setup.fresh_state(), batch, jax.random.PRNGKey(7))
  assert int(state.round_step) == setup.config.updates_per_step
  return jax.device_get(state.params), jax.device_get(metrics)


@pytest.fixture(scope="module")
def ppo_on_8_devices():
  """One setup (and one set of compiled functions) for the tests below."""
  return _Setup(_config("ppo"), 8)


def test_one_ppo_step_on_8_fake_devices(ppo_on_8_devices):
  """Sampling, scoring, pi_old/V_old and 2 epochs x 2 minibatches of updates, on a mesh of 8.

  (Not compared with 1 device after several Adam updates: Adam turns the summation-order noise
  of near-zero gradients into full-size steps.)"""
  setup = ppo_on_8_devices
  params, metrics = _one_step(setup)
  assert metrics["samples_drawn"] == metrics["reward_calls"] == 16
  assert 0.0 <= metrics["sample_reward"] <= 1.0
  for key in ("loss", "kl_bc", "policy_loss", "value_loss", "clip_fraction", "entropy"):
    assert np.isfinite(metrics[key]), key
  assert metrics["kl_bc"] > 0  # Four updates moved the policy away from its BC copy.
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), params,
                                 setup.start_params)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-4


class _Interrupted(Exception):
  pass


def _run_phase(setup, crash_at=None, saved=None):
  """train_phase with in-memory checkpoints; raises _Interrupted after saving step `crash_at`."""
  saved = {} if saved is None else saved
  best = {}

  def save_state(state, progress):
    saved["state"] = jax.tree_util.tree_map(np.copy, jax.device_get(state))
    saved["progress"] = train.PhaseProgress.from_json(progress.to_json())
    if progress.step == crash_at:
      raise _Interrupted()

  hooks = train.PhaseHooks(
      evaluate=lambda params: float(np.asarray(jax.tree_util.tree_leaves(params)[0]).sum()),
      save_state=save_state, save_best=lambda p, prog: best.update(params=p),
      load_best=lambda: best["params"], log_metrics=lambda m, s: None)
  state, progress = setup.fresh_state(), train.PhaseProgress()
  if "state" in saved:
    state = jax.device_put(saved["state"], jax.tree_util.tree_map(lambda x: x.sharding, state))
    progress = saved["progress"]
  state, _, _ = train.train_phase("online", state, setup.make_step(), setup.data,
                                    setup.config.train, setup.mesh, hooks, progress,
                                    jax.random.PRNGKey(0), setup.lengths)
  return jax.device_get(state)


def test_resume_mid_phase_equals_an_uninterrupted_run(ppo_on_8_devices):
  setup = ppo_on_8_devices
  uninterrupted = _run_phase(setup)
  saved = {}
  with pytest.raises(_Interrupted):
    _run_phase(setup, crash_at=2, saved=saved)
  assert saved["progress"].step == 2
  resumed = _run_phase(setup, saved=saved)
  assert int(resumed.round_step) == int(uninterrupted.round_step) == 4 * 4
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.params, uninterrupted.params)


def test_online_losses_are_registered():
  assert set(loss_registry.list_online_losses()) == {"reinforce", "ppo"}
  assert loss_registry.get_loss("ppo").needs_value_head
