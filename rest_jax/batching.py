"""Fixed-shape numpy batches from variable-length sequences.

Training batches are a pure function of (seed, step): batch k comes from epoch k // steps_per_epoch
of a per-epoch permutation seeded by (seed, epoch). A resumed run therefore continues with exactly
the batches an uninterrupted run would have seen, with no iterator state to checkpoint.
Evaluation batches cover every example once; the last batch is filled with weight-0 rows so the
compiled shapes never change.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from rest_jax.models.transformer import PAD_ID


def round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


@dataclasses.dataclass
class SequenceData:
  """Columns of (source, target) pairs plus the optional per-example training signals."""

  inputs: Sequence[np.ndarray]
  targets: Sequence[np.ndarray]
  rewards: np.ndarray | None = None  # [M] float32
  weights: np.ndarray | None = None  # [M] float32
  behaviour_logprobs: Sequence[np.ndarray] | None = None  # per target token
  ids: np.ndarray | None = None  # [M] int row ids, passed through as batch["ids"] (online RL)

  def __post_init__(self):
    n = len(self.inputs)
    if len(self.targets) != n:
      raise ValueError(f"SequenceData: {n} inputs but {len(self.targets)} targets.")
    for name in ("rewards", "weights", "behaviour_logprobs", "ids"):
      column = getattr(self, name)
      if column is not None and len(column) != n:
        raise ValueError(f"SequenceData.{name} has {len(column)} rows, expected {n}.")

  def __len__(self) -> int:
    return len(self.inputs)

  def max_lengths(self, multiple: int = 8) -> tuple[int, int]:
    """(source_len, target_len) covering every row, rounded up to `multiple`."""
    s = max((len(x) for x in self.inputs), default=1)
    t = max((len(x) for x in self.targets), default=1)
    return round_up(s, multiple), round_up(t, multiple)


def concat_inputs_targets(*parts: SequenceData) -> SequenceData:
  """The (source, target) pairs of `parts`, in order; the per-example signals are dropped (the
  parts need not all have them), so this is for losses that read tokens only."""
  return SequenceData(inputs=[x for part in parts for x in part.inputs],
                      targets=[y for part in parts for y in part.targets])


def pad_rows(rows: Sequence[np.ndarray], length: int, dtype=np.int32,
             pad_id: int = PAD_ID) -> np.ndarray:
  """Right-pads 1-D rows into a [len(rows), length] array; never truncates."""
  if length < 1:
    raise ValueError(f"length={length}: must be a positive integer")
  out = np.full((len(rows), length), pad_id, dtype)
  for i, row in enumerate(rows):
    row = np.asarray(row)
    if row.ndim != 1:
      raise ValueError(f"sequence {i} has shape {row.shape}; expected a 1-D array")
    if len(row) > length:
      raise ValueError(f"sequence {i} has {len(row)} tokens, more than length={length}; drop it "
                       "(load_examples' max_*_len) or raise the length")
    out[i, :len(row)] = row
  return out


def collate(data: SequenceData, indices: np.ndarray, source_len: int, target_len: int,
            valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Gathers rows `indices` into padded arrays; rows with valid=False get weight 0."""
  batch = {
      "inputs": pad_rows([data.inputs[i] for i in indices], source_len, np.int32),
      "targets": pad_rows([data.targets[i] for i in indices], target_len, np.int32),
  }
  weights = (np.ones(len(indices), np.float32) if data.weights is None
             else np.asarray(data.weights, np.float32)[indices])
  if valid is not None:
    weights = weights * valid.astype(np.float32)
  batch["weights"] = weights
  if data.rewards is not None:
    batch["rewards"] = np.asarray(data.rewards, np.float32)[indices]
  if data.behaviour_logprobs is not None:
    batch["behaviour_logprobs"] = pad_rows([data.behaviour_logprobs[i] for i in indices],
                                           target_len, np.float32)
  if data.ids is not None:
    batch["ids"] = np.asarray(data.ids, np.int32)[indices]
  return batch


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return max(1, num_examples // batch_size)


class BatchSchedule:
  """The training batch of every step, a pure function of (seed, step).

  Without buckets every batch is padded to (source_len, target_len). With `length_buckets`
  (e.g. (16, 32)), an example goes to the smallest bucket b >= max(source, target length) (the
  full lengths are the last bucket) and each batch comes from one bucket, padded to b: far less
  padding for short sentences, one compiled shape per bucket. Within an epoch, buckets are
  shuffled and cut into batches (remainders dropped) and the batch order is shuffled.
  """

  def __init__(self, data: SequenceData, batch_size: int, seed: int, source_len: int,
               target_len: int, length_buckets: Sequence[int] = ()):
    if len(data) == 0:
      raise ValueError("Cannot make training batches from an empty dataset.")
    self.data, self.batch_size, self.seed = data, batch_size, seed
    self.source_len, self.target_len = source_len, target_len
    limits = sorted({b for b in length_buckets if b < max(source_len, target_len)})
    self.shapes = [(min(b, source_len), min(b, target_len)) for b in limits]
    self.shapes.append((source_len, target_len))
    longest = np.array([max(len(x), len(y)) for x, y in zip(data.inputs, data.targets)])
    bucket_of = np.searchsorted(np.array(limits + [np.inf]), longest)
    self.members = [np.flatnonzero(bucket_of == i) for i in range(len(self.shapes))]
    self.steps_per_epoch = max(1, sum(len(m) // batch_size for m in self.members))
    self._epoch, self._plan = None, None

  def _epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng([self.seed, epoch])
    plan = []
    for bucket, members in enumerate(self.members):
      order = members[rng.permutation(len(members))]
      for k in range(len(order) // self.batch_size):
        plan.append((bucket, order[k * self.batch_size:(k + 1) * self.batch_size]))
    if not plan:  # Fewer examples than one batch: sample with wrap-around.
      everything = np.concatenate(self.members)
      plan = [(len(self.shapes) - 1, np.resize(everything[rng.permutation(len(everything))],
                                                self.batch_size))]
    return [plan[i] for i in rng.permutation(len(plan))]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    epoch, k = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._plan = epoch, self._epoch_plan(epoch)
    bucket, indices = self._plan[k % len(self._plan)]
    source_len, target_len = self.shapes[bucket]
    return collate(self.data, indices, source_len, target_len)


def train_batches(data: SequenceData, batch_size: int, seed: int, start_step: int,
                  num_steps: int, source_len: int, target_len: int
                  ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  schedule = BatchSchedule(data, batch_size, seed, source_len, target_len)
  for step in range(start_step, num_steps):
    yield step, schedule.batch(step)


def eval_batches(data: SequenceData, batch_size: int, source_len: int, target_len: int
                 ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
  """Yields (row indices, batch); padding rows repeat row 0 with weight 0."""
  n = len(data)
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    valid = np.ones(batch_size, bool)
    valid[len(idx):] = False
    padded = np.concatenate([idx, np.zeros(batch_size - len(idx), idx.dtype)])
    yield idx, collate(data, padded, source_len, target_len, valid=valid)
