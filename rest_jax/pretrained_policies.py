"""Policies shipped with the package, and starting a ReST run from a saved policy.

A BC policy that translates takes hours of CPU to train, longer than a quickstart should take.
So the package ships one (trained once with `experiments/de_en/bc_pretrain.gin`, exported with
`scripts/export_pretrained_policy.py`) and the loop can start from it instead of training BC:

  rest_loop.run.init_policy = 'pretrained=de_en_small'   # a policy under policies/pretrained/
  rest_loop.run.init_policy = '/work/bc_run'              # a workdir (its checkpoints_bc)
  rest_loop.run.init_policy = '/work/bc_run/checkpoints_bc'   # or any checkpoint directory
  rest_loop.run.init_policy = None                        # train BC from scratch

The policy's recorded model config must equal the run's (dropout aside: it only acts in
training) and its task must use the run's vocabulary; both are checked before any data loads.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from rest_jax import checkpointing, configs, fileio

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies",
                              "pretrained")
# Fields of ModelConfig that may differ between the saved policy and the run.
TRAINING_ONLY_FIELDS = ("dropout_rate",)


def pretrained_policies() -> list[str]:
  """Names usable as `init_policy='pretrained=NAME'`."""
  if not os.path.isdir(PRETRAINED_DIR):
    return []
  return sorted(name for name in os.listdir(PRETRAINED_DIR)
                if os.path.isdir(os.path.join(PRETRAINED_DIR, name)))


def resolve(spec: str) -> str:
  """The checkpoint directory of an init_policy spec; ValueError naming the spec if none."""
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"run.init_policy={spec!r} is invalid: expected 'pretrained=NAME' (one of "
                     f"{pretrained_policies()}), a workdir or a checkpoint directory, or None.")
  if spec.startswith("pretrained="):
    name = spec[len("pretrained="):]
    if name not in pretrained_policies():
      raise ValueError(f"run.init_policy={spec!r}: no shipped policy {name!r}; shipped "
                       f"policies: {pretrained_policies()}.")
    return os.path.join(PRETRAINED_DIR, name)
  if not fileio.exists(spec):
    raise ValueError(f"run.init_policy={spec!r}: no such directory.")
  for sub in ("checkpoints_bc", "checkpoints_best"):
    if fileio.exists(os.path.join(spec, sub)):
      return os.path.join(spec, sub)
  return spec


def read_meta(directory: str) -> tuple[int, dict[str, Any]]:
  """(latest step, meta) of a policy checkpoint directory."""
  checkpointer = checkpointing.Checkpointer(directory, max_to_keep=None)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise ValueError(f"run.init_policy: {directory} holds no checkpoint.")
    return step, checkpointer.restore_meta(step)
  finally:
    checkpointer.close()


def check_compatible(directory: str, meta: dict[str, Any], model_config: Any,
                     same_vocabulary) -> None:
  """Raises ValueError when the saved policy cannot start a run of this model and task."""
  fingerprint = meta.get("fingerprint") or {}
  saved = fingerprint.get("model")
  if saved is None:
    raise ValueError(f"run.init_policy: {directory} records no model config "
                     "(meta['fingerprint']['model']); export it with "
                     "scripts/export_pretrained_policy.py.")
  saved = configs.model_config_dict(saved)  # Fields added since it was saved: defaults.
  wanted = dataclasses.asdict(model_config)
  differ = sorted(k for k in set(saved) | set(wanted)
                  if k not in TRAINING_ONLY_FIELDS and saved.get(k) != wanted.get(k))
  if differ:
    raise ValueError(
        f"run.init_policy: {directory} was trained with a different model: "
        + ", ".join(f"{k}={saved.get(k)!r} (run: {wanted.get(k)!r})" for k in differ)
        + "; set rest_loop.run.model_preset / model_overrides to match it.")
  saved_task = fingerprint.get("task")
  if saved_task is None or not same_vocabulary(saved_task):
    raise ValueError(f"run.init_policy: {directory} was trained on task {saved_task!r}, whose "
                     "vocabulary differs from this run's task vocabulary.")
