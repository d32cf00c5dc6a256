"""A run's checkpoints, and the check that a workdir may resume under a configuration.

Four orbax managers live under the workdir:

  checkpoints/       the resume point: a full mid-phase state ("state", saved at every
                     evaluation) or a phase-boundary policy ("policy"), ordered by
                     `phase_index * PHASE_STRIDE + step`; the two newest are kept;
  checkpoints_best/  the best parameters of the phase in progress (early stopping);
  checkpoints_bc/    the BC policy (ReST-EM restarts from it; KL terms compare with it);
  checkpoints_grow/  the policy that sampled the latest Grow step, so that a grown shard found
                     damaged later is regrown identically.

Every resume-point checkpoint records the run's fingerprint (model, task, padded lengths), the
names of the planned phases and the BC settings. `RunCheckpoints.resume_point` refuses a workdir
whose completed phases or started BC were made with another configuration, so one workdir never
mixes two experiments.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from rest_jax import checkpointing, configs

PHASE_STRIDE = 10**6


class RunCheckpoints:
  """The run's checkpoint managers and the metadata every resume point carries."""

  def __init__(self, workdir: str, phase_names: Sequence[str], fingerprint: dict,
               bc_settings: dict):
    self.workdir, self.phase_names = workdir, list(phase_names)
    self.fingerprint, self.bc_settings = fingerprint, bc_settings
    self.latest = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    self.best = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints_best"),
                                           max_to_keep=1)
    self.bc = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints_bc"), max_to_keep=1)
    self.grow = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints_grow"),
                                           max_to_keep=1)

  def close(self):
    for c in (self.latest, self.best, self.bc, self.grow):
      c.close()

  # --------------------------------------------------------------------------- resume
  def resume_point(self, abstract_params) -> tuple[int, Any, dict | None, int, float]:
    """(phase index, policy params or None, mid-phase meta or None, total train steps, seconds
    of training after BC)."""
    step = self.latest.latest_step()
    if step is None:
      return 0, None, None, 0, 0.0
    meta = self.latest.restore_meta(step)
    index = meta["phase_index"]
    done = meta.get("phases", [])[:index]
    saved = dict(meta.get("fingerprint") or {})
    if "model" in saved:  # Model fields added since the workdir was written take their defaults.
      saved["model"] = configs.model_config_dict(saved["model"])
    if saved != self.fingerprint or done != self.phase_names[:index]:
      raise checkpointing.CheckpointError(
          f"The checkpoints in {self.workdir} belong to a different experiment: it completed "
          f"phases {done} with {meta.get('fingerprint')}, but this configuration plans "
          f"{self.phase_names[:index]} with {self.fingerprint}. A run may only change phases it "
          "has not started; use a new --workdir otherwise.")
    saved_bc = meta.get("bc_settings")
    if saved_bc is not None and saved_bc != self.bc_settings:
      changed = sorted(k for k in self.bc_settings if saved_bc.get(k) != self.bc_settings[k])
      raise checkpointing.CheckpointError(
          f"The checkpoints in {self.workdir} were made with another BC configuration "
          f"({', '.join(f'{k}: {saved_bc.get(k)} -> {self.bc_settings[k]}' for k in changed)}); "
          "a started BC phase cannot change. Restore those settings, or use a new --workdir "
          "(rest_loop.run.init_policy can start it from this workdir's BC policy).")
    wall = float(meta.get("train_wall_s", 0.0))  # Absent in workdirs written before it.
    if meta["kind"] == "policy":
      params, _ = self.latest.restore(abstract_params, step)
      return index, params, None, meta["total_steps"], wall
    return index, None, meta, meta["total_steps"], wall

  def set_aside_if_resume_point(self, error: checkpointing.UnreadableCheckpointError
                                ) -> str | None:
    """Moves an unreadable resume-point checkpoint aside and returns where; None if `error` is
    about another manager's checkpoint."""
    if error.directory != self.latest.directory:
      return None
    return self.latest.set_aside(error.step)

  # ----------------------------------------------------------------------------- saves
  def _meta(self, kind: str, index: int, total_steps: int, train_wall_s: float,
            **extra) -> dict:
    return {"kind": kind, "phase_index": index, **extra, "total_steps": total_steps,
            "train_wall_s": train_wall_s,
            "fingerprint": self.fingerprint, "phases": self.phase_names,
            "bc_settings": self.bc_settings}

  def save_policy(self, index: int, params, total_steps: int, train_wall_s: float) -> None:
    """The policy at the boundary before phase `index` (the resume point of a finished phase).
    `total_steps` and `train_wall_s` are the loop's counters (rest_loop._Loop)."""
    self.latest.save(index * PHASE_STRIDE, params,
                     self._meta("policy", index, total_steps, train_wall_s))

  def save_state(self, index: int, state, progress_json: dict, frozen: Sequence[str],
                 total_steps: int, train_wall_s: float) -> None:
    """A full mid-phase state of phase `index` and its loop position."""
    self.latest.save(index * PHASE_STRIDE + progress_json["step"], state,
                     self._meta("state", index, total_steps, train_wall_s,
                                progress=progress_json, frozen=list(frozen)))

  def save_best(self, index: int, step: int, params, score: float) -> None:
    self.best.save(index * PHASE_STRIDE + step, params,
                   {"phase_index": index, "score": score, "fingerprint": self.fingerprint})

  def load_best(self, index: int, abstract_params):
    step = self.best.latest_step()
    meta = self.best.restore_meta(step)
    if meta["phase_index"] != index:
      raise checkpointing.CheckpointError(f"Best-params checkpoint belongs to phase "
                                          f"{meta['phase_index']}, expected {index}.")
    return self.best.restore(abstract_params, step)[0]

  def save_bc(self, params, best_score: float, init_policy: str | None) -> None:
    self.bc.save(0, params, {"best_score": best_score, "fingerprint": self.fingerprint,
                             "init_policy": init_policy})

  def load_bc(self, abstract_params):
    return self.bc.restore(abstract_params)[0]

  def save_grow_policy(self, grow_step: int, params, policy_step: int) -> None:
    self.grow.save(grow_step, params, {"grow_step": grow_step, "policy_step": policy_step,
                                       "fingerprint": self.fingerprint})
