"""TensorBoard after a kill: the resumed run's writer logs each (tag, step) once."""

import glob
import os

import pytest

from rest_jax import report


def _points(logdir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  points = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    try:
      for event in tf.compat.v1.train.summary_iterator(path):
        points += [(v.tag, event.step, float(tf.make_ndarray(v.tensor)))
                   for v in event.summary.value]
    except tf.errors.DataLossError:
      pass
  return points


def test_resumed_writer_skips_steps_already_logged_even_after_a_torn_record(tmp_path):
  logdir = str(tmp_path / "tb")
  with report.TensorBoardWriter(logdir) as writer:
    for step in range(1, 6):
      writer.scalar("train/loss", 10.0 - step, step)
  (path,) = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
  with open(path, "r+b") as f:  # A kill in the middle of writing step 5's record.
    f.truncate(os.path.getsize(path) - 5)
  assert [p[1] for p in _points(logdir)] == [1, 2, 3, 4]

  with report.TensorBoardWriter(logdir) as writer:  # Resumed from a checkpoint at step 2.
    for step in range(3, 9):
      writer.scalar("train/loss", 10.0 - step, step)
    writer.scalar("eval/validation/mean_reward", 1.5, 4)  # Another tag, same step: written.
  points = _points(logdir)
  assert sorted(p[1] for p in points if p[0] == "train/loss") == list(range(1, 9))
  assert all(value == pytest.approx(10.0 - step) for tag, step, value in points
             if tag == "train/loss")
  assert ("eval/validation/mean_reward", 4, 1.5) in points
