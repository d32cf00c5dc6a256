"""On-policy losses (REINFORCE with a group baseline, PPO) on problems small enough to enumerate."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rest_jax import improve, online
from rest_jax.losses import LossInputs, ppo, reinforce, registry, sequence_math

V = 3  # Tokens of the toy problem; a sequence is two tokens (y1, y2), all sequences equal length.
SEQUENCES = list(itertools.product(range(V), repeat=2))


def _toy_policy(seed):
  """theta = (first-token logits [V], second-token logits given y1 [V, V]) and rewards r[y1, y2]."""
  rng = np.random.RandomState(seed)
  return ({"first": jnp.asarray(rng.randn(V), jnp.float32),
           "second": jnp.asarray(rng.randn(V, V), jnp.float32)},
          jnp.asarray(rng.rand(V, V), jnp.float32))


def _logits(theta, ys_Bx2):
  """[B, 2, V] logits of sequences ys under the toy policy."""
  first = jnp.broadcast_to(theta["first"], (ys_Bx2.shape[0], V))
  return jnp.stack([first, theta["second"][ys_Bx2[:, 0]]], axis=1)


def _inputs(theta, ys_Bx2, rewards_B, group_ids_B, bc_logits=None, weights_B=None):
  logits = _logits(theta, ys_Bx2)
  token_logprobs = jnp.take_along_axis(jax.nn.log_softmax(logits), ys_Bx2[..., None], -1)[..., 0]
  b = ys_Bx2.shape[0]
  return LossInputs(
      token_logprobs=token_logprobs, logits=logits, mask=jnp.ones((b, 2)), rewards=rewards_B,
      weights=jnp.ones(b) if weights_B is None else weights_B, step=jnp.zeros((), jnp.int32),
      group_ids=group_ids_B,
      bc_logits=jax.lax.stop_gradient(logits) if bc_logits is None else bc_logits)


def _sequence_log_probs(theta):
  """log pi(y) for every sequence of SEQUENCES."""
  ys = jnp.asarray(SEQUENCES)
  return jnp.take_along_axis(jax.nn.log_softmax(_logits(theta, ys)), ys[..., None],
                             -1)[..., 0].sum(-1)


@pytest.mark.parametrize("baseline, scale", [("leave_one_out", 1.0), ("none", 1.0),
                                             ("group_mean", 0.5)])
def test_reinforce_expected_gradient_equals_the_exact_policy_gradient(baseline, scale):
  """Over every pair of K=2 samples of one source, weighted by its probability, the loss gradient
  is -grad E[r] / 2 (2 tokens per sequence): unbiased for the leave-one-out and no baseline,
  (K-1)/K of it for the group mean (which includes the sample itself)."""
  theta, reward_table = _toy_policy(0)
  ys = jnp.asarray(SEQUENCES)
  exact = jax.grad(lambda th: jnp.sum(jnp.exp(_sequence_log_probs(th))
                                      * reward_table[ys[:, 0], ys[:, 1]]))(theta)
  config = reinforce.ReinforceConfig(baseline=baseline, kl_coef=0.0)
  pairs = jnp.asarray([[a, b] for a in SEQUENCES for b in SEQUENCES])  # [81, 2 samples, 2]
  probs = jnp.exp(_sequence_log_probs(theta))
  pair_probs = (probs[:, None] * probs[None, :]).reshape(-1)  # The order of `pairs`.

  def loss_of_pair(th, pair):
    rewards = reward_table[pair[:, 0], pair[:, 1]]
    return reinforce.reinforce_loss(_inputs(th, pair, rewards, jnp.zeros(2, jnp.int32)), {},
                                    config)[0]

  grads = jax.vmap(jax.grad(loss_of_pair), (None, 0))(theta, pairs)
  expected = jax.tree_util.tree_map(lambda g: jnp.tensordot(pair_probs, g, 1), grads)
  assert abs(float(pair_probs.sum()) - 1.0) < 1e-5
  for name in theta:
    np.testing.assert_allclose(expected[name], -scale * exact[name] / 2, atol=1e-6)
    assert float(jnp.abs(exact[name]).max()) > 1e-3  # Not trivially zero.


def test_group_advantages():
  rewards = jnp.asarray([1.0, 0.0, 0.5, 0.5, 0.2])
  groups = jnp.asarray([0, 0, 1, 1, 2])
  ones = jnp.ones(5)
  norm = reinforce.group_advantages(rewards, ones, groups, "group_norm")
  np.testing.assert_allclose(norm, [1.0, -1.0, 0.0, 0.0, 0.0], atol=1e-5)
  loo = reinforce.group_advantages(rewards, ones, groups, "leave_one_out")
  np.testing.assert_allclose(loo, [1.0, -1.0, 0.0, 0.0, 0.2], atol=1e-6)  # Singleton: b = 0.
  # A weight-0 row (a dropped truncated sample) neither trains nor moves its group's baseline.
  weights = jnp.asarray([1.0, 1.0, 0.0])
  loo = reinforce.group_advantages(jnp.asarray([0.8, 0.2, 1.0]), weights,
                                   jnp.zeros(3, jnp.int32), "leave_one_out")
  np.testing.assert_allclose(loo, [0.6, -0.6, 0.0], atol=1e-6)
  mean = reinforce.group_advantages(jnp.asarray([0.8, 0.2, 1.0]), weights,
                                    jnp.zeros(3, jnp.int32), "group_mean")
  np.testing.assert_allclose(mean, [0.3, -0.3, 0.0], atol=1e-6)


def test_kl_to_bc_matches_its_closed_form():
  """Per token, the KL term is KL(pi || pi_BC) over the vocabulary; summed over a sequence and
  averaged over pi's samples it is the sequence-level KL (computed here by enumeration)."""
  theta, _ = _toy_policy(1)
  theta_bc, _ = _toy_policy(2)
  ys = jnp.asarray(SEQUENCES)
  config = reinforce.ReinforceConfig(kl_coef=1.0)
  # Token level: against numpy's sum p log(p / q) for each row.
  inputs = _inputs(theta, ys, jnp.zeros(len(ys)), jnp.arange(len(ys)),
                   bc_logits=_logits(theta_bc, ys))
  _, metrics = reinforce.reinforce_loss(inputs, {}, config)
  p = np.asarray(jax.nn.softmax(inputs.logits))
  q = np.asarray(jax.nn.softmax(inputs.bc_logits))
  np.testing.assert_allclose(metrics["kl_bc"], np.mean(np.sum(p * np.log(p / q), -1)),
                             rtol=1e-5)
  # Sequence level: E_{y ~ pi}[sum_t KL_t] = sum_y pi(y) log(pi(y) / pi_BC(y)).
  log_pi, log_bc = _sequence_log_probs(theta), _sequence_log_probs(theta_bc)
  exact = float(jnp.sum(jnp.exp(log_pi) * (log_pi - log_bc)))
  per_sequence = 2 * jax.vmap(lambda y: reinforce.reinforce_loss(
      _inputs(theta, y[None], jnp.zeros(1), jnp.zeros(1, jnp.int32),
              bc_logits=_logits(theta_bc, y[None])), {}, config)[1]["kl_bc"])(ys)
  np.testing.assert_allclose(np.dot(np.exp(log_pi), per_sequence), exact, rtol=1e-5)
  assert exact > 1e-2
  # With equal policies the term is 0 and has no gradient.
  grad = jax.grad(lambda th: reinforce.reinforce_loss(
      _inputs(th, ys, jnp.zeros(len(ys)), jnp.arange(len(ys))), {}, config)[0])(theta)
  assert all(float(jnp.abs(g).max()) < 1e-6 for g in jax.tree_util.tree_leaves(grad))


@pytest.mark.parametrize("loss", ["reinforce", "ppo"])
def test_kl_constraint_learns_its_multiplier(loss):
  """kl_target > 0: beta starts at kl_coef; its gradient raises it while the KL exceeds the
  target and lowers it below; the policy sees beta * grad KL, as with a fixed penalty."""
  theta, _ = _toy_policy(4)
  theta_bc, _ = _toy_policy(5)
  ys = jnp.asarray(SEQUENCES)
  inputs = _inputs(theta, ys, jnp.zeros(len(ys)), jnp.zeros(len(ys), jnp.int32),
                   bc_logits=_logits(theta_bc, ys))
  if loss == "ppo":
    zeros = jnp.zeros(ys.shape)
    inputs = inputs.replace(behaviour_token_logprobs=inputs.token_logprobs, values=zeros,
                            old_values=zeros)
  spec = registry.get_loss(loss)
  fixed = registry.make_config(loss, kl_coef=0.3)
  assert spec.init_params(fixed) == {}
  _, metrics = spec.fn(inputs, {}, fixed)
  kl = float(metrics["kl_bc"])
  assert kl > 0.05
  for target, direction in ((kl / 2, -1.0), (kl * 2, 1.0)):  # d loss / d u < 0: beta grows.
    config = registry.make_config(loss, kl_coef=0.3, kl_target=target)
    params = spec.init_params(config)
    _, metrics = spec.fn(inputs, params, config)
    assert float(metrics["kl_coef"]) == pytest.approx(0.3, rel=1e-5)
    grad = jax.grad(lambda p: spec.fn(inputs, p, config)[0])(params)
    assert np.sign(float(grad["kl_multiplier_unconstrained"])) == direction
  grad_of = lambda cfg, prm: jax.grad(lambda lg: spec.fn(inputs.replace(logits=lg), prm, cfg)[
      0])(inputs.logits)
  np.testing.assert_allclose(grad_of(config, params), grad_of(fixed, {}), atol=1e-6)
  with pytest.raises(ValueError, match="kl_coef=0.0 is outside"):
    registry.make_config(loss, kl_coef=0.0, kl_target=0.1)


def test_entropy_bonus():
  theta, _ = _toy_policy(3)
  ys = jnp.asarray(SEQUENCES)
  inputs = _inputs(theta, ys, jnp.zeros(len(ys)), jnp.arange(len(ys)))
  plain, metrics = reinforce.reinforce_loss(inputs, {}, reinforce.ReinforceConfig(kl_coef=0.0))
  bonus, _ = reinforce.reinforce_loss(
      inputs, {}, reinforce.ReinforceConfig(kl_coef=0.0, entropy_coef=0.1))
  p = np.asarray(jax.nn.softmax(inputs.logits))
  np.testing.assert_allclose(metrics["entropy"], np.mean(-np.sum(p * np.log(p), -1)), rtol=1e-5)
  np.testing.assert_allclose(plain - bonus, 0.1 * metrics["entropy"], rtol=1e-5)


@pytest.mark.parametrize("advantage, ratio, moves", [
    (1.0, 1.0, True), (1.0, 1.3, False), (1.0, 0.7, True),
    (-1.0, 1.0, True), (-1.0, 0.7, False), (-1.0, 1.3, True)])
def test_ppo_clipping_stops_the_gradient_past_the_trust_region(advantage, ratio, moves):
  """With clip_eps=0.2 a token whose ratio already moved past 1 +- 0.2 in the direction its
  advantage favours gets no gradient; the other side is not clipped (the min keeps it)."""
  log_ratio = jnp.log(ratio)
  grad = jax.grad(lambda lr: ppo.clipped_surrogate(jnp.exp(lr), jnp.asarray(advantage),
                                                   0.2))(log_ratio)
  assert (abs(float(grad)) > 1e-3) == moves
  value = float(ppo.clipped_surrogate(jnp.asarray(ratio), jnp.asarray(advantage), 0.2))
  assert value == pytest.approx(-min(ratio * advantage,
                                     float(np.clip(ratio, 0.8, 1.2)) * advantage))


def _ppo_inputs(rng, b=4, t=5, shift=0.0):
  mask = np.ones((b, t), np.float32)
  mask[1, 3:] = 0
  mask[2, 1:] = 0
  logits = jnp.asarray(rng.randn(b, t, 6), jnp.float32)
  targets = rng.randint(0, 6, (b, t))
  lp = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  return LossInputs(token_logprobs=lp, logits=logits, mask=jnp.asarray(mask),
                    rewards=jnp.asarray(rng.rand(b), jnp.float32), weights=jnp.ones(b),
                    step=jnp.zeros((), jnp.int32), behaviour_token_logprobs=lp - shift,
                    bc_logits=logits, values=jnp.asarray(rng.rand(b, t), jnp.float32),
                    old_values=jnp.asarray(rng.rand(b, t), jnp.float32))


def test_gae_limits_and_reference():
  rng = np.random.RandomState(0)
  inputs = _ppo_inputs(rng)
  mask, values, rewards = np.asarray(inputs.mask), np.asarray(inputs.old_values), \
      np.asarray(inputs.rewards)
  gamma = 0.9
  mc = sequence_math.sparse_reward_returns(inputs.rewards, inputs.mask, gamma) - values * mask
  np.testing.assert_allclose(ppo.gae_advantages(inputs.rewards, inputs.old_values, inputs.mask,
                                                gamma, 1.0), mc, atol=1e-5)
  for lam in (0.0, 0.7):  # Against a direct loop over each row's real tokens.
    expected = np.zeros_like(values)
    for b in range(len(mask)):
      n = int(mask[b].sum())
      v = list(values[b, :n]) + [0.0]
      r = [0.0] * (n - 1) + [rewards[b]]
      running = 0.0
      for t in reversed(range(n)):
        running = r[t] + gamma * v[t + 1] - v[t] + gamma * lam * running
        expected[b, t] = running
    np.testing.assert_allclose(ppo.gae_advantages(inputs.rewards, inputs.old_values,
                                                  inputs.mask, gamma, lam), expected, atol=1e-5)


def test_ppo_loss_terms():
  rng = np.random.RandomState(1)
  inputs = _ppo_inputs(rng, shift=0.5)  # ratio = e^0.5 = 1.65 everywhere: all clipped.
  config = ppo.PPOConfig(advantage="mc", normalize_advantages=False, kl_coef=0.0,
                         value_coef=0.0)
  loss, metrics = ppo.ppo_loss(inputs, {}, config)
  mask = np.asarray(inputs.mask)
  adv = (np.asarray(sequence_math.sparse_reward_returns(inputs.rewards, inputs.mask))
         - np.asarray(inputs.old_values)) * mask
  ratio = np.exp(0.5)
  expected = np.sum(-np.minimum(ratio * adv, 1.2 * adv) * mask) / mask.sum()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert float(metrics["clip_fraction"]) == pytest.approx(1.0)
  # At ratio 1 (the first inner epoch) nothing is clipped and the approximate KL is 0.
  _, metrics = ppo.ppo_loss(_ppo_inputs(rng), {}, ppo.PPOConfig())
  assert float(metrics["clip_fraction"]) == 0.0 and abs(float(metrics["approx_kl_old"])) < 1e-6
  # The critic regresses towards the returns, with gradient to the values only.
  grad = jax.grad(lambda v: ppo.ppo_loss(inputs.replace(values=v), {}, ppo.PPOConfig(
      advantage="mc", value_coef=1.0))[0])(inputs.values)
  returns = np.asarray(sequence_math.sparse_reward_returns(inputs.rewards, inputs.mask))
  np.testing.assert_allclose(grad, (np.asarray(inputs.values) - returns) * mask / mask.sum(),
                             atol=1e-6)


def test_bad_config_names_the_field_and_the_allowed_values():
  with pytest.raises(ValueError, match=r"OnlineConfig.loss='bc'.*\['ppo', 'reinforce'\]"):
    online.OnlineConfig(loss="bc")
  with pytest.raises(ValueError, match=r"PPOConfig.advantage='td'.*\['gae', 'mc'\]"):
    online.OnlineConfig(loss="ppo", loss_overrides={"advantage": "td"})
  with pytest.raises(ValueError, match=r"ReinforceConfig.baseline='mean'.*leave_one_out"):
    registry.make_config("reinforce", baseline="mean")
  with pytest.raises(ValueError, match=r"ImproveConfig.losses=\('ppo',\).*on-policy"):
    improve.ImproveConfig(losses=("ppo",))
  with pytest.raises(ValueError, match="OnlineConfig.temperature=0.0"):
    online.OnlineConfig(temperature=0.0)
  with pytest.raises(ValueError, match="OnlineConfig.minibatches=3 must divide"):
    online.OnlineConfig(minibatches=3)
  with pytest.raises(ValueError, match="divisible by the 8 data-parallel"):
    online.OnlineConfig(num_samples=3, minibatches=2,
                        train=online.train_lib.TrainPhaseConfig(batch_size=4)).check_layout(8)
