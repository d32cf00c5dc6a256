"""Orbax checkpoints of the policy state together with a small JSON of metadata.

Each checkpoint is one orbax step holding two items: "state" (the full `PolicyState`, restored
straight onto its shardings from an abstract state) and "meta" (JSON: the ReST loop position,
best-so-far values, the model config...). Orbax writes to a temporary directory and renames it
when complete, so a process killed mid-save never leaves a half checkpoint that restore would pick.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import orbax.checkpoint as ocp

from rest_jax import fileio


class CheckpointError(RuntimeError):
  pass


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
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored["meta"]

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs)."""
    step = self._resolve(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"Checkpoint {self.directory}/{step} does not match the expected policy state "
          f"(model config, loss or optimizer differ?): {e}") from e
    return restored["state"], restored["meta"]

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
