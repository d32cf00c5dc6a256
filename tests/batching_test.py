"""Training batches: deterministic in (seed, step), length buckets, evaluation padding."""

import numpy as np
import pytest

from rest_jax import batching


def _data(n=100, seed=0):
  rng = np.random.RandomState(seed)
  lengths = rng.randint(1, 30, size=n)
  inputs = [np.full(l, i + 3, np.int32) for i, l in enumerate(lengths)]
  targets = [np.full(max(1, l // 2), i + 3, np.int32) for i, l in enumerate(lengths)]
  return batching.SequenceData(inputs, targets, rewards=np.linspace(0, 1, n, dtype=np.float32))


def test_batches_are_a_pure_function_of_seed_and_step():
  data = _data()
  a = batching.BatchSchedule(data, 8, seed=3, source_len=32, target_len=32)
  b = batching.BatchSchedule(data, 8, seed=3, source_len=32, target_len=32)
  for step in [0, 5, 11, 40, 12]:  # Out of order, across epochs: same batches.
    for key in ("inputs", "targets", "rewards"):
      np.testing.assert_array_equal(a.batch(step)[key], b.batch(step)[key])
  c = batching.BatchSchedule(data, 8, seed=4, source_len=32, target_len=32)
  assert not np.array_equal(a.batch(0)["inputs"], c.batch(0)["inputs"])


def test_each_epoch_uses_each_example_at_most_once_and_buckets_fit():
  data = _data(200)
  schedule = batching.BatchSchedule(data, 8, seed=0, source_len=32, target_len=32,
                                    length_buckets=(8, 16))
  assert schedule.shapes == [(8, 8), (16, 16), (32, 32)]
  seen = []
  for step in range(schedule.steps_per_epoch):
    batch = schedule.batch(step)
    assert batch["inputs"].shape[1] in (8, 16, 32)
    assert batch["inputs"].shape[1] == batch["targets"].shape[1]
    ids = batch["inputs"][:, 0] - 3
    seen.extend(ids.tolist())
    # A batch only mixes examples of its own bucket.
    longest = [max(len(data.inputs[i]), len(data.targets[i])) for i in ids]
    width = batch["inputs"].shape[1]
    assert max(longest) <= width and (width == 8 or min(longest) > width // 2)
  assert len(seen) == len(set(seen))
  assert len(seen) >= 200 - 3 * 8  # At most one partial batch dropped per bucket.


def test_tiny_dataset_wraps_around():
  data = _data(3)
  batch = batching.BatchSchedule(data, 8, seed=0, source_len=32, target_len=32).batch(0)
  assert batch["inputs"].shape == (8, 32)


def test_eval_batches_pad_with_zero_weight_rows():
  data = _data(10)
  batches = list(batching.eval_batches(data, 4, 32, 32))
  assert [len(idx) for idx, _ in batches] == [4, 4, 2]
  np.testing.assert_array_equal(batches[-1][1]["weights"], [1, 1, 0, 0])


def test_pad_rows_never_truncates():
  with pytest.raises(ValueError, match="more than length=2"):
    batching.pad_rows([np.array([1, 2, 3])], 2)
