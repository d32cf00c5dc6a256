"""seqio Tasks for translation: the shipped Ding corpus, TFDS corpora and user TSV files.

Every task yields the same features, so the training loop, Grow and evaluation never care where
the text came from:

  inputs / targets                          int32 token ids, EOS-terminated, no padding
  inputs_pretokenized / targets_pretokenized  the raw source and reference text

Importing this module registers (importing it again, or reloading it, re-registers the same):

  ding_de_en       the German->English pairs shipped in rest_jax/data/ding, vocabulary "ding";
                   works offline and prepares its TFDS records on first use
  de_en            the larger shipped corpus in rest_jax/data/de_en (dictionary sentences and
                   terms, software messages; splits train, train_terms, validation, test_dict,
                   test_software), vocabulary "de_en"; offline like ding_de_en
  wmt14_de_en      TFDS wmt14_translate/de-en              (train / validation / test)
  wmt19_de_en      TFDS wmt19_translate/de-en              (train / validation)
  wmt19_zh_en      TFDS wmt19_translate/zh-en              (train / validation)
  ted_hrlr_pt_en   TFDS ted_hrlr_translate/pt_to_en        (TFDS has no German TED config)
  iwslt14_de_en    TSV files $REST_JAX_TSV_DIR/iwslt14_de_en/{train,validation,test}.tsv[.gz]
  wmt20_zh_en      TSV files $REST_JAX_TSV_DIR/wmt20_zh_en/{train,validation,test}.tsv[.gz]

The corpus tasks (all but ding_de_en) use the *default MT vocabulary* (see
rest_jax.data.vocab: REST_JAX_MT_VOCAB or `set_default_mt_vocabulary`), resolved when the task
is first used, so registering them never fails. REST_JAX_TSV_DIR defaults to ~/rest_jax_data and,
like any `$VAR` or `~` in a TSV file pattern, is expanded when the task is used. docs/data.md
shows how to prepare the IWSLT14 and WMT20 files and how to add tasks.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import seqio
import tensorflow as tf

from rest_jax import hf_checkpoints
from rest_jax.data import ding_tfds
from rest_jax.data import tsv
from rest_jax.data import vocab as vocab_lib

DING_TASK = "ding_de_en"
DE_EN_TASK = "de_en"
TSV_DIR_ENV = "REST_JAX_TSV_DIR"
DEFAULT_TSV_DIR = "~/rest_jax_data"
VocabularySpec = Union[str, seqio.Vocabulary, None]

# Names registered through this module, with a one-line description each.
_REST_TASKS: dict[str, str] = {}

# Prepares the `ding_de_en` TFDS records ahead of use, e.g. once before many hosts start.
ensure_ding_prepared = ding_tfds.ensure_ding_prepared


def registered_task_names() -> list[str]:
  """The rest_jax translation tasks currently registered with seqio."""
  return sorted(name for name in _REST_TASKS if name in seqio.TaskRegistry.names())


def _vocabulary(spec: VocabularySpec) -> seqio.Vocabulary:
  """Named vocabularies are built now; files are checked when the task is used."""
  if isinstance(spec, seqio.Vocabulary):
    return spec
  if spec is not None and (not isinstance(spec, str) or not spec):
    raise ValueError(f"vocabulary_spec {spec!r}: use None (the default MT vocabulary), "
                     f"{vocab_lib.ACCEPTED_SPECS}, or a seqio.Vocabulary")
  if spec in vocab_lib.NAMED_SPECS:
    return vocab_lib.get_vocabulary(spec)
  return vocab_lib.DeferredVocabulary(spec)


def _output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """Inputs tokenized with the vocabulary's source side (vocab.source_vocabulary), targets with
  the vocabulary."""
  return {
      "inputs": seqio.Feature(vocabulary=vocab_lib.source_vocabulary(vocabulary), add_eos=True,
                              required=True),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=True),
  }


def _translation_preprocessors(source_key: str, target_key: str) -> list:
  return [
      _rekey(source_key, target_key),
      seqio.preprocessors.tokenize,  # Keeps the text as *_pretokenized.
      seqio.preprocessors.append_eos_after_trim,
  ]


def _rekey(source_key: str, target_key: str):
  """Maps the source's text features to inputs/targets, dropping everything else."""

  def rekey(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda x: {"inputs": x[source_key], "targets": x[target_key]},
                       num_parallel_calls=tf.data.AUTOTUNE)
  return rekey


def _add_task(name: str, description: str, overwrite: bool, **task_kwargs) -> seqio.Task:
  if not name or not isinstance(name, str):
    raise ValueError(f"task name {name!r} must be a non-empty string")
  if name in seqio.TaskRegistry.names():
    if not overwrite:
      raise ValueError(f"task {name!r} is already registered; pass overwrite=True to replace it")
    seqio.TaskRegistry.remove(name)
  task = seqio.TaskRegistry.add(name, metric_fns=[], **task_kwargs)
  _REST_TASKS[name] = description
  return task


def with_vocabulary(task_name: str, spec: str) -> str:
  """The name of a copy of a registered task that tokenizes with the vocabulary `spec` (e.g.
  'hf=DIR', a pretrained checkpoint's tokenizer): same data source, preprocessors and splits,
  registered as '<task>.vocab_<label>' where the label is the spec's file or folder name (so a
  workdir resumed where the folder has another path keeps its task name)."""
  if task_name not in seqio.TaskRegistry.names():
    raise ValueError(f"unknown task {task_name!r}; registered rest_jax tasks: "
                     f"{', '.join(registered_task_names())}")
  vocabulary = vocab_lib.get_vocabulary(spec)  # A missing file fails here, before any reading.
  target = spec.removeprefix(hf_checkpoints.HF_PREFIX)
  label = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(os.path.normpath(target))) or "vocab"
  name = f"{task_name}.vocab_{label}"
  if (name in seqio.TaskRegistry.names() and vocab_lib.resolve_vocabulary(
      seqio.get_mixture_or_task(name).output_features["targets"].vocabulary) == vocabulary):
    return name
  task = seqio.get_mixture_or_task(task_name)
  _add_task(name, f"{_REST_TASKS.get(task_name, task_name)}, tokenized with {spec}", True,
            source=task.source, preprocessors=task.preprocessors,
            output_features=_output_features(vocabulary))
  return name


def with_source_prefix(task_name: str, prefix: str) -> str:
  """The name of a copy of a registered task whose `inputs` start with the tokens of `prefix`
  (e.g. T5's 'translate German to English: '), registered as '<task>.prefix_<sha256[:8]>'.

  The prefix is tokenized on its own and put before each tokenized source, so
  `inputs_pretokenized` (the source text that rewards, reports and sample files read) stays as
  it was; with SentencePiece this equals tokenizing the joined text when the prefix ends in a
  space or punctuation."""
  if not prefix:
    return task_name
  _check_task(task_name)
  vocabulary = seqio.get_mixture_or_task(task_name).output_features["inputs"].vocabulary
  return _with_prepended_ids(
      task_name, f"prefix_{hashlib.sha256(prefix.encode('utf-8')).hexdigest()[:8]}",
      list(vocabulary.encode(prefix)), f"sources after {prefix!r}")


def with_bos(task_name: str, bos_ids: Sequence[int]) -> str:
  """The name of a copy of a registered task whose `inputs` start with `bos_ids` (a pretrained
  decoder's beginning-of-sequence token, as its tokenizer adds it), '<task>.bos'."""
  if not bos_ids:
    return task_name
  _check_task(task_name)
  return _with_prepended_ids(task_name, "bos", list(bos_ids), f"sources after ids {bos_ids}")


def _check_task(task_name: str) -> None:
  if task_name not in seqio.TaskRegistry.names():
    raise ValueError(f"unknown task {task_name!r}; registered rest_jax tasks: "
                     f"{', '.join(registered_task_names())}")


def _with_prepended_ids(task_name: str, suffix: str, ids: Sequence[int], what: str) -> str:
  name = f"{task_name}.{suffix}"
  if name in seqio.TaskRegistry.names():
    return name
  task = seqio.get_mixture_or_task(task_name)
  preprocessors = list(task.preprocessors)
  if seqio.preprocessors.tokenize not in preprocessors:
    raise ValueError(f"task {task_name!r} does not tokenize with seqio.preprocessors.tokenize, "
                     f"so nothing can be put before its sources ({what}).")
  ids = tf.constant(list(ids), tf.int32)

  def prepend(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda x: dict(x, inputs=tf.concat([ids, x["inputs"]], axis=0)),
                       num_parallel_calls=tf.data.AUTOTUNE)

  preprocessors.insert(preprocessors.index(seqio.preprocessors.tokenize) + 1, prepend)
  _add_task(name, f"{_REST_TASKS.get(task_name, task_name)}, {what}", True,
            source=task.source, preprocessors=preprocessors,
            output_features=task.output_features)
  return name


class ShippedTfdsDataSource(seqio.TfdsDataSource):
  """The TFDS source of a corpus shipped in rest_jax/data; prepares it before anything reads it."""

  def __init__(self, builder_cls=ding_tfds.DingDeEn, prepare=None):
    super().__init__(tfds_name=f"{builder_cls.name}:{builder_cls.VERSION}",
                     splits=builder_cls.SPLITS, read_only=True)
    self._prepare_fn = prepare or (lambda data_dir: ding_tfds.ensure_prepared(builder_cls,
                                                                              data_dir))

  def _prepare(self) -> None:
    self._prepare_fn(self.tfds_dataset.data_dir)

  def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
    self._prepare()
    return super().get_dataset(split, shuffle, seed, shard_info, **kwargs)

  def num_input_examples(self, split: str) -> Optional[int]:
    self._prepare()
    return super().num_input_examples(split)

  def list_shards(self, split: str):
    self._prepare()
    return super().list_shards(split)


def register_ding_task(name: str = DING_TASK, vocabulary_spec: VocabularySpec = "ding", *,
                       overwrite: bool = False) -> seqio.Task:
  """The shipped Ding German->English corpus through its TFDS builder."""
  return _add_task(
      name, "Ding German->English sentences shipped with rest_jax (TFDS ding_de_en)", overwrite,
      source=ShippedTfdsDataSource(
          ding_tfds.DingDeEn, lambda data_dir: ding_tfds.ensure_ding_prepared(data_dir)),
      preprocessors=_translation_preprocessors("de", "en"),
      output_features=_output_features(_vocabulary(vocabulary_spec)))


def register_de_en_task(name: str = DE_EN_TASK, vocabulary_spec: VocabularySpec = "de_en", *,
                        overwrite: bool = False) -> seqio.Task:
  """The shipped `de_en` corpus (dictionary + software messages) through its TFDS builder."""
  return _add_task(
      name, "German->English dictionary and software messages shipped with rest_jax "
      "(TFDS de_en)", overwrite,
      source=ShippedTfdsDataSource(ding_tfds.DeEn),
      preprocessors=_translation_preprocessors("de", "en"),
      output_features=_output_features(_vocabulary(vocabulary_spec)))


def register_tfds_translation_task(name: str, tfds_name: str, source_lang: str,
                                   target_lang: str, vocabulary_spec: VocabularySpec = None, *,
                                   splits: Optional[Sequence[str]] = None,
                                   tfds_data_dir: Optional[str] = None,
                                   overwrite: bool = False) -> seqio.Task:
  """Registers a task over a TFDS translation dataset such as "wmt14_translate/de-en:1.0.0".

  `source_lang`/`target_lang` are the keys of the dataset's translation feature; `splits` names
  the dataset's splits (default: read from the prepared dataset's info, which needs the data
  present, so pass them when registering tasks for data that may not be there yet). The dataset is
  loaded by TFDS (`try_gcs=True`, so on Cloud TPU VMs prepared copies come from the public TFDS
  bucket); `tfds_data_dir` or `seqio.set_tfds_data_dir_override` choose the local cache.
  vocabulary_spec: see rest_jax.data.vocab; None means the default MT vocabulary.
  """
  if ":" not in tfds_name:
    raise ValueError(f"tfds_name {tfds_name!r} must include a version, e.g. "
                     "'wmt14_translate/de-en:1.0.0'")
  if not source_lang or not target_lang or source_lang == target_lang:
    raise ValueError(f"source_lang {source_lang!r} and target_lang {target_lang!r} must be two "
                     "different feature keys of the TFDS translation dataset")
  return _add_task(
      name, f"TFDS {tfds_name} {source_lang}->{target_lang}", overwrite,
      source=seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir,
                                  splits=tuple(splits) if splits else None),
      preprocessors=_translation_preprocessors(source_lang, target_lang),
      output_features=_output_features(_vocabulary(vocabulary_spec)))


def expand_file_pattern(pattern: str) -> str:
  """Expands $REST_JAX_TSV_DIR (default ~/rest_jax_data), other $VARs and ~ at use time."""
  tsv_dir = os.environ.get(TSV_DIR_ENV) or DEFAULT_TSV_DIR
  pattern = pattern.replace("${" + TSV_DIR_ENV + "}", tsv_dir).replace("$" + TSV_DIR_ENV,
                                                                         tsv_dir)
  return os.path.expanduser(os.path.expandvars(pattern))


def _tsv_dataset_fn(task_name: str, split_to_filepattern: Mapping[str, str], strict: bool):
  """A seqio dataset_fn streaming {'source', 'reference'} from the split's files."""

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    pattern = expand_file_pattern(split_to_filepattern[split])
    try:
      paths = tsv.expand_pattern(pattern)  # Missing files fail here, in Python, clearly.
    except FileNotFoundError:
      raise FileNotFoundError(
          f"task {task_name!r} split {split!r}: no file matches {pattern!r} (from "
          f"{split_to_filepattern[split]!r}; {TSV_DIR_ENV}={os.environ.get(TSV_DIR_ENV)!r}); "
          "expected source<TAB>reference files, see docs/data.md") from None
    doubled = [path for path in paths if path + ".gz" in paths]
    if doubled:
      raise ValueError(f"task {task_name!r} split {split!r}: both {doubled[0]} and "
                       f"{doubled[0]}.gz match {pattern!r}; keep one of them")
    return pair_dataset(paths, functools.partial(tsv.iter_tsv_pairs, strict=strict),
                        ("source", "reference"), shuffle_files, seed)

  return dataset_fn


def pair_dataset(paths: list[str], iter_pairs: Callable[[str], Iterable[tuple[str, str]]],
                 fields: tuple[str, str], shuffle_files: bool, seed: Optional[int]
                 ) -> tf.data.Dataset:
  """Streams the (text, text) pairs that `iter_pairs(path)` reads from each file, in file order
  (shuffled with `seed` when `shuffle_files`), as {fields[0]: ..., fields[1]: ...}."""
  paths = list(paths)
  if shuffle_files:
    random.Random(seed).shuffle(paths)

  def generate():
    for path in paths:
      yield from iter_pairs(path)

  return tf.data.Dataset.from_generator(
      generate, output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.string))
  ).map(lambda first, second: {fields[0]: first, fields[1]: second})


def register_tsv_task(name: str, split_to_filepattern: Mapping[str, str],
                      vocabulary_spec: VocabularySpec = None, strict: bool = False, *,
                      overwrite: bool = False) -> seqio.Task:
  """Registers a task over `source<TAB>reference` files (plain or .gz), one glob per split.

  Malformed lines are skipped and reported (strict=False) or raise (strict=True), see
  rest_jax.data.tsv. Patterns are expanded when the task is used, not here.
  vocabulary_spec: see rest_jax.data.vocab; None means the default MT vocabulary.
  """
  if not split_to_filepattern or not all(
      isinstance(split, str) and isinstance(pattern, str) and pattern
      for split, pattern in split_to_filepattern.items()):
    raise ValueError(f"split_to_filepattern {split_to_filepattern!r} must map split names to "
                     "non-empty file patterns, e.g. {'train': '/data/train.tsv.gz'}")
  patterns = dict(split_to_filepattern)
  return _add_task(
      name, f"TSV files {patterns}", overwrite,
      source=seqio.FunctionDataSource(
          dataset_fn=_tsv_dataset_fn(name, patterns, strict), splits=tuple(patterns)),
      preprocessors=_translation_preprocessors("source", "reference"),
      output_features=_output_features(_vocabulary(vocabulary_spec)))


def _tsv_split_patterns(corpus_dir: str) -> dict[str, str]:
  return {split: f"${{{TSV_DIR_ENV}}}/{corpus_dir}/{split}.tsv*"
          for split in ("train", "validation", "test")}


def _register_builtin_tasks() -> None:
  register_ding_task(overwrite=True)
  register_de_en_task(overwrite=True)
  with_test, without_test = ("train", "validation", "test"), ("train", "validation")
  for name, tfds_name, source_lang, splits in (
      ("wmt14_de_en", "wmt14_translate/de-en:1.0.0", "de", with_test),
      ("wmt19_de_en", "wmt19_translate/de-en:1.0.0", "de", without_test),
      ("wmt19_zh_en", "wmt19_translate/zh-en:1.0.0", "zh", without_test),
      ("ted_hrlr_pt_en", "ted_hrlr_translate/pt_to_en:1.0.0", "pt", with_test),
  ):
    register_tfds_translation_task(name, tfds_name, source_lang, "en", splits=splits,
                                   overwrite=True)
  register_tsv_task("iwslt14_de_en", _tsv_split_patterns("iwslt14_de_en"), overwrite=True)
  register_tsv_task("wmt20_zh_en", _tsv_split_patterns("wmt20_zh_en"), overwrite=True)


_register_builtin_tasks()
