"""Autoregressive sampling and beam search, compiled end to end.

The sampler is a pure function that reaches the network only through two callbacks
(`DecodeFns.prefill` and `DecodeFns.step`), so it can be tested and reused independently of the
model. The prompt is processed once (the encoder for encoder-decoder models, a cached prefill for
decoder-only ones); the token loop is a `lax.while_loop` on device that stops as soon as every row
has produced EOS. Keys are derived per row and step with `fold_in`, so results are deterministic
for a given key and independent of how the batch is sharded.

Shape-suffix legend: B sources, N samples per source, R = B*N rows, T decode length, V vocab,
W beam width.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rest_jax import sharding as sharding_lib
from rest_jax.configs import BeamSearchConfig, SamplingConfig
from rest_jax.models.transformer import EOS_ID, NEG_INF, PAD_ID, Transformer


class DecodeFns(NamedTuple):
  """Callbacks into the network. Rows are source-major: row b*n + j is sample j of source b."""
  # (params, inputs_BxS, num_samples, max_decode_len) -> (first logits [R, V], cache)
  prefill: Callable[..., tuple[jax.Array, Any]]
  # (params, tokens_R, cache) -> (next logits [R, V], cache)
  step: Callable[..., tuple[jax.Array, Any]]
  # cache -> cache with rows gathered by `indices` (beam search reordering)
  gather_rows: Callable[[Any, jax.Array], Any]


def model_decode_fns(model: Transformer) -> DecodeFns:
  def prefill(params, inputs, num_samples, max_decode_len):
    return model.apply({"params": params}, inputs, num_samples, max_decode_len,
                       method=Transformer.prefill)

  def step(params, tokens, cache):
    return model.apply({"params": params}, tokens, cache, method=Transformer.decode_step)

  def gather_rows(cache, indices):
    return jax.tree_util.tree_map(lambda x: x if x.ndim == 0 else x[indices], cache)

  return DecodeFns(prefill, step, gather_rows)


@flax.struct.dataclass
class SampleOutput:
  tokens: jax.Array  # [B, N, T] int32, PAD after EOS.
  lengths: jax.Array  # [B, N] int32, tokens up to and including EOS.
  token_logprobs: jax.Array  # [B, N, T] log-prob under the policy at temperature 1; 0 on padding.
  sample_logprobs: jax.Array  # [B, N, T] log-prob under the sampling distribution; 0 on padding.


def process_logits(logits_RxV: jax.Array, config: SamplingConfig) -> jax.Array:
  """The sampling distribution's logits: PAD removed, temperature, then top-k and top-p."""
  is_pad_1xV = jnp.arange(logits_RxV.shape[-1])[None, :] == PAD_ID
  logits = jnp.where(is_pad_1xV, NEG_INF, logits_RxV.astype(jnp.float32))
  if config.temperature > 0:
    logits = logits / config.temperature
  if config.top_k and config.top_k < logits.shape[-1]:
    logits = jnp.where(logits < kth_largest(logits, config.top_k), NEG_INF, logits)
  if config.top_p < 1.0:
    sorted_RxV = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_RxV, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # Keep the smallest prefix whose mass reaches top_p; the top token is always kept.
    keep = mass_before < config.top_p
    threshold_Rx1 = jnp.min(jnp.where(keep, sorted_RxV, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold_Rx1, NEG_INF, logits)
  return logits


def _order_key(x: jax.Array) -> jax.Array:
  """float32 -> int32 with the same order (the map is its own inverse, see `_from_order_key`)."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
  # Negative floats order backwards as integers: flip their magnitude bits.
  return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _from_order_key(key: jax.Array) -> jax.Array:
  bits = jnp.where(key < 0, key ^ jnp.int32(0x7FFFFFFF), key)
  return jax.lax.bitcast_convert_type(bits, jnp.float32)


def kth_largest(x_RxV: jax.Array, k: int) -> jax.Array:
  """The k-th largest value of each row (counting repeats), [R, 1]; equal to
  `lax.top_k(x, k)[0][:, -1:]` for float32 without NaN.

  `lax.top_k` on XLA:CPU costs more than a whole decode step of a small model (66 ms for
  2048 x 260, 1.5 s for 256 x 32000 on a 2-core VM). Instead this bisects on the threshold's
  bits: floats are mapped to int32 keys with the same order, and 32 halvings of [min, max] find
  the largest key t with count(key >= t) >= k, exactly, in 32 vectorised compare-and-count passes
  (6.3x and 7.7x faster at those shapes in scripts/benchmark_top_k.py; BENCHMARKS.md).
  """
  key = _order_key(x_RxV)
  lo = jnp.min(key, axis=-1, keepdims=True)  # count(key >= lo) = V >= k: the invariant.
  hi = jnp.max(key, axis=-1, keepdims=True)  # the answer is at most hi.

  def halve(_, bounds):
    lo, hi = bounds
    # ceil((lo + hi) / 2) without int32 overflow.
    mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1) + ((lo ^ hi) & 1)
    enough = jnp.sum(key >= mid, axis=-1, keepdims=True, dtype=jnp.int32) >= k
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

  lo, _ = jax.lax.fori_loop(0, 32, halve, (lo, hi))
  return _from_order_key(lo)


def _vocab_block_size(vocab: int) -> int:
  """A divisor of the vocabulary near its square root (so no padding), else the square root."""
  root = math.isqrt(vocab)
  for size in range(root, root // 2, -1):
    if vocab % size == 0:
      return size
  return root + (root * root < vocab)


def sample_categorical(key: jax.Array, logits_RxV: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One exact draw per row from softmax(logits); returns (token [R], logsumexp(logits) [R]).

  Drawing in two stages, a block of about sqrt(V) tokens with probability equal to its total
  mass and then a token inside that block, samples exactly softmax(logits) while needing only
  about 2*sqrt(V) Gumbel variates per row instead of V (Gumbel-max over the full vocabulary
  spends most of a CPU decode step generating random numbers). The block masses also give the
  log-normaliser, so the logits are exponentiated once.
  """
  rows, vocab = logits_RxV.shape
  block = _vocab_block_size(vocab)
  num_blocks = -(-vocab // block)
  padded_RxV = logits_RxV
  if num_blocks * block != vocab:
    padded_RxV = jnp.pad(logits_RxV, [(0, 0), (0, num_blocks * block - vocab)],
                         constant_values=-jnp.inf)
  blocks_RxNxC = padded_RxV.reshape(rows, num_blocks, block)
  max_R = jnp.max(logits_RxV, axis=-1)
  mass_RxN = jnp.exp(blocks_RxNxC - max_R[:, None, None]).sum(-1)
  block_key, token_key = _split_keys(key)
  block_R = jnp.argmax(jnp.log(mass_RxN) + _gumbel(block_key, mass_RxN.shape), -1)
  within_RxC = jnp.take_along_axis(blocks_RxNxC, block_R[:, None, None], axis=1)[:, 0]
  offset_R = jnp.argmax(within_RxC + _gumbel(token_key, within_RxC.shape), -1)
  token_R = (block_R * block + offset_R).astype(jnp.int32)
  return token_R, max_R + jnp.log(mass_RxN.sum(-1))


def _split_keys(key):
  """Splits one key, or each of per-row keys [R, 2], in two."""
  if key.ndim == 2:
    pairs_Rx2x2 = jax.vmap(jax.random.split)(key)
    return pairs_Rx2x2[:, 0], pairs_Rx2x2[:, 1]
  return tuple(jax.random.split(key))


def _gumbel(key, shape):
  """Gumbel noise of `shape` [R, ...] from one key or from per-row keys [R, 2]."""
  if key.ndim == 2:
    return jax.vmap(lambda k: jax.random.gumbel(k, shape[1:]))(key)
  return jax.random.gumbel(key, shape)


def row_keys(rng: jax.Array, num_sources: int, num_samples: int) -> jax.Array:
  """Per-row keys [B*N, 2]: sample j of source b uses fold_in(source_key_b, j).

  `rng` is one key (source keys are folded from it by batch position) or one key per source
  [B, 2] — then a sample depends only on its source's key, not on batching, sharding or the
  number of processes (how Grow makes grown data reproducible under any layout).
  """
  if rng.ndim == 1:
    rng = jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(num_sources))
  per_sample = jax.vmap(lambda k: jax.vmap(jax.random.fold_in, (None, 0))(
      k, jnp.arange(num_samples)))(rng)
  return per_sample.reshape(num_sources * num_samples, -1)


def _value_at(x_RxV, token_R):
  return jnp.take_along_axis(x_RxV, token_R[:, None], axis=1)[:, 0]


def _pick(logits_RxV, key, config: SamplingConfig):
  """Returns (token, policy log-prob at T=1, sampling-distribution log-prob)."""
  logits = logits_RxV.astype(jnp.float32)
  processed = process_logits(logits, config)
  if config.temperature == 0:
    token = jnp.argmax(processed, axis=-1).astype(jnp.int32)
    sample_lp = jnp.zeros(token.shape, jnp.float32)
  else:
    token, log_normaliser = sample_categorical(key, processed)
    sample_lp = _value_at(processed, token) - log_normaliser
  # log_softmax(x)[token] = x[token] - logsumexp(x), without materialising log_softmax.
  policy_lp = _value_at(logits, token) - jax.nn.logsumexp(logits, axis=-1)
  return token, policy_lp, sample_lp


def sample(decode_fns: DecodeFns, params: Any, inputs_BxS: jax.Array, rng: jax.Array,
           config: SamplingConfig) -> SampleOutput:
  """Draws `config.num_samples` continuations per source. Pure; jit it with a static config.

  `rng`: one key, or one key per source [B, 2] (see `row_keys`).
  """
  b, n, t_max = inputs_BxS.shape[0], config.num_samples, config.max_decode_len
  logits, cache = decode_fns.prefill(params, inputs_BxS, n, t_max)
  rows = b * n
  keys_Rx2 = row_keys(rng, b, n)
  init = dict(t=jnp.array(0, jnp.int32), logits=logits, cache=cache,
              tokens=jnp.zeros((rows, t_max), jnp.int32),
              policy_lp=jnp.zeros((rows, t_max), jnp.float32),
              sample_lp=jnp.zeros((rows, t_max), jnp.float32),
              done=jnp.zeros((rows,), bool))

  def cond(s):
    running = s["t"] < t_max
    if config.stop_at_eos:
      running &= ~jnp.all(s["done"])
    return running

  def body(s):
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys_Rx2, s["t"])
    token, policy_lp, sample_lp = _pick(s["logits"], step_keys, config)
    token = jnp.where(s["done"], PAD_ID, token)
    write = lambda buf, v: jax.lax.dynamic_update_slice_in_dim(buf, v[:, None], s["t"], axis=1)
    done = s["done"] | (token == EOS_ID) if config.stop_at_eos else s["done"]
    logits, cache = decode_fns.step(params, token, s["cache"])
    return dict(t=s["t"] + 1, logits=logits, cache=cache, done=done,
                tokens=write(s["tokens"], token),
                policy_lp=write(s["policy_lp"], jnp.where(s["done"], 0.0, policy_lp)),
                sample_lp=write(s["sample_lp"], jnp.where(s["done"], 0.0, sample_lp)))

  final = jax.lax.while_loop(cond, body, init)
  lengths = (final["tokens"] != PAD_ID).sum(-1).astype(jnp.int32)
  shape = (b, n, t_max)
  return SampleOutput(tokens=final["tokens"].reshape(shape), lengths=lengths.reshape(b, n),
                      token_logprobs=final["policy_lp"].reshape(shape),
                      sample_logprobs=final["sample_lp"].reshape(shape))


def make_sampler(model: Transformer, config: SamplingConfig, mesh: Mesh, param_shardings: Any
                 ) -> Callable[[Any, jax.Array, jax.Array], SampleOutput]:
  """A jitted `(params, inputs_BxS, rng) -> SampleOutput` with the batch split over the mesh.

  `param_shardings` must be the shardings of the policy state's params, so the sampler reads the
  training state in place.
  """
  batch3 = sharding_lib.batch_sharding(mesh, 3)
  batch2 = sharding_lib.batch_sharding(mesh, 2)
  out = SampleOutput(tokens=batch3, lengths=batch2, token_logprobs=batch3, sample_logprobs=batch3)
  fn = functools.partial(sample, model_decode_fns(model), config=config)
  return jax.jit(lambda p, x, r: fn(p, x, r),
                 in_shardings=(param_shardings, batch2, None),
                 out_shardings=out)


# ------------------------------------------------------------------------------ beam search
@flax.struct.dataclass
class BeamOutput:
  tokens: jax.Array  # [B, W, T] best first.
  scores: jax.Array  # [B, W] length-normalised log-probs.


def _length_norm(length, alpha):
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def beam_search(decode_fns: DecodeFns, params: Any, inputs_BxS: jax.Array,
                config: BeamSearchConfig) -> BeamOutput:
  """Length-normalised beam search (score = log p / ((5+len)/6)^alpha). Pure; jit with config."""
  b, w, t_max = inputs_BxS.shape[0], config.beam_size, config.max_decode_len
  logits, cache = decode_fns.prefill(params, inputs_BxS, w, t_max)
  vocab = logits.shape[-1]
  # Only the first beam of each source is live at the start (all beams are identical).
  alive_lp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (w - 1), jnp.float32), (b, 1))
  init = dict(t=jnp.array(0, jnp.int32), logits=logits, cache=cache, alive_lp=alive_lp,
              alive=jnp.zeros((b, w, t_max), jnp.int32),
              fin=jnp.zeros((b, w, t_max), jnp.int32),
              fin_score=jnp.full((b, w), NEG_INF, jnp.float32))

  def cond(s):
    # Stop when no alive beam can beat the worst finished one even at the maximum length.
    best_alive = s["alive_lp"][:, 0] / _length_norm(jnp.array(t_max), config.length_penalty)
    worst_fin = s["fin_score"][:, -1]
    return (s["t"] < t_max) & ~jnp.all(worst_fin > best_alive)

  def body(s):
    t = s["t"]
    lp_RxV = jax.nn.log_softmax(s["logits"].astype(jnp.float32)).at[:, PAD_ID].set(NEG_INF)
    cand_BxWV = (s["alive_lp"][:, :, None] + lp_RxV.reshape(b, w, vocab)).reshape(b, w * vocab)
    top_lp, top_idx = jax.lax.top_k(cand_BxWV, 2 * w)
    beam_idx, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(s["alive"], beam_idx[:, :, None], axis=1)
    seqs = jax.lax.dynamic_update_slice_in_dim(seqs, token[:, :, None], t, axis=2)
    is_eos = token == EOS_ID
    # Finished candidates merge with the finished pool; keep the best w.
    new_fin_score = jnp.where(is_eos, top_lp / _length_norm(t + 1, config.length_penalty),
                              NEG_INF)
    pool_score = jnp.concatenate([s["fin_score"], new_fin_score], axis=1)
    pool_seq = jnp.concatenate([s["fin"], seqs], axis=1)
    fin_score, fin_idx = jax.lax.top_k(pool_score, w)
    fin = jnp.take_along_axis(pool_seq, fin_idx[:, :, None], axis=1)
    # Alive candidates: the best w that did not end.
    alive_lp, alive_pos = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_lp), w)
    alive = jnp.take_along_axis(seqs, alive_pos[:, :, None], axis=1)
    src_beam = jnp.take_along_axis(beam_idx, alive_pos, axis=1)
    rows = (jnp.arange(b)[:, None] * w + src_beam).reshape(-1)
    cache = decode_fns.gather_rows(s["cache"], rows)
    next_tokens = jnp.take_along_axis(token, alive_pos, axis=1).reshape(-1)
    logits, cache = decode_fns.step(params, next_tokens, cache)
    return dict(t=t + 1, logits=logits, cache=cache, alive_lp=alive_lp, alive=alive, fin=fin,
                fin_score=fin_score)

  final = jax.lax.while_loop(cond, body, init)
  # Sources with fewer than w finished beams fall back to their alive beams.
  alive_score = final["alive_lp"] / _length_norm(final["t"], config.length_penalty)
  has_fin = final["fin_score"] > NEG_INF / 2
  tokens = jnp.where(has_fin[:, :, None], final["fin"], final["alive"])
  scores = jnp.where(has_fin, final["fin_score"], alive_score)
  order = jnp.argsort(-scores, axis=1)
  return BeamOutput(tokens=jnp.take_along_axis(tokens, order[:, :, None], axis=1),
                    scores=jnp.take_along_axis(scores, order, axis=1))


def make_beam_search(model: Transformer, config: BeamSearchConfig, mesh: Mesh,
                     param_shardings: Any) -> Callable[[Any, jax.Array], BeamOutput]:
  batch2 = sharding_lib.batch_sharding(mesh, 2)
  out = BeamOutput(tokens=sharding_lib.batch_sharding(mesh, 3), scores=batch2)
  fn = functools.partial(beam_search, model_decode_fns(model), config=config)
  return jax.jit(lambda p, x: fn(p, x), in_shardings=(param_shardings, batch2),
                 out_shardings=out)
