"""Checkpoint integrity: damaged files are told apart from a different configuration.

A truncated or deleted file of a committed checkpoint must raise UnreadableCheckpointError (the
loop then sets the checkpoint aside and resumes from an older one), while a checkpoint of a
differently shaped state must keep raising the plain CheckpointError that stops the run.
"""

import glob
import os

import jax
import numpy as np
import pytest

import toy_setup
from rest_jax import checkpointing


def _saved(tmp_path):
  mesh = toy_setup.mesh()
  factory, tx, state, _ = toy_setup.factory_and_state(toy_setup.toy_model(), mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, state, {"n": 1})
  ckpt.save(2, state, {"n": 2})
  abstract, _ = factory.abstract_state(tx)
  return ckpt, state, abstract


def _largest_data_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
           if os.path.isfile(f) and "/d/" in f]
  return max(files, key=os.path.getsize)


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _delete_meta(step_dir):
  for path in glob.glob(os.path.join(step_dir, "meta", "*")):
    os.remove(path)


@pytest.mark.parametrize("damage", [
    lambda d: _truncate(_largest_data_file(d)),
    lambda d: os.remove(_largest_data_file(d)),
    lambda d: _truncate(os.path.join(d, "state", "_METADATA")),
    _delete_meta,
], ids=["truncated_array_file", "deleted_array_file", "truncated_tree_metadata",
        "deleted_meta"])
def test_damaged_checkpoint_is_unreadable_and_can_be_set_aside(tmp_path, damage):
  ckpt, state, abstract = _saved(tmp_path)
  step_dir = os.path.join(ckpt.directory, "2")
  damage(step_dir)
  with pytest.raises(checkpointing.UnreadableCheckpointError) as info:
    ckpt.restore_meta(2)
    ckpt.restore(abstract, 2)
  assert info.value.step == 2 and info.value.directory == ckpt.directory
  assert "\n" not in info.value.reason and len(info.value.reason) <= 300
  assert ckpt.set_aside(2) == step_dir + ".unreadable"
  assert ckpt.all_steps() == [1] and os.path.isdir(step_dir + ".unreadable")
  restored, meta = ckpt.restore(abstract)  # The older one is intact.
  assert meta == {"n": 1}
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  ckpt.save(3, state, {"n": 3})  # The set-aside folder does not disturb later saves.
  assert ckpt.all_steps() == [1, 3]
  ckpt.close()


def test_a_different_state_is_a_mismatch_not_damage(tmp_path):
  ckpt, _, _ = _saved(tmp_path)
  other = toy_setup.factory_and_state(toy_setup.toy_model(d_model=64, num_heads=4),
                                      toy_setup.mesh())
  abstract, _ = other[0].abstract_state(other[1])
  with pytest.raises(checkpointing.CheckpointError, match="does not match.*saved shapes differ") \
      as info:
    ckpt.restore(abstract, 2)
  assert not isinstance(info.value, checkpointing.UnreadableCheckpointError)
  ckpt.close()
