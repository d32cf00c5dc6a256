"""Transformer: shapes, logical axes, KV-cache decoding equals full recomputation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_setup
from rest_jax.models import Transformer, model_config, token_log_probs
from rest_jax.models.transformer import LayerNorm, rotary
from rest_jax.models.presets import PRESETS

AXES = {"vocab", "embed", "mlp", "heads", "kv"}
# Architecture variants of pretrained families (ModelConfig), each alone and all together.
LLAMA_STYLE = toy_setup.LLAMA_STYLE
VARIANTS = {"paper": {}, "rmsnorm": dict(norm="rmsnorm"), "rope": dict(positions="rope"),
            "swiglu": dict(mlp="gated", activation="silu"), "gqa": dict(num_kv_heads=1),
            "untied": dict(tie_embeddings=False, logits_scale="none"), "llama": LLAMA_STYLE,
            "qwen2": dict(LLAMA_STYLE, attention_bias=True),
            "gemma": dict(norm="rmsnorm_offset", positions="rope", mlp="gated",
                          activation="gelu", num_kv_heads=1, logits_scale="none",
                          embedding_scale="sqrt_d_model", head_dim=12),
            "post_norm": dict(norm_position="post"), "marian": toy_setup.MARIAN_STYLE,
            "t5": toy_setup.T5_STYLE,
            "gemma2": dict(norm="rmsnorm_offset", positions="rope", mlp="gated",
                           activation="gelu", num_kv_heads=1, logits_scale="none",
                           embedding_scale="sqrt_d_model", sandwich_norm=True,
                           query_pre_attn_scalar=24.0, attention_softcap=2.0,
                           logits_softcap=3.0, sliding_window=3, sliding_window_layers=(0,)),
            "gemma3": dict(norm="rmsnorm_offset", positions="rope", mlp="gated",
                           activation="gelu", num_kv_heads=1, logits_scale="none",
                           embedding_scale="sqrt_d_model", sandwich_norm=True, qk_norm=True,
                           sliding_window=3, sliding_window_layers=(0,), rope_local_theta=100.0,
                           rope_scaling_factor=2.0),
            "gelu_exact": dict(activation="gelu_exact", mlp_bias=True)}


def _init(model, src, tgt):
  boxed = model.init(jax.random.PRNGKey(0), src, tgt, return_values=model.config.value_head)
  return boxed["params"], nn.meta.unbox(boxed["params"])


@pytest.mark.parametrize("variant", ["paper", "llama", "marian", "t5"])
@pytest.mark.parametrize("decoder_only", [False, True])
def test_every_parameter_has_logical_axes(decoder_only, variant):
  model = toy_setup.toy_model(decoder_only=decoder_only, value_head=True, **VARIANTS[variant])
  src, tgt = toy_setup.reverse_task(2, 6)
  boxed, _ = _init(model, src, tgt)
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim
    assert set(leaf.names) - {None} <= AXES  # None: replicated (T5's bucket axis).


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("decoder_only", [False, True])
def test_kv_cache_decoding_equals_full_recompute(decoder_only, variant):
  model = toy_setup.toy_model(decoder_only=decoder_only, **VARIANTS[variant])
  src, tgt = toy_setup.reverse_task(3, 7, seed=1)
  _, params = _init(model, src, tgt)
  n = 2
  full_logits = np.repeat(np.asarray(model.apply({"params": params}, src, tgt)), n, axis=0)
  logits, cache = model.apply({"params": params}, src, n, tgt.shape[1],
                              method=Transformer.prefill)
  tgt_rows = np.repeat(tgt, n, axis=0)
  step_logits = [np.asarray(logits)]
  for t in range(1, tgt.shape[1]):
    logits, cache = model.apply({"params": params}, jnp.asarray(tgt_rows[:, t - 1]), cache,
                                method=Transformer.decode_step)
    step_logits.append(np.asarray(logits))
  cached = np.stack(step_logits, axis=1)
  np.testing.assert_allclose(cached, full_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "llama"])
def test_decoder_only_is_invariant_to_source_padding(variant):
  model = toy_setup.toy_model(decoder_only=True, **VARIANTS[variant])
  src, tgt = toy_setup.reverse_task(2, 5, seed=2)
  _, params = _init(model, src, tgt)
  padded = np.pad(src, [(0, 0), (0, 4)])
  a = model.apply({"params": params}, src, tgt)
  b = model.apply({"params": params}, padded, tgt)
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_encoder_ignores_padding_and_future_targets():
  model = toy_setup.toy_model()
  src, tgt = toy_setup.reverse_task(2, 6, seed=3)
  _, params = _init(model, src, tgt)
  base = np.asarray(model.apply({"params": params}, src, tgt))
  changed_tgt = tgt.copy()
  changed_tgt[:, -1] = 5  # Changing the last target token cannot affect earlier predictions.
  other = np.asarray(model.apply({"params": params}, np.pad(src, [(0, 0), (0, 3)]), changed_tgt))
  np.testing.assert_allclose(base[:, :-1], other[:, :-1], atol=1e-5)


def test_value_head_shapes_and_stop_gradient():
  model = toy_setup.toy_model(value_head=True)
  src, tgt = toy_setup.reverse_task(2, 6)
  _, params = _init(model, src, tgt)
  logits, values = model.apply({"params": params}, src, tgt, return_values=True)
  assert logits.shape == (2, 6, toy_setup.VOCAB) and values.shape == (2, 6)

  def value_sum(p):
    return model.apply({"params": p}, src, tgt, return_values=True)[1].sum()

  grads = jax.grad(value_sum)(params)
  assert float(jnp.abs(grads["decoder_0"]["mlp"]["wi"]).sum()) == 0.0
  assert float(jnp.abs(grads["value_out"]).sum()) > 0.0


def test_token_log_probs_normalised():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 7))
  total = sum(np.exp(token_log_probs(logits, jnp.full((2, 3), v))) for v in range(7))
  np.testing.assert_allclose(total, 1.0, atol=1e-5)


def test_paper_presets_have_paper_shapes():
  tiny = model_config("tiny", 32000)
  assert (tiny.d_model, tiny.d_ff, tiny.num_heads, tiny.num_encoder_layers,
          tiny.num_decoder_layers) == (512, 1024, 4, 6, 6)
  base = model_config("base", 32000)
  assert (base.d_model, base.d_ff, base.num_heads) == (512, 2048, 8)
  big = model_config("big", 32000)
  assert (big.d_model, big.d_ff, big.num_heads) == (1024, 8192, 16)
  assert {"toy", "tiny", "base", "big"} <= set(PRESETS)


@pytest.mark.parametrize("decoder_only", [False, True])
def test_grouped_query_attention_equals_multi_head_with_shared_heads(decoder_only):
  """G key/value heads serving H/G query heads each = H-head attention whose key/value heads
  are those G repeated (the layout of GQA checkpoints: query heads grouped consecutively)."""
  gqa = toy_setup.toy_model(decoder_only=decoder_only, num_kv_heads=2)
  mha = toy_setup.toy_model(decoder_only=decoder_only)
  src, tgt = toy_setup.reverse_task(2, 6, seed=4)
  _, params = _init(gqa, src, tgt)
  assert params["decoder_0"]["self_attention"]["key"].shape == (32, 2, 8)

  def widen(tree):
    if isinstance(tree, dict):
      return {k: (np.repeat(v, 2, axis=1) if k in ("key", "value") else widen(v))
              for k, v in tree.items()}
    return tree

  np.testing.assert_allclose(gqa.apply({"params": params}, src, tgt),
                             mha.apply({"params": widen(params)}, src, tgt), atol=1e-5)


def test_rotary_scores_depend_on_relative_position_only():
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 1, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 2, 1, 8))
  score = lambda pq, pk: float(jnp.sum(rotary(q, jnp.array([[pq]]), 10_000.0)
                                       * rotary(k, jnp.array([[pk]]), 10_000.0)))
  assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-5)
  assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)
  # Position 0 is the identity; the rotation keeps the norm.
  np.testing.assert_allclose(rotary(q, jnp.zeros((1, 1)), 10_000.0), q, atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(rotary(q, jnp.array([[7]]), 10_000.0), axis=-1),
                             jnp.linalg.norm(q, axis=-1), rtol=1e-5)


def test_rmsnorm_and_layernorm_formulas():
  x = np.random.default_rng(0).normal(size=(2, 3, 32)).astype(np.float32) + 0.5
  for norm in ("layernorm", "rmsnorm"):
    cfg = toy_setup.toy_model(norm=norm).config
    module = LayerNorm(cfg)
    params = module.init(jax.random.PRNGKey(0), x)
    centred = x - x.mean(-1, keepdims=True) if norm == "layernorm" else x
    expected = centred / np.sqrt(np.mean(centred ** 2, -1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(module.apply(params, x), expected, atol=1e-5)
  # Gemma's: the scale is an offset from 1 (starting at 0, so a fresh norm is plain RMSNorm).
  module = LayerNorm(toy_setup.toy_model(norm="rmsnorm_offset").config)
  params = module.init(jax.random.PRNGKey(0), x)
  assert not np.asarray(nn.meta.unbox(params)["params"]["scale"]).any()
  scale = np.linspace(-0.5, 0.5, 32).astype(np.float32)
  rms = np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(module.apply({"params": {"scale": scale}}, x),
                             x / rms * (1 + scale), atol=1e-5)


def test_variant_config_errors():
  for overrides, message in [
      (dict(num_kv_heads=3), r"ModelConfig.num_kv_heads=3 .*must divide num_heads=4"),
      (dict(norm="batchnorm"), r"ModelConfig.norm='batchnorm' .*allowed: \('layernorm', "
                               r"'rmsnorm', 'rmsnorm_offset'\)"),
      (dict(embedding_scale="sqrt"), r"ModelConfig.embedding_scale='sqrt' .*allowed: "
                                     r"\('none', 'sqrt_d_model'\)"),
      (dict(positions="alibi"), r"ModelConfig.positions='alibi' .*allowed"),
      (dict(mlp="moe"), r"ModelConfig.mlp='moe' .*allowed: \('plain', 'gated'\)"),
      (dict(positions="rope", head_dim=5), r"'rope' needs an even head dimension \(got 5\)"),
      (dict(logits_scale="sqrt"), r"ModelConfig.logits_scale='sqrt' .*allowed"),
      (dict(tie_embeddings="no"), r"ModelConfig.tie_embeddings='no' .*True or False"),
      (dict(norm_position="sandwich"), r"ModelConfig.norm_position='sandwich' .*allowed: "
                                       r"\('pre', 'post'\)"),
      (dict(norm="rmsnorm", norm_bias=True), r"ModelConfig.norm_bias=True .*needs "
                                             r"norm='layernorm'"),
      (dict(mlp_bias=1), r"ModelConfig.mlp_bias=1 .*True or False"),
      (dict(attention_scale="sqrt"), r"ModelConfig.attention_scale='sqrt' .*allowed: "
                                     r"\('rsqrt_head_dim', 'none'\)"),
      (dict(positions="relative_t5", relative_buckets=5), r"ModelConfig.relative_buckets=5 "
                                                          r".*an even number >= 4"),
      (dict(logits_softcap=-1.0), r"ModelConfig.logits_softcap=-1.0 .*None or a positive"),
      (dict(sliding_window=4, sliding_window_layers=(0, 5)),
       r"ModelConfig.sliding_window_layers=\(0, 5\) .*decoder layer indices in \[0, 2\)"),
      (dict(sliding_window_layers=(0,)), r"ModelConfig.sliding_window=None .*positive integer")]:
    with pytest.raises(ValueError, match=message):
      model_config("toy", 16, **overrides)
