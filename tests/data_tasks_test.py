"""Tests for the seqio tasks and the numpy pipeline (rest_jax.data.tasks / .pipeline)."""

import gzip
import importlib

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from rest_jax.data import ding_tfds
from rest_jax.data import pipeline
from rest_jax.data import tasks
from rest_jax.data import vocab as vocab_lib

BUILTIN_TFDS_TASKS = {  # task -> a split it has
    "wmt14_de_en": "test", "wmt19_de_en": "validation", "wmt19_zh_en": "validation",
    "ted_hrlr_pt_en": "test"}


@pytest.fixture(scope="module", autouse=True)
def ding_data_dir(tmp_path_factory):
  """Prepares ding_de_en into a temporary TFDS directory for this module only."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  seqio.set_tfds_data_dir_override(data_dir)
  tasks.register_ding_task(overwrite=True)  # A fresh source picks up the override.
  yield data_dir
  seqio.set_tfds_data_dir_override(None)
  tasks.register_ding_task(overwrite=True)


def shipped(split):
  with gzip.open(ding_tfds.shipped_split_path(split), "rt", encoding="utf-8") as f:
    return [tuple(line.rstrip("\n").split("\t")) for line in f]


# --- registration ---------------------------------------------------------------------------


def test_builtin_tasks_are_registered_and_reimport_is_harmless():
  expected = {"ding_de_en", "iwslt14_de_en", "wmt20_zh_en", *BUILTIN_TFDS_TASKS}
  assert expected <= set(tasks.registered_task_names())
  importlib.reload(tasks)
  importlib.reload(ding_tfds)
  assert expected <= set(tasks.registered_task_names())
  assert expected <= set(seqio.TaskRegistry.names())
  tasks.register_ding_task(overwrite=True)  # Back to a source bound to this module's data_dir.


def test_registration_errors_are_specific():
  with pytest.raises(ValueError, match="already registered.*overwrite=True"):
    tasks.register_tsv_task("ding_de_en", {"train": "/x.tsv"}, "byte")
  with pytest.raises(ValueError, match="must include a version"):
    tasks.register_tfds_translation_task("x_no_version", "wmt14_translate/de-en", "de", "en")
  with pytest.raises(ValueError, match="two different"):
    tasks.register_tfds_translation_task("x_same", "wmt14_translate/de-en:1.0.0", "de", "de")
  with pytest.raises(ValueError, match="split_to_filepattern"):
    tasks.register_tsv_task("x_empty", {}, "byte")


def test_unknown_task_lists_rest_jax_tasks():
  with pytest.raises(ValueError, match=r"unknown task 'nope'.*ding_de_en.*wmt14_de_en"):
    pipeline.load_examples("nope", "train")


# --- ding_de_en ----------------------------------------------------------------------------


def test_ding_task_yields_real_pairs_ending_in_eos():
  dataset = seqio.get_mixture_or_task("ding_de_en").get_dataset(
      sequence_length=None, split="validation", shuffle=False)
  examples = list(dataset.take(3).as_numpy_iterator())
  vocabulary = vocab_lib.get_vocabulary("ding")
  for example, (german, english) in zip(examples, shipped("validation")):
    assert example["inputs_pretokenized"].decode() == german
    assert example["targets_pretokenized"].decode() == english
    assert example["inputs"].dtype == np.int32 and example["inputs"][-1] == 1
    assert example["targets"][-1] == 1 and 1 not in example["targets"][:-1]
    assert vocabulary.decode(example["inputs"].tolist()) == german


def test_source_prefix_puts_its_tokens_before_every_source():
  """DataConfig.source_prefix (T5's task prefixes): the prefix's tokens, then the source's; the
  source text (what rewards and reports read) unchanged; one registration per prefix."""
  prefix = "Translate German to English: "
  name = tasks.with_source_prefix("ding_de_en", prefix)
  assert name.startswith("ding_de_en.prefix_") and name == tasks.with_source_prefix(
      "ding_de_en", prefix)
  assert tasks.with_source_prefix("ding_de_en", "") == "ding_de_en"
  vocabulary = vocab_lib.get_vocabulary("ding")
  plain = pipeline.load_examples("ding_de_en", "validation", max_examples=3)
  for example, original in zip(pipeline.load_examples(name, "validation", max_examples=3),
                               plain):
    assert (example.source, example.reference) == (original.source, original.reference)
    np.testing.assert_array_equal(example.inputs,
                                  vocabulary.encode(prefix) + list(original.inputs))
    # Tokenized apart, as SentencePiece tokenizes the joined text.
    assert list(example.inputs[:-1]) == vocabulary.encode(prefix + original.source)
  with pytest.raises(ValueError, match="unknown task 'nope'"):
    tasks.with_source_prefix("nope", prefix)


def test_load_examples_whole_split_matches_files():
  pairs = shipped("test")
  examples = pipeline.load_examples("ding_de_en", "test")
  assert len(examples) == len(pairs)
  vocabulary = pipeline.get_task_vocabulary("ding_de_en")
  for index in (0, 17, len(pairs) - 1):
    example = examples[index]
    assert example.source_id == index
    assert (example.source, example.reference) == pairs[index]
    assert example.inputs.dtype == np.int32 and example.inputs.ndim == 1
    np.testing.assert_array_equal(example.inputs, vocabulary.encode(pairs[index][0]) + [1])
    np.testing.assert_array_equal(example.targets, vocabulary.encode(pairs[index][1]) + [1])


def test_length_filter_drops_and_logs(caplog):
  everything = pipeline.load_examples("ding_de_en", "validation", max_examples=200)
  with caplog.at_level("WARNING"):
    short = pipeline.load_examples("ding_de_en", "validation", max_examples=200,
                                   max_source_len=10, max_target_len=12)
  expected = [e.source_id for e in everything if len(e.inputs) <= 10 and len(e.targets) <= 12]
  assert [e.source_id for e in short] == expected
  assert 0 < len(short) < 200
  assert any(f"dropped {200 - len(short)} of 200" in r.getMessage() for r in caplog.records)


def test_sharding_partitions_with_global_ids():
  everything = pipeline.load_examples("ding_de_en", "validation", max_examples=50)
  shards = [pipeline.load_examples("ding_de_en", "validation", max_examples=50,
                                   shard_index=i, num_shards=3) for i in range(3)]
  for index, shard in enumerate(shards):
    assert [e.source_id for e in shard] == list(range(index, 50, 3))
  merged = sorted((e for shard in shards for e in shard), key=lambda e: e.source_id)
  assert [(e.source_id, e.source) for e in merged] == [(e.source_id, e.source)
                                                       for e in everything]


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "dev"}, "split 'dev' does not exist"),
    ({"split": "train", "num_shards": 2, "shard_index": 2}, "shard_index=2"),
    ({"split": "train", "max_source_len": 0}, "max_source_len=0"),
])
def test_bad_selection_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    pipeline.load_examples("ding_de_en", **kwargs)


def test_pad_batch():
  batch = pipeline.pad_batch([np.array([5, 6, 1]), np.array([7, 1])], 4)
  assert batch.dtype == np.int32
  np.testing.assert_array_equal(batch, [[5, 6, 1, 0], [7, 1, 0, 0]])
  np.testing.assert_array_equal(pipeline.pad_batch([[3, 1]], 3, pad_id=9), [[3, 1, 9]])
  with pytest.raises(ValueError, match="sequence 1 has 3 tokens, more than length=2"):
    pipeline.pad_batch([np.array([1]), np.array([4, 5, 1])], 2)


# --- TFDS corpus tasks (mocked: nothing is downloaded) --------------------------------------


def test_tfds_corpus_tasks_need_a_vocabulary_only_when_used(monkeypatch):
  monkeypatch.delenv(vocab_lib.MT_VOCABULARY_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match=vocab_lib.MT_VOCABULARY_ENV):
    pipeline.load_examples("wmt14_de_en", "test")


@pytest.mark.parametrize("name", sorted(BUILTIN_TFDS_TASKS))
def test_builtin_tfds_tasks_with_mock_data(name):
  vocab_lib.set_default_mt_vocabulary("ding")
  try:
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
      split = BUILTIN_TFDS_TASKS[name]
      dataset = seqio.get_mixture_or_task(name).get_dataset(
          sequence_length=None, split=split, shuffle=False, try_in_mem_cache=False)
      for example in dataset.as_numpy_iterator():
        for feature in ("inputs", "targets"):
          assert example[feature].dtype == np.int32
          assert len(example[feature]) >= 1 and example[feature][-1] == 1
        assert example["inputs_pretokenized"] != example["targets_pretokenized"]
      examples = pipeline.load_examples(name, split, max_examples=3)
      assert [e.source_id for e in examples] == [0, 1, 2]
  finally:
    vocab_lib.set_default_mt_vocabulary(None)


def test_user_tfds_task_with_explicit_vocabulary():
  tasks.register_tfds_translation_task(
      "test_ted_ru_en", "ted_hrlr_translate/ru_to_en:1.0.0", "ru", "en", "byte",
      splits=("train", "validation", "test"), overwrite=True)
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    examples = pipeline.load_examples("test_ted_ru_en", "validation")
  byte = vocab_lib.get_vocabulary("byte")
  assert len(examples) == 2
  assert examples[0].inputs.tolist() == byte.encode(examples[0].source) + [1]


# --- TSV tasks -----------------------------------------------------------------------------


def write_lines(path, lines):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write("".join(lines).encode("utf-8"))


def test_tsv_task_reads_files_and_skips_bad_lines(tmp_path, caplog):
  write_lines(tmp_path / "train-0.tsv.gz", ["Guten Tag.\tGood day.\n", "kaputt\n"])
  write_lines(tmp_path / "train-1.tsv", ["Danke.\tThanks.\n"])
  write_lines(tmp_path / "dev.tsv", ["Ja.\tYes.\n"])
  tasks.register_tsv_task("test_tsv", {"train": str(tmp_path / "train-*"),
                                       "validation": str(tmp_path / "dev.tsv")}, "ding",
                          overwrite=True)
  with caplog.at_level("WARNING"):
    examples = pipeline.load_examples("test_tsv", "train")
  assert [(e.source_id, e.source, e.reference) for e in examples] == [
      (0, "Guten Tag.", "Good day."), (1, "Danke.", "Thanks.")]
  assert examples[1].targets.tolist() == vocab_lib.get_vocabulary("ding").encode("Thanks.") + [1]
  assert any("missing tab x1 (lines 2)" in r.getMessage() for r in caplog.records)
  assert [e.source for e in pipeline.load_examples("test_tsv", "validation")] == ["Ja."]


def test_strict_tsv_task_raises_with_line_number(tmp_path):
  write_lines(tmp_path / "train.tsv", ["Guten Tag.\tGood day.\n", "a\tb\tc\n"])
  tasks.register_tsv_task("test_tsv_strict", {"train": str(tmp_path / "train.tsv")}, "byte",
                          strict=True, overwrite=True)
  with pytest.raises(ValueError, match=r"train\.tsv, line 2: more than one tab"):
    pipeline.load_examples("test_tsv_strict", "train")


def test_tsv_task_paths_expand_at_use_time(tmp_path, monkeypatch):
  monkeypatch.setenv(tasks.TSV_DIR_ENV, str(tmp_path / "absent"))
  vocab_lib.set_default_mt_vocabulary("byte")
  try:
    with pytest.raises(FileNotFoundError, match=r"iwslt14_de_en.*absent/iwslt14_de_en/train"):
      pipeline.load_examples("iwslt14_de_en", "train")
    (tmp_path / "iwslt14_de_en").mkdir()
    write_lines(tmp_path / "iwslt14_de_en" / "test.tsv", ["Hallo.\tHello.\n"])
    monkeypatch.setenv(tasks.TSV_DIR_ENV, str(tmp_path))
    examples = pipeline.load_examples("iwslt14_de_en", "test")
    assert [(e.source, e.reference) for e in examples] == [("Hallo.", "Hello.")]
    write_lines(tmp_path / "iwslt14_de_en" / "test.tsv.gz", ["Hallo.\tHello.\n"])
    with pytest.raises(ValueError, match=r"test\.tsv and .*test\.tsv\.gz match"):
      pipeline.load_examples("iwslt14_de_en", "test")
  finally:
    vocab_lib.set_default_mt_vocabulary(None)
