"""The Hugging Face (PyTorch) peer of a rest_jax policy, for like-for-like speed comparisons.

`benchmark_sampling.py` measures our sampler against `transformers`' `generate` on the same
architecture. The peer is a randomly initialised `MarianMTModel`: an encoder-decoder Transformer
with sinusoidal positions, tied input/output embeddings and one shared vocabulary, i.e. the
paper's translation policy. It differs from ours only in ways that do not change the amount of
work per token (post- instead of pre-LayerNorm, biases in the linear layers, a logits bias).
Random weights are fine for timing: with EOS unreachable every row decodes the same number of
tokens whatever the weights.

Needs the `bench` extra (`pip install -e .[bench]`: torch and transformers, CPU wheels suffice).
"""

from __future__ import annotations

from typing import Any

from rest_jax.configs import ModelConfig, SamplingConfig
from rest_jax.models.transformer import EOS_ID, PAD_ID


def marian_config(config: ModelConfig):
  """A `MarianConfig` with the shape of `config` (an encoder-decoder ModelConfig)."""
  from transformers import MarianConfig  # pylint: disable=g-import-not-at-top

  if config.decoder_only:
    raise ValueError("ModelConfig.decoder_only=True has no Marian peer; the peer benchmark "
                     "compares encoder-decoder policies (decoder_only=False).")
  if config.head_dim is not None and config.head_dim * config.num_heads != config.d_model:
    raise ValueError(f"ModelConfig.head_dim={config.head_dim} with num_heads={config.num_heads} "
                     f"does not give d_model={config.d_model}; Marian needs "
                     "head_dim * num_heads == d_model.")
  return MarianConfig(
      vocab_size=config.vocab_size,
      d_model=config.d_model,
      encoder_layers=config.num_encoder_layers,
      decoder_layers=config.num_decoder_layers,
      encoder_attention_heads=config.num_heads,
      decoder_attention_heads=config.num_heads,
      encoder_ffn_dim=config.d_ff,
      decoder_ffn_dim=config.d_ff,
      activation_function=config.activation,
      max_position_embeddings=config.max_len,
      dropout=0.0,
      # Our token conventions: PAD=0 is also the decoder start token, EOS=1.
      pad_token_id=PAD_ID,
      decoder_start_token_id=PAD_ID,
      eos_token_id=EOS_ID,
      forced_eos_token_id=None,
      bos_token_id=None,
  )


def build_peer(config: ModelConfig, seed: int = 0):
  """A randomly initialised `MarianMTModel` in eval mode, float32, on the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import MarianMTModel  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  model = MarianMTModel(marian_config(config))
  return model.to(torch.float32).eval()


def generate_kwargs(config: SamplingConfig) -> dict[str, Any]:
  """`generate` arguments that draw what our sampler draws under `config`.

  Exactly `max_decode_len` new tokens (EOS is suppressed until then when `stop_at_eos` is False),
  the same temperature/top-k/top-p, PAD never sampled (our `process_logits` removes it), one
  sample per row (rows are repeated by the caller, as our sampler does with `num_samples`).
  """
  kwargs = dict(
      max_new_tokens=config.max_decode_len,
      num_beams=1,
      use_cache=True,
      suppress_tokens=[PAD_ID],
      pad_token_id=PAD_ID,
      eos_token_id=EOS_ID,
  )
  if config.temperature == 0:
    kwargs.update(do_sample=False)
  else:
    kwargs.update(do_sample=True, temperature=config.temperature, top_k=config.top_k,
                  top_p=config.top_p)
  if not config.stop_at_eos:
    kwargs.update(min_new_tokens=config.max_decode_len)
  return kwargs
