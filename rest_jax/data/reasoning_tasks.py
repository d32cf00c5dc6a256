"""seqio Tasks for prompt->completion reasoning data (ReST-EM on a decoder-only policy).

The features are the translation tasks' (rest_jax.data.tasks), so the loop, Grow and evaluation
run on them unchanged: `inputs` is the prompt, `targets` the completion or the bare answer, with
their `*_pretokenized` text. A decoder-only policy reads the prompt as its prefix.

Importing this module registers

  arith          the generated arithmetic-chain family (rest_jax.data.arithmetic), seed 0, byte
                 vocabulary; splits train (worked solutions), grow (answers only), validation,
                 test_l1 .. test_l4 (level 4 is out of distribution). Generated at load time.

and `register_arithmetic_task` / `register_jsonl_task` register more: another seed or size of
the generated family, or the user's JSONL files ({"prompt", "answer"} or {"prompt",
"completion"} per line, rest_jax.data.jsonl). The default vocabulary is "byte" (seqio's UTF-8
byte vocabulary, no file needed), which suits digits and short formulas; any spec of
rest_jax.data.vocab works.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping, Optional

import seqio
import tensorflow as tf

from rest_jax.data import arithmetic
from rest_jax.data import jsonl
from rest_jax.data import tasks
from rest_jax.data import tsv

ARITH_TASK = "arith"


@functools.lru_cache(maxsize=8)
def _arithmetic_texts(seed: int, sizes: tuple[tuple[str, int], ...]
                      ) -> dict[str, tuple[list[str], list[str]]]:
  """(prompts, targets) per split; generated once per (seed, sizes) in a process."""
  data = arithmetic.generate(seed, dict(sizes))
  return {split: ([p.prompt for p in problems],
                  [arithmetic.target_of(split, p) for p in problems])
          for split, problems in data.items()}


def register_arithmetic_task(name: str = ARITH_TASK, seed: int = 0,
                             sizes: Optional[Mapping[str, int]] = None,
                             vocabulary_spec: tasks.VocabularySpec = "byte", *,
                             overwrite: bool = False) -> seqio.Task:
  """The generated arithmetic-chain family for `seed`; `sizes` overrides split sizes
  (keys train, grow, validation, test) — checked here, generated on first use."""
  sizes = arithmetic.check_sizes(dict(sizes or {}))
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ValueError(f"register_arithmetic_task seed={seed!r} is invalid: expected an integer")
  key = tuple(sorted(sizes.items()))

  def dataset_fn(split: str, shuffle_files: bool, seed_: Optional[int] = None
                 ) -> tf.data.Dataset:
    del shuffle_files, seed_  # One in-memory "file"; the loop reads with shuffle=False.
    prompts, targets = _arithmetic_texts(seed, key)[split]
    return tf.data.Dataset.from_tensor_slices({"inputs": prompts, "targets": targets})

  return tasks._add_task(  # pylint: disable=protected-access
      name, f"generated arithmetic chains, seed {seed}, sizes {sizes}", overwrite,
      source=seqio.FunctionDataSource(dataset_fn=dataset_fn, splits=arithmetic.SPLITS),
      preprocessors=tasks._translation_preprocessors("inputs", "targets"),  # pylint: disable=protected-access
      output_features=tasks._output_features(tasks._vocabulary(vocabulary_spec)))  # pylint: disable=protected-access


def _jsonl_dataset_fn(task_name: str, split_to_filepattern: Mapping[str, str], strict: bool):
  """A seqio dataset_fn streaming {'prompt', 'target'} from the split's JSONL files."""

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    pattern = tasks.expand_file_pattern(split_to_filepattern[split])
    try:
      paths = tsv.expand_pattern(pattern)
    except FileNotFoundError:
      raise FileNotFoundError(
          f"task {task_name!r} split {split!r}: no file matches {pattern!r} (from "
          f"{split_to_filepattern[split]!r}); expected JSONL files, {jsonl.EXPECTED}") from None
    return tasks.pair_dataset(paths, functools.partial(jsonl.iter_jsonl_pairs, strict=strict),
                              ("prompt", "target"), shuffle_files, seed)

  return dataset_fn


def register_jsonl_task(name: str, split_to_filepattern: Mapping[str, str],
                        vocabulary_spec: tasks.VocabularySpec = "byte", strict: bool = False, *,
                        overwrite: bool = False) -> seqio.Task:
  """Registers a task over JSONL files (plain or .gz), one glob per split.

  Every split needs "validation" and "train" for the ReST loop; a split of answer-only lines
  (e.g. "grow") is what `DataConfig.grow_split` points Grow at. Malformed lines are skipped and
  reported (strict=False) or raise naming the file, line and field (strict=True). Patterns
  (with $VARs and ~) are expanded when the task is used.
  """
  if not split_to_filepattern or not all(
      isinstance(split, str) and split and isinstance(pattern, str) and pattern
      for split, pattern in split_to_filepattern.items()):
    raise ValueError(f"split_to_filepattern {split_to_filepattern!r} must map split names to "
                     "non-empty file patterns, e.g. {'train': '/data/train.jsonl'}")
  if not isinstance(strict, bool):
    raise ValueError(f"register_jsonl_task strict={strict!r} is invalid: expected True/False")
  patterns = {split: os.fspath(pattern) for split, pattern in split_to_filepattern.items()}
  return tasks._add_task(  # pylint: disable=protected-access
      name, f"JSONL files {patterns}", overwrite,
      source=seqio.FunctionDataSource(dataset_fn=_jsonl_dataset_fn(name, patterns, strict),
                                      splits=tuple(patterns)),
      preprocessors=tasks._translation_preprocessors("prompt", "target"),  # pylint: disable=protected-access
      output_features=tasks._output_features(tasks._vocabulary(vocabulary_spec)))  # pylint: disable=protected-access


register_arithmetic_task(overwrite=True)
