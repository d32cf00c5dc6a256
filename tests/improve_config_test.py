"""ImproveConfig: what each Improve round trains with, checked before any work starts.

The BVMPO anneal length follows the round, value pretraining uses the rounds' gamma and
overrides, the learning-rate decay's scope, the trust-region refresh, and the combinations that
would silently mistrain (references under reference-based rewards, behaviour log-probs of
originals) are refused with errors naming the field.
"""

import dataclasses

import numpy as np
import pytest

from rest_jax import improve, rest_loop, train
from rest_jax.losses import base as loss_base
from rest_jax.losses import bvmpo
from rest_jax.losses import registry as loss_registry


def test_bvmpo_anneals_to_its_end_value_by_the_end_of_a_default_round():
  config = improve.ImproveConfig(losses=("bvmpo",))
  max_steps = config.train.max_steps
  loss_config = config.loss_config("bvmpo")
  assert loss_config.anneal_steps == max_steps
  np.testing.assert_allclose(bvmpo.kl_bc_coefficient(max_steps, loss_config), 1e-5, rtol=1e-4)
  # A longer round anneals over its own length.
  longer = dataclasses.replace(config, train=config.train.replace(max_steps=20_000))
  np.testing.assert_allclose(
      bvmpo.kl_bc_coefficient(20_000, longer.loss_config("bvmpo")), 1e-5, rtol=1e-4)
  np.testing.assert_allclose(
      bvmpo.kl_bc_coefficient(10_000, longer.loss_config("bvmpo")), np.sqrt(1e-5), rtol=1e-4)


def test_value_pretraining_uses_the_rounds_gamma_and_overrides():
  config = improve.ImproveConfig(
      losses=("oac",), loss_overrides={"oac": {"gamma": 0.9},
                                       "value_pretrain": {"value_coef": 2.0}})
  pretrain = config.value_pretrain_config()
  assert (pretrain.gamma, pretrain.value_coef) == (0.9, 2.0)
  assert improve.ImproveConfig(losses=("bc",)).value_pretrain_config().gamma == 1.0


def test_rounds_with_different_critic_gammas_are_refused():
  with pytest.raises(ValueError, match=r"one critic .*gamma differ: \{'bvmpo': 1.0, 'oac': 0.9\}"):
    improve.ImproveConfig(filter_schedule=("threshold:tau=0.0", "threshold:tau=0.5"),
                            losses=("bvmpo", "oac"), loss_overrides={"oac": {"gamma": 0.9}})
  with pytest.raises(ValueError, match=r"'oac': 1.0, 'value_pretrain': 0.5"):
    improve.ImproveConfig(losses=("oac",), loss_overrides={"value_pretrain": {"gamma": 0.5}})


@pytest.mark.parametrize("scope, expected", [("grow_step", [1.0, 0.5, 1.0, 0.5]),
                                             ("run", [1.0, 0.5, 0.25, 0.125])])
def test_learning_rate_decay_scope(scope, expected):
  config = improve.ImproveConfig(filter_schedule=("threshold:tau=0.0", "threshold:tau=0.5"),
                                   lr_decay_over=scope)
  scales = [config.lr_scale(g, i) for g in (1, 2) for i in (0, 1)]
  np.testing.assert_allclose(scales, expected)


@pytest.mark.parametrize("field, value, message", [
    ("lr_decay_over", "round", r"ImproveConfig.lr_decay_over='round' is invalid: allowed: "
                               r"\('grow_step', 'run'\)"),
    ("trust_region_sync_every", -1, r"ImproveConfig.trust_region_sync_every=-1 is invalid"),
    ("lagged_sync_every", 2.5, r"ImproveConfig.lagged_sync_every=2.5 is invalid"),
    ("mix_bc_data", "yes", r"ImproveConfig.mix_bc_data='yes' is invalid: expected True or False"),
])
def test_bad_improve_fields_name_the_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    improve.ImproveConfig(**{field: value})


def test_trust_region_refresh_is_on_by_default():
  assert improve.ImproveConfig().trust_region_sync_every == 100


def test_filtering_references_under_a_reference_based_reward_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"original_data='filter' with the reference-based "
                     r"reward 'chrf': each human reference would be scored against itself"):
    rest_loop.run(str(tmp_path / "run"), model_preset="toy", reward="chrf",
                  improve_config=improve.ImproveConfig(original_data="filter"))
  assert not (tmp_path / "run").exists()


def test_losses_reading_behaviour_logprobs_need_originals_dropped(monkeypatch):
  spec = loss_base.LossSpec(name="needs_behaviour", fn=lambda *a: None,
                            config_cls=loss_registry.get_loss("bc").config_cls,
                            requires=frozenset({"behaviour_token_logprobs"}))
  monkeypatch.setitem(loss_registry._LOSSES, spec.name, spec)
  with pytest.raises(ValueError, match=r"original_data='keep' with loss\(es\) "
                     r"\['needs_behaviour'\], which read behaviour log-probs.*'drop'"):
    improve.ImproveConfig(losses=("needs_behaviour",))
  improve.ImproveConfig(losses=("needs_behaviour",), original_data="drop")


def test_toy_defaults_are_named_as_such():
  for cls, paper in ((improve.ImproveConfig, "5 (IWSLT)"), (rest_loop.DataConfig, "128"),
                     (train.TrainPhaseConfig, "validation reward improves")):
    assert "Toy default" in cls.__doc__ and paper in cls.__doc__, cls.__name__


def test_mixing_bc_data_needs_the_bc_loss():
  assert improve.ImproveConfig(mix_bc_data=True).mix_bc_data  # default losses=('bc',)
  with pytest.raises(ValueError, match=r"mix_bc_data=True with losses \('bc', 'gold_s'\).*"
                                       r"allowed: losses=\('bc',\)"):
    improve.ImproveConfig(mix_bc_data=True, losses=("bc", "gold_s"),
                            filter_schedule=("threshold:tau=0.0", "threshold:tau=0.5"))
