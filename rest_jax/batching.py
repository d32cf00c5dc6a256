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

  def __post_init__(self):
    n = len(self.inputs)
    if len(self.targets) != n:
      raise ValueError(f"SequenceData: {n} inputs but {len(self.targets)} targets.")
    for name in ("rewards", "weights", "behaviour_logprobs"):
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
  return batch


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return max(1, num_examples // batch_size)


def train_batch(data: SequenceData, batch_size: int, seed: int, step: int, source_len: int,
                target_len: int) -> dict[str, np.ndarray]:
  """The batch of training step `step` (deterministic in (seed, step); drops the remainder)."""
  if len(data) == 0:
    raise ValueError("Cannot make training batches from an empty dataset.")
  per_epoch = steps_per_epoch(len(data), batch_size)
  epoch, k = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(len(data))
  if len(data) < batch_size:  # Tiny datasets: sample with wrap-around.
    order = np.resize(order, batch_size)
  return collate(data, order[k * batch_size:(k + 1) * batch_size], source_len, target_len)


def train_batches(data: SequenceData, batch_size: int, seed: int, start_step: int,
                  num_steps: int, source_len: int, target_len: int
                  ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  for step in range(start_step, num_steps):
    yield step, train_batch(data, batch_size, seed, step, source_len, target_len)


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
