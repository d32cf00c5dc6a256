"""Name -> LossSpec registry: how an experiment picks the loss of each Improve round.

Gin files and configs name losses by string ("bc", "gold_p", "bvmpo", ...); this module turns a
name into its `LossSpec` and builds validated hyper-parameter configs, failing with the list of
valid names (or fields) so a typo in a sweep is caught before anything is compiled.
"""
import dataclasses
from typing import Any

from rest_jax.losses import base
from rest_jax.losses import bc
from rest_jax.losses import bvmpo
from rest_jax.losses import gold
from rest_jax.losses import oac
from rest_jax.losses import ppo
from rest_jax.losses import reinforce
from rest_jax.losses import reward_weighted

_LOSSES: dict[str, base.LossSpec] = {}


def register_loss(spec: base.LossSpec) -> base.LossSpec:
  """Adds a loss; a second loss under an existing name is an error."""
  if spec.name in _LOSSES:
    raise ValueError(f"A loss named {spec.name!r} is already registered; "
                     f"registered: {list_losses()}")
  _LOSSES[spec.name] = spec
  return spec


def list_losses() -> list[str]:
  """Registered loss names, sorted."""
  return sorted(_LOSSES)


def get_loss(name: str) -> base.LossSpec:
  """The spec registered under `name`; ValueError listing all valid names otherwise."""
  try:
    return _LOSSES[name]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown loss {name!r}; valid losses: {list_losses()}") from None


def list_online_losses() -> list[str]:
  """Registered on-policy losses (`LossSpec.online_only`), sorted: what `rest_jax.online` trains."""
  return sorted(name for name, spec in _LOSSES.items() if spec.online_only)


def make_config(name: str, **overrides: Any) -> Any:
  """Default hyper-parameters of loss `name` with `overrides` applied (and validated)."""
  config_cls = get_loss(name).config_cls
  valid = [field.name for field in dataclasses.fields(config_cls)]
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise ValueError(f"Unknown hyper-parameter(s) {unknown} for loss {name!r} "
                     f"({config_cls.__name__}); valid: {valid}")
  return config_cls(**overrides)


for _spec in (bc.SPEC, reward_weighted.SPEC, gold.GOLD_S_SPEC, gold.GOLD_P_SPEC, bvmpo.SPEC,
              oac.OAC_SPEC, oac.VALUE_PRETRAIN_SPEC, reinforce.SPEC, ppo.SPEC):
  register_loss(_spec)
del _spec
