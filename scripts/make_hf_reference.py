"""Writes the tiny Hugging Face reference checkpoints the import/export tests compare against.

For each decoder-only family rest_jax imports (Llama, Qwen2, Gemma) it builds a tiny random model with
`transformers`, saves it (config.json + model.safetensors) under tests/data/hf_tiny/<family>/,
and stores what `transformers` computes on fixed token ids in expected.npz: the logits of every
position, and a greedy continuation of a prompt. The tests then need neither torch nor
transformers; rerun this script (with `pip install torch transformers`) to regenerate.

  python scripts/make_hf_reference.py [--out=tests/data/hf_tiny]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

VOCAB, EOS, PAD = 97, 5, 7  # Neither 0 nor 1: the import must permute them into place.


def build(family: str):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rms_norm_eps=1e-6, eos_token_id=EOS, pad_token_id=PAD, bos_token_id=None)
  torch.manual_seed({"llama": 0, "qwen2": 1, "gemma": 2}[family])
  if family == "llama":
    config = transformers.LlamaConfig(**common, tie_word_embeddings=False, rope_theta=500.0)
    model = transformers.LlamaForCausalLM(config)
  elif family == "gemma":  # head_dim 16 x 4 heads != hidden 32, as Gemma's 256 x 16 != 3072.
    config = transformers.GemmaConfig(**common, head_dim=16, tie_word_embeddings=True,
                                      hidden_act="gelu_pytorch_tanh")
    model = transformers.GemmaForCausalLM(config)
  else:
    config = transformers.Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1000.0)
    model = transformers.Qwen2ForCausalLM(config)
  with torch.no_grad():  # Random norms and biases too, so every tensor's mapping is checked.
    for name, param in model.named_parameters():
      if name.endswith("norm.weight") or name.endswith(".bias"):
        param.add_(0.3 * torch.randn_like(param))
  return model.float().eval()


def main():
  import torch  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                    "data", "hf_tiny"))
  rng = np.random.default_rng(0)
  parser.add_argument("--families", default="llama,qwen2,gemma")
  args = parser.parse_args()
  for family in args.families.split(","):
    model = build(family)
    directory = os.path.join(args.out, family)
    model.save_pretrained(directory, safe_serialization=True)
    os.remove(os.path.join(directory, "generation_config.json"))  # Not read by rest_jax.
    while True:  # rest_jax never emits the padding id (a trained model would not either): a
      # random model may, so draw prompts until its greedy continuations do not.
      ids = rng.integers(10, VOCAB, size=(2, 12))
      with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.numpy()
        prompt = torch.tensor(ids[:, :5])
        generated = model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=EOS,
                                   pad_token_id=PAD, attention_mask=torch.ones_like(prompt))
      finished = (generated[:, 5:] == EOS).cumsum(1) > 0
      if not ((generated[:, 5:] == PAD) & ~finished).any():
        break
    np.savez(os.path.join(directory, "expected.npz"), ids=ids, logits=logits.astype(np.float32),
             prompt=ids[:, :5], greedy=generated[:, 5:].numpy())
    print(f"{family}: {directory}")


if __name__ == "__main__":
  main()
