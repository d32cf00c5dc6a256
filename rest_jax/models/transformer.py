"""Flax Transformer policy: encoder-decoder (the paper's translation policy) or decoder-only.

Why this shape: ReST needs one network that is trained teacher-forced (BC and the offline-RL
losses) and sampled autoregressively (Grow). Both paths share the same modules; the decoding path
uses an explicit key/value cache pytree (not a mutable flax collection) so the sampler is a pure
function of `(params, cache, token)` that fits inside `lax.while_loop` and can be sharded like any
other array.

Conventions: token 0 is padding and also the decoder start token, token 1 is EOS (seqio's
SentencePiece convention). By default: pre-LayerNorm blocks, sinusoidal positions computed from
explicit position ids, output logits tied to the input embedding and scaled by 1/sqrt(d_model).
The variants of pretrained families are options of the same modules (`ModelConfig`): RMSNorm,
rotary positions (applied to queries and keys at their explicit positions, so cached keys are
stored rotated), gated MLPs, grouped-query attention (fewer key/value heads than query heads: a
smaller cache), an untied, unscaled output projection; Marian's post-norm layers with biases
and its sinusoids; T5's relative-position bias (from the query's position and the positions of
the cache slots, so cached decoding needs nothing stored) and unscaled attention.
Every parameter carries logical axis names ("vocab", "embed", "mlp", "heads", "kv") that
`rest_jax.sharding` maps to mesh axes.

Shape-suffix legend: B batch, S source length, T target (query) length, L key/cache length,
D d_model, H heads, K head dim, F feed-forward width, V vocabulary. Keys, values and the cache are
head-major ([B,H,L,K]) so that decoding reads the cache in place (see `Attention.project_kv`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rest_jax.configs import ModelConfig

PAD_ID = 0
EOS_ID = 1
NEG_INF = -1e10

Cache = dict[str, Any]


def _param(module: nn.Module, name: str, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _fan_in_init(in_axis, out_axis):
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=in_axis,
                                          out_axis=out_axis)


def sinusoidal_positions(positions_BxT: jax.Array, d_model: int,
                         marian: bool = False) -> jax.Array:
  """Sinusoidal embeddings of explicit integer positions (works for any per-row offset): sines
  in the first half, cosines in the second, at timescales 10000^(i/(D/2-1)), or 10000^(i/(D/2))
  with `marian` (ModelConfig.positions='sinusoidal_marian')."""
  half = d_model // 2
  inv_freq_half = np.exp(-np.log(10_000.0) * np.arange(half) / (half if marian
                                                                 else max(half - 1, 1)))
  angles_BxTxhalf = positions_BxT[..., None].astype(jnp.float32) * inv_freq_half
  pe = jnp.concatenate([jnp.sin(angles_BxTxhalf), jnp.cos(angles_BxTxhalf)], axis=-1)
  if d_model % 2:
    pe = jnp.pad(pe, [(0, 0), (0, 0), (0, 1)])
  return pe


def rotary(x_BxHxTxK: jax.Array, positions_BxT: jax.Array, theta: float,
           scaling: float = 1.0) -> jax.Array:
  """Rotary position embedding: pairs (i, i + K/2) of each head vector rotated by the angle
  position / scaling * theta^(-2i/K) (the half-split layout of Llama-family checkpoints;
  `scaling` > 1 is linear position interpolation)."""
  k = x_BxHxTxK.shape[-1]
  inv_freq_half = theta ** (-np.arange(0, k, 2, dtype=np.float64) / k) / scaling
  angles_BxTxhalf = positions_BxT[..., None].astype(jnp.float32) * inv_freq_half.astype(
      np.float32)
  cos_Bx1xTxhalf = jnp.cos(angles_BxTxhalf)[:, None]
  sin_Bx1xTxhalf = jnp.sin(angles_BxTxhalf)[:, None]
  x32 = x_BxHxTxK.astype(jnp.float32)
  x1, x2 = x32[..., : k // 2], x32[..., k // 2:]
  rotated = jnp.concatenate([x1 * cos_Bx1xTxhalf - x2 * sin_Bx1xTxhalf,
                             x2 * cos_Bx1xTxhalf + x1 * sin_Bx1xTxhalf], axis=-1)
  return rotated.astype(x_BxHxTxK.dtype)


def relative_position_buckets(relative_BxTxL: jax.Array, bidirectional: bool, num_buckets: int,
                              max_distance: int) -> jax.Array:
  """T5's bucket of each relative position (key position - query position): half of the buckets
  (per direction when bidirectional; a causal decoder sees only keys at or before the query) are
  the exact offsets 0..n/2-1, the rest cover larger offsets logarithmically up to
  `max_distance`, beyond which all share the last bucket."""
  buckets = jnp.zeros_like(relative_BxTxL)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_BxTxL > 0).astype(relative_BxTxL.dtype) * num_buckets
    distance = jnp.abs(relative_BxTxL)
  else:
    distance = -jnp.minimum(relative_BxTxL, 0)
  max_exact = num_buckets // 2
  # Clamped at 1 so that the logarithm of the (unused) small distances stays finite.
  large = max_exact + (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
                       / np.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(relative_BxTxL.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(distance < max_exact, distance, large)


class LayerNorm(nn.Module):
  """LayerNorm (centred; a bias with ModelConfig.norm_bias) or, with
  ModelConfig.norm='rmsnorm'/'rmsnorm_offset', RMSNorm (with the scale as an offset from 1 for
  the latter)."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    offset = cfg.norm == "rmsnorm_offset"  # Gemma: x / rms(x) * (1 + scale), scale from 0.
    scale = _param(self, "scale", nn.initializers.zeros if offset else nn.initializers.ones,
                   (cfg.d_model,), ("embed",), jnp.dtype(cfg.param_dtype))
    x32 = x.astype(jnp.float32)
    if cfg.norm in ("rmsnorm", "rmsnorm_offset"):
      var = jnp.square(x32).mean(-1, keepdims=True)
      factor = 1.0 + scale.astype(jnp.float32) if offset else scale.astype(jnp.float32)
      y = x32 * jax.lax.rsqrt(var + cfg.layer_norm_epsilon) * factor
    else:  # Written as before the variants existed: the same ops give the same gradients bit
      # for bit, so recorded runs reproduce exactly.
      mean = x32.mean(-1, keepdims=True)
      var = jnp.square(x32 - mean).mean(-1, keepdims=True)
      y = (x32 - mean) * jax.lax.rsqrt(var + cfg.layer_norm_epsilon) * scale.astype(jnp.float32)
      if cfg.norm_bias:
        y = y + _param(self, "bias", nn.initializers.zeros, (cfg.d_model,), ("embed",),
                       jnp.dtype(cfg.param_dtype)).astype(jnp.float32)
    return y.astype(cfg.dtype)


def _head_major(x_BxTxD: jax.Array, w_DxHxK: jax.Array) -> jax.Array:
  """Projects to heads, head-major [B,H,T,K].

  Written as one 2-D matmul followed by a transpose of the (small) activations: as a single einsum
  XLA:CPU transposes the weight matrix instead, on every decode step.
  """
  b, t, d = x_BxTxD.shape
  _, h, k = w_DxHxK.shape
  y_BxTxHxK = (x_BxTxD.reshape(b * t, d) @ w_DxHxK.reshape(d, h * k)).reshape(b, t, h, k)
  return y_BxTxHxK.transpose(0, 2, 1, 3)


class Attention(nn.Module):
  """Multi-head attention whose key/value projections can be computed once and reused.

  With grouped-query attention (ModelConfig.num_kv_heads = G < H) keys and values have G heads
  ([B,G,L,K]) and each serves H/G consecutive query heads. `rotary=True` (self-attention under
  positions='rope') rotates queries and keys by their positions; cross-attention never does.
  """

  config: ModelConfig
  rotary: bool = False
  local: bool = False  # A sliding-window layer (Gemma 3 rotates it with rope_local_theta).

  def setup(self):
    cfg = self.config
    d, h, g, k = cfg.d_model, cfg.num_heads, cfg.resolved_kv_heads, cfg.resolved_head_dim
    pdt = jnp.dtype(cfg.param_dtype)
    qkv_init = _fan_in_init(0, (1, 2))
    self.query = _param(self, "query", qkv_init, (d, h, k), ("embed", "heads", "kv"), pdt)
    self.key = _param(self, "key", qkv_init, (d, g, k), ("embed", "heads", "kv"), pdt)
    self.value = _param(self, "value", qkv_init, (d, g, k), ("embed", "heads", "kv"), pdt)
    self.out = _param(self, "out", _fan_in_init((0, 1), 2), (h, k, d), ("heads", "kv", "embed"),
                      pdt)
    if cfg.attention_bias:
      zeros = nn.initializers.zeros
      self.query_bias = _param(self, "query_bias", zeros, (h, k), ("heads", "kv"), pdt)
      self.key_bias = _param(self, "key_bias", zeros, (g, k), ("heads", "kv"), pdt)
      self.value_bias = _param(self, "value_bias", zeros, (g, k), ("heads", "kv"), pdt)
    if cfg.attention_out_bias:
      self.out_bias = _param(self, "out_bias", nn.initializers.zeros, (d,), ("embed",), pdt)
    if cfg.qk_norm:  # Gemma 3: per-head RMSNorm of queries and keys, one scale per stack.
      init = nn.initializers.zeros if cfg.norm == "rmsnorm_offset" else nn.initializers.ones
      self.query_norm = _param(self, "query_norm", init, (k,), ("kv",), pdt)
      self.key_norm = _param(self, "key_norm", init, (k,), ("kv",), pdt)

  def _rotate(self, x_BxHxTxK, positions_BxT, scale_K):
    """qk_norm (when set), then the rotation of a rotary layer at `positions_BxT`."""
    cfg = self.config
    if cfg.qk_norm:
      x32 = x_BxHxTxK.astype(jnp.float32)
      factor = scale_K.astype(jnp.float32) + (1.0 if cfg.norm == "rmsnorm_offset" else 0.0)
      x_BxHxTxK = (x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True)
                                       + cfg.layer_norm_epsilon) * factor).astype(cfg.dtype)
    if not self.rotary:
      return x_BxHxTxK
    if self.local and cfg.rope_local_theta is not None:
      return rotary(x_BxHxTxK, positions_BxT, cfg.rope_local_theta)
    return rotary(x_BxHxTxK, positions_BxT, cfg.rope_theta, cfg.rope_scaling_factor)

  def _project(self, x_BxTxD, w_DxHxK, name):
    """Head-major projection [B,H,T,K], plus the projection's bias when the model has one."""
    dt = self.config.dtype
    y_BxHxTxK = _head_major(x_BxTxD, w_DxHxK.astype(dt))
    if self.config.attention_bias:
      y_BxHxTxK = y_BxHxTxK + getattr(self, name).astype(dt)[None, :, None, :]
    return y_BxHxTxK

  def project_kv(self, x_BxLxD, positions_BxL=None):
    """Keys and values head-major ([B,G,L,K]): the layout both attention matmuls read directly,
    so a decode step never copies or transposes the cache. Keys are rotated at `positions_BxL`
    when the layer is rotary."""
    k_BxGxLxK = self._project(x_BxLxD, self.key, "key_bias")
    if self.rotary or self.config.qk_norm:
      k_BxGxLxK = self._rotate(k_BxGxLxK, positions_BxL, getattr(self, "key_norm", None))
    return k_BxGxLxK, self._project(x_BxLxD, self.value, "value_bias")

  def __call__(self, x_BxTxD, k_BxGxLxK, v_BxGxLxK, bias_Bx1xTxL, positions_BxT=None):
    cfg = self.config
    dt = cfg.dtype
    q_BxHxTxK = self._project(x_BxTxD, self.query, "query_bias")
    if self.rotary or cfg.qk_norm:
      q_BxHxTxK = self._rotate(q_BxHxTxK, positions_BxT, getattr(self, "query_norm", None))
    if cfg.attention_scale == "rsqrt_head_dim":
      q_BxHxTxK = q_BxHxTxK * ((cfg.query_pre_attn_scalar or cfg.resolved_head_dim) ** -0.5)
    b, h, t, k = q_BxHxTxK.shape
    g = k_BxGxLxK.shape[1]
    # Query heads grouped by the key/value head they read: [B,G,H/G*T,K] (a free reshape).
    q_BxGxRxK = q_BxHxTxK.reshape(b, g, (h // g) * t, k)
    logits_BxGxRxL = jnp.einsum("bgrk,bglk->bgrl", q_BxGxRxK, k_BxGxLxK)
    logits_BxHxTxL = logits_BxGxRxL.reshape(b, h, t, -1)
    logits_BxHxTxL = logits_BxHxTxL.astype(jnp.float32)
    if cfg.attention_softcap is not None:  # Gemma 2: cap * tanh(logits / cap), then the mask.
      logits_BxHxTxL = jnp.tanh(logits_BxHxTxL / cfg.attention_softcap) * cfg.attention_softcap
    logits_BxHxTxL = logits_BxHxTxL + bias_Bx1xTxL
    probs_BxHxTxL = jax.nn.softmax(logits_BxHxTxL, axis=-1).astype(dt)
    ctx_BxGxRxK = jnp.einsum("bgrl,bglk->bgrk", probs_BxHxTxL.reshape(b, g, (h // g) * t, -1),
                             v_BxGxLxK)
    ctx_BxHxTxK = ctx_BxGxRxK.reshape(b, h, t, k)
    ctx_BTxHK = ctx_BxHxTxK.transpose(0, 2, 1, 3).reshape(b * t, h * k)
    out_BxTxD = (ctx_BTxHK @ self.out.astype(dt).reshape(h * k, -1)).reshape(b, t, -1)
    if cfg.attention_out_bias:
      out_BxTxD = out_BxTxD + self.out_bias.astype(dt)
    return out_BxTxD


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, deterministic: bool):
    cfg = self.config
    pdt, dt = jnp.dtype(cfg.param_dtype), cfg.dtype
    wi = _param(self, "wi", _fan_in_init(0, 1), (cfg.d_model, cfg.d_ff), ("embed", "mlp"), pdt)
    wo = _param(self, "wo", _fan_in_init(0, 1), (cfg.d_ff, cfg.d_model), ("mlp", "embed"), pdt)
    act = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu,
           "gelu_exact": lambda x: nn.gelu(x, approximate=False)}[cfg.activation]

    def biased(y, name, axis):  # + a learned bias on `axis` (Marian), else y unchanged.
      if not cfg.mlp_bias:
        return y
      return y + _param(self, name, nn.initializers.zeros, (y.shape[-1],), (axis,),
                        pdt).astype(dt)

    h_BxTxF = biased(jnp.einsum("btd,df->btf", x_BxTxD, wi.astype(dt)), "wi_bias", "mlp")
    if cfg.mlp == "gated":  # act(x W_gate) * (x W_in): SwiGLU with silu, GeGLU with gelu.
      wg = _param(self, "wg", _fan_in_init(0, 1), (cfg.d_model, cfg.d_ff), ("embed", "mlp"), pdt)
      h_BxTxF = act(biased(jnp.einsum("btd,df->btf", x_BxTxD, wg.astype(dt)), "wg_bias",
                           "mlp")) * h_BxTxF
    else:
      h_BxTxF = act(h_BxTxF)
    h_BxTxF = nn.Dropout(cfg.dropout_rate)(h_BxTxF, deterministic=deterministic)
    return biased(jnp.einsum("btf,fd->btd", h_BxTxF, wo.astype(dt)), "wo_bias", "embed")


def _residual(x, norm, sublayer, dropout, config: ModelConfig, deterministic: bool,
              post_norm=None):
  """One residual sublayer: x + f(norm(x)) (norm_position='pre'), x + post_norm(f(norm(x)))
  (sandwich_norm, Gemma 2) or norm(x + f(x)) ('post'). The norm modules keep their 'pre_*'
  names in every layout (one parameter tree)."""
  if config.norm_position == "post":
    return norm(x + dropout(sublayer(x), deterministic=deterministic))
  if post_norm is not None:
    return x + dropout(post_norm(sublayer(norm(x))), deterministic=deterministic)
  return x + dropout(sublayer(norm(x)), deterministic=deterministic)


class EncoderLayer(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxSxD, bias_Bx1xSxS, positions_BxS, deterministic: bool):
    cfg = self.config
    drop = nn.Dropout(cfg.dropout_rate)
    attention = Attention(cfg, rotary=cfg.positions == "rope", name="self_attention")

    def attend(h):
      k, v = attention.project_kv(h, positions_BxS)
      return attention(h, k, v, bias_Bx1xSxS, positions_BxS)

    x_BxSxD = _residual(x_BxSxD, LayerNorm(cfg, name="pre_attention_norm"), attend, drop, cfg,
                        deterministic)
    mlp = MLP(cfg, name="mlp")
    return _residual(x_BxSxD, LayerNorm(cfg, name="pre_mlp_norm"),
                     lambda h: mlp(h, deterministic), drop, cfg, deterministic)


class DecoderLayer(nn.Module):
  """Self-attention (optionally cached), cross-attention (encoder-decoder only), MLP."""

  config: ModelConfig
  local: bool = False  # One of ModelConfig.sliding_window_layers.

  def setup(self):
    cfg = self.config
    self.pre_self_attention_norm = LayerNorm(cfg)
    self.self_attention = Attention(cfg, rotary=cfg.positions == "rope", local=self.local)
    if not cfg.decoder_only:
      self.pre_cross_attention_norm = LayerNorm(cfg)
      self.cross_attention = Attention(cfg)
    self.pre_mlp_norm = LayerNorm(cfg)
    self.mlp = MLP(cfg)
    self.dropout = nn.Dropout(cfg.dropout_rate)
    if cfg.sandwich_norm:  # Gemma 2: each sublayer's output normalised before the residual.
      self.post_self_attention_norm = LayerNorm(cfg)
      self.post_mlp_norm = LayerNorm(cfg)
      if not cfg.decoder_only:
        self.post_cross_attention_norm = LayerNorm(cfg)

  def cross_kv(self, encoded_BxSxD):
    return self.cross_attention.project_kv(encoded_BxSxD)

  def __call__(self, y_BxTxD, positions_BxT, self_bias, cross_kv, cross_bias, layer_cache,
               cache_index, deterministic: bool):
    """Returns (y, new_layer_cache). layer_cache=None means no cache (teacher forcing)."""
    cfg = self.config
    new_cache = None

    def self_attend(h):
      nonlocal new_cache
      k, v = self.self_attention.project_kv(h, positions_BxT)
      if layer_cache is not None:
        k = jax.lax.dynamic_update_slice_in_dim(layer_cache["k"],
                                                k.astype(layer_cache["k"].dtype), cache_index,
                                                axis=2)
        v = jax.lax.dynamic_update_slice_in_dim(layer_cache["v"],
                                                v.astype(layer_cache["v"].dtype), cache_index,
                                                axis=2)
        new_cache = dict(layer_cache, k=k, v=v)
      return self.self_attention(h, k, v, self_bias, positions_BxT)

    post = lambda name: getattr(self, name) if cfg.sandwich_norm else None
    y_BxTxD = _residual(y_BxTxD, self.pre_self_attention_norm, self_attend, self.dropout, cfg,
                        deterministic, post("post_self_attention_norm"))
    if not cfg.decoder_only:
      ck, cv = cross_kv
      y_BxTxD = _residual(y_BxTxD, self.pre_cross_attention_norm,
                          lambda h: self.cross_attention(h, ck, cv, cross_bias), self.dropout,
                          cfg, deterministic, post("post_cross_attention_norm"))
    y_BxTxD = _residual(y_BxTxD, self.pre_mlp_norm, lambda h: self.mlp(h, deterministic),
                        self.dropout, cfg, deterministic, post("post_mlp_norm"))
    return y_BxTxD, new_cache


def _key_bias(valid_BxL: jax.Array) -> jax.Array:
  return jnp.where(valid_BxL, 0.0, NEG_INF)[:, None, None, :].astype(jnp.float32)


def causal_bias(query_slots_BxT: jax.Array, key_valid_BxL: jax.Array) -> jax.Array:
  """Bias [B,1,T,L]: query in cache slot i sees key slot l iff l <= i and key l is valid."""
  num_keys = key_valid_BxL.shape[1]
  visible_BxTxL = (jnp.arange(num_keys)[None, None, :] <= query_slots_BxT[:, :, None])
  visible_BxTxL = visible_BxTxL & key_valid_BxL[:, None, :]
  return jnp.where(visible_BxTxL, 0.0, NEG_INF)[:, None, :, :].astype(jnp.float32)


def _slot_positions(valid_BxL: jax.Array) -> jax.Array:
  """The position of the token in each cache slot (valid slots count from 0; a padding slot
  gets its neighbour's, never read)."""
  return jnp.maximum(jnp.cumsum(valid_BxL, axis=1) - 1, 0)


def left_align_to_right(inputs_BxS: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Moves right-padded rows to the right edge (left padding); returns (tokens, valid mask)."""
  length = inputs_BxS.shape[1]
  lengths_B = (inputs_BxS != PAD_ID).sum(-1)
  shift_B = length - lengths_B
  src_idx_BxS = jnp.arange(length)[None, :] - shift_B[:, None]
  valid_BxS = src_idx_BxS >= 0
  gathered = jnp.take_along_axis(inputs_BxS, jnp.clip(src_idx_BxS, 0, length - 1), axis=1)
  return jnp.where(valid_BxS, gathered, PAD_ID), valid_BxS


class Transformer(nn.Module):
  """The policy network. See the module docstring for conventions."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.embedding = _param(self, "embedding", nn.initializers.normal(1.0),
                            (cfg.vocab_size, cfg.d_model), ("vocab", "embed"),
                            jnp.dtype(cfg.param_dtype))
    if not cfg.decoder_only:
      self.encoder_layers = [EncoderLayer(cfg, name=f"encoder_{i}")
                             for i in range(cfg.num_encoder_layers)]
      if cfg.norm_position == "pre":  # Post-norm layers end normalised: no final norm.
        self.encoder_norm = LayerNorm(cfg)
    self.decoder_layers = [DecoderLayer(cfg, local=i in cfg.sliding_window_layers,
                                        name=f"decoder_{i}")
                           for i in range(cfg.num_decoder_layers)]
    if cfg.norm_position == "pre":
      self.decoder_norm = LayerNorm(cfg)
    self.embed_dropout = nn.Dropout(cfg.dropout_rate)
    if not cfg.tie_embeddings:
      self.output = _param(self, "output", _fan_in_init(0, 1), (cfg.d_model, cfg.vocab_size),
                           ("embed", "vocab"), jnp.dtype(cfg.param_dtype))
    if cfg.positions == "relative_t5":  # [buckets, heads] per stack, shared by its layers.
      table = lambda name: _param(self, name, nn.initializers.normal(0.1),
                                  (cfg.relative_buckets, cfg.num_heads), (None, "heads"),
                                  jnp.dtype(cfg.param_dtype))
      if not cfg.decoder_only:
        self.encoder_relative_bias = table("encoder_relative_bias")
      self.decoder_relative_bias = table("decoder_relative_bias")
    if cfg.logits_bias:
      self.output_bias = _param(self, "output_bias", nn.initializers.zeros, (cfg.vocab_size,),
                                ("vocab",), jnp.dtype(cfg.param_dtype))
    if cfg.value_head:
      self.value_hidden = _param(self, "value_hidden", _fan_in_init(0, 1),
                                 (cfg.d_model, cfg.d_model), ("embed", "mlp"),
                                 jnp.dtype(cfg.param_dtype))
      self.value_out = _param(self, "value_out", nn.initializers.zeros, (cfg.d_model,), ("mlp",),
                              jnp.dtype(cfg.param_dtype))
      self.value_bias = _param(self, "value_bias", nn.initializers.zeros, (), (),
                               jnp.dtype(cfg.param_dtype))

  # ----------------------------------------------------------------------------------- pieces
  def _relative_bias(self, bias, query_positions_BxT, key_positions_BxL, encoder: bool):
    """`bias` plus, under positions='relative_t5', the stack's learned bias [B,H,T,L] of each
    (key position - query position) bucket; `bias` alone otherwise."""
    cfg = self.config
    if cfg.positions != "relative_t5":
      return bias
    relative = key_positions_BxL[:, None, :] - query_positions_BxT[:, :, None]
    buckets_BxTxL = relative_position_buckets(relative.astype(jnp.int32), encoder,
                                              cfg.relative_buckets, cfg.relative_max_distance)
    table = self.encoder_relative_bias if encoder else self.decoder_relative_bias
    values_BxTxLxH = jnp.take(table.astype(jnp.float32), buckets_BxTxL, axis=0)
    return bias + values_BxTxLxH.transpose(0, 3, 1, 2)

  def _embed(self, tokens_BxT, positions_BxT, deterministic):
    cfg = self.config
    x = jnp.take(self.embedding, tokens_BxT, axis=0).astype(cfg.dtype)
    if cfg.embedding_scale == "sqrt_d_model":
      x = x * jnp.asarray(cfg.d_model ** 0.5, cfg.dtype)
    if cfg.positions in ("sinusoidal", "sinusoidal_marian"):
      x = x + sinusoidal_positions(positions_BxT, cfg.d_model,
                                   cfg.positions == "sinusoidal_marian").astype(cfg.dtype)
    return self.embed_dropout(x, deterministic=deterministic)

  def _logits(self, hidden_BxTxD):
    cfg = self.config
    if cfg.logits_scale == "rsqrt_d_model":
      # Scaling the [B,T,D] input rather than the [B,T,V] output saves a pass over the logits.
      hidden_BxTxD = hidden_BxTxD * jnp.asarray(cfg.d_model ** -0.5, hidden_BxTxD.dtype)
    if cfg.tie_embeddings:
      logits = jnp.einsum("btd,vd->btv", hidden_BxTxD, self.embedding.astype(cfg.dtype))
    else:
      logits = jnp.einsum("btd,dv->btv", hidden_BxTxD, self.output.astype(cfg.dtype))
    if cfg.logits_bias:
      logits = logits.astype(jnp.float32) + self.output_bias.astype(jnp.float32)
    if cfg.logits_softcap is not None:  # Gemma 2: cap * tanh(logits / cap).
      return jnp.tanh(logits.astype(jnp.float32) / cfg.logits_softcap) * cfg.logits_softcap
    return logits.astype(jnp.float32)

  def _values(self, hidden_BxTxD):
    h = hidden_BxTxD.astype(jnp.float32)
    if self.config.value_stop_gradient:
      h = jax.lax.stop_gradient(h)
    h = nn.relu(h @ self.value_hidden.astype(jnp.float32))
    return h @ self.value_out.astype(jnp.float32) + self.value_bias.astype(jnp.float32)

  def encode(self, inputs_BxS, deterministic: bool = True):
    valid_BxS = inputs_BxS != PAD_ID
    positions = jnp.broadcast_to(jnp.arange(inputs_BxS.shape[1]), inputs_BxS.shape)
    x = self._embed(inputs_BxS, positions, deterministic)
    bias = self._relative_bias(_key_bias(valid_BxS), positions, positions, encoder=True)
    for layer in self.encoder_layers:
      x = layer(x, bias, positions, deterministic)
    return self.encoder_norm(x) if self.config.norm_position == "pre" else x

  def _run_decoder(self, tokens_BxT, positions_BxT, self_bias, cross_kvs, cross_bias, cache,
                   cache_index, deterministic, key_positions_BxL=None):
    """The decoder stack. `key_positions_BxL`: the positions of the self-attention keys (the
    cache's slots when decoding), needed by positions='relative_t5'."""
    self_bias = self._relative_bias(self_bias, positions_BxT, key_positions_BxL, encoder=False)
    local_bias = None
    if self.config.sliding_window_layers:  # Keys at most sliding_window - 1 positions back.
      near_BxTxL = key_positions_BxL[:, None, :] > (positions_BxT[:, :, None]
                                                    - self.config.sliding_window)
      local_bias = self_bias + jnp.where(near_BxTxL, 0.0, NEG_INF)[:, None].astype(jnp.float32)
    y = self._embed(tokens_BxT, positions_BxT, deterministic)
    new_layers = []
    for i, layer in enumerate(self.decoder_layers):
      layer_cache = None if cache is None else cache["layers"][i]
      cross_kv = None if cross_kvs is None else cross_kvs[i]
      bias = local_bias if i in self.config.sliding_window_layers else self_bias
      y, new_layer_cache = layer(y, positions_BxT, bias, cross_kv, cross_bias, layer_cache,
                                 cache_index, deterministic)
      new_layers.append(new_layer_cache)
    if self.config.norm_position == "pre":
      y = self.decoder_norm(y)
    return y, new_layers

  # ------------------------------------------------------------------------ teacher forcing
  def __call__(self, inputs_BxS, targets_BxT, deterministic: bool = True,
               return_values: bool = False):
    """Teacher-forced forward. Returns logits [B,T,V] predicting targets (and values [B,T])."""
    if self.config.decoder_only:
      hidden = self._decoder_only_hidden(inputs_BxS, targets_BxT, deterministic)
    else:
      hidden = self._encoder_decoder_hidden(inputs_BxS, targets_BxT, deterministic)
    logits = self._logits(hidden)
    if not return_values:
      return logits
    if not self.config.value_head:
      raise ValueError("return_values=True needs ModelConfig.value_head=True.")
    return logits, self._values(hidden)

  def _encoder_decoder_hidden(self, inputs_BxS, targets_BxT, deterministic):
    encoded = self.encode(inputs_BxS, deterministic)
    decoder_inputs = jnp.pad(targets_BxT[:, :-1], [(0, 0), (1, 0)], constant_values=PAD_ID)
    t = targets_BxT.shape[1]
    slots_BxT = jnp.broadcast_to(jnp.arange(t), targets_BxT.shape)
    self_bias = causal_bias(slots_BxT, jnp.ones(targets_BxT.shape, bool))
    cross_kvs = [layer.cross_kv(encoded) for layer in self.decoder_layers]
    cross_bias = _key_bias(inputs_BxS != PAD_ID)
    hidden, _ = self._run_decoder(decoder_inputs, slots_BxT, self_bias, cross_kvs, cross_bias,
                                  None, None, deterministic, key_positions_BxL=slots_BxT)
    return hidden

  def _decoder_only_hidden(self, inputs_BxS, targets_BxT, deterministic):
    prompt_BxS, prompt_valid_BxS = left_align_to_right(inputs_BxS)
    s, t = inputs_BxS.shape[1], targets_BxT.shape[1]
    sequence = jnp.concatenate([prompt_BxS, targets_BxT[:, :-1]], axis=1)
    valid = jnp.concatenate([prompt_valid_BxS, jnp.ones((inputs_BxS.shape[0], t - 1), bool)], 1)
    positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)
    slots = jnp.broadcast_to(jnp.arange(s + t - 1), sequence.shape)
    self_bias = causal_bias(slots, valid)
    hidden, _ = self._run_decoder(sequence, positions, self_bias, None, None, None, None,
                                  deterministic, key_positions_BxL=positions)
    return hidden[:, s - 1:, :]

  # ------------------------------------------------------------------------------ decoding
  def prefill(self, inputs_BxS, num_samples: int, max_decode_len: int):
    """Prepares a cache for B*num_samples rows and returns (first-token logits [BN,V], cache).

    Rows are source-major: row b*num_samples + j is sample j of source b. The encoder (or the
    decoder-only prompt) runs once per source; its keys/values are repeated across samples.
    """
    cfg = self.config
    b, s = inputs_BxS.shape
    n = num_samples
    h, k = cfg.resolved_kv_heads, cfg.resolved_head_dim
    cache_len = max_decode_len if not cfg.decoder_only else s + max_decode_len

    def empty(rows):
      return jnp.zeros((rows, h, cache_len, k), cfg.dtype)

    if cfg.decoder_only:
      prompt_BxS, prompt_valid_BxS = left_align_to_right(inputs_BxS)
      kv_valid = jnp.concatenate([prompt_valid_BxS, jnp.ones((b, max_decode_len), bool)], 1)
      positions = jnp.maximum(jnp.cumsum(prompt_valid_BxS, axis=1) - 1, 0)
      cache = {"layers": [{"k": empty(b), "v": empty(b)} for _ in self.decoder_layers]}
      slots = jnp.broadcast_to(jnp.arange(s), (b, s))
      hidden, layers = self._run_decoder(prompt_BxS, positions, causal_bias(slots, kv_valid),
                                         None, None, cache, 0, True,
                                         key_positions_BxL=_slot_positions(kv_valid))
      logits_BxV = self._logits(hidden[:, -1:, :])[:, 0]
      cache = {
          "layers": jax.tree_util.tree_map(lambda x: jnp.repeat(x, n, axis=0), layers),
          "index": jnp.array(s, jnp.int32),
          "position": jnp.repeat(prompt_valid_BxS.sum(-1).astype(jnp.int32), n),
          "kv_valid": jnp.repeat(kv_valid, n, axis=0),
      }
      return jnp.repeat(logits_BxV, n, axis=0), cache

    encoded = self.encode(inputs_BxS, True)
    layers = []
    for layer in self.decoder_layers:
      ck, cv = layer.cross_kv(encoded)
      layers.append({"k": empty(b * n), "v": empty(b * n),
                     "cross_k": jnp.repeat(ck, n, axis=0), "cross_v": jnp.repeat(cv, n, axis=0)})
    cache = {
        "layers": layers,
        "index": jnp.array(0, jnp.int32),
        "position": jnp.zeros((b * n,), jnp.int32),
        "kv_valid": jnp.ones((b * n, cache_len), bool),
        "cross_valid": jnp.repeat(inputs_BxS != PAD_ID, n, axis=0),
    }
    start = jnp.full((b * n,), PAD_ID, jnp.int32)
    return self.decode_step(start, cache)

  def decode_step(self, tokens_B, cache: Cache):
    """Feeds one token per row; returns (next-token logits [B,V], updated cache)."""
    index = cache["index"]
    positions_Bx1 = cache["position"][:, None]
    slots_Bx1 = jnp.full(positions_Bx1.shape, index)
    self_bias = causal_bias(slots_Bx1, cache["kv_valid"])
    if self.config.decoder_only:
      cross_kvs, cross_bias = None, None
    else:
      cross_kvs = [(lc["cross_k"], lc["cross_v"]) for lc in cache["layers"]]
      cross_bias = _key_bias(cache["cross_valid"])
    hidden, layers = self._run_decoder(tokens_B[:, None], positions_Bx1, self_bias, cross_kvs,
                                       cross_bias, cache, index, True,
                                       key_positions_BxL=_slot_positions(cache["kv_valid"]))
    new_cache = dict(cache, layers=layers, index=index + 1, position=cache["position"] + 1)
    return self._logits(hidden)[:, 0], new_cache


def token_log_probs(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
  """log softmax(logits)[target] per position, in float32.

  Computed as logits[target] - logsumexp(logits), which never materialises the [B,T,V]
  log-softmax in the forward or the backward pass (the largest tensors of a train step).
  """
  logits_BxTxV = logits_BxTxV.astype(jnp.float32)
  target_logits_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  return target_logits_BxT - jax.nn.logsumexp(logits_BxTxV, axis=-1)
