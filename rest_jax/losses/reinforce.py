"""REINFORCE with a group baseline (RLOO / GRPO-style): an on-policy loss for `rest_jax.online`.

Each online step samples K outputs for each of B sources from the current policy and scores them
once; the K rows of one source share `group_ids`. Each sequence gets one advantage A = r - b:

  baseline='leave_one_out' (default)  b = mean reward of the other K-1 samples of its source
                                      (RLOO). b does not depend on the sample itself, so the
                                      estimator is unbiased.
  baseline='group_mean'               b = mean reward of all K samples of its source (biased:
                                      the expected gradient is (K-1)/K of the true one).
  baseline='group_norm'               A = (r - group mean) / (group std + 1e-6) (GRPO).
  baseline='none'                     b = 0 (plain REINFORCE).

A source with a single (weighted) sample has no other sample to compare with: its baseline is 0
(its advantage is 0 under 'group_norm').
Rows with weight 0 (truncated samples under 'drop', padding) neither train nor enter a group's
statistics.

  loss = mean_t -A log pi_theta(y_t | s_t)                      (policy gradient)
       + kl_coef * mean_t KL(pi_theta(.|s_t) || pi_BC(.|s_t))   (penalty to the BC policy)
       - entropy_coef * mean_t H(pi_theta(.|s_t))              (optional entropy bonus)

"mean_t" is the package-wide token normalisation sum_{b,t} w_b m_bt x_bt / max(sum w m, 1) (see
`sequence_math`), so with sequences of one length L the policy term's expected gradient is
-(1/L) grad E[r]; with lengths that vary it weights every token alike (as DAPO does) rather than
every sequence. The KL is exact over the vocabulary at every visited state; its gradient holds the
sampled states fixed (it omits the score-function term of the sequence-level KL, as the usual
"KL in the loss" implementations do), and its value, summed over a sequence and averaged over
samples, estimates the sequence-level KL(pi_theta || pi_BC) without bias (chain rule of KL).
"""
import dataclasses

import jax
import jax.numpy as jnp

from rest_jax.losses import base
from rest_jax.losses import sequence_math

BASELINES = ("leave_one_out", "group_mean", "group_norm", "none")


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:
  """baseline: one of BASELINES (module docstring); kl_coef, entropy_coef >= 0."""

  baseline: str = "leave_one_out"
  kl_coef: float = 0.05
  entropy_coef: float = 0.0

  def __post_init__(self):
    base.require_choice(self, "baseline", BASELINES)
    base.require_in_range(self, "kl_coef", 0.0)
    base.require_in_range(self, "entropy_coef", 0.0)


REQUIRES = frozenset({"group_ids", "bc_logits"})


def group_advantages(rewards_B: jax.Array, weights_B: jax.Array, group_ids_B: jax.Array,
                     baseline: str) -> jax.Array:
  """Per-sequence advantages r - b under `baseline` (see the module docstring); no gradient."""
  rewards_B = rewards_B.astype(jnp.float32)
  weights_B = weights_B.astype(jnp.float32)
  if baseline == "none":
    return jax.lax.stop_gradient(rewards_B)
  same_BxB = (group_ids_B[:, None] == group_ids_B[None, :]).astype(jnp.float32)
  members_BxB = same_BxB * weights_B[None, :]  # Row i: the weighted members of i's group.
  count_B = members_BxB.sum(1)
  total_B = members_BxB @ rewards_B
  if baseline == "leave_one_out":
    others_B = count_B - weights_B
    mean_others_B = (total_B - weights_B * rewards_B) / jnp.maximum(others_B, 1e-12)
    advantages_B = rewards_B - jnp.where(others_B > 0, mean_others_B, 0.0)
  elif baseline == "group_mean":
    mean_B = total_B / jnp.maximum(count_B, 1e-12)
    advantages_B = rewards_B - jnp.where(count_B > weights_B, mean_B, 0.0)
  else:  # group_norm
    mean_B = total_B / jnp.maximum(count_B, 1e-12)
    centred_BxB = rewards_B[None, :] - mean_B[:, None]
    var_B = (members_BxB * centred_BxB**2).sum(1) / jnp.maximum(count_B, 1e-12)
    advantages_B = (rewards_B - mean_B) / (jnp.sqrt(var_B) + 1e-6)
  return jax.lax.stop_gradient(jnp.where(weights_B > 0, advantages_B, 0.0))


def regularisers(inputs: base.LossInputs, token_weights_BxT: jax.Array, kl_coef: float,
                 entropy_coef: float) -> tuple[jax.Array, base.Metrics]:
  """kl_coef * mean_t KL(pi_theta || pi_BC) - entropy_coef * mean_t H(pi_theta), and both means.

  Shared by the on-policy losses (this module and `ppo`).
  """
  kl = sequence_math.weighted_token_mean(
      sequence_math.kl_divergence_from_logits(inputs.logits, inputs.bc_logits), token_weights_BxT)
  entropy = sequence_math.weighted_token_mean(
      sequence_math.entropy_from_logits(inputs.logits), token_weights_BxT)
  return kl_coef * kl - entropy_coef * entropy, {"kl_bc": kl, "entropy": entropy}


def reinforce_loss(
    inputs: base.LossInputs, loss_params: dict, config: ReinforceConfig
) -> tuple[jax.Array, base.Metrics]:
  """Group-baseline REINFORCE plus the KL-to-BC penalty and entropy bonus."""
  del loss_params
  base.check_inputs(inputs, "reinforce", REQUIRES)
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  advantages_B = group_advantages(inputs.rewards, inputs.weights, inputs.group_ids,
                                  config.baseline)
  nll_BxT = -inputs.token_logprobs.astype(jnp.float32)
  policy_loss = sequence_math.weighted_token_mean(advantages_B[:, None] * nll_BxT,
                                                  token_weights_BxT)
  extra, metrics = regularisers(inputs, token_weights_BxT, config.kl_coef, config.entropy_coef)
  loss = policy_loss + extra
  active_B = inputs.weights > 0
  metrics.update(
      loss=loss,
      policy_loss=policy_loss,
      nll=sequence_math.weighted_token_mean(nll_BxT, token_weights_BxT),
      mean_abs_advantage=jnp.sum(jnp.where(active_B, jnp.abs(advantages_B), 0.0))
      / jnp.maximum(jnp.sum(active_B), 1),
      num_tokens=sequence_math.num_weighted_tokens(token_weights_BxT),
  )
  return loss, metrics


SPEC = base.LossSpec(name="reinforce", fn=reinforce_loss, config_cls=ReinforceConfig,
                     requires=REQUIRES, online_only=True)
