"""The configuration dataclasses several modules share: model, mesh, optimizer, sampling, beam.

One rule places every config dataclass: a config that one module uses lives in that module, beside
its code; this module holds the ones several modules share. So `TrainPhaseConfig` is in
rest_jax/train.py (the training loop), `GrowConfig` in grow.py, `ImproveConfig` in improve.py,
`EvalConfig` in evaluate.py, `OnlineConfig` in online.py and `DataConfig` in rest_loop.py; gin
knows them all by class name (`rest_jax.gin_setup`), wherever they live.

Library code takes these dataclasses, never gin directly: gin binds the top-level entry functions
(`rest_loop.run`, the scripts) and constructs these from their arguments. Every dataclass checks its
fields in `__post_init__` so a bad value fails at start-up with a message that names the field, the
value and what is allowed — before anything is compiled or written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

DTYPES = ("float32", "bfloat16", "float16")
ACTIVATIONS = ("relu", "gelu", "silu", "gelu_exact")
NORMS = ("layernorm", "rmsnorm", "rmsnorm_offset")
POSITIONS = ("sinusoidal", "sinusoidal_marian", "rope", "relative_t5")
ATTENTION_SCALES = ("rsqrt_head_dim", "none")
NORM_POSITIONS = ("pre", "post")
MLPS = ("plain", "gated")
LOGITS_SCALES = ("rsqrt_d_model", "none")
EMBEDDING_SCALES = ("none", "sqrt_d_model")
LR_DECAYS = ("constant", "linear", "cosine", "rsqrt")
MESH_AXES = ("data", "fsdp", "model")


def _require(condition: bool, cls: str, field: str, value: Any, allowed: str) -> None:
  if not condition:
    raise ValueError(f"{cls}.{field}={value!r} is invalid: {allowed}.")


def _positive_int(cls: str, field: str, value: Any) -> None:
  _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, cls, field,
           value, "expected a positive integer")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Transformer shape. `decoder_only=False` is the paper's encoder-decoder policy."""

  vocab_size: int
  d_model: int
  num_heads: int
  d_ff: int
  num_encoder_layers: int
  num_decoder_layers: int
  head_dim: int | None = None  # Defaults to d_model // num_heads.
  max_len: int = 512  # Longest position (source + target for decoder-only) the model supports.
  decoder_only: bool = False
  value_head: bool = False
  # When True the value head reads stop_gradient(decoder features), so critic training never
  # moves the policy trunk.
  value_stop_gradient: bool = True
  activation: str = "relu"
  dropout_rate: float = 0.0
  dtype: str = "float32"  # Compute dtype.
  param_dtype: str = "float32"
  layer_norm_epsilon: float = 1e-6
  # Architecture variants of pretrained families; the defaults are the paper's policy
  # (pre-LayerNorm, sinusoidal positions, ReLU MLP, one key/value head per query head, output
  # tied to the embedding and scaled by 1/sqrt(d_model)). Llama/Qwen-style: norm='rmsnorm',
  # positions='rope', mlp='gated', activation='silu', num_kv_heads < num_heads,
  # tie_embeddings=False, logits_scale='none'.
  # 'rmsnorm': x / rms(x) * scale (no centring); 'rmsnorm_offset': x / rms(x) * (1 + scale),
  # the scale starting at 0 (Gemma). Marian-style: norm_position='post', norm_bias, mlp_bias,
  # attention_bias and attention_out_bias, logits_bias, positions='sinusoidal_marian',
  # embedding_scale='sqrt_d_model', logits_scale='none'.
  # activation 'gelu' is the tanh approximation, 'gelu_exact' the erf form.
  norm: str = "layernorm"
  norm_bias: bool = False  # A learned bias after LayerNorm's scale ('layernorm' only).
  # 'pre': x + f(norm(x)) with a final norm after the last layer; 'post': norm(x + f(x)) and no
  # final norm (Marian, BART).
  norm_position: str = "pre"
  # 'sinusoidal': sin|cos halves at timescales 10000^(i/(D/2-1)); 'sinusoidal_marian': the same
  # halves at 10000^(i/(D/2)) (Marian); 'rope': rotary embeddings of queries and keys, none added;
  # 'relative_t5': a learned bias per head and bucket of (key position - query position) on the
  # self-attention logits, one table for the encoder and one for the decoder (T5).
  positions: str = "sinusoidal"
  relative_buckets: int = 32  # positions='relative_t5': buckets (half of them exact offsets)
  relative_max_distance: int = 128  # ... and the distance from which all share the last bucket.
  attention_scale: str = "rsqrt_head_dim"  # Query scaling; 'none' for T5 (folded into its init).
  # Gemma 2: queries scaled by query_pre_attn_scalar^-0.5 instead of head_dim^-0.5 (None: head
  # dim); attention and output logits soft-capped, cap * tanh(logits / cap) (None: not capped);
  # a second norm after each sublayer, before the residual add (sandwich_norm); and a sliding
  # window on the layers in sliding_window_layers (a key is seen when its position is within
  # sliding_window - 1 before the query's).
  query_pre_attn_scalar: float | None = None
  attention_softcap: float | None = None
  logits_softcap: float | None = None
  sandwich_norm: bool = False
  sliding_window: int | None = None
  sliding_window_layers: tuple[int, ...] = ()
  # Gemma 3: queries and keys normalised per head (the model's norm over head_dim) before the
  # rotation; the sliding-window layers rotate with their own base (None: rope_theta), and the
  # others' positions are divided by rope_scaling_factor (linear scaling; 1: none).
  qk_norm: bool = False
  rope_local_theta: float | None = None
  rope_scaling_factor: float = 1.0
  rope_theta: float = 10_000.0
  mlp: str = "plain"  # 'gated': (act(x W_gate) * x W_in) W_out, as SwiGLU/GeGLU.
  num_kv_heads: int | None = None  # Grouped-query attention; None = num_heads.
  tie_embeddings: bool = True  # False: a separate output projection [D, V].
  attention_bias: bool = False  # Biases on the query/key/value projections (Qwen2).
  attention_out_bias: bool = False  # A bias on the attention output projection (Marian).
  mlp_bias: bool = False  # Biases on the MLP's projections (Marian).
  logits_bias: bool = False  # A learned bias added to the output logits (Marian).
  logits_scale: str = "rsqrt_d_model"  # Multiplies the final hidden state; 'none' = 1.
  embedding_scale: str = "none"  # 'sqrt_d_model': input embeddings times sqrt(d_model) (Gemma).

  def __post_init__(self):
    name = "ModelConfig"
    for field in ("vocab_size", "d_model", "num_heads", "d_ff", "max_len"):
      _positive_int(name, field, getattr(self, field))
    _require(isinstance(self.num_decoder_layers, int) and self.num_decoder_layers > 0, name,
             "num_decoder_layers", self.num_decoder_layers, "expected a positive integer")
    if self.decoder_only:
      _require(self.num_encoder_layers == 0, name, "num_encoder_layers", self.num_encoder_layers,
               "must be 0 when decoder_only=True")
    else:
      _positive_int(name, "num_encoder_layers", self.num_encoder_layers)
    if self.head_dim is None:
      _require(self.d_model % self.num_heads == 0, name, "num_heads", self.num_heads,
               f"must divide d_model={self.d_model} (or set head_dim explicitly)")
    else:
      _positive_int(name, "head_dim", self.head_dim)
    _require(self.vocab_size >= 4, name, "vocab_size", self.vocab_size,
             "needs at least pad=0, eos=1, unk=2 and one more token")
    _require(self.activation in ACTIVATIONS, name, "activation", self.activation,
             f"allowed: {ACTIVATIONS}")
    _require(self.dtype in DTYPES, name, "dtype", self.dtype, f"allowed: {DTYPES}")
    _require(self.param_dtype in DTYPES, name, "param_dtype", self.param_dtype,
             f"allowed: {DTYPES}")
    _require(0.0 <= self.dropout_rate < 1.0, name, "dropout_rate", self.dropout_rate,
             "expected 0 <= dropout_rate < 1")
    for field, allowed in (("norm", NORMS), ("norm_position", NORM_POSITIONS),
                           ("positions", POSITIONS), ("mlp", MLPS),
                           ("attention_scale", ATTENTION_SCALES),
                           ("logits_scale", LOGITS_SCALES),
                           ("embedding_scale", EMBEDDING_SCALES)):
      _require(getattr(self, field) in allowed, name, field, getattr(self, field),
               f"allowed: {allowed}")
    for field in ("tie_embeddings", "attention_bias", "attention_out_bias", "mlp_bias",
                  "logits_bias", "norm_bias", "sandwich_norm", "qk_norm"):
      _require(isinstance(getattr(self, field), bool), name, field, getattr(self, field),
               "expected True or False")
    _require(not self.norm_bias or self.norm == "layernorm", name, "norm_bias", self.norm_bias,
             f"a norm bias needs norm='layernorm' (got norm={self.norm!r})")
    for field in ("relative_buckets", "relative_max_distance"):
      _positive_int(name, field, getattr(self, field))
    for field in ("query_pre_attn_scalar", "attention_softcap", "logits_softcap",
                  "rope_local_theta", "rope_scaling_factor"):
      value = getattr(self, field)
      _require(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                 and value > 0), name, field, value,
               "expected None or a positive number")
    layers = self.sliding_window_layers
    _require(isinstance(layers, (tuple, list)) and all(
        isinstance(i, int) and 0 <= i < self.num_decoder_layers for i in layers), name,
             "sliding_window_layers", layers,
             f"expected a tuple of decoder layer indices in [0, {self.num_decoder_layers})")
    object.__setattr__(self, "sliding_window_layers", tuple(layers))
    if layers or self.sliding_window is not None:
      _positive_int(name, "sliding_window", self.sliding_window)
    if self.positions == "relative_t5":
      _require(self.relative_buckets >= 4 and self.relative_buckets % 2 == 0, name,
               "relative_buckets", self.relative_buckets, "expected an even number >= 4")
    if self.num_kv_heads is not None:
      _positive_int(name, "num_kv_heads", self.num_kv_heads)
      _require(self.num_heads % self.num_kv_heads == 0, name, "num_kv_heads", self.num_kv_heads,
               f"must divide num_heads={self.num_heads}")
    if self.positions == "rope":
      _require(self.resolved_head_dim % 2 == 0, name, "positions", self.positions,
               f"'rope' needs an even head dimension (got {self.resolved_head_dim})")
      _require(isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0, name,
               "rope_theta", self.rope_theta, "expected a positive number")

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

  @property
  def resolved_kv_heads(self) -> int:
    return self.num_kv_heads if self.num_kv_heads is not None else self.num_heads

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh shape. -1 in one axis means "all remaining devices"."""

  data: int = -1
  fsdp: int = 1
  model: int = 1
  # Logical-axis -> mesh-axis rules; None uses `sharding.DEFAULT_RULES`.
  rules: tuple[tuple[str, Any], ...] | None = None

  def __post_init__(self):
    sizes = {"data": self.data, "fsdp": self.fsdp, "model": self.model}
    for axis, size in sizes.items():
      _require(isinstance(size, int) and (size > 0 or size == -1), "MeshConfig", axis, size,
               "expected a positive integer or -1 (use the remaining devices)")
    _require(list(sizes.values()).count(-1) <= 1, "MeshConfig", "data/fsdp/model", sizes,
             "at most one axis may be -1")
    if self.rules is not None:
      for rule in self.rules:
        _require(len(rule) == 2 and isinstance(rule[0], str), "MeshConfig", "rules", rule,
                 "each rule is (logical_axis_name, mesh_axis or tuple of mesh axes or None)")
        targets = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
        for target in targets:
          _require(target is None or target in MESH_AXES, "MeshConfig", "rules", rule,
                   f"mesh axes are {MESH_AXES}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warm-up then decay, and global-norm gradient clipping.

  `dual_learning_rate` is the constant Adam rate of a loss's dual variables (BVMPO's eta and
  alpha), which have their own optimizer (see `optim.with_dual_optimizer`): no warm-up, decay,
  clipping or per-round scaling. 1e-2 (the dual rate of Acme's MPO agent) moves a dual by up to
  ~0.01 (unconstrained units) per step.
  """

  learning_rate: float = 1e-3
  warmup_steps: int = 100
  decay: str = "rsqrt"
  total_steps: int = 10_000  # Used by the linear and cosine decays.
  end_learning_rate_fraction: float = 0.0
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-9
  weight_decay: float = 0.0
  grad_clip_norm: float | None = 1.0
  dual_learning_rate: float = 1e-2

  def __post_init__(self):
    name = "OptimizerConfig"
    _require(self.learning_rate > 0, name, "learning_rate", self.learning_rate, "must be > 0")
    _require(self.dual_learning_rate > 0, name, "dual_learning_rate", self.dual_learning_rate,
             "must be > 0")
    _require(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, name,
             "warmup_steps", self.warmup_steps, "expected an integer >= 0")
    _require(self.decay in LR_DECAYS, name, "decay", self.decay, f"allowed: {LR_DECAYS}")
    _positive_int(name, "total_steps", self.total_steps)
    _require(0.0 <= self.end_learning_rate_fraction <= 1.0, name, "end_learning_rate_fraction",
             self.end_learning_rate_fraction, "expected a value in [0, 1]")
    _require(0.0 <= self.b1 < 1.0, name, "b1", self.b1, "expected 0 <= b1 < 1")
    _require(0.0 <= self.b2 < 1.0, name, "b2", self.b2, "expected 0 <= b2 < 1")
    _require(self.weight_decay >= 0, name, "weight_decay", self.weight_decay, "must be >= 0")
    _require(self.grad_clip_norm is None or self.grad_clip_norm > 0, name, "grad_clip_norm",
             self.grad_clip_norm, "must be > 0 or None (no clipping)")

  def replace(self, **changes) -> "OptimizerConfig":
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Autoregressive sampling. temperature=0 means greedy."""

  max_decode_len: int = 64
  temperature: float = 1.0
  top_k: int = 0  # 0 disables top-k.
  top_p: float = 1.0  # 1.0 disables nucleus sampling.
  num_samples: int = 1  # Samples per source.
  stop_at_eos: bool = True  # False keeps decoding max_decode_len tokens (benchmarks).

  def __post_init__(self):
    name = "SamplingConfig"
    _positive_int(name, "max_decode_len", self.max_decode_len)
    _require(self.temperature >= 0, name, "temperature", self.temperature,
             "must be >= 0 (0 = greedy)")
    _require(isinstance(self.top_k, int) and self.top_k >= 0, name, "top_k", self.top_k,
             "expected an integer >= 0 (0 disables top-k)")
    _require(0.0 < self.top_p <= 1.0, name, "top_p", self.top_p,
             "expected 0 < top_p <= 1 (1 disables nucleus sampling)")
    _positive_int(name, "num_samples", self.num_samples)


@dataclasses.dataclass(frozen=True)
class BeamSearchConfig:
  max_decode_len: int = 64
  beam_size: int = 4
  length_penalty: float = 0.6  # Score = log p / ((5 + len) / 6) ** alpha.

  def __post_init__(self):
    _positive_int("BeamSearchConfig", "max_decode_len", self.max_decode_len)
    _positive_int("BeamSearchConfig", "beam_size", self.beam_size)
    _require(self.length_penalty >= 0, "BeamSearchConfig", "length_penalty",
             self.length_penalty, "must be >= 0")


def check_choice(owner: str, field: str, value: Any, allowed: Sequence[Any]) -> None:
  """Raises a ValueError naming `owner.field` unless `value` is one of `allowed`."""
  _require(value in allowed, owner, field, value, f"allowed: {tuple(allowed)}")


def model_config_dict(saved: dict) -> dict:
  """A saved model config (a fingerprint's or a checkpoint's) with every field this version has:
  fields added since it was saved take their defaults, so configs compare field by field."""
  defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)
              if f.default is not dataclasses.MISSING}
  # JSON gives lists where the dataclass holds tuples (sliding_window_layers).
  return {k: tuple(v) if isinstance(v, list) else v for k, v in {**defaults, **dict(saved)}.items()}
