"""PPO with clipped probability ratios and the value head as critic: an on-policy loss.

`rest_jax.online` samples a batch from the current policy pi_old, records pi_old's token
log-probs (`behaviour_token_logprobs`) and its value head (`old_values`), both from one
deterministic teacher-forced pass, then runs a few epochs of minibatch updates with this loss
(`OnlineConfig.inner_epochs`, `minibatches`). Per target token t:

  advantage    'gae' (default): A_t = sum_l (gamma lambda)^l delta_{t+l}, with
               delta_t = r_t + gamma V_old(s_{t+1}) - V_old(s_t); the sequence reward r is paid at
               the last real token and V_old = 0 after it. Critic target R_t = A_t + V_old(s_t).
               'mc': A_t = G_t - V_old(s_t) with the Monte-Carlo return G_t = gamma^(T_end - t) r;
               critic target R_t = G_t. GAE with lambda = 1 is 'mc'.
               Advantages come from the frozen V_old, so they stay fixed over the inner epochs;
               `normalize_advantages` whitens them over the minibatch's valid tokens.
  ratio        rho_t = exp(log pi_theta(y_t|s_t) - log pi_old(y_t|s_t)).
  policy       mean_t -min(rho_t A_t, clip(rho_t, 1 - clip_eps, 1 + clip_eps) A_t): once the
               ratio has moved clip_eps past 1 in the direction the advantage favours, the token
               stops contributing gradient.
  critic       value_coef * mean_t 0.5 (V(s_t) - R_t)^2.
  regularisers kl_coef * mean_t KL(pi_theta || pi_BC) - entropy_coef * mean_t H(pi_theta), as in
               `reinforce` (`kl_target` > 0 turns the penalty into a constraint there too).

"mean_t" is the package-wide normalisation (see `sequence_math`). Metrics: the fraction of
clipped tokens and the approximate KL(pi_old || pi_theta) = mean_t (rho - 1) - log rho.
"""
import dataclasses

import jax
import jax.numpy as jnp

from rest_jax.losses import base
from rest_jax.losses import reinforce
from rest_jax.losses import sequence_math

ADVANTAGES = ("gae", "mc")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO hyper-parameters (see the module docstring for the role of each)."""

  clip_eps: float = 0.2
  advantage: str = "gae"
  gamma: float = 1.0
  gae_lambda: float = 0.95
  normalize_advantages: bool = True
  value_coef: float = 0.5
  kl_coef: float = 0.05
  entropy_coef: float = 0.0
  kl_target: float = 0.0

  def __post_init__(self):
    base.require_in_range(self, "clip_eps", 0.0, 1.0, low_inclusive=False)
    base.require_choice(self, "advantage", ADVANTAGES)
    base.require_in_range(self, "gamma", 0.0, 1.0, low_inclusive=False)
    base.require_in_range(self, "gae_lambda", 0.0, 1.0)
    if not isinstance(self.normalize_advantages, bool):
      raise TypeError(f"PPOConfig.normalize_advantages must be a bool, "
                      f"got {self.normalize_advantages!r}")
    base.require_in_range(self, "value_coef", 0.0)
    reinforce.check_regulariser_config(self)


REQUIRES = frozenset({"behaviour_token_logprobs", "old_values", "values", "bc_logits"})


def gae_advantages(rewards_B: jax.Array, values_BxT: jax.Array, mask_BxT: jax.Array,
                   gamma: float, lam: float) -> jax.Array:
  """Generalised advantage estimates of a sequence reward paid at each row's last real token.

  `values_BxT` are V(s_t) (taken as constants); 0 on padding.
  """
  valid_BxT = mask_BxT > 0
  positions_T = jnp.arange(mask_BxT.shape[1])
  is_last_BxT = valid_BxT & (
      positions_T[None, :] == sequence_math.last_valid_index(mask_BxT)[:, None])
  step_rewards_BxT = jnp.where(is_last_BxT, rewards_B.astype(jnp.float32)[:, None], 0.0)
  values_BxT = jnp.where(valid_BxT, jax.lax.stop_gradient(values_BxT).astype(jnp.float32), 0.0)
  next_values_BxT = jnp.where(is_last_BxT, 0.0, jnp.pad(values_BxT[:, 1:], ((0, 0), (0, 1))))
  deltas_BxT = step_rewards_BxT + gamma * next_values_BxT - values_BxT

  def backward(carry_B, inputs):
    delta_B, valid_B = inputs
    advantage_B = jnp.where(valid_B, delta_B + gamma * lam * carry_B, 0.0)
    return advantage_B, advantage_B

  _, advantages_TxB = jax.lax.scan(backward, jnp.zeros(mask_BxT.shape[0], jnp.float32),
                                   (deltas_BxT.T, valid_BxT.T), reverse=True)
  return advantages_TxB.T


def clipped_surrogate(ratio_BxT: jax.Array, advantages_BxT: jax.Array,
                      clip_eps: float) -> jax.Array:
  """Per-token PPO loss -min(rho A, clip(rho, 1 - eps, 1 + eps) A)."""
  clipped_BxT = jnp.clip(ratio_BxT, 1.0 - clip_eps, 1.0 + clip_eps)
  return -jnp.minimum(ratio_BxT * advantages_BxT, clipped_BxT * advantages_BxT)


def ppo_loss(
    inputs: base.LossInputs, loss_params: dict, config: PPOConfig
) -> tuple[jax.Array, base.Metrics]:
  """Clipped-ratio policy loss, critic regression, KL to BC and entropy bonus."""
  base.check_inputs(inputs, "ppo", REQUIRES)
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  old_values_BxT = jax.lax.stop_gradient(inputs.old_values.astype(jnp.float32))
  if config.advantage == "gae":
    advantages_BxT = gae_advantages(inputs.rewards, old_values_BxT, inputs.mask, config.gamma,
                                    config.gae_lambda)
    returns_BxT = advantages_BxT + jnp.where(inputs.mask > 0, old_values_BxT, 0.0)
  else:
    returns_BxT = sequence_math.sparse_reward_returns(inputs.rewards, inputs.mask, config.gamma)
    advantages_BxT = jnp.where(inputs.mask > 0, returns_BxT - old_values_BxT, 0.0)
  raw_mean_advantage = sequence_math.weighted_token_mean(advantages_BxT, token_weights_BxT)
  if config.normalize_advantages:
    mean, std = sequence_math.weighted_moments(advantages_BxT, token_weights_BxT)
    advantages_BxT = (advantages_BxT - mean) / (std + 1e-6)
  advantages_BxT = jax.lax.stop_gradient(advantages_BxT)
  log_ratio_BxT = (inputs.token_logprobs.astype(jnp.float32)
                   - jax.lax.stop_gradient(inputs.behaviour_token_logprobs.astype(jnp.float32)))
  log_ratio_BxT = jnp.where(inputs.mask > 0, log_ratio_BxT, 0.0)
  ratio_BxT = jnp.exp(log_ratio_BxT)
  policy_loss = sequence_math.weighted_token_mean(
      clipped_surrogate(ratio_BxT, advantages_BxT, config.clip_eps), token_weights_BxT)
  value_loss = sequence_math.value_regression_loss(inputs.values, returns_BxT, token_weights_BxT)
  extra, metrics = reinforce.regularisers(inputs, token_weights_BxT, loss_params, config)
  loss = policy_loss + config.value_coef * value_loss + extra
  ratio_sg_BxT = jax.lax.stop_gradient(ratio_BxT)
  metrics.update(
      loss=loss,
      policy_loss=policy_loss,
      value_loss=value_loss,
      mean_advantage=raw_mean_advantage,
      clip_fraction=sequence_math.weighted_token_mean(
          (jnp.abs(ratio_sg_BxT - 1.0) > config.clip_eps).astype(jnp.float32),
          token_weights_BxT),
      approx_kl_old=sequence_math.weighted_token_mean(
          ratio_sg_BxT - 1.0 - jax.lax.stop_gradient(log_ratio_BxT), token_weights_BxT),
      num_tokens=sequence_math.num_weighted_tokens(token_weights_BxT),
  )
  return loss, metrics


SPEC = base.LossSpec(name="ppo", fn=ppo_loss, config_cls=PPOConfig, requires=REQUIRES,
                     init_params=reinforce.init_kl_multiplier, needs_value_head=True,
                     online_only=True)
