"""Pure per-token arithmetic shared by every Improve-step loss.

Shape legend: B batch, T target length, V vocabulary. A suffix `_BxT` names the shape.

Why one module: all losses must reduce per-token quantities the same way, or their magnitudes
(and therefore learning rates chosen per Improve round) stop being comparable.

Normalisation (used by every loss in this package). With mask m_BxT (1 on real target tokens,
EOS included) and per-example weights w_B, a per-token quantity x_BxT is reduced to

    sum_{b,t} w_b m_bt x_bt / max(sum_{b,t} w_b m_bt, 1).

This is the usual token-averaged NLL when all weights are 1. Weights let a filter down-weight
or drop (w=0) examples without changing shapes, so nothing is recompiled. The max(., 1) guard
makes a batch with nothing left in it contribute exactly 0 rather than NaN; the price is that a
batch whose weighted token count is below 1 is summed rather than averaged.

Returns for the sparse sequence reward: the reward arrives once, at the last real token
(T_end, the EOS), transitions are deterministic, so the Monte-Carlo return from position t is
G_t = gamma^(T_end - t) * r, which is simply r everywhere when gamma = 1.

Padded positions must hold finite numbers; they are excluded with `jnp.where`, so their values
never reach a result or a gradient.
"""
import jax
import jax.numpy as jnp


def token_weights(mask_BxT: jax.Array, weights_B: jax.Array) -> jax.Array:
  """Per-token weight w_b * m_bt used by every reduction."""
  return mask_BxT.astype(jnp.float32) * weights_B.astype(jnp.float32)[:, None]


def num_weighted_tokens(token_weights_BxT: jax.Array) -> jax.Array:
  """sum_{b,t} w_b m_bt (the denominator before the max(., 1) guard)."""
  return jnp.sum(token_weights_BxT)


def weighted_token_mean(values_BxT: jax.Array, token_weights_BxT: jax.Array) -> jax.Array:
  """The package-wide normalisation: sum(w m x) / max(sum(w m), 1)."""
  active = token_weights_BxT != 0
  total = jnp.sum(jnp.where(active, values_BxT * token_weights_BxT, 0.0))
  return total / jnp.maximum(num_weighted_tokens(token_weights_BxT), 1.0)


def weighted_moments(
    values_BxT: jax.Array, token_weights_BxT: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Exact weighted mean and standard deviation over active tokens (0, 0 when none)."""
  active = token_weights_BxT != 0
  denom = jnp.maximum(num_weighted_tokens(token_weights_BxT), 1e-12)
  mean = jnp.sum(jnp.where(active, values_BxT * token_weights_BxT, 0.0)) / denom
  centered = jnp.where(active, values_BxT - mean, 0.0)
  variance = jnp.sum(token_weights_BxT * centered**2) / denom
  return mean, jnp.sqrt(variance)


def kl_divergence_from_logits(
    p_logits_BxTxV: jax.Array, q_logits_BxTxV: jax.Array
) -> jax.Array:
  """Per-token KL(p || q) = sum_v p_v (log p_v - log q_v), computed from log-softmaxes."""
  log_p = jax.nn.log_softmax(p_logits_BxTxV.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(q_logits_BxTxV.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def entropy_from_logits(logits_BxTxV: jax.Array) -> jax.Array:
  """Per-token entropy H = -sum_v p_v log p_v of softmax(logits)."""
  log_p = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def last_valid_index(mask_BxT: jax.Array) -> jax.Array:
  """Index of the last real token of each row (the EOS); 0 for an empty row."""
  positions_T = jnp.arange(mask_BxT.shape[1])
  return jnp.max(jnp.where(mask_BxT > 0, positions_T[None, :], 0), axis=1)


def sparse_reward_returns(
    rewards_B: jax.Array, mask_BxT: jax.Array, gamma: float = 1.0
) -> jax.Array:
  """Monte-Carlo return G_t = gamma^(T_end - t) * r of a reward paid at the last real token.

  Zero on padding. With gamma = 1 every real position gets the sequence reward.
  """
  rewards_B = rewards_B.astype(jnp.float32)
  valid_BxT = mask_BxT > 0
  if gamma == 1.0:
    return jnp.where(valid_BxT, rewards_B[:, None], 0.0)
  positions_T = jnp.arange(mask_BxT.shape[1])
  steps_to_end_BxT = last_valid_index(mask_BxT)[:, None] - positions_T[None, :]
  discount_BxT = jnp.power(gamma, jnp.maximum(steps_to_end_BxT, 0).astype(jnp.float32))
  return jnp.where(valid_BxT, discount_BxT * rewards_B[:, None], 0.0)


def truncated_returns(
    per_token_rewards_BxT: jax.Array,
    mask_BxT: jax.Array,
    horizon: int,
    gamma: float,
    beyond_end_reward: float,
) -> jax.Array:
  """Q_t = sum_{j=0..horizon} gamma^j r_{t+j}; positions past a row's end pay `beyond_end_reward`.

  A position is "past the end" when it is padding (mask 0) or beyond the array. Every Q_t
  therefore sums exactly horizon + 1 terms, so tokens near the EOS are not penalised merely
  for having a short future.
  """
  batch, length = per_token_rewards_BxT.shape
  filled_BxT = jnp.where(
      mask_BxT > 0, per_token_rewards_BxT.astype(jnp.float32), beyond_end_reward)
  tail_BxH = jnp.full((batch, horizon), beyond_end_reward, dtype=jnp.float32)
  extended = jnp.concatenate([filled_BxT, tail_BxH], axis=1)
  returns_BxT = jnp.zeros((batch, length), jnp.float32)
  for offset in range(horizon + 1):
    returns_BxT = returns_BxT + (gamma**offset) * extended[:, offset:offset + length]
  return returns_BxT


# How a token with a negative weight (reward below a baseline, negative advantage) enters the
# NLL-weighted losses; see `signed_weighted_nll`.
NEGATIVE_WEIGHT_MODES = ("cap_nll", "zero", "unbounded")


def signed_weighted_nll(
    weights_BxT: jax.Array, nll_BxT: jax.Array, mode: str, nll_cap: float
) -> jax.Array:
  """Per-token w * NLL with the negative-weight part bounded below; w is stop-gradient.

  A negative w makes w * NLL decrease without limit as pi(y_t) -> 0, so the loss is unbounded
  below and a few negative examples can dominate training by driving tokens to probability 0.

    cap_nll:    w * min(NLL, nll_cap) where w < 0: the push-down stops once
                pi(y_t) < exp(-nll_cap); the token's term is >= w * nll_cap.
    zero:       max(w, 0) * NLL: negative examples are ignored.
    unbounded:  w * NLL, no bound (the textbook form).

  Positive weights are always w * NLL (>= 0).
  """
  weights_BxT = jax.lax.stop_gradient(weights_BxT.astype(jnp.float32))
  nll_BxT = nll_BxT.astype(jnp.float32)
  negative = weights_BxT < 0
  if mode == "cap_nll":
    return weights_BxT * jnp.where(negative, jnp.minimum(nll_BxT, nll_cap), nll_BxT)
  if mode == "zero":
    return jnp.maximum(weights_BxT, 0.0) * nll_BxT
  if mode == "unbounded":
    return weights_BxT * nll_BxT
  raise ValueError(f"negative_weights={mode!r} is not allowed; allowed: "
                   f"{list(NEGATIVE_WEIGHT_MODES)}")


def value_regression_loss(
    values_BxT: jax.Array, returns_BxT: jax.Array, token_weights_BxT: jax.Array
) -> jax.Array:
  """Behaviour value estimation: normalised mean of 0.5 * (G_t - V(s_t))^2 (gradient to V only)."""
  errors_BxT = jax.lax.stop_gradient(returns_BxT) - values_BxT.astype(jnp.float32)
  return weighted_token_mean(0.5 * jnp.square(errors_BxT), token_weights_BxT)
