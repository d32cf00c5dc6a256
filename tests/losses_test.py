"""Improve-step losses: hand-computed values, masking, weighting, gradients, registry errors.

Reference values are written out with numpy loops here, independently of rest_jax's helpers.
BVMPO has its own file (losses_bvmpo_test.py).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rest_jax import losses
from rest_jax.losses import base

B, T, V = 2, 4, 5
MASK = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
TARGETS = np.array([[1, 3, 0, 2], [4, 2, 1, 1]], np.int32)
REWARDS = np.array([0.9, 0.3], np.float32)
ALL_LOSSES = ["bc", "reward_weighted_nll", "gold_s", "gold_p", "bvmpo", "oac",
              "value_pretrain"]
# On-policy losses, tested in tests/losses_online_test.py (they read group_ids / old_values).
ONLINE_LOSSES = ["ppo", "reinforce"]


def np_log_softmax(x):
  shifted = x - x.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_target_logprobs(logits):
  return np.take_along_axis(np_log_softmax(logits), TARGETS[..., None], axis=-1)[..., 0]


def random_arrays(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "logits": rng.normal(size=(B, T, V)).astype(np.float32),
      "bc_logits": rng.normal(size=(B, T, V)).astype(np.float32),
      "lagged_logits": rng.normal(size=(B, T, V)).astype(np.float32),
      "prev_logits": rng.normal(size=(B, T, V)).astype(np.float32),
      "behaviour_logits": rng.normal(size=(B, T, V)).astype(np.float32),
      "values": rng.uniform(0.0, 1.0, size=(B, T)).astype(np.float32),
  }


def target_logprobs(logits, targets=TARGETS):
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(log_probs, jnp.asarray(targets)[..., None], axis=-1)[..., 0]


def build_inputs(arrays, weights=(1.0, 1.0), step=0, **replace):
  """Full LossInputs (every optional field present); token log-probs derive from logits."""
  fields = dict(
      token_logprobs=target_logprobs(arrays["logits"]),
      logits=jnp.asarray(arrays["logits"]),
      mask=jnp.asarray(MASK),
      rewards=jnp.asarray(REWARDS),
      weights=jnp.asarray(weights, jnp.float32),
      step=jnp.asarray(step, jnp.int32),
      behaviour_token_logprobs=target_logprobs(arrays["behaviour_logits"]),
      bc_logits=jnp.asarray(arrays["bc_logits"]),
      bc_token_logprobs=target_logprobs(arrays["bc_logits"]),
      lagged_token_logprobs=target_logprobs(arrays["lagged_logits"]),
      prev_logits=jnp.asarray(arrays["prev_logits"]),
      values=jnp.asarray(arrays["values"]),
  )
  fields.update(replace)
  return base.LossInputs(**fields)


def run_loss(name, inputs, **overrides):
  spec = losses.get_loss(name)
  config = losses.make_config(name, **overrides)
  return jax.jit(lambda x, p: spec.fn(x, p, config))(inputs, spec.init_params(config))


# ----------------------------------------------------------------------------------------------
# Hand-computed values.


def test_bc_literal_value():
  probs = np.array([[0.5, 0.25, 0.8, 0.3], [0.1, 0.9, 0.6, 0.2]], np.float32)
  inputs = build_inputs(random_arrays(), weights=(1.0, 0.5),
                        token_logprobs=jnp.log(jnp.asarray(probs)))
  loss, metrics = run_loss("bc", inputs)
  # Example 0 has 3 real tokens (weight 1), example 1 has 2 (weight 0.5): 3 + 1 = 4 tokens.
  expected = (-(math.log(0.5) + math.log(0.25) + math.log(0.8))
              - 0.5 * (math.log(0.1) + math.log(0.9))) / 4.0
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["num_tokens"], 4.0)


def test_bc_label_smoothing_matches_numpy():
  arrays = random_arrays(1)
  loss, metrics = run_loss("bc", build_inputs(arrays), label_smoothing=0.1)
  log_probs = np_log_softmax(arrays["logits"])
  nll = -np_target_logprobs(arrays["logits"])
  uniform = -log_probs.mean(axis=-1)
  per_token = 0.9 * nll + 0.1 * uniform
  np.testing.assert_allclose(loss, (per_token * MASK).sum() / MASK.sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics["nll"], (nll * MASK).sum() / MASK.sum(), rtol=1e-5)


def test_reward_weighted_nll_matches_numpy():
  arrays = random_arrays(2)
  weights = np.array([1.0, 2.0], np.float32)
  loss, _ = run_loss("reward_weighted_nll", build_inputs(arrays, weights=weights),
                     baseline=0.5)
  lp = np_target_logprobs(arrays["logits"])
  total, count = 0.0, 0.0
  for b in range(B):
    for t in range(T):
      if MASK[b, t]:
        total += weights[b] * (REWARDS[b] - 0.5) * -lp[b, t]
        count += weights[b]
  np.testing.assert_allclose(loss, total / count, rtol=1e-5)


def np_gold(arrays, variant, horizon=5, gamma=1.0, u=0.2, c=0.1, b=-60.0):
  lp = np_target_logprobs(arrays["logits"])
  lagged = np.exp(np_target_logprobs(arrays["lagged_logits"]))
  p_mle = np.exp(np_target_logprobs(arrays["bc_logits"]))

  def reward(prob):
    return max(c, prob) if variant == "s" else max(c, math.log(prob) - b)

  total, count = 0.0, 0.0
  for i in range(B):
    for t in range(T):
      if not MASK[i, t]:
        continue
      q = 0.0
      for j in range(horizon + 1):
        past_end = t + j >= T or not MASK[i, t + j]
        q += gamma**j * reward(1.0 if past_end else p_mle[i, t + j])
      w = min(max(lagged[i, t], u), 1.0)
      total += w * q * -lp[i, t]
      count += 1.0
  return total / count


@pytest.mark.parametrize("variant", ["s", "p"])
@pytest.mark.parametrize("horizon,gamma", [(5, 1.0), (1, 0.9), (0, 1.0)])
def test_gold_matches_numpy(variant, horizon, gamma):
  arrays = random_arrays(3)
  extra = {"logprob_baseline": -3.0} if variant == "p" else {}
  loss, _ = run_loss(f"gold_{variant}", build_inputs(arrays), horizon=horizon, gamma=gamma,
                     **extra)
  expected = np_gold(arrays, variant, horizon, gamma, b=extra.get("logprob_baseline", -60.0))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_gold_importance_weight_is_clipped():
  arrays = random_arrays(4)
  # A certain lagged policy gives w = 1; a near-zero one is clipped up to u.
  sure = build_inputs(arrays, lagged_token_logprobs=jnp.zeros((B, T)))
  unsure = build_inputs(arrays, lagged_token_logprobs=jnp.full((B, T), -20.0))
  _, sure_metrics = run_loss("gold_s", sure)
  _, unsure_metrics = run_loss("gold_s", unsure, min_importance_weight=0.3)
  np.testing.assert_allclose(sure_metrics["mean_importance_weight"], 1.0)
  np.testing.assert_allclose(unsure_metrics["mean_importance_weight"], 0.3, rtol=1e-6)


def test_gold_beyond_end_reward_override():
  arrays = random_arrays(5)
  inputs = build_inputs(arrays, bc_token_logprobs=jnp.zeros((B, T)))  # p_MLE = 1 everywhere
  _, metrics = run_loss("gold_p", inputs, logprob_baseline=-2.0, beyond_end_reward=1.0)
  # Real positions pay max(0.1, 0 + 2) = 2, past-the-end positions pay 1; k = 5.
  q = [[2 * 3 + 3, 2 * 2 + 4, 2 + 5], [2 * 2 + 4, 2 + 5]]
  expected = (sum(q[0]) + sum(q[1])) / 5.0
  np.testing.assert_allclose(metrics["mean_return"], expected, rtol=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_oac_matches_numpy(normalize):
  arrays = random_arrays(6)
  loss, metrics = run_loss("oac", build_inputs(arrays), value_coef=0.5,
                           normalize_advantages=normalize)
  lp = np_target_logprobs(arrays["logits"])
  values = arrays["values"]
  valid = MASK > 0
  returns = np.broadcast_to(REWARDS[:, None], (B, T))
  adv = (returns - values)[valid]
  if normalize:
    adv = (adv - adv.mean()) / (adv.std() + 1e-6)
  policy = np.mean(adv * -lp[valid])
  value_loss = np.mean(0.5 * (returns - values)[valid] ** 2)
  np.testing.assert_allclose(metrics["policy_loss"], policy, rtol=1e-5)
  np.testing.assert_allclose(metrics["value_loss"], value_loss, rtol=1e-5)
  np.testing.assert_allclose(loss, policy + 0.5 * value_loss, rtol=1e-5)


def test_value_pretrain_discounted_return_matches_numpy():
  arrays = random_arrays(7)
  loss, metrics = run_loss("value_pretrain", build_inputs(arrays), gamma=0.5, value_coef=2.0)
  ends = [2, 1]  # index of the last real token per row
  total = 0.0
  for i in range(B):
    for t in range(ends[i] + 1):
      g = 0.5 ** (ends[i] - t) * REWARDS[i]
      total += 0.5 * (g - arrays["values"][i, t]) ** 2
  np.testing.assert_allclose(metrics["value_loss"], total / 5.0, rtol=1e-5)
  np.testing.assert_allclose(loss, 2.0 * total / 5.0, rtol=1e-5)


# Losses whose per-token weights can be negative (reward below a baseline, negative advantage).
NEGATIVE_WEIGHT_CASES = [("reward_weighted_nll", {"baseline": 0.5}),
                         ("oac", {"value_coef": 0.0})]


@pytest.mark.parametrize("name,overrides", NEGATIVE_WEIGHT_CASES)
def test_negative_weight_losses_are_bounded_below(name, overrides):
  """Driving negatively weighted tokens to probability ~0 must not pay without limit."""
  arrays = random_arrays(14)
  values = jnp.ones((B, T))  # OAC: advantages r - 1 < 0 everywhere.
  # Reward-weighted with baseline 0.5: example 1 (r = 0.3) has weight -0.2.
  negative_rows = [0, 1] if name == "oac" else [1]
  # log pi(y_t): the policy has ruled out every target of the negatively weighted rows.
  logprobs = jnp.full((B, T), -1.0).at[jnp.asarray(negative_rows)].set(-1e4)
  inputs = build_inputs(arrays, values=values, token_logprobs=logprobs)
  cap = losses.make_config(name, **overrides).negative_nll_cap
  loss, _ = run_loss(name, inputs, **overrides)
  most_negative = 1.0 if name == "oac" else 0.2
  assert float(loss) >= -most_negative * cap - 1e-5, float(loss)
  # The capped tokens get no more push-down; 'zero' ignores them; 'unbounded' is the old form.
  grad = jax.grad(lambda lp: run_loss(name, inputs.replace(token_logprobs=lp), **overrides)[0])(
      logprobs)
  np.testing.assert_array_equal(np.asarray(grad)[negative_rows], 0.0)
  zero, _ = run_loss(name, inputs, negative_weights="zero", **overrides)
  assert float(zero) >= 0.0
  unbounded, _ = run_loss(name, inputs, negative_weights="unbounded", **overrides)
  assert float(unbounded) < -100.0


# ----------------------------------------------------------------------------------------------
# Properties every loss must have.


def loss_and_grads(name, arrays, weights=(1.0, 1.0), **overrides):
  """Loss and gradients w.r.t. policy logits, values, dual params and stop-gradient inputs."""
  spec = losses.get_loss(name)
  config = losses.make_config(name, **overrides)

  def objective(logits, values, params, frozen):
    inputs = build_inputs(dict(arrays, logits=logits), weights=weights, values=values,
                          bc_logits=frozen["bc_logits"], prev_logits=frozen["prev_logits"],
                          bc_token_logprobs=frozen["bc_token_logprobs"],
                          lagged_token_logprobs=frozen["lagged_token_logprobs"],
                          behaviour_token_logprobs=frozen["behaviour_token_logprobs"],
                          rewards=frozen["rewards"])
    return spec.fn(inputs, params, config)[0]

  frozen = {
      "bc_logits": jnp.asarray(arrays["bc_logits"]),
      "prev_logits": jnp.asarray(arrays["prev_logits"]),
      "bc_token_logprobs": target_logprobs(arrays["bc_logits"]),
      "lagged_token_logprobs": target_logprobs(arrays["lagged_logits"]),
      "behaviour_token_logprobs": target_logprobs(arrays["behaviour_logits"]),
      "rewards": jnp.asarray(REWARDS),
  }
  fn = jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2, 3)))
  loss, grads = fn(jnp.asarray(arrays["logits"]), jnp.asarray(arrays["values"]),
                   spec.init_params(config), frozen)
  return loss, dict(zip(("logits", "values", "params", "frozen"), grads))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_padding_changes_nothing(name):
  arrays = random_arrays(8)
  garbage = random_arrays(9)
  pad = (MASK == 0)
  changed = {key: np.where(pad[..., None] if value.ndim == 3 else pad, garbage[key] * 7, value)
             for key, value in arrays.items()}
  loss, grads = loss_and_grads(name, arrays)
  loss_changed, grads_changed = loss_and_grads(name, changed)
  np.testing.assert_allclose(loss_changed, loss, rtol=1e-6)
  for key in ("logits", "values", "params"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 grads[key], grads_changed[key])
  np.testing.assert_array_equal(np.asarray(grads["logits"])[pad], 0.0)
  np.testing.assert_array_equal(np.asarray(grads["values"])[pad], 0.0)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_zero_weight_drops_example(name):
  arrays = random_arrays(10)
  extra = {"anneal_steps": 10} if name == "bvmpo" else {}
  loss_both, grads_both = loss_and_grads(name, arrays, weights=(1.0, 0.0), **extra)
  np.testing.assert_array_equal(np.asarray(grads_both["logits"])[1], 0.0)
  np.testing.assert_array_equal(np.asarray(grads_both["values"])[1], 0.0)

  # Same as a batch that only ever contained example 0.
  spec = losses.get_loss(name)
  config = losses.make_config(name, **extra)
  first = {key: value[:1] for key, value in arrays.items()}
  single = base.LossInputs(
      token_logprobs=target_logprobs(first["logits"], TARGETS[:1]),
      logits=jnp.asarray(first["logits"]), mask=jnp.asarray(MASK[:1]),
      rewards=jnp.asarray(REWARDS[:1]), weights=jnp.ones((1,)), step=jnp.asarray(0),
      bc_logits=jnp.asarray(first["bc_logits"]), prev_logits=jnp.asarray(first["prev_logits"]),
      bc_token_logprobs=target_logprobs(first["bc_logits"], TARGETS[:1]),
      lagged_token_logprobs=target_logprobs(first["lagged_logits"], TARGETS[:1]),
      values=jnp.asarray(first["values"]))
  loss_single, _ = jax.jit(lambda x, p: spec.fn(x, p, config))(single,
                                                               spec.init_params(config))
  np.testing.assert_allclose(loss_both, loss_single, rtol=1e-5)


STOP_GRADIENT_INPUTS = ["bc_logits", "prev_logits", "bc_token_logprobs",
                        "lagged_token_logprobs", "behaviour_token_logprobs", "rewards"]


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradient_flow(name):
  loss, grads = loss_and_grads(name, random_arrays(11))
  assert np.isfinite(loss)
  valid = MASK > 0
  logit_grad_norm = np.abs(np.asarray(grads["logits"])).sum(axis=-1)
  if name == "value_pretrain":
    np.testing.assert_array_equal(logit_grad_norm, 0.0)
  else:
    assert np.all(logit_grad_norm[valid] > 0)
  for key, grad in grads["params"].items():  # V-MPO's eta and alpha
    assert np.abs(grad) > 0, key
  value_grads = np.asarray(grads["values"])
  if losses.get_loss(name).needs_value_head:
    assert np.all(np.abs(value_grads[valid]) > 0)
  else:
    np.testing.assert_array_equal(value_grads, 0.0)
  for key in STOP_GRADIENT_INPUTS:
    np.testing.assert_array_equal(np.asarray(grads["frozen"][key]), 0.0, err_msg=key)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_jit_equals_eager_and_metrics_are_scalars(name):
  spec = losses.get_loss(name)
  config = losses.make_config(name)
  inputs = build_inputs(random_arrays(12), step=3)
  params = spec.init_params(config)
  eager_loss, eager_metrics = spec.fn(inputs, params, config)
  jit_loss, jit_metrics = jax.jit(lambda x, p: spec.fn(x, p, config))(inputs, params)
  np.testing.assert_allclose(jit_loss, eager_loss, rtol=1e-5)
  assert set(jit_metrics) == set(eager_metrics)
  assert "loss" in jit_metrics and "num_tokens" in jit_metrics
  for key, value in jit_metrics.items():
    assert value.shape == (), key
    np.testing.assert_allclose(value, eager_metrics[key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_batch_sharded_over_devices_equals_single_device(name):
  spec = losses.get_loss(name)
  config = losses.make_config(name)
  inputs = build_inputs(random_arrays(13), weights=(1.0, 0.5), step=2)
  params = spec.init_params(config)
  fn = jax.jit(lambda x, p: spec.fn(x, p, config))
  loss, metrics = fn(inputs, params)

  mesh = jax.sharding.Mesh(np.array(jax.devices()[:B]), ("data",))
  by_example = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.tree.map(
      lambda x: jax.device_put(x, by_example if x.ndim else replicated), inputs)
  sharded_loss, sharded_metrics = fn(sharded, jax.device_put(params, replicated))
  np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
  for key, value in metrics.items():
    np.testing.assert_allclose(sharded_metrics[key], value, rtol=1e-5, atol=1e-7,
                               err_msg=key)


# ----------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("name", [n for n in ALL_LOSSES if losses.get_loss(n).requires])
def test_missing_required_input_is_a_clear_error(name):
  spec = losses.get_loss(name)
  config = losses.make_config(name)
  for field in sorted(spec.requires):
    inputs = build_inputs(random_arrays(), **{field: None})
    with pytest.raises(ValueError, match=f"{name}.*LossInputs.{field}"):
      jax.jit(lambda x, p: spec.fn(x, p, config))(inputs, spec.init_params(config))


def test_misshaped_input_is_a_clear_error():
  inputs = build_inputs(random_arrays(), values=jnp.zeros((B, T + 1)))
  with pytest.raises(ValueError, match=r"LossInputs.values must have shape \(2, 4\)"):
    run_loss("oac", inputs)


def test_requires_and_value_head_flags():
  assert losses.get_loss("bvmpo").requires == {"bc_logits", "prev_logits", "values"}
  assert losses.get_loss("gold_p").requires == {"lagged_token_logprobs", "bc_token_logprobs"}
  assert not losses.get_loss("bc").requires
  assert [n for n in ALL_LOSSES if losses.get_loss(n).needs_value_head] == [
      "bvmpo", "oac", "value_pretrain"]


def test_unknown_loss_name_lists_valid_names():
  assert losses.list_losses() == sorted(ALL_LOSSES + ONLINE_LOSSES)
  with pytest.raises(ValueError, match="Unknown loss 'gold'.*'bc'.*'bvmpo'.*'value_pretrain'"):
    losses.get_loss("gold")


def test_unknown_hyper_parameter_lists_valid_ones():
  with pytest.raises(ValueError, match=r"\['horizn'\].*gold_s.*'horizon'.*'min_reward'"):
    losses.make_config("gold_s", horizn=3)


@pytest.mark.parametrize("name,field,value,pattern", [
    ("bc", "label_smoothing", 1.0, r"BCConfig.label_smoothing=1.0 .* \[0.0, 1.0\)"),
    ("gold_s", "horizon", -1, r"GoldSConfig.horizon=-1 .* \[0, 1024\]"),
    ("gold_p", "logprob_baseline", 1.0, r"GoldPConfig.logprob_baseline=1.0"),
    ("bvmpo", "top_fraction", 0.0, r"BVMPOConfig.top_fraction=0.0 .* \(0.0, 1.0\]"),
    ("bvmpo", "anneal_steps", 0, r"BVMPOConfig.anneal_steps=0"),
    ("oac", "gamma", 1.5, r"OACConfig.gamma=1.5"),
    ("oac", "negative_weights", "clip",
     r"OACConfig.negative_weights='clip' is not allowed; allowed: \['cap_nll', 'zero', "
     r"'unbounded'\]"),
    ("reward_weighted_nll", "negative_nll_cap", 0.0,
     r"RewardWeightedConfig.negative_nll_cap=0.0 .* \(0.0, inf\]"),
    ("reward_weighted_nll", "baseline", float("nan"), r"RewardWeightedConfig.baseline=nan"),
])
def test_invalid_hyper_parameter_names_field_and_range(name, field, value, pattern):
  with pytest.raises(ValueError, match=pattern):
    losses.make_config(name, **{field: value})


def test_duplicate_registration_is_rejected():
  with pytest.raises(ValueError, match="already registered"):
    losses.register_loss(losses.get_loss("bc"))
