"""Numpy examples for the ReST loop: the one place where seqio datasets become Python objects.

Grow samples N outputs per *source* and keys every grown record by `source_id`, so the loop needs
each source once, with a stable id, its raw text (for rewards and reports) and its token ids
(for the model). `load_examples` gives exactly that: a list of `Example`s read through the
registered seqio task with `shuffle=False`, so the order and the ids are the same on every
host and every run. Batching for device code is `pad_batch`.

Legend: B = batch size, L = padded length.

Selection is done in this order, so that all hosts agree on ids:
  1. the split's stream is numbered 0, 1, 2, ... (`source_id`);
  2. `max_examples` keeps ids < max_examples;
  3. `shard_index`/`num_shards` keeps ids with id % num_shards == shard_index;
  4. examples whose `inputs` (`targets`) are longer than `max_source_len` (`max_target_len`),
     EOS included, are dropped (never truncated) and the number dropped is logged.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

from absl import logging
import numpy as np
import seqio
import tensorflow as tf

from rest_jax import batching
from rest_jax.data import reasoning_tasks  # noqa: F401  (registers the `arith` task)
from rest_jax.data import tasks
from rest_jax.data import vocab as vocab_lib

_READ_BATCH_SIZE = 1024


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value.
class Example:
  source_id: int          # Index of the pair within its split (before any filtering).
  source: str
  reference: str
  inputs: np.ndarray      # int32 token ids of source, EOS-terminated, no padding.
  targets: np.ndarray     # int32 token ids of reference, EOS-terminated.


def get_task(task_name: str) -> seqio.Task:
  """The registered task; ValueError listing the rest_jax tasks if there is none."""
  if task_name not in seqio.TaskRegistry.names():
    raise ValueError(f"unknown task {task_name!r}; registered rest_jax tasks: "
                     f"{', '.join(tasks.registered_task_names())}")
  return seqio.get_mixture_or_task(task_name)


def get_task_vocabulary(task_name: str) -> seqio.Vocabulary:
  """The (concrete) vocabulary of the task's targets, shared with its inputs."""
  return vocab_lib.resolve_vocabulary(get_task(task_name).output_features["targets"].vocabulary)


def _check_selection(split, splits, max_examples, max_source_len, max_target_len, shard_index,
                     num_shards) -> None:
  if split not in splits:
    raise ValueError(f"split {split!r} does not exist; the task has {sorted(splits)}")
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index={shard_index}, num_shards={num_shards}: need num_shards >= 1 "
                     "and 0 <= shard_index < num_shards")
  for name, value in (("max_examples", max_examples), ("max_source_len", max_source_len),
                      ("max_target_len", max_target_len)):
    if value is not None and value < 1:
      raise ValueError(f"{name}={value}: must be None or a positive integer")


def load_examples(task_name: str, split: str, *, max_examples: Optional[int] = None,
                  max_source_len: Optional[int] = None, max_target_len: Optional[int] = None,
                  shard_index: int = 0, num_shards: int = 1) -> list[Example]:
  """Reads a split of a registered translation task as `Example`s (see module docstring)."""
  task = get_task(task_name)
  get_task_vocabulary(task_name)  # A missing vocabulary file fails here, before any reading.
  _check_selection(split, task.splits, max_examples, max_source_len, max_target_len,
                   shard_index, num_shards)
  dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False, seed=None,
                             use_cached=False, num_epochs=1, try_in_mem_cache=False)
  if max_examples is not None:
    dataset = dataset.take(max_examples)
  dataset = dataset.enumerate()
  if num_shards > 1:
    dataset = dataset.shard(num_shards, shard_index)

  examples, too_long = [], 0
  for batch in _reraise_source_errors(_padded_batches(dataset), task_name, split):
    for row in range(len(batch["source_id"])):
      inputs = batch["inputs"][row, :batch["inputs_length"][row]]
      targets = batch["targets"][row, :batch["targets_length"][row]]
      if ((max_source_len is not None and len(inputs) > max_source_len) or
          (max_target_len is not None and len(targets) > max_target_len)):
        too_long += 1
        continue
      examples.append(Example(
          source_id=int(batch["source_id"][row]),
          source=batch["inputs_pretokenized"][row].decode("utf-8"),
          reference=batch["targets_pretokenized"][row].decode("utf-8"),
          inputs=inputs.astype(np.int32),
          targets=targets.astype(np.int32)))
  if too_long:
    logging.warning("%s/%s shard %d/%d: dropped %d of %d examples longer than "
                    "max_source_len=%s or max_target_len=%s", task_name, split, shard_index,
                    num_shards, too_long, too_long + len(examples), max_source_len,
                    max_target_len)
  return examples


def _padded_batches(dataset: tf.data.Dataset, batch_size: int = _READ_BATCH_SIZE):
  """Numpy batches of (source_id, features); per-example Python iteration is far slower."""

  def flatten(source_id, x):
    return {
        "source_id": source_id,
        "inputs": x["inputs"], "inputs_length": tf.size(x["inputs"]),
        "targets": x["targets"], "targets_length": tf.size(x["targets"]),
        "inputs_pretokenized": x["inputs_pretokenized"],
        "targets_pretokenized": x["targets_pretokenized"],
    }

  dataset = dataset.map(flatten, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _reraise_source_errors(batches, task_name: str, split: str):
  """Gives Python errors raised inside tf.data back their type and message.

  TensorFlow reports an exception from a generator (e.g. a strict TSV task's ValueError) as an
  InvalidArgumentError whose message contains the original one.
  """
  try:
    yield from batches
  except tf.errors.InvalidArgumentError as e:
    match = re.search(r"\b(ValueError|FileNotFoundError|UnicodeDecodeError): ([^\n]*)", e.message)
    if match is None:
      raise
    error_type = FileNotFoundError if match.group(1) == "FileNotFoundError" else ValueError
    raise error_type(f"task {task_name!r} split {split!r}: {match.group(2)}") from e


def pad_batch(sequences: Sequence[np.ndarray], length: int, pad_id: int = 0) -> np.ndarray:
  """Right-pads token id sequences into an int32 [B, length] array; never truncates."""
  return batching.pad_rows(sequences, length, np.int32, pad_id)
