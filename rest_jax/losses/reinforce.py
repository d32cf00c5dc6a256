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

KL constraint instead of a fixed penalty: with `kl_target` > 0 the coefficient is a learned
multiplier beta (softplus-positive, starting at `kl_coef`, trained by the dual optimizer like
BVMPO's alpha) and the term is sg(beta) * KL + beta * (kl_target - sg(KL)): beta grows while the
mean token KL exceeds `kl_target` and shrinks below it (a Lagrangian for mean_t KL <= kl_target).

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
from rest_jax.losses import bvmpo
from rest_jax.losses import sequence_math

BASELINES = ("leave_one_out", "group_mean", "group_norm", "none")


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:
  """baseline: one of BASELINES (module docstring); kl_coef, entropy_coef >= 0; kl_target >= 0
  (0: fixed penalty kl_coef; > 0: KL constraint, see the module docstring)."""

  baseline: str = "leave_one_out"
  kl_coef: float = 0.05
  entropy_coef: float = 0.0
  kl_target: float = 0.0

  def __post_init__(self):
    base.require_choice(self, "baseline", BASELINES)
    check_regulariser_config(self)


def check_regulariser_config(config) -> None:
  """Validates kl_coef, entropy_coef and kl_target (shared with `ppo`)."""
  base.require_in_range(config, "kl_coef", 0.0)
  base.require_in_range(config, "entropy_coef", 0.0)
  base.require_in_range(config, "kl_target", 0.0)
  if config.kl_target > 0:
    base.require_in_range(config, "kl_coef", bvmpo.DUAL_FLOOR, low_inclusive=False)


def init_kl_multiplier(config) -> dict:
  """`init_params` of the on-policy losses: the KL multiplier when `kl_target` > 0, else none."""
  if not config.kl_target > 0:
    return {}
  return {"kl_multiplier_unconstrained": jnp.asarray(bvmpo.unconstrained_dual(config.kl_coef),
                                                     jnp.float32)}


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


def regularisers(inputs: base.LossInputs, token_weights_BxT: jax.Array, loss_params: dict,
                 config) -> tuple[jax.Array, base.Metrics]:
  """The KL-to-BC term (fixed penalty or constraint) minus the entropy bonus, and their means.

  Shared by the on-policy losses (this module and `ppo`); `config` has kl_coef, kl_target and
  entropy_coef.
  """
  kl = sequence_math.weighted_token_mean(
      sequence_math.kl_divergence_from_logits(inputs.logits, inputs.bc_logits), token_weights_BxT)
  entropy = sequence_math.weighted_token_mean(
      sequence_math.entropy_from_logits(inputs.logits), token_weights_BxT)
  if config.kl_target > 0:
    beta = bvmpo.positive_dual(loss_params["kl_multiplier_unconstrained"])
    kl_term = (jax.lax.stop_gradient(beta) * kl
               + beta * (config.kl_target - jax.lax.stop_gradient(kl)))
  else:
    beta = jnp.asarray(config.kl_coef, jnp.float32)
    kl_term = beta * kl
  return kl_term - config.entropy_coef * entropy, {"kl_bc": kl, "entropy": entropy,
                                                    "kl_coef": beta}


def reinforce_loss(
    inputs: base.LossInputs, loss_params: dict, config: ReinforceConfig
) -> tuple[jax.Array, base.Metrics]:
  """Group-baseline REINFORCE plus the KL-to-BC penalty and entropy bonus."""
  base.check_inputs(inputs, "reinforce", REQUIRES)
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  advantages_B = group_advantages(inputs.rewards, inputs.weights, inputs.group_ids,
                                  config.baseline)
  nll_BxT = -inputs.token_logprobs.astype(jnp.float32)
  policy_loss = sequence_math.weighted_token_mean(advantages_B[:, None] * nll_BxT,
                                                  token_weights_BxT)
  extra, metrics = regularisers(inputs, token_weights_BxT, loss_params, config)
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
                     requires=REQUIRES, init_params=init_kl_multiplier, online_only=True)
