"""Behaviour V-MPO (BVMPO): V-MPO on grown data, anchored to the BC policy.

The ReST paper's "behaviour V-MPO": L = L_VMPO + lambda * KL(pi_BC || pi_theta), with lambda
annealed from 1 to 1e-5, and a state-value critic pretrained by behaviour value estimation
(`value_pretrain`). Each target token is one V-MPO sample. Pieces, as in rlax's `vmpo_loss`:

  returns      G_t = gamma^(T_end - t) r (sparse reward at EOS; G_t = r when gamma = 1).
  advantages   A_t = G_t - sg(V(s_t)).
  top half     keep the ceil(top_fraction * n) highest advantages among the n valid tokens of
               the batch (valid: mask > 0 and example weight > 0). Ties are broken by position,
               earlier (row-major [B, T]) first, so exactly that many are kept; padding never is.
  weights      psi = softmax over kept tokens of A/eta (times the example weight), no gradient.
  policy       -sum_kept psi_t log pi_theta(y_t | s_t).
  temperature  eta * eps_eta + eta * log(mean_kept exp(A/eta)) (example-weighted mean), A
               stop-gradient; eta = softplus(eta_unconstrained) + 1e-8 is learned.
  trust region alpha * (eps_alpha - sg(KL)) + sg(alpha) * KL, KL = mean over valid tokens of
               KL(pi_prev || pi_theta); alpha = softplus(alpha_unconstrained) + 1e-8 is learned.
  BC anchor    lambda(step) * mean KL(pi_BC || pi_theta) with the log-linear schedule
               lambda = start * (end / start)^min(step / N, 1), from `kl_bc_start` = 1 to
               `kl_bc_end` = 1e-5 over N = `anneal_steps` optimizer steps of the round. By
               default (`anneal_steps=None`) N is the Improve round's length
               (`TrainPhaseConfig.max_steps`, filled in by `LossSpec.for_phase`), so lambda
               reaches 1e-5 as the round ends; it restarts at 1 in every round.
  critic       value_coef * mean 0.5 * (G_t - V(s_t))^2 so the critic keeps training.

"mean over valid tokens" is the package-wide normalisation
sum_{b,t} w_b m_bt x_bt / max(sum_{b,t} w_b m_bt, 1) (see `sequence_math`).

KL terms and dropout: `pi_prev` and `pi_BC` are evaluated with the policy pass's dropout key
(see `train`), so identical parameters give KL = 0 with dropout on. `pi_prev` is refreshed from
the policy every `ImproveConfig.trust_region_sync_every` steps (V-MPO's target network), and
eta, alpha have their own optimizer (`optim.with_dual_optimizer`).

Defaults: eps_eta = 0.1 and eps_alpha = 0.01 (the paper gives none; these are in the range the
V-MPO paper used), eta_init = 1, alpha_init = 5 (V-MPO's discrete-action initial values).
Rounding the kept count up (not down, as rlax does) keeps at least one token whenever any is
valid; with an even count the two agree. With no valid token at all every term is 0.
"""
import dataclasses
import fractions
import math

import jax
import jax.numpy as jnp

from rest_jax.losses import base
from rest_jax.losses import sequence_math

DUAL_FLOOR = 1e-8
# Anneal length used when the loss runs outside a training phase with `anneal_steps=None` (unit
# tests, direct calls): TrainPhaseConfig's default max_steps. The trainer always fills it in.
UNBOUND_ANNEAL_STEPS = 1000


@dataclasses.dataclass(frozen=True)
class BVMPOConfig:
  """BVMPO hyper-parameters (see the module docstring for the role of each)."""

  eps_eta: float = 0.1
  eps_alpha: float = 0.01
  eta_init: float = 1.0
  alpha_init: float = 5.0
  top_fraction: float = 0.5
  gamma: float = 1.0
  kl_bc_start: float = 1.0
  kl_bc_end: float = 1e-5
  anneal_steps: int | None = None  # None: the Improve round's length (see the module doc).
  value_coef: float = 1.0

  def __post_init__(self):
    base.require_in_range(self, "eps_eta", 0.0, low_inclusive=False)
    base.require_in_range(self, "eps_alpha", 0.0, low_inclusive=False)
    base.require_in_range(self, "eta_init", DUAL_FLOOR, low_inclusive=False)
    base.require_in_range(self, "alpha_init", DUAL_FLOOR, low_inclusive=False)
    base.require_in_range(self, "top_fraction", 0.0, 1.0, low_inclusive=False)
    base.require_in_range(self, "gamma", 0.0, 1.0, low_inclusive=False)
    base.require_in_range(self, "kl_bc_start", 0.0, low_inclusive=False)
    base.require_in_range(self, "kl_bc_end", 0.0, low_inclusive=False)
    if self.anneal_steps is not None:
      base.require_int_in_range(self, "anneal_steps", 1)
    base.require_in_range(self, "value_coef", 0.0)


REQUIRES = frozenset({"bc_logits", "prev_logits", "values"})


def positive_dual(unconstrained: jax.Array) -> jax.Array:
  """Maps an unconstrained dual variable to (1e-8, inf)."""
  return jax.nn.softplus(unconstrained.astype(jnp.float32)) + DUAL_FLOOR


def unconstrained_dual(value: float) -> float:
  """Inverse of `positive_dual` (stable inverse softplus)."""
  shifted = value - DUAL_FLOOR
  return shifted + math.log(-math.expm1(-shifted))


def init_dual_params(config: BVMPOConfig) -> dict:
  """Trainable V-MPO temperature and trust-region multiplier, in unconstrained form."""
  return {
      "eta_unconstrained": jnp.asarray(unconstrained_dual(config.eta_init), jnp.float32),
      "alpha_unconstrained": jnp.asarray(unconstrained_dual(config.alpha_init), jnp.float32),
  }


def for_phase(config: BVMPOConfig, num_steps: int) -> BVMPOConfig:
  """The config of a round of `num_steps` steps: `anneal_steps=None` becomes `num_steps`."""
  if config.anneal_steps is not None:
    return config
  return dataclasses.replace(config, anneal_steps=max(int(num_steps), 1))


def kl_bc_coefficient(step: jax.Array, config: BVMPOConfig) -> jax.Array:
  """lambda(step): log-linear from kl_bc_start at step 0 to kl_bc_end at anneal_steps."""
  anneal_steps = UNBOUND_ANNEAL_STEPS if config.anneal_steps is None else config.anneal_steps
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / anneal_steps, 0.0, 1.0)
  log_start, log_end = math.log(config.kl_bc_start), math.log(config.kl_bc_end)
  return jnp.exp(log_start + progress * (log_end - log_start))


def top_fraction_mask(
    scores_BxT: jax.Array, valid_BxT: jax.Array, fraction: float
) -> jax.Array:
  """Keeps exactly ceil(fraction * n) highest-scoring valid tokens (ties: earlier first)."""
  flat_scores = scores_BxT.reshape(-1).astype(jnp.float32)
  flat_valid = valid_BxT.reshape(-1)
  size = flat_scores.shape[0]
  # ceil(p/q * n) in exact integer arithmetic (float ceil misrounds e.g. 0.3 * 10).
  ratio = fractions.Fraction(fraction).limit_denominator(1000)
  if ratio.numerator * size >= 2**31:
    raise ValueError(f"top_fraction={fraction} with {size} tokens overflows int32 counting; "
                     "use a simpler fraction (e.g. 0.5) or a smaller batch")
  num_valid = jnp.sum(flat_valid.astype(jnp.int32))
  num_keep = (ratio.numerator * num_valid + ratio.denominator - 1) // ratio.denominator
  sort_key = jnp.where(flat_valid, -flat_scores, jnp.inf)
  order = jnp.argsort(sort_key, stable=True)
  rank = jnp.zeros((size,), jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))
  return ((rank < num_keep) & flat_valid).reshape(scores_BxT.shape)


def temperature_loss_and_weights(
    advantages_BxT: jax.Array,
    token_weights_BxT: jax.Array,
    keep_BxT: jax.Array,
    eta: jax.Array,
    eps_eta: float,
) -> tuple[jax.Array, jax.Array]:
  """V-MPO E-step: (eta*eps + eta*log weighted-mean_kept exp(A/eta), stop-gradient psi)."""
  advantages_BxT = jax.lax.stop_gradient(advantages_BxT)
  kept_weights_BxT = jnp.where(keep_BxT, token_weights_BxT, 0.0)
  scaled_BxT = jnp.where(keep_BxT, advantages_BxT / eta, 0.0)
  shift = jax.lax.stop_gradient(jnp.max(jnp.where(keep_BxT, scaled_BxT, -jnp.inf)))
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  unnormalised_BxT = kept_weights_BxT * jnp.exp(jnp.where(keep_BxT, scaled_BxT - shift, 0.0))
  total = jnp.sum(unnormalised_BxT)
  kept_mass = jnp.sum(kept_weights_BxT)
  anything_kept = kept_mass > 0
  log_mean_exp = jnp.where(
      anything_kept,
      jnp.log(jnp.maximum(total, 1e-30)) + shift - jnp.log(jnp.maximum(kept_mass, 1e-30)),
      0.0)
  temperature_loss = jnp.where(anything_kept, eta * eps_eta + eta * log_mean_exp, 0.0)
  psi_BxT = jax.lax.stop_gradient(unnormalised_BxT / jnp.maximum(total, 1e-30))
  return temperature_loss, psi_BxT


def effective_sample_size(psi_BxT: jax.Array) -> jax.Array:
  """1 / sum psi^2: how many tokens the E-step weights effectively use (0 if none kept)."""
  concentration = jnp.sum(jnp.square(psi_BxT))
  return jnp.where(concentration > 0, 1.0 / jnp.maximum(concentration, 1e-30), 0.0)


def trust_region_losses(
    kl: jax.Array, alpha: jax.Array, eps_alpha: float
) -> tuple[jax.Array, jax.Array]:
  """(policy term sg(alpha) * KL, multiplier term alpha * (eps_alpha - sg(KL)))."""
  policy_term = jax.lax.stop_gradient(alpha) * kl
  alpha_term = alpha * (eps_alpha - jax.lax.stop_gradient(kl))
  return policy_term, alpha_term


def bvmpo_loss(
    inputs: base.LossInputs, loss_params: dict, config: BVMPOConfig
) -> tuple[jax.Array, base.Metrics]:
  """Total BVMPO loss: V-MPO policy + temperature + trust region + annealed BC KL + critic."""
  base.check_inputs(inputs, "bvmpo", REQUIRES)
  missing = sorted({"eta_unconstrained", "alpha_unconstrained"} - set(loss_params))
  if missing:
    raise ValueError(f"Loss 'bvmpo' needs loss_params {missing}; create them with "
                     f"LossSpec.init_params(config), got keys {sorted(loss_params)}")
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  valid_BxT = token_weights_BxT > 0
  eta = positive_dual(loss_params["eta_unconstrained"])
  alpha = positive_dual(loss_params["alpha_unconstrained"])

  returns_BxT = sequence_math.sparse_reward_returns(inputs.rewards, inputs.mask, config.gamma)
  values_BxT = inputs.values.astype(jnp.float32)
  advantages_BxT = jnp.where(valid_BxT, returns_BxT - jax.lax.stop_gradient(values_BxT), 0.0)
  keep_BxT = top_fraction_mask(advantages_BxT, valid_BxT, config.top_fraction)
  temperature_loss, psi_BxT = temperature_loss_and_weights(
      advantages_BxT, token_weights_BxT, keep_BxT, eta, config.eps_eta)
  log_probs_BxT = jnp.where(keep_BxT, inputs.token_logprobs.astype(jnp.float32), 0.0)
  policy_loss = -jnp.sum(psi_BxT * log_probs_BxT)

  prev_logits = jax.lax.stop_gradient(inputs.prev_logits)
  kl_prev = sequence_math.weighted_token_mean(
      sequence_math.kl_divergence_from_logits(prev_logits, inputs.logits), token_weights_BxT)
  kl_prev_loss, alpha_loss = trust_region_losses(kl_prev, alpha, config.eps_alpha)
  alpha_loss = jnp.where(jnp.any(valid_BxT), alpha_loss, 0.0)  # no data: leave alpha alone

  bc_logits = jax.lax.stop_gradient(inputs.bc_logits)
  kl_bc = sequence_math.weighted_token_mean(
      sequence_math.kl_divergence_from_logits(bc_logits, inputs.logits), token_weights_BxT)
  kl_bc_coef = kl_bc_coefficient(inputs.step, config)
  value_loss = sequence_math.value_regression_loss(values_BxT, returns_BxT, token_weights_BxT)

  loss = (policy_loss + temperature_loss + kl_prev_loss + alpha_loss
          + kl_bc_coef * kl_bc + config.value_coef * value_loss)
  metrics = {
      "loss": loss,
      "policy_loss": policy_loss,
      "temperature_loss": temperature_loss,
      "kl_prev_loss": kl_prev_loss,
      "alpha_loss": alpha_loss,
      "kl_prev": kl_prev,
      "kl_bc": kl_bc,
      "kl_bc_coef": kl_bc_coef,
      "value_loss": value_loss,
      "eta": eta,
      "alpha": alpha,
      "mean_advantage": sequence_math.weighted_token_mean(advantages_BxT, token_weights_BxT),
      "mean_return": sequence_math.weighted_token_mean(returns_BxT, token_weights_BxT),
      "num_kept": jnp.sum(keep_BxT.astype(jnp.float32)),
      "effective_sample_size": effective_sample_size(psi_BxT),
      "nll": sequence_math.weighted_token_mean(
          -inputs.token_logprobs.astype(jnp.float32), token_weights_BxT),
      "num_tokens": sequence_math.num_weighted_tokens(token_weights_BxT),
  }
  return loss, metrics


SPEC = base.LossSpec(
    name="bvmpo", fn=bvmpo_loss, config_cls=BVMPOConfig, requires=REQUIRES,
    init_params=init_dual_params, needs_value_head=True, for_phase=for_phase)
