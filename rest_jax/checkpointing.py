"""Orbax checkpoints of the policy state together with a small JSON of metadata.

Each checkpoint is one orbax step holding two items: "state" (the full `PolicyState`, restored
straight onto its shardings from an abstract state) and "meta" (JSON: the ReST loop position,
best-so-far values, the model config...). Orbax writes to a temporary directory and renames it
when complete, so a process killed mid-save never leaves a half checkpoint that restore would pick.

A committed checkpoint can still be damaged afterwards (a truncated or deleted file on a full or
flaky disk, a half-copied workdir). Restore tells the two failures apart, because they need
opposite reactions: a checkpoint whose saved tree (names, shapes) differs from the expected state
belongs to another configuration (`CheckpointError`: stop, nothing is wrong with the files); one
that matches but cannot be read is damaged (`UnreadableCheckpointError`), and the ReST loop sets
it aside (`<step>.unreadable`, kept for inspection) and resumes from the newest readable one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from rest_jax import fileio, sharding

UNREADABLE_SUFFIX = ".unreadable"


class CheckpointError(RuntimeError):
  pass


class UnreadableCheckpointError(CheckpointError):
  """Checkpoint `directory/step` exists and matches the expected state but cannot be read."""

  def __init__(self, directory: str, step: int, error: BaseException):
    self.directory, self.step, self.reason = directory, step, describe_error(error)
    super().__init__(f"Checkpoint {directory}/{step} is unreadable: {self.reason}")


def describe_error(error: BaseException, limit: int = 300) -> str:
  """One line for a log: the type and first line of the innermost cause (TensorStore's own
  message, e.g. "OUT_OF_RANGE: Error reading ... in local file ...") of `error`."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return text if len(text) <= limit else text[:limit - 3] + "..."


class Checkpointer:
  """Saves and restores (state, meta) pairs under `directory/<step>`."""

  def __init__(self, directory: str, max_to_keep: int | None = 3):
    self.directory = fileio.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves (state, meta) as `step`, replacing an existing checkpoint of that step (a resumed
    run may redo the last steps before a crash)."""
    if step in self._manager.all_steps():
      self._manager.delete(step)
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self._resolve(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  (any read failure: damaged files)
      raise UnreadableCheckpointError(self.directory, step, e) from e
    return restored["meta"]

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs).

    Raises CheckpointError when the checkpoint holds a differently shaped state, and
    UnreadableCheckpointError when it matches but its files cannot be read.
    """
    step = self._resolve(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  (TensorStore raises bare Exception)
      difference = self._tree_difference(step, abstract_state)
      if difference:
        raise CheckpointError(
            f"Checkpoint {self.directory}/{step} does not match the expected policy state "
            f"(model config, loss or optimizer differ?): {difference}; {describe_error(e)}") from e
      raise UnreadableCheckpointError(self.directory, step, e) from e
    return restored["state"], restored["meta"]

  def _tree_difference(self, step: int, abstract_state: Any) -> str | None:
    """How the saved tree differs from `abstract_state` (leaf names and shapes), or None when
    they agree or the saved tree's metadata cannot be read (then the files are damaged)."""
    manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "meta"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})
    try:
      saved = manager.item_metadata(step)["state"]
      saved = ocp.tree.to_flat_dict(getattr(saved, "tree", saved))
    except Exception:  # pylint: disable=broad-except
      return None
    finally:
      manager.close()
    saved = {k: tuple(v.shape) for k, v in saved.items() if hasattr(v, "shape")}
    expected = {k: tuple(v.shape) for k, v in ocp.tree.to_flat_dict(abstract_state).items()}
    if not saved:
      return None
    name = lambda key: "/".join(map(str, key))
    parts = []
    for label, keys in (("missing", expected.keys() - saved.keys()),
                        ("unexpected", saved.keys() - expected.keys())):
      if keys:
        parts.append(f"{label} {sorted(name(k) for k in keys)[:5]}")
    shapes = sorted(f"{name(k)} {saved[k]} != {expected[k]}"
                    for k in saved.keys() & expected.keys() if saved[k] != expected[k])
    if shapes:
      parts.append(f"saved shapes differ: {shapes[:5]}")
    return "; ".join(parts) or None

  def set_aside(self, step: int) -> str:
    """Moves checkpoint `step` out of the manager's view (to `<step>.unreadable`, or deletes it
    on a cloud path where directories cannot be renamed); returns where it went."""
    source = os.path.join(self.directory, str(step))
    if fileio.is_remote(source):
      self._manager.delete(step)
      return "(deleted)"
    target = source + UNREADABLE_SUFFIX
    if jax.process_index() == 0:
      if os.path.exists(target):
        shutil.rmtree(target)
      os.rename(source, target)
    sharding.barrier(f"checkpoint_set_aside_{step}")
    self._manager.reload()
    return target

  def _resolve(self, step: int | None) -> int:
    if step is None:
      step = self.latest_step()
    if step is None or step not in self._manager.all_steps():
      raise CheckpointError(f"No checkpoint {'' if step is None else step} in {self.directory}; "
                            f"available steps: {self.all_steps()}.")
    return step

  def close(self) -> None:
    self._manager.close()


def restore_params(directory: str, step: int, abstract_params: Any) -> Any:
  """Restores only the policy parameters of checkpoint `directory/step`, cast to and placed as
  `abstract_params` (ShapeDtypeStructs with shardings).

  Reads both layouts the package writes: a whole `PolicyState` (only `.params` is read, so the
  optimizer that trained it need not be known) and a bare params tree (exported policies).
  """
  manager = ocp.CheckpointManager(
      fileio.abspath(directory), item_names=("state", "meta"),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})
  try:
    saved = manager.item_metadata(step)["state"]
    saved_keys = set(getattr(saved, "tree", saved) or {})
    whole_state = {"params", "opt_state"} <= saved_keys
    item = {"params": abstract_params} if whole_state else abstract_params
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))["state"]
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{directory}/{step}: {e}") from e
  finally:
    manager.close()
  return restored["params"] if whole_state else restored


def config_to_json(config: Any) -> dict[str, Any]:
  return dataclasses.asdict(config)


def assert_same_structure(expected: Any, actual: Any, what: str) -> None:
  a, b = jax.tree_util.tree_structure(expected), jax.tree_util.tree_structure(actual)
  if a != b:
    raise CheckpointError(f"{what}: restored tree structure differs from the expected one.")
