"""Hugging Face checkpoints (Llama, Qwen2, Gemma 1-3 decoders; Marian and T5 encoder-decoders)
in and out of the policy.

`import_policy(directory)` reads `config.json` and the safetensors weights (one file, or shards
named by `model.safetensors.index.json`) of a `LlamaForCausalLM`, `Qwen2ForCausalLM`,
`GemmaForCausalLM`, `Gemma2ForCausalLM`, `Gemma3ForCausalLM`, `MarianMTModel` or
`T5ForConditionalGeneration` and
returns the `ModelConfig` and the parameter tree of the same network as rest_jax's
`Transformer`: for the decoders decoder_only, RMSNorm, rotary positions, SwiGLU, grouped-query
attention; Qwen2's q/k/v biases; Gemma's RMSNorm scales as offsets from 1, embeddings times
sqrt(d_model), tanh-approximated GeGLU, head_dim independent of d_model; Gemma 2's norms after
each sublayer, soft-capped attention and output logits, query_pre_attn_scalar and sliding
windows on alternate layers; Gemma 3's per-head query/key norms, local rotary base and linear
rotary scaling. For Marian (opus-mt) an encoder-decoder with post-LayerNorm
layers, biases on every norm and projection, Marian's sinusoidal positions, one embedding for
encoder, decoder and output, and a logits bias. For T5 (v1.0, v1.1, flan-t5) pre-RMSNorm layers
without biases or query scaling, a relative-position bias table per stack, relu or gated-GELU
MLPs, and the output tied and scaled (v1.0) or unscaled with its own lm_head (v1.1). One table
per family (`_tensor_table`) pairs each parameter with its checkpoint tensor and the layout
conversions both ways; import and export both read it.
`export_policy(params, config, directory, ...)` writes the same format back, so a policy trained
here can be served with standard tools; import -> export -> import is exact.

Token ids. rest_jax reserves id 0 for padding (masked everywhere) and id 1 for end of sequence;
a Hugging Face vocabulary puts its own tokens there (Llama: `<unk>`, `<s>`; Marian: `</s>`,
`<unk>`). The import therefore
permutes the vocabulary: rest_jax id 1 is the checkpoint's `eos_token_id`, id 0 its
`pad_token_id` (or `unk_token_id`; pass `pad_id=` when it has neither), and those two tokens
trade places with whatever held ids 0 and 1. `TokenMap` converts ids both ways and the embedding
and output rows are permuted with it, so the logits are the checkpoint's, reordered. The map is
saved with exported checkpoints' metadata and undone on export. Marian's decoder starts from its
pad token, which the permutation puts at rest_jax's start id 0.

Weights are read tensor by tensor from memory-mapped files (bfloat16 through ml_dtypes), so the
peak host memory is about one copy of the parameters in the requested dtype.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from rest_jax import fileio
from rest_jax.configs import ModelConfig

FAMILIES = ("llama", "qwen2", "gemma", "gemma2", "gemma3_text", "marian", "t5")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
                 "gemma3_text": "Gemma3ForCausalLM",
                 "marian": "MarianMTModel",
                 "t5": "T5ForConditionalGeneration"}
# What each family's config.json implies beyond its sizes (Gemma: RMSNorm scales stored as
# offsets from 1, embeddings times sqrt(d_model), tanh-approximated GeGLU, tied output; Gemma 2
# also a norm after each sublayer; its soft caps, query scalar and sliding window are read from
# config.json). The decoders without Gemma 2's extras must not have them set.
_PLAIN = dict(sandwich_norm=False, attention_softcap=None, logits_softcap=None,
              query_pre_attn_scalar=None, sliding_window_layers=(), qk_norm=False,
              rope_local_theta=None, rope_scaling_factor=1.0)
_FAMILY_FIELDS = {
    "llama": dict(norm="rmsnorm", activation="silu", embedding_scale="none", **_PLAIN),
    "qwen2": dict(norm="rmsnorm", activation="silu", embedding_scale="none", **_PLAIN),
    "gemma": dict(norm="rmsnorm_offset", activation="gelu", embedding_scale="sqrt_d_model",
                  **_PLAIN),
    "gemma2": dict(norm="rmsnorm_offset", activation="gelu", embedding_scale="sqrt_d_model",
                   sandwich_norm=True, qk_norm=False, rope_local_theta=None,
                   rope_scaling_factor=1.0),
    # Gemma 3 (text): Gemma 2's layout with per-head query/key norms and a local rotary base.
    "gemma3_text": dict(norm="rmsnorm_offset", activation="gelu",
                        embedding_scale="sqrt_d_model", sandwich_norm=True, qk_norm=True)}
_ACTIVATIONS = {"llama": ("silu",), "qwen2": ("silu",), "gemma": ("gelu_pytorch_tanh",),
                "gemma2": ("gelu_pytorch_tanh",), "gemma3_text": ("gelu_pytorch_tanh",)}
# Marian (opus-mt): a post-LayerNorm encoder-decoder with biases everywhere, fixed sinusoidal
# positions, one embedding shared by encoder, decoder and output, and a logits bias.
_MARIAN_FIELDS = dict(decoder_only=False, norm="layernorm", norm_bias=True,
                      norm_position="post", positions="sinusoidal_marian", mlp="plain",
                      attention_bias=True, attention_out_bias=True, mlp_bias=True,
                      logits_bias=True, logits_scale="none")
# config.json's activation_function -> ModelConfig.activation (transformers' "gelu" is the erf
# form; "swish" is silu); and back for export.
_MARIAN_ACTIVATIONS = {"swish": "silu", "silu": "silu", "relu": "relu", "gelu": "gelu_exact",
                       "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu"}
_MARIAN_ACTIVATION_NAMES = {"silu": "swish", "relu": "relu", "gelu_exact": "gelu",
                            "gelu": "gelu_new"}
# T5 (v1.0, v1.1, flan-t5, mT5): a pre-RMSNorm encoder-decoder without biases or query scaling,
# relative position buckets, one embedding for encoder and decoder. feed_forward_proj ->
# (ModelConfig.mlp, activation); transformers reads "gated-gelu" as the tanh GELU.
_T5_FIELDS = dict(decoder_only=False, norm="rmsnorm", norm_position="pre",
                  positions="relative_t5", attention_scale="none", embedding_scale="none",
                  attention_bias=False, attention_out_bias=False, mlp_bias=False,
                  logits_bias=False)
_T5_MLPS = {"relu": ("plain", "relu"), "gated-gelu": ("gated", "gelu"),
            "gated-gelu_new": ("gated", "gelu"), "gated-relu": ("gated", "relu"),
            "gated-silu": ("gated", "silu")}
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
           "I64": np.int64, "I32": np.int32}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
CONFIG_NAME, WEIGHTS_NAME, INDEX_NAME = "config.json", "model.safetensors", \
    "model.safetensors.index.json"
TOKEN_MAP_KEY = "rest_jax_token_map"
HF_PREFIX = "hf="  # rest_loop.run.init_policy = 'hf=DIR', vocabulary spec 'hf=DIR'.
TOKENIZER_JSON, SENTENCEPIECE_MODEL = "tokenizer.json", "tokenizer.model"
SENTENCEPIECE_MODELS = (SENTENCEPIECE_MODEL, "spiece.model")  # T5 names its model spiece.model.
MARIAN_TOKENIZER = ("source.spm", "target.spm", "vocab.json")


# ------------------------------------------------------------------------------ safetensors
def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """The tensors of one safetensors file, as read-only arrays backed by a memory map (a local
  file) or by the file's bytes read at once (gs:// and other remote paths)."""
  if fileio.is_remote(path):
    raw = np.frombuffer(fileio.read_bytes(path), dtype=np.uint8)
  else:
    raw = np.memmap(path, dtype=np.uint8, mode="r")
  header_len = int(np.frombuffer(raw[:8].tobytes(), "<u8")[0])
  header = json.loads(raw[8:8 + header_len].tobytes())
  body = 8 + header_len
  out = {}
  for name, entry in header.items():
    if name == "__metadata__":
      continue
    if entry["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has dtype {entry['dtype']!r}; readable: "
                       f"{sorted(_DTYPES)}.")
    start, end = entry["data_offsets"]
    out[name] = raw[body + start:body + end].view(_DTYPES[entry["dtype"]]).reshape(
        entry["shape"])
  return out


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes tensors (C order, little-endian) in the safetensors format, atomically."""
  header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
  chunks, offset = [], 0
  for name in sorted(tensors):
    array = np.ascontiguousarray(tensors[name])
    if array.dtype not in _NAMES:
      raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot be written.")
    data = array.tobytes()
    header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
  text = json.dumps(header, separators=(",", ":")).encode("utf-8")
  text += b" " * (-len(text) % 8)  # The body starts 8-byte aligned.
  fileio.write_atomic(path, len(text).to_bytes(8, "little") + text + b"".join(chunks))


def read_weights(directory: str) -> dict[str, np.ndarray]:
  """Every tensor of a checkpoint directory (one file or index-named shards). A local directory
  is memory-mapped (nothing is read until a tensor is converted); a gs:// one is read file by
  file into host memory, so copy a large checkpoint to local disk first."""
  index = os.path.join(directory, INDEX_NAME)
  if fileio.exists(index):
    files = sorted(set(json.loads(fileio.read_bytes(index))["weight_map"].values()))
  elif fileio.exists(os.path.join(directory, WEIGHTS_NAME)):
    files = [WEIGHTS_NAME]
  else:
    raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME} (only safetensors "
                            "checkpoints are read; convert .bin files with transformers).")
  tensors = {}
  for name in files:
    tensors.update(read_safetensors(os.path.join(directory, name)))
  return tensors


# ------------------------------------------------------------------------------ token ids
@dataclasses.dataclass(frozen=True)
class TokenMap:
  """rest_jax id <-> checkpoint id: `to_hf[i]` is the checkpoint id of rest_jax id i."""
  to_hf: np.ndarray

  @staticmethod
  def for_ids(vocab_size: int, eos_id: int, pad_id: int) -> "TokenMap":
    if eos_id == pad_id:
      raise ValueError(f"the padding id and eos_token_id are both {eos_id}: rest_jax needs two "
                       "distinct ids; pass pad_id= (any token the policy never needs to emit).")
    for name, value in (("eos_token_id", eos_id), ("pad id", pad_id)):
      if not 0 <= value < vocab_size:
        raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size}).")
    to_hf = np.arange(vocab_size)
    for ours, theirs in ((0, pad_id), (1, eos_id)):
      where = int(np.flatnonzero(to_hf == theirs)[0])
      to_hf[[ours, where]] = to_hf[[where, ours]]
    return TokenMap(to_hf)

  @property
  def from_hf(self) -> np.ndarray:
    inverse = np.empty_like(self.to_hf)
    inverse[self.to_hf] = np.arange(len(self.to_hf))
    return inverse

  def encode(self, hf_ids) -> np.ndarray:
    return self.from_hf[np.asarray(hf_ids)]

  def decode(self, ids) -> np.ndarray:
    return self.to_hf[np.asarray(ids)]


# ------------------------------------------------------------------------------ configs
def model_config_from_hf(hf: Mapping[str, Any], tensors=None, **overrides) -> ModelConfig:
  """The ModelConfig of a Llama/Qwen2/Gemma/Marian/T5 `config.json` (overrides: e.g. value_head,
  dtype). `tensors`: the checkpoint's (memory-mapped) tensors, which tell whether a T5
  checkpoint has an output projection of its own (`read_model_config` passes them)."""
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise ValueError(f"config.json: model_type={family!r} is not supported; supported: "
                     f"{list(FAMILIES)}.")
  fields = (_marian_fields(hf) if family == "marian" else _t5_fields(hf, tensors)
            if family == "t5" else _decoder_fields(hf, family))
  changed = sorted(k for k, v in overrides.items() if k in fields and fields[k] != v)
  if changed:
    raise ValueError(f"model_overrides {changed} would change the architecture of the "
                     f"checkpoint's config.json ({ {k: fields[k] for k in changed} }); only "
                     "fields it does not set may be overridden (e.g. dtype, param_dtype, "
                     "dropout_rate).")
  fields.update(overrides)
  return ModelConfig(**fields)


def _marian_fields(hf: Mapping[str, Any]) -> dict:
  act = hf.get("activation_function", "gelu")
  if act not in _MARIAN_ACTIVATIONS:
    raise ValueError(f"config.json: activation_function={act!r}; supported for marian: "
                     f"{list(_MARIAN_ACTIVATIONS)}.")
  vocab = hf["vocab_size"]
  unsupported = [
      ("share_encoder_decoder_embeddings", not hf.get("share_encoder_decoder_embeddings", True),
       "separate encoder and decoder embeddings"),
      ("decoder_vocab_size", hf.get("decoder_vocab_size") not in (None, vocab),
       "a target vocabulary other than the source's"),
      ("decoder_attention_heads", hf.get("decoder_attention_heads", 16) != hf.get(
          "encoder_attention_heads", 16), "different encoder and decoder head counts"),
      ("decoder_ffn_dim", hf.get("decoder_ffn_dim", 4096) != hf.get("encoder_ffn_dim", 4096),
       "different encoder and decoder MLP widths"),
      ("decoder_start_token_id", hf.get("decoder_start_token_id", hf.get("pad_token_id"))
       != hf.get("pad_token_id"), "a decoder start token other than the padding token"),
      ("normalize_before", bool(hf.get("normalize_before")), "pre-LayerNorm (mBART-style)")]
  for field, bad, what in unsupported:
    if bad:
      raise ValueError(f"config.json: {field}={hf.get(field)!r}: {what} is not supported "
                       "(opus-mt's MarianMTModel layout only).")
  return dict(
      vocab_size=vocab, d_model=hf["d_model"], num_heads=hf.get("encoder_attention_heads", 16),
      d_ff=hf.get("encoder_ffn_dim", 4096), num_encoder_layers=hf.get("encoder_layers", 12),
      num_decoder_layers=hf.get("decoder_layers", 12),
      max_len=hf.get("max_position_embeddings", 1024), layer_norm_epsilon=1e-5,
      activation=_MARIAN_ACTIVATIONS[act],
      embedding_scale="sqrt_d_model" if hf.get("scale_embedding") else "none",
      tie_embeddings=bool(hf.get("tie_word_embeddings", True)), **_MARIAN_FIELDS)


def _t5_fields(hf: Mapping[str, Any], tensors) -> dict:
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in _T5_MLPS:
    raise ValueError(f"config.json: feed_forward_proj={proj!r}; supported for t5: "
                     f"{list(_T5_MLPS)}.")
  mlp, activation = _T5_MLPS[proj]
  # T5 v1.0 ties the output to the embedding and scales the decoder output by d_model^-0.5;
  # v1.1 / flan-t5 say tie_word_embeddings=false: no scaling, and an lm_head of their own.
  # transformers 5 writes the scaling as scale_decoder_outputs and never saves an lm_head (it
  # ties it): the output is tied when the file has no lm_head or one equal to the embedding.
  scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
  if tensors is None:
    tied = scaled
  else:
    tied = "lm_head.weight" not in tensors or np.array_equal(tensors["lm_head.weight"],
                                                             tensors["shared.weight"])
  heads = hf.get("num_heads", 8)
  return dict(
      vocab_size=hf["vocab_size"], d_model=hf["d_model"], num_heads=heads, d_ff=hf["d_ff"],
      head_dim=hf.get("d_kv", hf["d_model"] // heads),
      num_encoder_layers=hf.get("num_layers", 6),
      num_decoder_layers=hf.get("num_decoder_layers") or hf.get("num_layers", 6),
      max_len=hf.get("n_positions", 512), layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
      relative_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_max_distance=hf.get("relative_attention_max_distance", 128), mlp=mlp,
      activation=activation, tie_embeddings=tied,
      logits_scale="rsqrt_d_model" if scaled else "none", **_T5_FIELDS)


def _decoder_fields(hf: Mapping[str, Any], family: str) -> dict:
  act = hf.get("hidden_activation") or hf.get("hidden_act") or _ACTIVATIONS[family][0]
  if act not in _ACTIVATIONS[family]:
    raise ValueError(f"config.json: hidden_act={act!r}; supported for {family}: "
                     f"{list(_ACTIVATIONS[family])}.")
  if family == "gemma3_text":
    rope, local_rope, factor = _gemma3_rope(hf)
  else:
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if isinstance(scaling, dict):
      scaling = scaling.get("rope_type", scaling.get("type"))
    if scaling not in (None, "default"):
      raise ValueError(f"config.json: rope scaling {scaling!r} is not supported (only plain "
                       "rotary positions).")
    rope = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10_000.0))
  if hf.get("use_bidirectional_attention"):
    raise ValueError("config.json: use_bidirectional_attention=True is not supported (causal "
                     "decoders only).")
  if hf.get("use_sliding_window"):
    raise ValueError("config.json: use_sliding_window=True is not supported (full attention "
                     "only).")
  heads = hf["num_attention_heads"]
  fields = dict(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_heads=heads,
      d_ff=hf["intermediate_size"], num_encoder_layers=0,
      num_decoder_layers=hf["num_hidden_layers"],
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      max_len=hf.get("max_position_embeddings", 2048), decoder_only=True,
      layer_norm_epsilon=hf.get("rms_norm_eps", 1e-6), **_FAMILY_FIELDS[family],
      positions="rope", rope_theta=float(rope), mlp="gated",
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      tie_embeddings=bool(hf.get("tie_word_embeddings",
                                 family in ("qwen2", "gemma", "gemma2", "gemma3_text"))),
      logits_scale="none",
      attention_bias=bool(hf.get("attention_bias", family == "qwen2")))
  if family in ("gemma2", "gemma3_text"):  # Sliding windows on the layers layer_types names
    # (default: Gemma 2 every other layer from the first, Gemma 3 five in six).
    window = hf.get("sliding_window")
    every = 2 if family == "gemma2" else hf.get("sliding_window_pattern", 6)
    types = hf.get("layer_types") or ["full_attention" if (i + 1) % every == 0
                                      else "sliding_attention"
                                      for i in range(fields["num_decoder_layers"])]
    fields.update(
        query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256),
        attention_softcap=hf.get("attn_logit_softcapping"),
        logits_softcap=hf.get("final_logit_softcapping"), sliding_window=window,
        sliding_window_layers=tuple(i for i, t in enumerate(types)
                                    if t == "sliding_attention") if window else ())
  if family == "gemma3_text":
    fields.update(rope_local_theta=float(local_rope), rope_scaling_factor=float(factor))
  return fields


def _gemma3_rope(hf: Mapping[str, Any]) -> tuple[float, float, float]:
  """(global rotary base, local base, linear scaling factor of the global layers) of a Gemma 3
  config.json: transformers 5's rope_parameters per layer type, or the older rope_theta,
  rope_local_base_freq and rope_scaling."""
  params = hf.get("rope_parameters") or {}
  full = dict(params.get("full_attention") or {})
  local = dict(params.get("sliding_attention") or {})
  if hf.get("rope_scaling"):
    full.update(hf["rope_scaling"])
  kind = full.get("rope_type", full.get("type", "default"))
  if kind not in ("default", "linear") or local.get("rope_type", "default") != "default":
    raise ValueError(f"config.json: rope scaling {kind!r} is not supported for gemma3_text "
                     "(default or linear).")
  return (full.get("rope_theta", hf.get("rope_theta", 1_000_000.0)),
          local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0)),
          full.get("factor", 1.0) if kind == "linear" else 1.0)


def _hf_config(config: ModelConfig, family: str, token_map: TokenMap,
               base: Mapping[str, Any] | None) -> dict:
  hf = dict(base or {})
  if family == "t5":
    proj = {v: k for k, v in reversed(list(_T5_MLPS.items()))}[(config.mlp, config.activation)]
    hf.update({
        "model_type": family, "architectures": [ARCHITECTURES[family]],
        "vocab_size": config.vocab_size, "d_model": config.d_model,
        "d_kv": config.resolved_head_dim, "d_ff": config.d_ff, "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "relative_attention_num_buckets": config.relative_buckets,
        "relative_attention_max_distance": config.relative_max_distance,
        "layer_norm_epsilon": config.layer_norm_epsilon, "feed_forward_proj": proj,
        # v1.0 (scaled, tied) or v1.1 (unscaled, with an lm_head, written even when it equals
        # the embedding), read alike by transformers 4 and 5.
        "tie_word_embeddings": config.logits_scale == "rsqrt_d_model",
        "scale_decoder_outputs": config.logits_scale == "rsqrt_d_model",
        "eos_token_id": int(token_map.to_hf[1]), "pad_token_id": int(token_map.to_hf[0]),
        "decoder_start_token_id": int(token_map.to_hf[0])})
    return hf
  if family == "marian":
    pad = int(token_map.to_hf[0])
    hf.update({
        "model_type": family, "architectures": [ARCHITECTURES[family]],
        "vocab_size": config.vocab_size, "decoder_vocab_size": config.vocab_size,
        "d_model": config.d_model, "encoder_layers": config.num_encoder_layers,
        "decoder_layers": config.num_decoder_layers,
        "encoder_attention_heads": config.num_heads, "decoder_attention_heads": config.num_heads,
        "encoder_ffn_dim": config.d_ff, "decoder_ffn_dim": config.d_ff,
        "activation_function": _MARIAN_ACTIVATION_NAMES[config.activation],
        "max_position_embeddings": config.max_len,
        "scale_embedding": config.embedding_scale == "sqrt_d_model",
        "share_encoder_decoder_embeddings": True, "tie_word_embeddings": config.tie_embeddings,
        "eos_token_id": int(token_map.to_hf[1]), "forced_eos_token_id": int(token_map.to_hf[1]),
        "pad_token_id": pad, "decoder_start_token_id": pad})
    return hf
  hf.update({
      "model_type": family, "architectures": [ARCHITECTURES[family]],
      "vocab_size": config.vocab_size, "hidden_size": config.d_model,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.resolved_kv_heads,
      "intermediate_size": config.d_ff, "num_hidden_layers": config.num_decoder_layers,
      "head_dim": config.resolved_head_dim, "max_position_embeddings": config.max_len,
      "hidden_act": _ACTIVATIONS[family][0], "rms_norm_eps": config.layer_norm_epsilon,
      "rope_theta": config.rope_theta, "tie_word_embeddings": config.tie_embeddings,
      "eos_token_id": int(token_map.to_hf[1]), "pad_token_id": int(token_map.to_hf[0])})
  if family in ("llama", "gemma", "gemma2", "gemma3_text"):
    hf["attention_bias"] = config.attention_bias
  if family == "gemma":
    hf.pop("hidden_activation", None)
  if family == "gemma3_text":
    hf.pop("rope_theta", None)
    full = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling_factor != 1.0:
      full = {"rope_type": "linear", "rope_theta": config.rope_theta,
              "factor": config.rope_scaling_factor}
    hf.update(rope_parameters={"full_attention": full, "sliding_attention": {
        "rope_type": "default", "rope_theta": config.rope_local_theta or config.rope_theta}})
    for key in ("rope_local_base_freq", "rope_scaling"):
      hf.pop(key, None)
  if family in ("gemma2", "gemma3_text"):
    hf.update({
        "hidden_activation": _ACTIVATIONS[family][0],
        "query_pre_attn_scalar": config.query_pre_attn_scalar,
        "attn_logit_softcapping": config.attention_softcap,
        "final_logit_softcapping": config.logits_softcap,
        "sliding_window": config.sliding_window,
        "layer_types": ["sliding_attention" if i in config.sliding_window_layers
                        else "full_attention" for i in range(config.num_decoder_layers)]})
  return hf


def family_of(config: ModelConfig) -> str:
  """The checkpoint family whose architecture `config` is ('llama' for Llama and Qwen2)."""
  if not config.decoder_only and config.positions == "relative_t5":
    wrong = {k: getattr(config, k) for k, v in _T5_FIELDS.items() if getattr(config, k) != v}
    if (config.mlp, config.activation) not in _T5_MLPS.values():
      wrong.update(mlp=config.mlp, activation=config.activation)
    if config.resolved_kv_heads != config.num_heads or (
        not config.tie_embeddings and config.logits_scale != "none"):
      wrong.update(num_kv_heads=config.num_kv_heads, logits_scale=config.logits_scale)
    if wrong:
      raise ValueError(f"export: the encoder-decoder model is not T5-style ({wrong}; needs "
                       f"{_T5_FIELDS}, an MLP of {list(_T5_MLPS.values())}, one key/value head "
                       "per query head, and an untied output only without logits scaling).")
    return "t5"
  if not config.decoder_only:
    wrong = {k: getattr(config, k) for k, v in _MARIAN_FIELDS.items() if getattr(config, k) != v}
    if wrong or config.resolved_head_dim * config.num_heads != config.d_model or (
        config.resolved_kv_heads != config.num_heads):
      raise ValueError(f"export: the encoder-decoder model is not Marian-style ({wrong}; needs "
                       f"{_MARIAN_FIELDS}, one key/value head per query head and head_dim = "
                       "d_model / num_heads).")
    return "marian"
  wanted = dict(decoder_only=True, positions="rope", mlp="gated", logits_scale="none")
  wrong = {k: getattr(config, k) for k, v in wanted.items() if getattr(config, k) != v}
  for family in ("llama", "gemma", "gemma2", "gemma3_text"):
    fields = _FAMILY_FIELDS[family]
    if not wrong and all(getattr(config, k) == v for k, v in fields.items()):
      return family
  raise ValueError(f"export: the model is not a Llama/Qwen2- or Gemma-style decoder "
                   f"({ {k: getattr(config, k) for k in [*wanted, *_FAMILY_FIELDS['llama']]} }; "
                   f"needs {wanted} and one of {list(_FAMILY_FIELDS.values())}).")


def check_exportable(config: ModelConfig, family: str | None = None) -> None:
  found = family_of(config)
  if family is not None and any((found == f) != (family == f)
                                for f in ("gemma", "gemma2", "gemma3_text", "marian", "t5")):
    raise ValueError(f"export: family={family!r} but the model is {found}-style.")


# ------------------------------------------------------------------------------ weights
@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One checkpoint tensor <-> one rest_jax parameter: its path in the parameter tree, its
  checkpoint name and shape, and the layout conversions both ways (numpy arrays in, out)."""
  path: tuple[str, ...]
  name: str
  shape: tuple[int, ...]
  to_ours: Any
  to_hf: Any


def _transpose(x):
  return np.transpose(x)


def _tensor_table(config: ModelConfig, token_map: TokenMap) -> list[_Tensor]:
  """Every parameter of `config`'s network (value head excepted) with its checkpoint tensor."""
  d, h, g, k, f, v = (config.d_model, config.num_heads, config.resolved_kv_heads,
                      config.resolved_head_dim, config.d_ff, config.vocab_size)
  to_hf, from_hf = token_map.to_hf, token_map.from_hf  # Vocabulary rows: theirs <-> ours.
  family = family_of(config)
  table = []

  def add(path, name, shape, to_ours=lambda x: x, back=lambda x: x):
    table.append(_Tensor(tuple(path.split("/")), name, tuple(shape), to_ours, back))

  # Projection names: Llama's q_proj..o_proj, Marian's q_proj..out_proj, T5's q..o.
  names = {"marian": ("q_proj", "k_proj", "v_proj", "out_proj"),
           "t5": ("q", "k", "v", "o")}.get(family, ("q_proj", "k_proj", "v_proj", "o_proj"))

  def attention(ours, theirs, heads_q=h, heads_kv=g):
    # A torch Linear weight is [out, in]: our [D, H, K] is its transpose, split into heads.
    for mine, proj, n in (("query", names[0], heads_q), ("key", names[1], heads_kv),
                          ("value", names[2], heads_kv)):
      add(f"{ours}/{mine}", f"{theirs}.{proj}.weight", (n * k, d),
          lambda x, n=n: x.T.reshape(d, n, k), lambda x, n=n: x.reshape(d, n * k).T)
      if config.attention_bias:
        add(f"{ours}/{mine}_bias", f"{theirs}.{proj}.bias", (n * k,),
            lambda x, n=n: x.reshape(n, k), lambda x, n=n: x.reshape(n * k))
    out = names[3]
    add(f"{ours}/out", f"{theirs}.{out}.weight", (d, heads_q * k),
        lambda x: x.T.reshape(heads_q, k, d), lambda x: x.reshape(heads_q * k, d).T)
    if config.attention_out_bias:
      add(f"{ours}/out_bias", f"{theirs}.{out}.bias", (d,))

  def norm(ours, theirs):
    add(f"{ours}/scale", f"{theirs}.weight", (d,))
    if config.norm_bias:
      add(f"{ours}/bias", f"{theirs}.bias", (d,))

  def linear(ours, theirs, n_in, n_out):
    add(ours, f"{theirs}.weight", (n_out, n_in), _transpose, _transpose)
    if config.mlp_bias:
      add(f"{ours}_bias", f"{theirs}.bias", (n_out,))

  def t5_mlp(ours, theirs):
    if config.mlp == "gated":  # wi_0 goes through the activation (our gate), wi_1 does not.
      linear(f"{ours}/wg", f"{theirs}.wi_0", d, f)
      linear(f"{ours}/wi", f"{theirs}.wi_1", d, f)
    else:
      linear(f"{ours}/wi", f"{theirs}.wi", d, f)
    linear(f"{ours}/wo", f"{theirs}.wo", f, d)

  if family == "t5":  # T5ForConditionalGeneration: pre-RMSNorm, relative position buckets.
    add("embedding", "shared.weight", (v, d), lambda x: x[to_hf], lambda x: x[from_hf])
    for stack, n_layers in (("encoder", config.num_encoder_layers),
                            ("decoder", config.num_decoder_layers)):
      add(f"{stack}_relative_bias",
          f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
          (config.relative_buckets, h))
      norm(f"{stack}_norm", f"{stack}.final_layer_norm")
      for i in range(n_layers):
        p = f"{stack}.block.{i}.layer."
        attention(f"{stack}_{i}/self_attention", p + "0.SelfAttention")
        if stack == "encoder":
          norm(f"encoder_{i}/pre_attention_norm", p + "0.layer_norm")
          t5_mlp(f"encoder_{i}/mlp", p + "1.DenseReluDense")
          norm(f"encoder_{i}/pre_mlp_norm", p + "1.layer_norm")
        else:
          norm(f"decoder_{i}/pre_self_attention_norm", p + "0.layer_norm")
          attention(f"decoder_{i}/cross_attention", p + "1.EncDecAttention")
          norm(f"decoder_{i}/pre_cross_attention_norm", p + "1.layer_norm")
          t5_mlp(f"decoder_{i}/mlp", p + "2.DenseReluDense")
          norm(f"decoder_{i}/pre_mlp_norm", p + "2.layer_norm")
  elif family == "marian":  # MarianMTModel: post-norm encoder-decoder, one shared embedding.
    add("embedding", "model.shared.weight", (v, d), lambda x: x[to_hf], lambda x: x[from_hf])
    add("output_bias", "final_logits_bias", (1, v), lambda x: x[0][to_hf],
        lambda x: x[from_hf][None])
    for i in range(config.num_encoder_layers):
      p = f"model.encoder.layers.{i}."
      attention(f"encoder_{i}/self_attention", p + "self_attn")
      norm(f"encoder_{i}/pre_attention_norm", p + "self_attn_layer_norm")
      linear(f"encoder_{i}/mlp/wi", p + "fc1", d, f)
      linear(f"encoder_{i}/mlp/wo", p + "fc2", f, d)
      norm(f"encoder_{i}/pre_mlp_norm", p + "final_layer_norm")
    for i in range(config.num_decoder_layers):
      p = f"model.decoder.layers.{i}."
      attention(f"decoder_{i}/self_attention", p + "self_attn")
      norm(f"decoder_{i}/pre_self_attention_norm", p + "self_attn_layer_norm")
      attention(f"decoder_{i}/cross_attention", p + "encoder_attn")
      norm(f"decoder_{i}/pre_cross_attention_norm", p + "encoder_attn_layer_norm")
      linear(f"decoder_{i}/mlp/wi", p + "fc1", d, f)
      linear(f"decoder_{i}/mlp/wo", p + "fc2", f, d)
      norm(f"decoder_{i}/pre_mlp_norm", p + "final_layer_norm")
  else:  # Llama / Qwen2 / Gemma decoders.
    add("embedding", "model.embed_tokens.weight", (v, d), lambda x: x[to_hf],
        lambda x: x[from_hf])
    norm("decoder_norm", "model.norm")
    for i in range(config.num_decoder_layers):
      p = f"model.layers.{i}."
      attention(f"decoder_{i}/self_attention", p + "self_attn")
      norm(f"decoder_{i}/pre_self_attention_norm", p + "input_layernorm")
      if config.qk_norm:  # Gemma 3.
        norm_k = lambda ours, theirs: add(ours, theirs, (k,))
        norm_k(f"decoder_{i}/self_attention/query_norm", p + "self_attn.q_norm.weight")
        norm_k(f"decoder_{i}/self_attention/key_norm", p + "self_attn.k_norm.weight")
      if config.sandwich_norm:  # Gemma 2: post_attention_layernorm follows the attention.
        norm(f"decoder_{i}/post_self_attention_norm", p + "post_attention_layernorm")
        norm(f"decoder_{i}/pre_mlp_norm", p + "pre_feedforward_layernorm")
        norm(f"decoder_{i}/post_mlp_norm", p + "post_feedforward_layernorm")
      else:  # Llama's post_attention_layernorm is the norm before the MLP.
        norm(f"decoder_{i}/pre_mlp_norm", p + "post_attention_layernorm")
      add(f"decoder_{i}/mlp/wg", p + "mlp.gate_proj.weight", (f, d), _transpose, _transpose)
      add(f"decoder_{i}/mlp/wi", p + "mlp.up_proj.weight", (f, d), _transpose, _transpose)
      add(f"decoder_{i}/mlp/wo", p + "mlp.down_proj.weight", (d, f), _transpose, _transpose)
  if not config.tie_embeddings:
    add("output", "lm_head.weight", (v, d), lambda x: x[to_hf].T, lambda x: x.T[from_hf])
  return table


# Tensors a checkpoint may hold that carry nothing of their own: tied copies of the embedding,
# and Marian's fixed sinusoidal position tables (checked against ours when present).
_TIED_COPIES = ("lm_head.weight", "model.encoder.embed_tokens.weight",
                "model.decoder.embed_tokens.weight", "encoder.embed_tokens.weight",
                "decoder.embed_tokens.weight")
_POSITION_TABLES = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")


def marian_position_table(num_positions: int, d_model: int) -> np.ndarray:
  """Marian's sinusoidal position table (rows = positions), computed as rest_jax's Transformer
  computes positions='sinusoidal_marian'."""
  half = d_model // 2
  angles = np.arange(num_positions)[:, None] * np.exp(
      -np.log(10_000.0) * np.arange(half) / half)[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def params_from_hf(tensors: Mapping[str, np.ndarray], config: ModelConfig, token_map: TokenMap,
                   dtype=np.float32, lazy: bool = False) -> dict:
  """rest_jax's parameter tree (without a value head) from a checkpoint's tensors.

  Every tensor's name and shape is checked first, without reading any weights. With `lazy`,
  each leaf is a function that reads and converts that one parameter when called (so a loader
  can place parameters on their devices one at a time, `load_sharded`)."""
  params: dict = {}
  used = set()
  for entry in _tensor_table(config, token_map):
    if entry.name not in tensors:
      raise KeyError(f"checkpoint has no tensor {entry.name!r}")
    array = tensors[entry.name]  # Memory-mapped: only its header is read here.
    if tuple(array.shape) != entry.shape:
      raise ValueError(f"checkpoint tensor {entry.name!r} has shape {tuple(array.shape)}; the "
                       f"config needs {entry.shape}.")
    used.add(entry.name)

    def read(array=array, convert=entry.to_ours):
      return np.ascontiguousarray(convert(np.asarray(array, dtype=np.float32))).astype(dtype)

    node = params
    for key in entry.path[:-1]:
      node = node.setdefault(key, {})
    node[entry.path[-1]] = read if lazy else read()
  for name in _POSITION_TABLES:
    if name in tensors and config.positions == "sinusoidal_marian":
      table = np.asarray(tensors[name], np.float32)
      ours = marian_position_table(table.shape[0], config.d_model)
      if table.shape != ours.shape or not np.allclose(table, ours, atol=1e-4):
        raise ValueError(f"checkpoint tensor {name!r} is not the sinusoidal table rest_jax "
                         "computes (positions='sinusoidal_marian'): learned positions are not "
                         "supported.")
      used.add(name)
  ignored = sorted(set(tensors) - used - set(_TIED_COPIES))
  if ignored:
    raise ValueError(f"checkpoint tensors not used by this config: {ignored[:5]}"
                     f"{' ...' if len(ignored) > 5 else ''}")
  return params


def params_to_hf(params: Mapping[str, Any], config: ModelConfig, token_map: TokenMap,
                 dtype=np.float32) -> dict[str, np.ndarray]:
  """The checkpoint tensors of rest_jax parameters (the value head is not exported)."""
  out = {}
  for entry in _tensor_table(config, token_map):
    node = params
    for key in entry.path:
      node = node[key]
    out[entry.name] = np.ascontiguousarray(entry.to_hf(np.asarray(node, np.float32))).astype(
        dtype)
  if (family_of(config) == "t5" and config.tie_embeddings
      and config.logits_scale == "none"):  # See _hf_config: v1.1 files carry an lm_head.
    out["lm_head.weight"] = out["shared.weight"]
  return out


# ------------------------------------------------------------------------------ entry points
def read_config(directory: str) -> dict:
  path = os.path.join(directory, CONFIG_NAME)
  if not fileio.exists(path):
    raise FileNotFoundError(f"{directory}: no {CONFIG_NAME} (a Hugging Face checkpoint "
                            "directory has config.json and model.safetensors).")
  return json.loads(fileio.read_bytes(path))


def read_model_config(directory: str, **overrides) -> ModelConfig:
  """The ModelConfig of a checkpoint directory: its config.json, and for T5 whether its weights
  hold an output projection of their own."""
  hf = read_config(directory)
  tensors = read_weights(directory) if hf.get("model_type") == "t5" else None
  return model_config_from_hf(hf, tensors, **overrides)


def init_directory(init_policy: Any) -> str | None:
  """The directory of `rest_loop.run.init_policy='hf=DIR'`, checked to hold a checkpoint (its
  config, weights and tokenizer); None for any other init_policy."""
  if not isinstance(init_policy, str) or not init_policy.startswith(HF_PREFIX):
    return None
  directory = os.path.expanduser(init_policy[len(HF_PREFIX):])
  where = f"run.init_policy={init_policy!r}"
  if not directory or not fileio.exists(directory):
    raise ValueError(f"{where}: no such directory (expected 'hf=DIR', a Hugging Face checkpoint "
                     f"directory with {CONFIG_NAME}, {WEIGHTS_NAME} and a tokenizer).")
  missing = [name for name, present in (
      (CONFIG_NAME, fileio.exists(os.path.join(directory, CONFIG_NAME))),
      (f"{WEIGHTS_NAME} or {INDEX_NAME}", any(fileio.exists(os.path.join(directory, n))
                                              for n in (WEIGHTS_NAME, INDEX_NAME))),
      (f"{TOKENIZER_JSON}, {' + '.join(MARIAN_TOKENIZER)} or {' / '.join(SENTENCEPIECE_MODELS)}",
       any(fileio.exists(os.path.join(directory, n))
           for n in (TOKENIZER_JSON, *SENTENCEPIECE_MODELS))
       or all(fileio.exists(os.path.join(directory, n)) for n in MARIAN_TOKENIZER)))
             if not present]
  if missing:
    raise ValueError(f"{where}: {directory} has no {', no '.join(missing)}.")
  return directory if fileio.is_remote(directory) else fileio.abspath(directory)


def token_map_of(hf: Mapping[str, Any], pad_id: int | None = None,
                 tokenizer_size: int | None = None) -> TokenMap:
  """The TokenMap of a config.json: its EOS goes to rest_jax's id 1 and `pad_id` (else its pad,
  else its unk id) to 0. Given the tokenizer's number of tokens, a checkpoint with neither a pad
  nor an unk id distinct from EOS (Qwen2's base models) pads with its last embedding row when
  that row is beyond the tokenizer's tokens (never produced, so never needed)."""
  eos = hf.get("eos_token_id")
  if isinstance(eos, list):
    eos = eos[0]
  if eos is None:
    raise ValueError("config.json has no eos_token_id; rest_jax needs one to end samples.")
  if pad_id is None:
    pad_id = hf.get(TOKEN_MAP_KEY, {}).get("pad_id")
  if pad_id is None:
    pad_id = hf.get("pad_token_id")
  if pad_id is None or pad_id == eos:
    pad_id = hf.get("unk_token_id")
  if (pad_id is None or pad_id == eos) and tokenizer_size is not None:
    pad_id = hf["vocab_size"] - 1
    if pad_id < tokenizer_size:
      raise ValueError(f"config.json names no pad_token_id or unk_token_id distinct from "
                       f"eos_token_id, and every embedding row is one of the tokenizer's "
                       f"{tokenizer_size} tokens; add \"pad_token_id\": <a token the policy "
                       "never needs to emit> to config.json.")
  if pad_id is None:
    raise ValueError("config.json names no pad_token_id or unk_token_id distinct from "
                     "eos_token_id: pass pad_id= (a token the policy never needs to emit).")
  return TokenMap.for_ids(hf["vocab_size"], int(eos), int(pad_id))


def import_policy(directory: str, pad_id: int | None = None, dtype=np.float32, **overrides
                  ) -> tuple[ModelConfig, dict, TokenMap]:
  """(ModelConfig, parameters, TokenMap) of a checkpoint directory."""
  hf = read_config(directory)
  tensors = read_weights(directory)  # Memory-mapped: nothing is read until it is converted.
  config = model_config_from_hf(hf, tensors, **overrides)
  token_map = token_map_of(hf, pad_id)
  return config, params_from_hf(tensors, config, token_map, dtype), token_map


def load_sharded(directory: str, config: ModelConfig, abstract_params: Any,
                 token_map: TokenMap, seed: int = 0) -> Any:
  """The checkpoint's parameters placed as `abstract_params` (the policy's ShapeDtypeStructs
  with shardings, value head included) — how a run starts from `init_policy='hf=DIR'`.

  One parameter is read and converted at a time, and each device receives only its shard
  (`jax.make_array_from_callback`; on several hosts each host builds only its devices' shards),
  so host memory peaks at about the largest tensor, not the whole model. The value head, which
  no Hugging Face checkpoint has, is initialised as the Transformer initialises it (seeded by
  `seed`). `token_map`: the run's vocabulary's (rest_jax.data.hf_vocab)."""
  import jax  # pylint: disable=g-import-not-at-top
  lazy = params_from_hf(read_weights(directory), config, token_map, lazy=True)
  if config.value_head:
    d = config.d_model
    hidden = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0,
                                                  out_axis=1)
    lazy.update(value_hidden=lambda: np.asarray(hidden(jax.random.PRNGKey(seed), (d, d))),
                value_out=lambda: np.zeros((d,), np.float32),
                value_bias=lambda: np.zeros((), np.float32))
  ours = jax.tree_util.tree_structure(jax.tree_util.tree_map(lambda _: 0, abstract_params))
  theirs = jax.tree_util.tree_structure(jax.tree_util.tree_map(lambda _: 0, lazy))
  if ours != theirs:
    raise ValueError(f"{directory}: the imported parameters do not match the policy's "
                     f"(checkpoint: {theirs}; policy: {ours}).")

  def place(read, target):
    array = read()
    if tuple(array.shape) != tuple(target.shape):
      raise ValueError(f"{directory}: an imported parameter has shape {array.shape}, the "
                       f"policy's {target.shape}.")
    array = array.astype(target.dtype)
    return jax.make_array_from_callback(array.shape, target.sharding, lambda index: array[index])

  return jax.tree_util.tree_map(place, lazy, abstract_params)


def export_policy(params: Mapping[str, Any], config: ModelConfig, token_map: TokenMap,
                  directory: str, family: str = "llama", base_config: Mapping | None = None,
                  dtype=np.float32) -> None:
  """Writes config.json and model.safetensors for `transformers` (value head left out)."""
  if family not in FAMILIES:
    raise ValueError(f"export: family={family!r}; supported: {list(FAMILIES)}.")
  check_exportable(config, family)
  if family == "qwen2" and not config.attention_bias:
    raise ValueError("export: Qwen2 checkpoints have q/k/v biases; the model has none "
                     "(attention_bias=False): export as family='llama'.")
  fileio.makedirs(directory)
  hf = _hf_config(config, family, token_map, base_config)
  hf[TOKEN_MAP_KEY] = {"pad_id": int(token_map.to_hf[0])}
  write_safetensors(os.path.join(directory, WEIGHTS_NAME),
                    params_to_hf(params, config, token_map, dtype), {"format": "pt"})
  fileio.write_atomic(os.path.join(directory, CONFIG_NAME),
                      (json.dumps(hf, indent=2, sort_keys=True) + "\n").encode("utf-8"))
