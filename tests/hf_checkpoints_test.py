"""Hugging Face decoder-only checkpoints (Llama, Qwen2): logit and greedy parity with the
reference `transformers` computed (tests/data/hf_tiny, made by scripts/make_hf_reference.py),
exact import -> export -> import, and clear errors."""

import json
import os
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest

import toy_setup
from rest_jax import hf_checkpoints as hf
from rest_jax import sampling
from rest_jax.configs import SamplingConfig
from rest_jax.models import Transformer

DATA = os.path.join(os.path.dirname(__file__), "data", "hf_tiny")
FAMILIES = ("llama", "qwen2", "gemma", "gemma2", "gemma3_text")
# (num_kv_heads, attention_bias, tie_embeddings, norm, embedding_scale, head_dim) per family.
EXPECTED_CONFIG = {"llama": (2, False, False, "rmsnorm", "none", 8),
                   "qwen2": (2, True, True, "rmsnorm", "none", 8),
                   "gemma": (2, False, True, "rmsnorm_offset", "sqrt_d_model", 16),
                   "gemma2": (2, False, True, "rmsnorm_offset", "sqrt_d_model", 16),
                   "gemma3_text": (2, False, True, "rmsnorm_offset", "sqrt_d_model", 16)}


def _imported(family):
  config, params, token_map = hf.import_policy(os.path.join(DATA, family))
  expected = dict(np.load(os.path.join(DATA, family, "expected.npz")))
  return config, params, token_map, expected


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers(family):
  config, params, token_map, expected = _imported(family)
  assert (config.num_kv_heads, config.attention_bias, config.tie_embeddings, config.norm,
          config.embedding_scale, config.resolved_head_dim) == EXPECTED_CONFIG[family]
  ids = token_map.encode(expected["ids"])
  # Teacher forcing from a one-token prompt: position j predicts token j + 1, as in transformers.
  logits = Transformer(config).apply({"params": params}, ids[:, :1], ids[:, 1:])
  reference = expected["logits"][:, :-1][..., token_map.to_hf]  # Columns in rest_jax's order.
  np.testing.assert_allclose(np.asarray(logits), reference, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_equals_transformers(family):
  config, params, token_map, expected = _imported(family)
  model = Transformer(config)
  mesh = toy_setup.mesh()
  shardings = jax.tree_util.tree_map(lambda _: jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()), params)
  sampler = sampling.make_sampler(model, SamplingConfig(max_decode_len=8, temperature=0.0),
                                  mesh, shardings)
  out = sampler(params, token_map.encode(expected["prompt"]), jax.random.PRNGKey(0))
  ours = np.asarray(out.tokens)[:, 0]
  theirs = token_map.encode(expected["greedy"])  # transformers pads after EOS with pad (-> 0).
  theirs = np.pad(theirs, [(0, 0), (0, ours.shape[1] - theirs.shape[1])])
  np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("family", FAMILIES)
def test_import_export_import_is_exact(family, tmp_path):
  config, params, token_map, _ = _imported(family)
  hf.export_policy(params, config, token_map, str(tmp_path), family=family)
  # The exported tensors are the checkpoint's, bit for bit (float32 reference).
  original = hf.read_weights(os.path.join(DATA, family))
  exported = hf.read_weights(str(tmp_path))
  assert sorted(exported) == sorted(original)
  for name, array in original.items():
    np.testing.assert_array_equal(exported[name], array, err_msg=name)
  config2, params2, token_map2 = hf.import_policy(str(tmp_path))
  assert config2 == config
  np.testing.assert_array_equal(token_map2.to_hf, token_map.to_hf)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert (saved["eos_token_id"], saved["pad_token_id"]) == (5, 7)


def test_token_map_moves_pad_and_eos_into_place():
  token_map = hf.TokenMap.for_ids(10, eos_id=0, pad_id=3)
  assert token_map.to_hf[0] == 3 and token_map.to_hf[1] == 0
  assert sorted(token_map.to_hf) == list(range(10))
  ids = np.arange(10)
  np.testing.assert_array_equal(token_map.decode(token_map.encode(ids)), ids)
  with pytest.raises(ValueError, match="the padding id and eos_token_id are both 4"):
    hf.TokenMap.for_ids(10, eos_id=4, pad_id=4)


def test_safetensors_round_trip_with_bfloat16(tmp_path):
  tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
             "b": np.linspace(-1, 1, 5).astype(ml_dtypes.bfloat16)}
  path = str(tmp_path / "x.safetensors")
  hf.write_safetensors(path, tensors, {"format": "pt"})
  back = hf.read_safetensors(path)
  assert back["b"].dtype == ml_dtypes.bfloat16
  for name, array in tensors.items():
    np.testing.assert_array_equal(back[name], array)


def test_errors_name_the_problem(tmp_path):
  directory = tmp_path / "ckpt"
  shutil.copytree(os.path.join(DATA, "llama"), directory)
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
  with pytest.raises(ValueError, match=r"model_type='gpt2' is not supported; supported: "
                                       r"\['llama', 'qwen2', 'gemma', 'gemma2', 'gemma3_text', "
                                       r"'marian', 't5'\]"):
    hf.import_policy(str(directory))
  (directory / "config.json").write_text(json.dumps(dict(config, intermediate_size=64)))
  with pytest.raises(ValueError, match=r"'model.layers.0.mlp.gate_proj.weight' has shape "
                                       r"\(48, 32\); the config needs \(64, 32\)"):
    hf.import_policy(str(directory))
  (directory / "config.json").write_text(json.dumps(dict(config, pad_token_id=None,
                                                         eos_token_id=5)))
  with pytest.raises(ValueError, match="pass pad_id="):
    hf.import_policy(str(directory))
  assert hf.import_policy(str(directory), pad_id=9)[2].to_hf[0] == 9
  os.remove(directory / "model.safetensors")
  with pytest.raises(FileNotFoundError, match="no model.safetensors"):
    hf.import_policy(str(directory))
  (directory / "config.json").write_text(json.dumps(dict(config, hidden_act="gelu")))
  with pytest.raises(ValueError, match=r"hidden_act='gelu'; supported for llama: \['silu'\]"):
    hf.model_config_from_hf(dict(config, hidden_act="gelu"))
  gemma, _, gemma_map = hf.import_policy(os.path.join(DATA, "gemma"))
  with pytest.raises(ValueError, match="family='llama' but the model is gemma-style"):
    hf.export_policy({}, gemma, gemma_map, str(tmp_path / "as_llama"), family="llama")
  gemma2 = hf.import_policy(os.path.join(DATA, "gemma2"))[0]
  assert (gemma2.sandwich_norm, gemma2.sliding_window, gemma2.sliding_window_layers,
          gemma2.attention_softcap, gemma2.logits_softcap, gemma2.query_pre_attn_scalar) == (
              True, 4, (0, 2), 2.0, 3.0, 24)
  with pytest.raises(ValueError, match="family='gemma' but the model is gemma2-style"):
    hf.export_policy({}, gemma2, gemma_map, str(tmp_path / "as_gemma"), family="gemma")
  gemma3 = hf.import_policy(os.path.join(DATA, "gemma3_text"))[0]
  assert (gemma3.qk_norm, gemma3.rope_theta, gemma3.rope_local_theta, gemma3.rope_scaling_factor,
          gemma3.sliding_window_layers) == (True, 10000.0, 100.0, 2.0, (0, 1))
  gemma3_json = json.loads(open(os.path.join(DATA, "gemma3_text", "config.json")).read())
  with pytest.raises(ValueError, match="use_bidirectional_attention=True is not supported"):
    hf.model_config_from_hf(dict(gemma3_json, use_bidirectional_attention=True))
  with pytest.raises(ValueError, match="rope scaling 'yarn' is not supported for gemma3_text"):
    hf.model_config_from_hf(dict(gemma3_json, rope_parameters={
        "full_attention": {"rope_type": "yarn", "factor": 4.0}}))
  # A Gemma (v1) config with a Gemma 2 option set is no Gemma: export refuses it.
  with pytest.raises(ValueError, match="not a Llama/Qwen2- or Gemma-style decoder"):
    hf.family_of(gemma.replace(logits_softcap=30.0))
  with pytest.raises(ValueError, match="not a Llama/Qwen2- or Gemma-style decoder"):
    hf.export_policy({}, toy_setup.toy_model(decoder_only=True).config, None, str(tmp_path))


# ------------------------------------------------------------ encoder-decoders: Marian, T5
MARIAN = os.path.join(DATA, "marian")
# (norm_position, positions, activation, mlp, embedding_scale, logits_bias, (pad, eos) ids).
EXPECTED_SEQ2SEQ = {"marian": ("post", "sinusoidal_marian", "silu", "plain", "sqrt_d_model", True,
                               "last", 0),
                    "t5": ("pre", "relative_t5", "gelu", "gated", "none", False, 0, 1)}


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_seq2seq_logits_equal_transformers(family):
  config, params, token_map, expected = _imported(family)
  norm_position, positions, act, mlp, scale, logits_bias, pad, eos = EXPECTED_SEQ2SEQ[family]
  assert (config.decoder_only, config.norm_position, config.positions, config.activation,
          config.mlp, config.embedding_scale, config.logits_bias) == (
              False, norm_position, positions, act, mlp, scale, logits_bias)
  pad = config.vocab_size - 1 if pad == "last" else pad
  assert (token_map.to_hf[0], token_map.to_hf[1]) == (pad, eos)
  # transformers was fed decoder inputs <pad> + targets[:-1]: rest_jax's teacher forcing.
  logits = Transformer(config).apply({"params": params}, token_map.encode(expected["ids"]),
                                     token_map.encode(expected["targets"]))
  reference = expected["logits"][..., token_map.to_hf]
  np.testing.assert_allclose(np.asarray(logits), reference, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_seq2seq_greedy_generation_equals_transformers(family):
  config, params, token_map, expected = _imported(family)
  mesh = toy_setup.mesh()
  shardings = jax.tree_util.tree_map(lambda _: jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()), params)
  sampler = sampling.make_sampler(Transformer(config), SamplingConfig(
      max_decode_len=expected["greedy"].shape[1], temperature=0.0), mesh, shardings)
  out = sampler(params, token_map.encode(expected["ids"]), jax.random.PRNGKey(0))
  theirs = token_map.encode(expected["greedy"])
  theirs = np.where(np.cumsum(theirs == 1, axis=1) - (theirs == 1) > 0, 0, theirs)  # After EOS.
  np.testing.assert_array_equal(np.asarray(out.tokens)[:, 0], theirs)


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_seq2seq_import_export_import_is_exact(family, tmp_path):
  config, params, token_map, _ = _imported(family)
  directory = os.path.join(DATA, family)
  base = json.loads(open(os.path.join(directory, "config.json"), encoding="utf-8").read())
  hf.export_policy(params, config, token_map, str(tmp_path), family=family, base_config=base)
  original, exported = hf.read_weights(directory), hf.read_weights(str(tmp_path))
  # A T5 whose output is tied but unscaled (flan-t5 as transformers 5 saves it) is written with
  # an lm_head equal to the embedding, so that transformers 4 reads it too.
  extra = {"lm_head.weight"} if family == "t5" else set()
  assert sorted(exported) == sorted(set(original) | extra)
  for name, array in original.items():
    np.testing.assert_array_equal(exported[name], array, err_msg=name)
  if extra:
    np.testing.assert_array_equal(exported["lm_head.weight"], original["shared.weight"])
  saved = json.loads((tmp_path / "config.json").read_text())
  keys = {"marian": ("activation_function", "scale_embedding", "decoder_ffn_dim"),
          "t5": ("feed_forward_proj", "relative_attention_num_buckets", "d_kv",
                 "scale_decoder_outputs")}[family]
  for key in keys + ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
    assert saved[key] == base[key], key
  config2, params2, token_map2 = hf.import_policy(str(tmp_path))
  assert config2 == config
  np.testing.assert_array_equal(token_map2.to_hf, token_map.to_hf)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)


def test_marian_position_tables_are_checked_when_present(tmp_path):
  """Older Marian checkpoints store the fixed sinusoid tables: accepted when they are the ones
  positions='sinusoidal_marian' computes, refused otherwise (learned positions)."""
  directory = tmp_path / "ckpt"
  shutil.copytree(MARIAN, directory)
  tensors = dict(hf.read_weights(str(directory)))
  table = hf.marian_position_table(64, 32)
  hf.write_safetensors(str(directory / "model.safetensors"), {
      **tensors, "model.encoder.embed_positions.weight": table,
      "model.decoder.embed_positions.weight": table})
  hf.import_policy(str(directory))
  hf.write_safetensors(str(directory / "model.safetensors"), {
      **tensors, "model.encoder.embed_positions.weight": table + 0.01})
  with pytest.raises(ValueError, match="learned positions are not supported"):
    hf.import_policy(str(directory))


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_seq2seq_tokenizer_matches_transformers(family):
  """Marian cuts sources with source.spm and targets with target.spm, both through vocab.json;
  T5 cuts both with spiece.model. Ids as MarianTokenizer / T5Tokenizer give them (made by
  scripts/make_hf_reference.py; they end with </s>, which seqio appends here); decoding drops
  the special tokens."""
  from rest_jax.data import hf_vocab, vocab as vocab_lib
  directory = os.path.join(DATA, family)
  texts = json.loads(open(os.path.join(directory, "texts.json"), encoding="utf-8").read())
  target = hf_vocab.HFTokenizerVocabulary(directory)
  source = vocab_lib.source_vocabulary(target)
  eos = int(target.token_map.to_hf[1])
  if family == "marian":
    assert (target.kind, target.side, source.side) == ("marian", "target", "source")
    assert source is target.source_vocabulary and source != target
    # The two models really differ: English cut by the German model is another id sequence.
    assert any(list(source.encode(t)) != list(target.encode(t)) for t in texts["target"])
  else:
    assert target.kind == "spiece.model" and source is target
    # DataConfig.source_prefix tokenizes T5's task prefix apart: the same ids as joined text.
    prefix = "translate German to English: "
    for text in texts["source"]:
      assert list(source.encode(prefix + text)) == (list(source.encode(prefix))
                                                    + list(source.encode(text)))
  for side, vocabulary in (("source", source), ("target", target)):
    for text, ids in zip(texts[side], texts[f"{side}_ids"]):
      assert ids[-1] == eos
      assert list(vocabulary.encode(text)) == list(target.token_map.encode(ids[:-1]))
  for ids, decoded in zip(texts["target_ids"], texts["decoded"]):
    assert target.decode(target.token_map.encode(ids).tolist()) == decoded
  assert target.vocab_size == json.loads(open(os.path.join(directory, "config.json")).read())[
      "vocab_size"]


def test_relative_position_buckets_match_t5s_definition():
  """Against a direct transcription of T5's rule: exact buckets for small offsets, logarithmic
  ones up to max_distance, the sign in the upper half when bidirectional."""
  import math
  from rest_jax.models.transformer import relative_position_buckets

  def reference(rel, bidirectional, n, max_distance):
    bucket = 0
    if bidirectional:
      n //= 2
      bucket += n if rel > 0 else 0
      rel = abs(rel)
    else:
      rel = -min(rel, 0)
    exact = n // 2
    if rel < exact:
      return bucket + rel
    return bucket + min(n - 1, exact + int(math.log(rel / exact) / math.log(max_distance / exact)
                                           * (n - exact)))

  rel = np.arange(-300, 301)[None, None, :]
  for bidirectional in (True, False):
    for n, max_distance in ((32, 128), (8, 12), (6, 7)):
      ours = np.asarray(relative_position_buckets(jax.numpy.asarray(rel), bidirectional, n,
                                                  max_distance))[0, 0]
      theirs = [reference(int(r), bidirectional, n, max_distance) for r in rel[0, 0]]
      np.testing.assert_array_equal(ours, theirs)


def test_seq2seq_config_errors():
  base = json.loads(open(os.path.join(MARIAN, "config.json"), encoding="utf-8").read())
  for change, message in [
      (dict(activation_function="tanh"), r"activation_function='tanh'; supported for marian"),
      (dict(share_encoder_decoder_embeddings=False), "separate encoder and decoder embeddings"),
      (dict(decoder_vocab_size=50), "a target vocabulary other than the source's"),
      (dict(decoder_attention_heads=2), "different encoder and decoder head counts"),
      (dict(decoder_start_token_id=3), "a decoder start token other than the padding token")]:
    with pytest.raises(ValueError, match=message):
      hf.model_config_from_hf(dict(base, **change))
  assert hf.model_config_from_hf(dict(base, activation_function="gelu")).activation == \
      "gelu_exact"
  config = hf.model_config_from_hf(base)
  with pytest.raises(ValueError, match="not Marian-style"):
    hf.family_of(config.replace(norm_position="pre"))
  t5 = json.loads(open(os.path.join(DATA, "t5", "config.json"), encoding="utf-8").read())
  with pytest.raises(ValueError, match=r"feed_forward_proj='gated-tanh'; supported for t5"):
    hf.model_config_from_hf(dict(t5, feed_forward_proj="gated-tanh"))
  t5_config = hf.import_policy(os.path.join(DATA, "t5"))[0]
  with pytest.raises(ValueError, match="not T5-style"):
    hf.family_of(t5_config.replace(attention_scale="rsqrt_head_dim"))
  # v1.0 (no scale_decoder_outputs, tie_word_embeddings unset): tied and scaled.
  v10 = {k: v for k, v in t5.items() if k not in ("scale_decoder_outputs",
                                                  "tie_word_embeddings")}
  assert (hf.model_config_from_hf(v10).tie_embeddings,
          hf.model_config_from_hf(v10).logits_scale) == (True, "rsqrt_d_model")


def test_import_from_a_remote_directory():
  """gs:// checkpoints (TensorFlow's ram:// stands in) import like local ones, tokenizer too."""
  import uuid
  import tensorflow as tf
  from rest_jax.data import hf_vocab
  remote = f"ram://hf_remote/{uuid.uuid4().hex}/t5"
  tf.io.gfile.makedirs(remote)
  for name in os.listdir(os.path.join(DATA, "t5")):
    tf.io.gfile.copy(os.path.join(DATA, "t5", name), f"{remote}/{name}")
  config, params, token_map = hf.import_policy(remote)
  local_config, local_params, _ = hf.import_policy(os.path.join(DATA, "t5"))
  assert config == local_config
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, local_params)
  assert hf.init_directory(f"hf={remote}") == remote
  vocab = hf_vocab.HFTokenizerVocabulary(remote)
  assert vocab.decode(vocab.encode("This is a house.")) == "This is a house."
