"""Writes the tiny Hugging Face reference checkpoints the import/export tests compare against.

For each family rest_jax imports (the decoders Llama, Qwen2, Gemma, Gemma 2; the encoder-decoders
Marian and T5) it builds a tiny random model with `transformers`, saves it (config.json +
model.safetensors) under tests/data/hf_tiny/<family>/, and stores what `transformers` computes
on fixed token ids in expected.npz: the logits of every position, and a greedy continuation of
a prompt (encoder-decoders: of a source). Marian and T5 also get a tiny tokenizer trained on the
shipped Ding German/English sentences (Marian: source.spm, target.spm and vocab.json joining
their pieces; T5: spiece.model) and the ids and texts their transformers tokenizer gives for a
few sentences. Each family's files depend only on the family (the first three share one
generator, in their order; later families have their own). The tests then need neither torch nor
transformers; rerun this script (with `pip install torch transformers`) to regenerate.

  python scripts/make_hf_reference.py [--out=tests/data/hf_tiny]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os

import numpy as np

VOCAB, EOS, PAD = 97, 5, 7  # Neither 0 nor 1: the import must permute them into place.


def build(family: str):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rms_norm_eps=1e-6, eos_token_id=EOS, pad_token_id=PAD, bos_token_id=None)
  torch.manual_seed({"llama": 0, "qwen2": 1, "gemma": 2, "gemma2": 4, "gemma3_text": 5}[family])
  if family == "llama":
    config = transformers.LlamaConfig(**common, tie_word_embeddings=False, rope_theta=500.0)
    model = transformers.LlamaForCausalLM(config)
  elif family == "gemma2":  # Small soft caps, a 4-token window on layers 0 and 2 and a query
    # scalar that is not head_dim, so that every Gemma 2 option changes the logits here.
    config = transformers.Gemma2Config(
        **dict(common, num_hidden_layers=3), head_dim=16, tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24,
        attn_logit_softcapping=2.0, final_logit_softcapping=3.0, sliding_window=4)
    model = transformers.Gemma2ForCausalLM(config)
  elif family == "gemma3_text":  # Query/key norms, local rotary base 100 on the two sliding
    # layers, linear scaling x2 on the full one.
    config = transformers.Gemma3TextConfig(
        **dict(common, num_hidden_layers=3), head_dim=16, tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24, sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "rope_theta": 10000.0,
                                            "factor": 2.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})
    model = transformers.Gemma3ForCausalLM(config)
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
      if family.startswith("gemma") and family != "gemma" and (
          "q_proj" in name or "k_proj" in name or "q_norm" in name or "k_norm" in name):
        param.mul_(8.0)  # Attention logits beyond the soft cap, so the cap matters.
  return model.float().eval()


SEQ2SEQ_TEXTS = {  # (German sources, English targets) the tokenizer test encodes and decodes.
    "source": ["Das ist ein Haus.", "Er brach sein Wort, obwohl er es versprochen hatte!",
               "Zeigt die Größe eines Segments (in MB)."],
    "target": ["This is a house.", "He broke his word, although he had promised it!",
               "Shows the size of a segment (in MB)."]}


def _marian_tokenizer(directory: str) -> int:
  """source.spm/target.spm (unigram, 100 pieces, from the Ding sentences) and vocab.json
  (</s> 0, <unk> 1, the pieces of both, <pad> last) in `directory`; returns the vocab size."""
  import sentencepiece  # pylint: disable=g-import-not-at-top
  pairs = _ding_pairs()
  pieces = []
  for side, column in (("source", 0), ("target", 1)):
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(p[column] for p in pairs), model_writer=model, vocab_size=100,
        model_type="unigram", character_coverage=1.0, num_threads=1, minloglevel=2,
        normalization_rule_name="identity")  # No 240 kB NFKC table in the test data.
    with open(os.path.join(directory, f"{side}.spm"), "wb") as f:
      f.write(model.getvalue())
    sp = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    pieces += [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
  specials = ("</s>", "<unk>", "<s>", "<pad>")
  ordered = ["</s>", "<unk>"] + sorted(set(pieces) - set(specials)) + ["<pad>"]
  with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump({piece: i for i, piece in enumerate(ordered)}, f, ensure_ascii=False, indent=1)
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"source_lang": "de", "target_lang": "en", "tokenizer_class": "MarianTokenizer"},
              f)
  return len(ordered)


def _t5_tokenizer(directory: str) -> int:
  """spiece.model (unigram, 120 pieces from the German and English Ding sentences; T5's ids:
  <pad> 0, </s> 1, <unk> 2) in `directory`; returns its size."""
  import sentencepiece  # pylint: disable=g-import-not-at-top
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter([t for p in _ding_pairs() for t in p]), model_writer=model,
      vocab_size=120, model_type="unigram", character_coverage=1.0, num_threads=1,
      minloglevel=2, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      normalization_rule_name="identity")
  with open(os.path.join(directory, "spiece.model"), "wb") as f:
    f.write(model.getvalue())
  return 120


def _ding_pairs():
  ding = os.path.join(os.path.dirname(__file__), "..", "rest_jax", "data", "ding",
                      "train.tsv.gz")
  with gzip.open(ding, "rt", encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f][:3000]


def _seq2seq_model(family: str, vocab: int, seed: int):
  """A tiny random MarianMTModel or T5ForConditionalGeneration (float32, eval mode)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  if family == "marian":
    model = transformers.MarianMTModel(transformers.MarianConfig(
        vocab_size=vocab, decoder_vocab_size=vocab, d_model=32, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=48, decoder_ffn_dim=48, activation_function="swish",
        max_position_embeddings=64, scale_embedding=True, pad_token_id=vocab - 1,
        eos_token_id=0, decoder_start_token_id=vocab - 1, forced_eos_token_id=0,
        init_std=0.15))  # Larger than the default 0.02: peaked attention, distinct logits.
    cross, shared = "encoder_attn.q_proj encoder_attn.k_proj", model.model.shared
  else:  # flan-t5 style: gated GELU, no output scaling; 8 buckets up to distance 12, so the
    # sequences below reach the logarithmic buckets.
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=12,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0))
    cross, shared = "EncDecAttention.q EncDecAttention.k", model.shared
  with torch.no_grad():  # Random norms, biases and logits bias: every mapping is checked.
    for name, param in model.named_parameters():
      if "layer_norm" in name or name.endswith(".bias"):
        param.add_(0.3 * torch.randn_like(param))
      if "relative_attention_bias" in name:
        param.normal_(0.0, 1.0)
    if family == "marian":
      model.final_logits_bias.add_(0.05 * torch.randn_like(model.final_logits_bias))
    # Tied embeddings carried by the residual stream make a random decoder copy its last
    # token forever; smaller embeddings let the layers decide.
    shared.weight.mul_(0.2)
    for name, param in model.named_parameters():  # Peaked cross-attention: sources differ.
      if any(part + "." in name for part in cross.split()):
        param.mul_(3.0)
  return model.float().eval()


def build_seq2seq(family: str, directory: str, rng):
  """A tiny random Marian or T5 model with its tokenizer in `directory`, and its reference
  outputs: logits under teacher forcing, a greedy translation, and the tokenizer's ids."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  if family == "marian":
    vocab = _marian_tokenizer(directory)
    tokenizer = transformers.MarianTokenizer.from_pretrained(directory)
    pad, eos = vocab - 1, 0
  else:
    vocab = _t5_tokenizer(directory)
    tokenizer = transformers.T5Tokenizer.from_pretrained(directory, extra_ids=0)
    pad, eos = 0, 1
  # A random model's greedy output is often one token repeated: draw seeds and sources until it
  # varies (>= 3 distinct tokens per row, rows differ) and never emits <pad> (rest_jax never
  # samples it).
  for seed in range(3, 200):
    model = _seq2seq_model(family, vocab, seed)
    ids = rng.integers(3, vocab - 1, size=(2, 9))
    ids[:, -1] = eos  # Sources end with </s>, as the tokenizer writes them.
    targets = rng.integers(3, vocab - 1, size=(2, 7))
    with torch.no_grad():
      decoder_inputs = np.concatenate([np.full((2, 1), pad), targets[:, :-1]], axis=1)
      logits = model(input_ids=torch.tensor(ids),
                     decoder_input_ids=torch.tensor(decoder_inputs)).logits.numpy()
      generated = model.generate(torch.tensor(ids), max_new_tokens=8, do_sample=False,
                                 num_beams=1, eos_token_id=eos, pad_token_id=pad,
                                 decoder_start_token_id=pad, forced_eos_token_id=None,
                                 attention_mask=torch.ones(ids.shape, dtype=torch.long))
    generated = generated[:, 1:].numpy()  # Without the start token.
    finished = np.cumsum(generated == eos, axis=1) > 0
    if (not ((generated == pad) & ~finished).any()
        and min(len(set(row)) for row in generated.tolist()) >= 3
        and (generated[0] != generated[1]).any()):  # The source matters.
      break
  model.save_pretrained(directory, safe_serialization=True)
  os.remove(os.path.join(directory, "generation_config.json"))
  source = tokenizer(SEQ2SEQ_TEXTS["source"], padding=True, return_tensors="pt")
  target = tokenizer(text_target=SEQ2SEQ_TEXTS["target"], padding=True, return_tensors="pt")
  unpad = lambda rows: [[i for i in row if i != pad] for row in rows.tolist()]
  with open(os.path.join(directory, "texts.json"), "w", encoding="utf-8") as f:
    json.dump({
        **SEQ2SEQ_TEXTS, "source_ids": unpad(source["input_ids"]),
        "target_ids": unpad(target["input_ids"]),
        "decoded": tokenizer.batch_decode(target["input_ids"], skip_special_tokens=True)},
        f, ensure_ascii=False, indent=1)
  np.savez(os.path.join(directory, "expected.npz"), ids=ids, targets=targets,
           logits=logits.astype(np.float32), greedy=generated)


def main():
  import torch  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                    "data", "hf_tiny"))
  rng = np.random.default_rng(0)
  parser.add_argument("--families", default="llama,qwen2,gemma,gemma2,gemma3_text,marian,t5")
  args = parser.parse_args()
  for family in args.families.split(","):
    if family in ("marian", "t5"):
      build_seq2seq(family, os.path.join(args.out, family), np.random.default_rng(3))
      print(f"{family}: {os.path.join(args.out, family)}")
      continue
    model = build(family)
    directory = os.path.join(args.out, family)
    family_rng = rng if family in ("llama", "qwen2", "gemma") else np.random.default_rng(
        {"gemma2": 4, "gemma3_text": 5}[family])
    model.save_pretrained(directory, safe_serialization=True)
    os.remove(os.path.join(directory, "generation_config.json"))  # Not read by rest_jax.
    while True:  # rest_jax never emits the padding id (a trained model would not either): a
      # random model may, so draw prompts until its greedy continuations do not.
      ids = family_rng.integers(10, VOCAB, size=(2, 12))
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
