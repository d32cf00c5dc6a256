"""Shared toy-sized building blocks for the tests (imported after conftest set 8 CPU devices)."""

import jax
import numpy as np

from rest_jax import optim, sharding, train_state
from rest_jax.configs import MeshConfig, OptimizerConfig
from rest_jax.models import Transformer, model_config

VOCAB = 32
# Architecture variants of pretrained families (ModelConfig overrides of the toy preset).
# Llama/Qwen-style decoders: RMSNorm, rotary positions, SwiGLU, grouped-query attention, untied
# output. Marian (opus-mt) encoder-decoders: post-LayerNorm with biases, Marian's sinusoids,
# biases on every projection and on the logits, swish, scaled embeddings, tied output.
LLAMA_STYLE = dict(norm="rmsnorm", positions="rope", mlp="gated", activation="silu",
                   num_kv_heads=2, tie_embeddings=False, logits_scale="none")
MARIAN_STYLE = dict(norm_position="post", norm_bias=True, positions="sinusoidal_marian",
                    attention_bias=True, attention_out_bias=True, mlp_bias=True,
                    logits_bias=True, logits_scale="none", activation="silu",
                    embedding_scale="sqrt_d_model", layer_norm_epsilon=1e-5)
# T5 (flan-t5): pre-RMSNorm, relative position buckets (few, so toy lengths reach the
# logarithmic ones), no query scaling, gated GELU, untied and unscaled output.
T5_STYLE = dict(norm="rmsnorm", positions="relative_t5", relative_buckets=8,
                relative_max_distance=12, attention_scale="none", mlp="gated", activation="gelu",
                tie_embeddings=False, logits_scale="none")


def toy_model(decoder_only=False, value_head=False, vocab=VOCAB, **overrides):
  return Transformer(model_config("toy", vocab, decoder_only=decoder_only, value_head=value_head,
                                  **overrides))


def mesh(data=1, fsdp=1, model=1):
  devices = jax.devices()[: data * fsdp * model]
  return sharding.make_mesh(MeshConfig(data=data, fsdp=fsdp, model=model), devices)


def factory_and_state(model, mesh_, seed=0, opt=None):
  factory = train_state.StateFactory(model, mesh_)
  tx = optim.make_optimizer(opt or OptimizerConfig(learning_rate=3e-3, warmup_steps=10))
  state, shardings = factory.create(jax.random.PRNGKey(seed), tx)
  return factory, tx, state, shardings


def random_sources(batch, length, seed=0, vocab=VOCAB):
  """Right-padded EOS-terminated sources of varying lengths."""
  rng = np.random.RandomState(seed)
  out = np.zeros((batch, length), np.int32)
  for i in range(batch):
    n = rng.randint(2, length)
    out[i, : n - 1] = rng.randint(3, vocab, size=n - 1)
    out[i, n - 1] = 1
  return out


def reverse_task(num, length, seed=0, vocab=VOCAB):
  """(inputs, targets): targets are the source tokens reversed, then EOS."""
  src = random_sources(num, length, seed, vocab)
  tgt = np.zeros_like(src)
  for i, row in enumerate(src):
    n = int((row != 0).sum()) - 1
    tgt[i, :n] = row[:n][::-1]
    tgt[i, n] = 1
  return src, tgt
