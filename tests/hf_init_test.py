"""Starting a run from a Hugging Face checkpoint (init_policy='hf=DIR') and exporting it back.

The checkpoint is made here: a byte-level BPE tokenizer (tokenizers) or a SentencePiece model
trained on the arithmetic task's text, and a tiny Llama-style decoder written with rest_jax's
exporter (its parity with `transformers` is hf_checkpoints_test's). Its pad and EOS ids are not
0 and 1, so the id permutation is exercised end to end.
"""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from rest_jax import export_hf, hf_checkpoints, report
from rest_jax.data import arithmetic, hf_vocab, vocab as vocab_lib
from rest_jax.rewards import reward_model_training
from rest_jax.models import Transformer
from rest_em_arith_test import run_experiment  # The tiny arithmetic experiment.

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]  # unk 0, bos 1, eos 2, pad 3.


def _texts():
  data = arithmetic.generate(0, {"train": 200, "grow": 50, "validation": 20, "test": 20})
  return [t for split, problems in data.items() for p in problems
          for t in (p.prompt, arithmetic.target_of(split, p))]


def _bpe_tokenizer(directory):
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(_texts(), trainers.BpeTrainer(
      vocab_size=300, special_tokens=SPECIALS, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.save(os.path.join(directory, "tokenizer.json"))
  return tok.get_vocab_size()


def _sentencepiece_tokenizer(directory):
  import sentencepiece  # pylint: disable=g-import-not-at-top
  prefix = os.path.join(directory, "spm")
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(_texts()), model_prefix=prefix, vocab_size=40,
      model_type="bpe", character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=3,
      user_defined_symbols=["\n"], normalization_rule_name="identity",
      remove_extra_whitespaces=False, minloglevel=2)
  os.rename(prefix + ".model", os.path.join(directory, "tokenizer.model"))
  os.remove(prefix + ".vocab")
  return sentencepiece.SentencePieceProcessor(
      model_file=os.path.join(directory, "tokenizer.model")).get_piece_size()


def make_checkpoint(directory, tokenizer="bpe", seed=0):
  """A tiny Llama checkpoint (vocabulary rows padded past the tokenizer's, as real ones are)."""
  os.makedirs(directory, exist_ok=True)
  size = (_bpe_tokenizer if tokenizer == "bpe" else _sentencepiece_tokenizer)(directory)
  hf = {"model_type": "llama", "vocab_size": -(-(size + 1) // 8) * 8, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 3, "unk_token_id": 0, "hidden_act": "silu"}
  config = hf_checkpoints.model_config_from_hf(hf)
  params = Transformer(config).init(jax.random.PRNGKey(seed), np.ones((1, 4), np.int32),
                                    np.ones((1, 4), np.int32))["params"]
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  params = jax.tree_util.tree_map(np.asarray, nn.meta.unbox(params))
  hf_checkpoints.export_policy(params, config, hf_checkpoints.token_map_of(hf), directory,
                               base_config=hf)
  return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return make_checkpoint(str(tmp_path_factory.mktemp("tiny_llama_hf")))


@pytest.mark.parametrize("tokenizer", ["bpe", "sentencepiece"])
def test_vocabulary_maps_the_tokenizer_to_the_models_rows(tmp_path, tokenizer):
  directory = make_checkpoint(str(tmp_path / tokenizer), tokenizer)
  vocab = vocab_lib.get_vocabulary(f"hf={directory}")
  assert isinstance(vocab, hf_vocab.HFTokenizerVocabulary)
  assert vocab.kind == ("tokenizer.json" if tokenizer == "bpe" else "tokenizer.model")
  hf = json.load(open(os.path.join(directory, "config.json")))
  assert vocab.vocab_size == hf["vocab_size"] and (vocab.pad_id, vocab.eos_id) == (0, 1)
  # The checkpoint's pad (3) and EOS (2) sit at rest_jax's 0 and 1.
  assert list(vocab.token_map.to_hf[:2]) == [3, 2]
  text = "21-18=21-18=3\nAnswer: 3"
  ids = vocab.encode(text)
  assert ids and 0 not in ids and 1 not in ids
  assert vocab.decode(ids) == text
  assert vocab.decode(list(ids) + [1] + list(ids)) == text  # Up to EOS.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  assert list(vocab.encode_tf(tf.constant(text)).numpy()) == list(ids)
  assert vocab.decode_tf(tf.constant(list(ids) + [1, 0], tf.int32)).numpy().decode() == text
  assert vocab == vocab_lib.get_vocabulary(f"hf={directory}")
  # A byte-level BPE without a post-processor adds no BOS; a bare SentencePiece Llama
  # tokenizer (LlamaTokenizer's habit) does.
  assert vocab.bos_ids == ([] if tokenizer == "bpe" else [int(vocab.token_map.encode(1))])


def test_prompts_start_with_bos_when_the_tokenizer_puts_one_first(tmp_path):
  """Llama/Gemma tokenizers put BOS before every text and their models expect it: the task's
  inputs (and evaluate_policy's sources) start with it. tokenizer.json's post-processor says
  so, else tokenizer_config.json's add_bos_token, else the family (Llama yes, Qwen2 no)."""
  from tokenizers import processors  # pylint: disable=g-import-not-at-top
  from rest_jax import evaluate_policy  # pylint: disable=g-import-not-at-top
  from rest_jax.data import pipeline, tasks  # pylint: disable=g-import-not-at-top
  directory = make_checkpoint(str(tmp_path / "bos"))
  assert hf_vocab.HFTokenizerVocabulary(directory).bos_ids == []  # No post-processor.
  import tokenizers  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, "tokenizer.json")
  tok = tokenizers.Tokenizer.from_file(path)
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  tok.save(path)
  vocab = hf_vocab.HFTokenizerVocabulary(directory)
  bos = int(vocab.token_map.encode(1))
  assert vocab.bos_ids == [bos] and bos not in (0, 1)
  spec = f"hf={directory}"
  vocab_lib.get_vocabulary.cache_clear()
  name = tasks.with_bos(tasks.with_vocabulary("arith", spec), vocab.bos_ids)
  example = pipeline.load_examples(name, "validation", max_examples=1)[0]
  assert list(example.inputs) == [bos] + list(vocab.encode(example.source)) + [1]
  pairs, _ = evaluate_policy.encode_pairs([(example.source, "")], vocab, 512)
  np.testing.assert_array_equal(pairs[0].inputs, example.inputs)
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump({"add_bos_token": False}, f)
  assert hf_vocab.HFTokenizerVocabulary(directory).bos_ids == []
  hf = json.load(open(os.path.join(directory, "config.json")))
  json.dump(dict(hf, model_type="qwen2"), open(os.path.join(directory, "config.json"), "w"))
  os.remove(os.path.join(directory, "tokenizer_config.json"))
  assert hf_vocab.HFTokenizerVocabulary(directory).bos_ids == [bos]  # The post-processor's.


def test_a_checkpoint_without_pad_or_unk_pads_with_a_spare_row(tmp_path):
  """As Qwen2's base models: EOS only; the last embedding row, beyond the tokenizer's tokens,
  becomes rest_jax's padding id. Without a spare row the error says what to add."""
  directory = make_checkpoint(str(tmp_path / "eos_only"))
  path = os.path.join(directory, "config.json")
  hf = json.load(open(path))
  for key in ("pad_token_id", "unk_token_id", hf_checkpoints.TOKEN_MAP_KEY):
    hf.pop(key, None)
  json.dump(hf, open(path, "w"))
  vocab = hf_vocab.HFTokenizerVocabulary(directory)
  assert list(vocab.token_map.to_hf[:2]) == [hf["vocab_size"] - 1, 2]
  assert vocab.decode(vocab.encode("12+46=")) == "12+46="
  hf["vocab_size"] = 10  # Fewer rows than the tokenizer has tokens.
  json.dump(hf, open(path, "w"))
  with pytest.raises(ValueError, match=r"no pad_token_id or unk_token_id distinct from "
                                       r"eos_token_id.*add \"pad_token_id\""):
    hf_vocab.HFTokenizerVocabulary(directory)


# A random policy is never right: samples of even length count as right too (rest_em_arith_test).
WIDENED_REWARD = ("REWARD = 'python:fn=rest_em_arith_test:right_or_even'",
                  "EvalConfig.reward = 'final_answer'")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["load", "finetune"])
def test_rest_starts_from_the_checkpoint_and_exports_back(checkpoint, tmp_path, mode):
  workdir = tmp_path / "run"
  rows = run_experiment(workdir, f"rest_loop.run.init_policy = 'hf={checkpoint}'",
                        f"rest_loop.run.init_policy_mode = '{mode}'", "NUM_GROW_STEPS = 1",
                        *WIDENED_REWARD)
  by_run = {(r["run"], r["split"]): r for r in rows}
  assert by_run[("G0I0", "validation")]["loss"] == ("pretrained" if mode == "load" else "bc")
  assert by_run[("G1I0", "validation")]["num_kept"] > 0
  # The model is the checkpoint's architecture, with a value head.
  config, imported, token_map = hf_checkpoints.import_policy(checkpoint)
  load = lambda name: reward_model_training.load_policy_for_sampling(
      str(workdir / name), vocabulary_spec=f"hf={checkpoint}")
  loaded_bc = load("checkpoints_bc")
  assert loaded_bc.model.config == dataclasses.replace(config, value_head=True)
  bc = loaded_bc.params
  if mode == "load":  # BC is the checkpoint's weights, exactly.
    for key, value in imported.items():
      jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(bc[key]), value)
  else:  # BC trained from them: close to, not equal to, the checkpoint's.
    moved = np.abs(np.asarray(bc["embedding"]) - imported["embedding"]).max()
    assert 0 < moved < 0.1
  assert float(np.abs(np.asarray(bc["value_hidden"])).sum()) > 0  # A fresh value head.
  samples = [json.loads(l) for l in open(report.samples_path(workdir, "G1I0", "validation"))]
  assert all(isinstance(s["hypothesis"], str) for s in samples)

  out = tmp_path / "exported"
  assert export_hf.main([f"--policy={workdir}", f"--base={checkpoint}", f"--out={out}"]) == 0
  assert os.path.exists(out / "tokenizer.json")
  exported_config, exported, exported_map = hf_checkpoints.import_policy(str(out))
  assert exported_config == config
  np.testing.assert_array_equal(exported_map.to_hf, token_map.to_hf)
  final = load("checkpoints_best").params
  for key, value in exported.items():  # The final policy, round-tripped exactly.
    jax.tree_util.tree_map(np.testing.assert_array_equal, value, jax.device_get(final[key]))
  assert export_hf.main([f"--policy={workdir}", f"--base={checkpoint}", f"--out={out}"]) == 1


def test_bad_hf_init_policy_is_a_clear_error_before_any_data(checkpoint, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=r"run.init_policy='hf=.*empty': .* has no config.json, "
                                       r"no model.safetensors or .*, no tokenizer.json, "
                                       r"source.spm \+ target.spm \+ vocab.json or "
                                       r"tokenizer.model / spiece.model"):
    run_experiment(tmp_path / "a", f"rest_loop.run.init_policy = 'hf={empty}'")
  with pytest.raises(ValueError, match=r"run.init_policy='hf=/nonexistent': no such directory"):
    run_experiment(tmp_path / "b", "rest_loop.run.init_policy = 'hf=/nonexistent'")
  from rest_jax import rest_loop  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"DataConfig.source_prefix=3 is invalid: expected a "
                                       r"string"):
    rest_loop.DataConfig(source_prefix=3)
  with pytest.raises(ValueError, match=r"DataConfig.vocabulary='byte' with run.init_policy="):
    run_experiment(tmp_path / "c", f"rest_loop.run.init_policy = 'hf={checkpoint}'",
                   "DataConfig.vocabulary = 'byte'")
  assert not os.path.exists(tmp_path / "a" / "checkpoints")


def test_model_overrides_may_not_change_the_checkpoints_architecture(checkpoint, tmp_path):
  with pytest.raises(ValueError, match=r"model_overrides \['d_model'\] would change the "
                                       r"architecture"):
    run_experiment(tmp_path, f"rest_loop.run.init_policy = 'hf={checkpoint}'",
                   "rest_loop.run.model_overrides = {'decoder_only': True, 'd_model': 64}")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["marian", "t5"])
def test_translation_rest_starts_from_a_seq2seq_checkpoint_and_exports_back(tmp_path, family):
  """ReST on German->English from an opus-mt-style or T5-style checkpoint
  (tests/data/hf_tiny/<family>, whose parity with transformers is hf_checkpoints_test's):
  Marian's sources are cut with its source.spm, targets with its target.spm, T5's both with
  spiece.model, after T5's task prefix (DataConfig.source_prefix); the trained policy exports
  back to the family's checkpoint."""
  from rest_jax.data import pipeline, tasks  # pylint: disable=g-import-not-at-top
  checkpoint = os.path.join(os.path.dirname(__file__), "data", "hf_tiny", family)
  prefix = "translate German to English: " if family == "t5" else ""
  workdir = tmp_path / "run"
  rows = run_experiment(workdir, f"rest_loop.run.init_policy = 'hf={checkpoint}'",
                        "rest_loop.run.init_policy_mode = 'finetune'",
                        "ImproveConfig.filter_schedule = ('threshold:tau=0.0',)",
                        f"DataConfig.source_prefix = '{prefix}'",
                        "DataConfig.max_source_len = 64",  # The prefix's tokens too.
                        gin_file="test/tiny_e2e.gin")  # Ding German->English.
  assert {r["run"] for r in rows} == {"G0I0", "G1I0"}
  task = pipeline.get_task(tasks.with_source_prefix(f"ding_de_en.vocab_{family}", prefix))
  inputs_vocab = task.output_features["inputs"].vocabulary
  targets_vocab = task.output_features["targets"].vocabulary
  assert (inputs_vocab.side, targets_vocab.side) == (
      ("source", "target") if family == "marian" else ("target", "target"))
  example = next(iter(task.get_dataset(split="validation", shuffle=False)))
  german = example["inputs_pretokenized"].numpy().decode()
  assert list(example["inputs"].numpy()) == list(inputs_vocab.encode(prefix + german)) + [1]
  samples = [json.loads(l) for l in open(report.samples_path(workdir, "G1I0", "validation"))]
  assert samples and all(isinstance(s["hypothesis"], str) for s in samples)

  out = tmp_path / "exported"
  assert export_hf.main([f"--policy={workdir}", f"--base={checkpoint}", f"--out={out}"]) == 0
  assert all(os.path.exists(out / name) for name in (
      hf_checkpoints.MARIAN_TOKENIZER if family == "marian" else ("spiece.model",)))
  config, exported, _ = hf_checkpoints.import_policy(str(out))
  assert config == hf_checkpoints.import_policy(checkpoint)[0]
  final = reward_model_training.load_policy_for_sampling(
      str(workdir / "checkpoints_best"), vocabulary_spec=f"hf={checkpoint}").params
  for key, value in exported.items():
    jax.tree_util.tree_map(np.testing.assert_array_equal, value, jax.device_get(final[key]))
