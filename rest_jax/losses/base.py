"""The contract between the Improve-step trainer and every loss.

A loss is a pure, jit-able function `(LossInputs, loss_params, config) -> (loss, metrics)`:
`loss_params` holds trainable dual variables (V-MPO's temperature and KL multiplier; `{}` for
most losses) and `config` is a frozen, validated dataclass of hyper-parameters. The trainer picks
a loss per Improve round by name through `registry`, reads `LossSpec.requires` to know which
optional model outputs to compute (frozen BC logits, trust-region logits, value head, ...), and
logs the flat metrics dict.

Shape legend: B batch, T target length, V vocabulary. See `sequence_math` for the normalisation
every loss shares.

Validation happens at trace time (shapes are static under jit), so a missing or mis-shaped input
fails before any compilation with a message naming the field.
"""
import dataclasses
import math
from typing import Any, Callable

import flax
import jax

Metrics = dict[str, jax.Array]
LossFn = Callable[["LossInputs", dict, Any], tuple[jax.Array, Metrics]]


@flax.struct.dataclass
class LossInputs:
  """Everything a loss may read for one batch of (source, target) pairs."""

  token_logprobs: jax.Array  # [B, T] log pi_theta(y_t | s_t) of target tokens (differentiable)
  logits: jax.Array  # [B, T, V] policy logits (differentiable), used for KL terms
  mask: jax.Array  # [B, T] 1.0 on real target tokens (EOS included), 0 on padding
  rewards: jax.Array  # [B] sequence reward in [0, 1]
  weights: jax.Array  # [B] per-example weights (1 by default; 0 drops an example)
  step: jax.Array  # scalar int32 optimizer step within the current Improve round
  behaviour_token_logprobs: jax.Array | None = None  # [B, T] sampling policy, stored at Grow
  bc_logits: jax.Array | None = None  # [B, T, V] frozen BC policy (stop-gradient)
  bc_token_logprobs: jax.Array | None = None  # [B, T] frozen BC policy, target tokens
  lagged_token_logprobs: jax.Array | None = None  # [B, T] lagged policy copy (GOLD)
  prev_logits: jax.Array | None = None  # [B, T, V] round's starting policy (trust region)
  values: jax.Array | None = None  # [B, T] value head V(s_t) (differentiable)
  # On-policy losses (`rest_jax.online`): rows sampled for the same source share a group id.
  group_ids: jax.Array | None = None  # [B] int32
  old_values: jax.Array | None = None  # [B, T] value head of the sampling-time policy (frozen)


OPTIONAL_INPUTS = (
    "behaviour_token_logprobs",
    "bc_logits",
    "bc_token_logprobs",
    "lagged_token_logprobs",
    "prev_logits",
    "values",
    "group_ids",
    "old_values",
)
_TOKEN_FIELDS = ("mask", "behaviour_token_logprobs", "bc_token_logprobs",
                 "lagged_token_logprobs", "values", "old_values")
_VOCAB_FIELDS = ("bc_logits", "prev_logits")


def no_params(config: Any) -> dict:
  """`init_params` of a loss without dual variables."""
  del config
  return {}


def same_config(config: Any, num_steps: int) -> Any:
  """`for_phase` of a loss whose hyper-parameters do not depend on the phase length."""
  del num_steps
  return config


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A registered loss: its function, hyper-parameters and what it needs from the trainer."""

  name: str
  fn: LossFn
  config_cls: type
  requires: frozenset[str] = frozenset()
  init_params: Callable[[Any], dict] = no_params
  needs_value_head: bool = False
  # (config, phase length in optimizer steps) -> the config that phase trains with: fills in
  # hyper-parameters defined relative to the phase (BVMPO's anneal length). The trainer calls it.
  for_phase: Callable[[Any, int], Any] = same_config
  # True for on-policy losses: they need groups of fresh samples of the current policy
  # (`rest_jax.online`), so an Improve round on grown data refuses them.
  online_only: bool = False

  def __post_init__(self):
    unknown = sorted(set(self.requires) - set(OPTIONAL_INPUTS))
    if unknown:
      raise ValueError(
          f"LossSpec {self.name!r}: requires={unknown} are not optional LossInputs fields; "
          f"allowed: {list(OPTIONAL_INPUTS)}")
    if not dataclasses.is_dataclass(self.config_cls):
      raise TypeError(f"LossSpec {self.name!r}: config_cls must be a dataclass, "
                      f"got {self.config_cls!r}")
    if ("values" in self.requires) != self.needs_value_head:
      raise ValueError(f"LossSpec {self.name!r}: needs_value_head={self.needs_value_head} "
                       f"disagrees with requires={sorted(self.requires)}")


def check_inputs(inputs: LossInputs, loss_name: str, requires: frozenset[str]) -> None:
  """Raises ValueError if a required input is missing or any present input is mis-shaped."""
  missing = [name for name in sorted(requires) if getattr(inputs, name) is None]
  if missing:
    raise ValueError(
        f"Loss {loss_name!r} needs LossInputs.{', LossInputs.'.join(missing)} but got None; "
        f"this loss requires {sorted(requires)}. Compute them in the train step (see "
        f"LossSpec.requires).")
  if inputs.token_logprobs.ndim != 2:
    raise ValueError(f"Loss {loss_name!r}: token_logprobs must be [B, T], got shape "
                     f"{inputs.token_logprobs.shape}")
  batch, length = inputs.token_logprobs.shape
  if inputs.logits.ndim != 3 or inputs.logits.shape[:2] != (batch, length):
    raise ValueError(f"Loss {loss_name!r}: logits must be [B, T, V] = [{batch}, {length}, V], "
                     f"got shape {inputs.logits.shape}")
  expected = {name: (batch, length) for name in _TOKEN_FIELDS}
  expected.update({name: inputs.logits.shape for name in _VOCAB_FIELDS})
  expected.update(rewards=(batch,), weights=(batch,), group_ids=(batch,), step=())
  for name, shape in expected.items():
    value = getattr(inputs, name)
    if value is not None and tuple(value.shape) != tuple(shape):
      raise ValueError(f"Loss {loss_name!r}: LossInputs.{name} must have shape {shape}, "
                       f"got {tuple(value.shape)}")


def require_in_range(
    config: Any,
    field: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
  """Config validation: raises ValueError naming the field, its value and the allowed range."""
  value = getattr(config, field)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"{type(config).__name__}.{field} must be a number, got {value!r}")
  above = value >= low if low_inclusive else value > low
  below = value <= high if high_inclusive else value < high
  if not (above and below and math.isfinite(value)):
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    raise ValueError(f"{type(config).__name__}.{field}={value!r} is outside the allowed "
                     f"range {left}{low}, {high}{right}")


def require_choice(config: Any, field: str, allowed: tuple[str, ...]) -> None:
  """Config validation: raises ValueError naming the field, its value and the allowed values."""
  value = getattr(config, field)
  if value not in allowed:
    raise ValueError(f"{type(config).__name__}.{field}={value!r} is not allowed; allowed: "
                     f"{list(allowed)}")


def require_int_in_range(config: Any, field: str, low: int, high: float = math.inf) -> None:
  """Like `require_in_range` for integer hyper-parameters."""
  value = getattr(config, field)
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f"{type(config).__name__}.{field} must be an int, got {value!r}")
  if not low <= value <= high:
    raise ValueError(f"{type(config).__name__}.{field}={value!r} is outside the allowed "
                     f"range [{low}, {high}]")
