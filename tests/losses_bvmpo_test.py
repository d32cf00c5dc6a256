"""BVMPO: hand-computed total, top-half selection, annealing, dual-variable dynamics, rlax parity,
the duals' own optimizer and the anneal length tied to the round.

Generic properties (masking, zero weights, stop-gradients, jit) are covered for every loss,
BVMPO included, in losses_test.py.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax

from rest_jax import losses, optim
from rest_jax.configs import OptimizerConfig
from rest_jax.losses import base
from rest_jax.losses import bvmpo

B, T, V = 2, 4, 3
TARGETS = np.array([[0, 2, 1, 1], [2, 2, 0, 1]], np.int32)


def np_log_softmax(x):
  shifted = x - x.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_kl(p_logits, q_logits):
  log_p, log_q = np_log_softmax(p_logits), np_log_softmax(q_logits)
  return (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


def make_case(seed, mask, rewards, weights=(1.0, 1.0), values=None, step=0):
  rng = np.random.default_rng(seed)
  case = {
      "logits": rng.normal(size=(B, T, V)).astype(np.float32),
      "bc_logits": rng.normal(size=(B, T, V)).astype(np.float32),
      "prev_logits": rng.normal(size=(B, T, V)).astype(np.float32),
      "values": (rng.uniform(0, 1, size=(B, T)) if values is None else values
                 ).astype(np.float32),
      "mask": np.asarray(mask, np.float32),
      "rewards": np.asarray(rewards, np.float32),
      "weights": np.asarray(weights, np.float32),
      "step": step,
  }
  return case


def to_inputs(case, logits=None, token_logprobs=None, values=None):
  logits = jnp.asarray(case["logits"]) if logits is None else logits
  if token_logprobs is None:
    token_logprobs = jnp.take_along_axis(jax.nn.log_softmax(logits),
                                         jnp.asarray(TARGETS)[..., None], axis=-1)[..., 0]
  return base.LossInputs(
      token_logprobs=token_logprobs, logits=logits, mask=jnp.asarray(case["mask"]),
      rewards=jnp.asarray(case["rewards"]), weights=jnp.asarray(case["weights"]),
      step=jnp.asarray(case["step"], jnp.int32), bc_logits=jnp.asarray(case["bc_logits"]),
      prev_logits=jnp.asarray(case["prev_logits"]),
      values=jnp.asarray(case["values"]) if values is None else values)


def run(case, config, params=None):
  params = bvmpo.init_dual_params(config) if params is None else params
  return jax.jit(lambda x, p: bvmpo.bvmpo_loss(x, p, config))(to_inputs(case), params)


def np_bvmpo(case, config):
  """Reference written out token by token."""
  lp = np.take_along_axis(np_log_softmax(case["logits"]), TARGETS[..., None], -1)[..., 0]
  tw = case["mask"] * case["weights"][:, None]
  returns = np.broadcast_to(case["rewards"][:, None], (B, T))
  adv = returns - case["values"]
  valid = [(b, t) for b in range(B) for t in range(T) if tw[b, t] > 0]
  ranked = sorted(valid, key=lambda bt: (-adv[bt], bt))
  kept = ranked[:math.ceil(len(valid) / 2)]
  eta, alpha = config.eta_init, config.alpha_init
  scaled = np.array([adv[bt] / eta for bt in kept])
  kept_w = np.array([tw[bt] for bt in kept])
  unnorm = kept_w * np.exp(scaled - scaled.max())
  psi = unnorm / unnorm.sum()
  policy = -sum(p * lp[bt] for p, bt in zip(psi, kept))
  temperature = eta * config.eps_eta + eta * np.log(
      (kept_w * np.exp(scaled)).sum() / kept_w.sum())
  denom = max(tw.sum(), 1.0)
  kl_prev = (tw * np_kl(case["prev_logits"], case["logits"])).sum() / denom
  kl_bc = (tw * np_kl(case["bc_logits"], case["logits"])).sum() / denom
  progress = min(case["step"] / config.anneal_steps, 1.0)
  lam = config.kl_bc_start * (config.kl_bc_end / config.kl_bc_start) ** progress
  value = (tw * 0.5 * (returns - case["values"]) ** 2).sum() / denom
  return {
      "policy_loss": policy, "temperature_loss": temperature, "kl_prev": kl_prev,
      "kl_bc": kl_bc, "kl_bc_coef": lam, "value_loss": value, "num_kept": len(kept),
      "loss": (policy + temperature + alpha * kl_prev + alpha * (config.eps_alpha - kl_prev)
               + lam * kl_bc + config.value_coef * value),
  }


@pytest.mark.parametrize("weights,step", [((1.0, 1.0), 0), ((0.5, 2.0), 7), ((1.0, 1.0), 50)])
def test_bvmpo_matches_numpy(weights, step):
  case = make_case(0, [[1, 1, 1, 0], [1, 1, 1, 1]], [0.8, 0.4], weights=weights, step=step)
  config = losses.make_config("bvmpo", eta_init=0.7, alpha_init=2.0, anneal_steps=20,
                              value_coef=0.5)
  loss, metrics = run(case, config)
  expected = np_bvmpo(case, config)
  for key, value in expected.items():
    np.testing.assert_allclose(metrics[key], value, rtol=2e-5, atol=1e-7, err_msg=key)
  np.testing.assert_allclose(loss, expected["loss"], rtol=2e-5)
  assert expected["num_kept"] == 4  # 7 valid tokens -> ceil(7 / 2)


@pytest.mark.parametrize("num_valid", range(0, 9))
def test_top_half_keeps_ceil_of_valid_count(num_valid):
  scores = jnp.asarray(np.random.default_rng(num_valid).normal(size=(B, T)), jnp.float32)
  valid = (jnp.arange(B * T) < num_valid).reshape(B, T)
  keep = jax.jit(bvmpo.top_fraction_mask, static_argnums=2)(scores, valid, 0.5)
  assert int(keep.sum()) == math.ceil(num_valid / 2)
  assert not np.any(np.asarray(keep) & ~np.asarray(valid))
  if num_valid:  # the kept ones are the highest valid scores
    kept_scores = np.asarray(scores)[np.asarray(keep)]
    dropped = np.asarray(scores)[np.asarray(valid) & ~np.asarray(keep)]
    assert dropped.size == 0 or kept_scores.min() >= dropped.max()


def test_top_fraction_ties_and_padding():
  scores = jnp.array([[1.0, 1.0, 1.0, 9.0], [1.0, 1.0, 1.0, 9.0]])
  valid = jnp.array([[True, True, True, False], [True, True, True, False]])
  keep = bvmpo.top_fraction_mask(scores, valid, 0.5)
  # Six tied valid tokens: exactly three kept, the earliest ones; padding (score 9) never.
  np.testing.assert_array_equal(keep, [[True, True, True, False], [False] * 4])
  keep_fifth = bvmpo.top_fraction_mask(scores, valid, 0.3)  # ceil(0.3 * 6) = 2, not 3
  assert int(keep_fifth.sum()) == 2


def test_policy_term_only_touches_kept_tokens():
  case = make_case(1, [[1, 1, 1, 0], [1, 1, 1, 1]], [0.8, 0.4])
  config = losses.make_config("bvmpo")
  inputs = to_inputs(case)
  grad = jax.grad(lambda lp: bvmpo.bvmpo_loss(
      inputs.replace(token_logprobs=lp), bvmpo.init_dual_params(config), config)[0])(
          inputs.token_logprobs)
  keep = bvmpo.top_fraction_mask(
      jnp.asarray(case["rewards"][:, None] - case["values"]), jnp.asarray(case["mask"]) > 0,
      0.5)
  assert np.all(np.asarray(grad)[np.asarray(keep)] < 0)  # -psi
  np.testing.assert_array_equal(np.asarray(grad)[~np.asarray(keep)], 0.0)
  np.testing.assert_allclose(-np.asarray(grad).sum(), 1.0, rtol=1e-6)  # psi sums to one


def test_value_gradient_is_only_the_critic_regression():
  case = make_case(2, [[1, 1, 0, 0], [1, 1, 1, 1]], [0.8, 0.4], weights=(2.0, 1.0))
  config = losses.make_config("bvmpo", value_coef=0.25)
  inputs = to_inputs(case)
  grad = jax.grad(lambda v: bvmpo.bvmpo_loss(
      inputs.replace(values=v), bvmpo.init_dual_params(config), config)[0])(inputs.values)
  tw = case["mask"] * case["weights"][:, None]
  returns = case["rewards"][:, None]
  expected = 0.25 * tw * (case["values"] - returns) / tw.sum()
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)


def test_kl_bc_annealing_endpoints():
  config = losses.make_config("bvmpo", anneal_steps=100)
  coef = jax.jit(lambda s: bvmpo.kl_bc_coefficient(s, config))
  np.testing.assert_allclose(coef(jnp.asarray(0)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(coef(jnp.asarray(50)), math.sqrt(1e-5), rtol=1e-5)
  np.testing.assert_allclose(coef(jnp.asarray(100)), 1e-5, rtol=1e-5)
  np.testing.assert_allclose(coef(jnp.asarray(10_000)), 1e-5, rtol=1e-5)


def dual_after_step(case, config, learning_rate=0.1):
  params = bvmpo.init_dual_params(config)
  grads = jax.grad(lambda p: bvmpo.bvmpo_loss(to_inputs(case), p, config)[0])(params)
  stepped = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
  return ({k: float(bvmpo.positive_dual(v)) for k, v in params.items()},
          {k: float(bvmpo.positive_dual(v)) for k, v in stepped.items()})


def test_temperature_rises_when_weights_are_too_peaked_and_falls_when_flat():
  mask = [[1, 1, 1, 1], [1, 1, 1, 1]]
  spread = np.array([[0.0, -2.0, -4.0, -6.0], [-8.0, -10.0, -12.0, -14.0]])
  peaked = make_case(3, mask, [1.0, 1.0], values=spread)  # KL(psi || uniform) >> eps_eta
  before, after = dual_after_step(peaked, losses.make_config("bvmpo", eps_eta=0.1))
  assert after["eta_unconstrained"] > before["eta_unconstrained"]
  flat = make_case(3, mask, [1.0, 1.0], values=np.zeros((B, T)))  # psi uniform: KL = 0
  before, after = dual_after_step(flat, losses.make_config("bvmpo", eps_eta=0.1))
  assert after["eta_unconstrained"] < before["eta_unconstrained"]


def test_alpha_rises_when_trust_region_is_violated_and_falls_inside_it():
  mask = [[1, 1, 1, 0], [1, 1, 0, 0]]
  inside = make_case(4, mask, [0.5, 0.5])
  inside["prev_logits"] = inside["logits"]  # KL(prev || theta) = 0 < eps_alpha
  before, after = dual_after_step(inside, losses.make_config("bvmpo"))
  assert after["alpha_unconstrained"] < before["alpha_unconstrained"]
  outside = make_case(4, mask, [0.5, 0.5])
  outside["prev_logits"] = 10.0 * outside["prev_logits"]  # KL far above eps_alpha = 0.01
  before, after = dual_after_step(outside, losses.make_config("bvmpo"))
  assert after["alpha_unconstrained"] > before["alpha_unconstrained"]


def test_no_valid_token_gives_zero_finite_loss():
  case = make_case(5, [[1, 1, 1, 0], [1, 1, 0, 0]], [0.5, 0.5], weights=(0.0, 0.0))
  config = losses.make_config("bvmpo")
  loss, metrics = run(case, config)
  for key, value in metrics.items():
    assert np.isfinite(value), key
  np.testing.assert_allclose(loss, 0.0, atol=1e-7)
  assert float(metrics["num_kept"]) == 0.0


def test_dual_parameterisation_round_trips():
  config = losses.make_config("bvmpo", eta_init=0.05, alpha_init=20.0)
  params = losses.get_loss("bvmpo").init_params(config)
  np.testing.assert_allclose(bvmpo.positive_dual(params["eta_unconstrained"]), 0.05, rtol=1e-5)
  np.testing.assert_allclose(bvmpo.positive_dual(params["alpha_unconstrained"]), 20.0,
                             rtol=1e-5)


def test_missing_dual_params_is_a_clear_error():
  case = make_case(6, [[1, 1, 1, 0], [1, 1, 0, 0]], [0.5, 0.5])
  with pytest.raises(ValueError, match="needs loss_params.*eta_unconstrained"):
    bvmpo.bvmpo_loss(to_inputs(case), {}, losses.make_config("bvmpo"))


def test_vmpo_pieces_match_rlax():
  rlax = pytest.importorskip("rlax")
  # Every token valid and an even count, where rlax's floor(n/2) equals our ceil(n/2).
  case = make_case(7, np.ones((B, T)), [0.9, 0.2])
  config = losses.make_config("bvmpo", eta_init=0.5, alpha_init=3.0)
  params = bvmpo.init_dual_params(config)

  def ours(logits, params):
    _, metrics = bvmpo.bvmpo_loss(to_inputs(case, logits=logits), params, config)
    return (metrics["policy_loss"] + metrics["temperature_loss"] + metrics["kl_prev_loss"]
            + metrics["alpha_loss"])

  def theirs(logits, params):
    inputs = to_inputs(case, logits=logits)
    advantages = inputs.rewards[:, None] - inputs.values
    kl = jnp.sum(jax.nn.softmax(inputs.prev_logits) * (
        jax.nn.log_softmax(inputs.prev_logits) - jax.nn.log_softmax(logits)), axis=-1)
    per_token, _ = rlax.vmpo_loss(
        sample_log_probs=inputs.token_logprobs, advantages=advantages,
        temperature_constraint=rlax.LagrangePenalty(
            alpha=bvmpo.positive_dual(params["eta_unconstrained"]), epsilon=config.eps_eta),
        kl_constraints=[(kl, rlax.LagrangePenalty(
            alpha=bvmpo.positive_dual(params["alpha_unconstrained"]),
            epsilon=config.eps_alpha))],
        projection_operator=lambda x: x, top_k_fraction=config.top_fraction)
    return jnp.mean(per_token)

  logits = jnp.asarray(case["logits"])
  ours_value, ours_grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(logits, params)
  rlax_value, rlax_grads = jax.jit(jax.value_and_grad(theirs, argnums=(0, 1)))(logits, params)
  np.testing.assert_allclose(ours_value, rlax_value, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               ours_grads, rlax_grads)


def test_tiny_temperature_and_large_advantages_stay_finite():
  values = -np.arange(B * T, dtype=np.float32).reshape(B, T) * 50.0  # advantages up to 351
  case = make_case(8, np.ones((B, T)), [1.0, 0.0], values=values)
  config = losses.make_config("bvmpo", eta_init=1e-3)
  params = bvmpo.init_dual_params(config)

  def objective(logits, values, params):
    return bvmpo.bvmpo_loss(to_inputs(case, logits=logits, values=values), params, config)

  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      objective, argnums=(0, 1, 2), has_aux=True))(
          jnp.asarray(case["logits"]), jnp.asarray(case["values"]), params)
  assert np.isfinite(loss)
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf))
  np.testing.assert_allclose(metrics["effective_sample_size"], 1.0, rtol=1e-5)


def _dual_moves(tx, case, config, num_steps):
  """How far (unconstrained units) eta and alpha move in `num_steps` updates of `tx`, which
  trains them together with the policy logits (the trainer's {"params", "loss_params"} tree)."""
  trainable = {"params": {"logits": jnp.asarray(case["logits"])},
               "loss_params": bvmpo.init_dual_params(config)}
  start = dict(trainable["loss_params"])
  grad_fn = jax.jit(jax.grad(lambda t: bvmpo.bvmpo_loss(
      to_inputs(case, logits=t["params"]["logits"]), t["loss_params"], config)[0]))
  opt_state = tx.init(trainable)
  for _ in range(num_steps):
    updates, opt_state = tx.update(grad_fn(trainable), opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
  return {k: float(trainable["loss_params"][k] - start[k]) for k in start}


def test_duals_move_measurably_with_their_own_optimizer():
  # Peaked E-step weights (KL(psi || uniform) >> eps_eta) and a violated trust region
  # (KL(prev || theta) >> eps_alpha): both duals should rise steadily.
  values = np.array([[0.0, -2.0, -4.0, -6.0], [-8.0, -10.0, -12.0, -14.0]])
  case = make_case(9, np.ones((B, T)), [1.0, 1.0], values=values)
  case["prev_logits"] = 10.0 * case["prev_logits"]
  config = losses.make_config("bvmpo")
  # base.gin's Improve optimizer: lr 3e-4, 50 warm-up steps, constant.
  opt = OptimizerConfig(learning_rate=3e-4, warmup_steps=50, decay="constant")
  moved = _dual_moves(optim.with_dual_optimizer(optim.make_optimizer(opt), opt), case, config,
                      num_steps=100)
  assert moved["eta_unconstrained"] > 0.5 and moved["alpha_unconstrained"] > 0.5, moved
  # Under the policy's AdamW (the old wiring) the same 100 steps barely move them.
  shared = _dual_moves(optim.make_optimizer(opt), case, config, num_steps=100)
  assert abs(shared["eta_unconstrained"]) < 0.05 and abs(shared["alpha_unconstrained"]) < 0.05


def test_dual_optimizer_ignores_the_policy_learning_rate_scale():
  opt = OptimizerConfig(learning_rate=1e-3, warmup_steps=0, decay="constant")
  tx = optim.with_dual_optimizer(optim.make_optimizer(opt), opt)
  trainable = {"params": {"w": jnp.ones((2, 2))}, "loss_params": {"eta": jnp.zeros(())}}
  grads = jax.tree.map(jnp.ones_like, trainable)
  full, _ = tx.update(grads, tx.init(trainable), trainable)
  scaled, _ = tx.update(grads, optim.set_lr_scale(tx.init(trainable), 0.25), trainable)
  np.testing.assert_allclose(scaled["params"]["w"], 0.25 * full["params"]["w"], rtol=1e-6)
  np.testing.assert_allclose(scaled["loss_params"]["eta"], full["loss_params"]["eta"])
  np.testing.assert_allclose(full["loss_params"]["eta"], -opt.dual_learning_rate, rtol=1e-3)


def test_anneal_length_defaults_to_the_phase_length():
  config = losses.make_config("bvmpo")
  assert config.anneal_steps is None
  spec = losses.get_loss("bvmpo")
  bound = spec.for_phase(config, 1000)
  assert bound.anneal_steps == 1000
  np.testing.assert_allclose(bvmpo.kl_bc_coefficient(jnp.asarray(1000), bound), 1e-5,
                             rtol=1e-5)
  # An explicit anneal length is kept.
  assert spec.for_phase(losses.make_config("bvmpo", anneal_steps=30), 1000).anneal_steps == 30
