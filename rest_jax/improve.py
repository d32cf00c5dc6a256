"""The Improve step: its configuration, and the training set of each round.

An Improve round filters the records of the latest Grow step (`filter_round`, through
`rest_jax.filters`) and trains on what it keeps (`round_data`) with the round's loss, through the
training loop every phase shares (`rest_jax.train.train_phase`); `rest_jax.phases` runs it.
`ImproveConfig` says, for every Grow step, how many rounds, each round's filter and loss, what
happens to the human data, and where each round starts from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rest_jax import batching, configs, filters, grown_data
from rest_jax.losses import registry as loss_registry
from rest_jax.train import TrainPhaseConfig

ON_EMPTY = ("stop", "skip")
RESTART_FROM = ("previous", "bc")
LR_DECAY_OVER = ("grow_step", "run")


@dataclasses.dataclass(frozen=True)
class ImproveConfig:
  """The Improve rounds of every Grow step. Toy default schedule: one τ=0 round (the paper's
  "I=0" row); the paper ran 5 (IWSLT) / 4 (WMT) rounds with τ from [0, .7, .8, .9, .95, .99]."""
  filter_schedule: tuple[str, ...] = ("threshold:tau=0.0",)  # One filter per round.
  losses: tuple[str, ...] = ("bc",)  # One loss per round, or a single loss for every round.
  loss_overrides: Any = None  # {loss name: {hyper-parameter: value}}
  original_data: str = "keep"
  # Also train every round on BC's training data (the human worked solutions), beside the kept
  # samples: rejection-sampling fine-tuning's mix (Yuan et al. 2023) rather than ReST-EM's
  # samples only. For tasks whose Grow split is not the BC split (reasoning tasks); BC loss only.
  mix_bc_data: bool = False
  on_empty: str = "stop"  # A round whose filter keeps nothing: stop this Grow step, or skip.
  restart_from: str = "previous"
  lr_decay_per_round: float = 0.5  # Round i trains at learning_rate * decay ** i.
  lr_decay_over: str = "grow_step"  # What i counts: rounds of the Grow step, or of the 'run'.
  lagged_sync_every: int = 50  # GOLD's lagged policy refresh (steps).
  # BVMPO's trust-region reference (V-MPO's target network) refresh (steps); 0 = round start.
  trust_region_sync_every: int = 100
  value_pretrain_steps: int = 200
  train: TrainPhaseConfig = TrainPhaseConfig()

  def __post_init__(self):
    configs.check_choice("ImproveConfig", "original_data", self.original_data,
                         filters.ORIGINAL_DATA_OPTIONS)
    configs.check_choice("ImproveConfig", "on_empty", self.on_empty, ON_EMPTY)
    configs.check_choice("ImproveConfig", "restart_from", self.restart_from, RESTART_FROM)
    configs.check_choice("ImproveConfig", "lr_decay_over", self.lr_decay_over, LR_DECAY_OVER)
    for field in ("lagged_sync_every", "trust_region_sync_every"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"ImproveConfig.{field}={value!r} is invalid: expected an integer "
                         ">= 0 (0 = never refresh).")
    filters.make_schedule(list(self.filter_schedule))  # Raises on a bad or falling schedule.
    if len(self.losses) not in (1, len(self.filter_schedule)):
      raise ValueError(f"ImproveConfig.losses has {len(self.losses)} entries; expected 1 or one "
                       f"per round ({len(self.filter_schedule)}).")
    for name in self.losses:
      loss_registry.get_loss(name)  # Raises with the list of valid names.
    online_only = loss_registry.list_online_losses()
    if set(self.losses) & set(online_only):
      offline = sorted(set(loss_registry.list_losses()) - set(online_only))
      raise ValueError(f"ImproveConfig.losses={tuple(self.losses)!r}: {online_only} are on-policy "
                       "losses (fresh samples of the current policy each step), set with "
                       f"rest_loop.run.online = @OnlineConfig(); valid losses for Improve "
                       f"rounds: {offline}.")
    for name, overrides in dict(self.loss_overrides or {}).items():
      loss_registry.make_config(name, **dict(overrides))
    if not 0 < self.lr_decay_per_round <= 1:
      raise ValueError(f"ImproveConfig.lr_decay_per_round={self.lr_decay_per_round!r} is "
                       "invalid: expected 0 < decay <= 1.")
    needs_behaviour = [n for n in self.losses
                       if "behaviour_token_logprobs" in loss_registry.get_loss(n).requires]
    if needs_behaviour and self.original_data != "drop":
      raise ValueError(f"ImproveConfig.original_data={self.original_data!r} with loss(es) "
                       f"{needs_behaviour}, which read behaviour log-probs: the human references "
                       "have none (no policy sampled them). Set original_data='drop'.")
    if not isinstance(self.mix_bc_data, bool):
      raise ValueError(f"ImproveConfig.mix_bc_data={self.mix_bc_data!r} is invalid: expected "
                       "True or False.")
    if self.mix_bc_data and set(self.losses) != {"bc"}:
      raise ValueError(f"ImproveConfig.mix_bc_data=True with losses {tuple(self.losses)!r}: the "
                       "human data has no reward, behaviour log-probs or values, so it mixes only "
                       "into rounds with the 'bc' loss; allowed: losses=('bc',) or "
                       "mix_bc_data=False.")
    self.value_pretrain_config()  # Raises if the rounds' critics disagree on gamma.

  @property
  def num_rounds(self) -> int:
    return len(self.filter_schedule)

  def filter_of(self, round_index: int) -> filters.Filter:
    """Round `round_index`'s filter (0-based), as the Improve round applies it."""
    return filters.make_schedule(list(self.filter_schedule)).for_round(round_index)

  def loss_of(self, round_index: int) -> str:
    return self.losses[0] if len(self.losses) == 1 else self.losses[round_index]

  def loss_config(self, name: str):
    """Loss `name`'s hyper-parameters in an Improve round (phase-relative ones filled in)."""
    config = loss_registry.make_config(
        name, **dict(dict(self.loss_overrides or {}).get(name, {})))
    return loss_registry.get_loss(name).for_phase(config, self.train.max_steps)

  def value_pretrain_config(self):
    """The critic pretraining's loss config: `loss_overrides['value_pretrain']`, with gamma
    taken from the rounds' value-head losses (their critics regress the same return)."""
    overrides = dict(dict(self.loss_overrides or {}).get("value_pretrain", {}))
    gammas = {name: self.loss_config(name).gamma for name in sorted(set(self.losses))
              if loss_registry.get_loss(name).needs_value_head and name != "value_pretrain"}
    if gammas and "gamma" in overrides:
      gammas["value_pretrain"] = overrides["gamma"]
    if len(set(gammas.values())) > 1:
      raise ValueError(f"ImproveConfig: one critic is pretrained per Grow step for every round, "
                       f"but the losses' gamma differ: {gammas}; use one gamma.")
    if gammas:
      overrides["gamma"] = next(iter(gammas.values()))
    return loss_registry.make_config("value_pretrain", **overrides)

  def lr_scale(self, grow_step: int, round_index: int) -> float:
    """The learning-rate multiplier of Improve round `round_index` (0-based) of `grow_step`."""
    rounds_before = round_index
    if self.lr_decay_over == "run":
      rounds_before += (grow_step - 1) * self.num_rounds
    return self.lr_decay_per_round ** rounds_before


# ------------------------------------------------------------------------------ round data
def filter_round(records: grown_data.GrownRecords, filter_spec, original_data: str
                 ) -> filters.FilterResult:
  """Which grown records one Improve round trains on (`.mask`), and the counts it logs.

  The one place an Improve round applies its filter; `rest_jax.inspect_grown` calls it too.
  """
  return filters.apply_filter(records.columns(), filter_spec, original_data)


def round_data(records: grown_data.GrownRecords, filter_spec, original_data: str
               ) -> tuple[batching.SequenceData | None, filters.FilterResult]:
  """Filters grown records for one Improve round; None data when nothing is kept."""
  result = filter_round(records, filter_spec, original_data)
  if result.num_kept == 0:
    return None, result
  return records_to_data(records.select(result.mask)), result


def records_to_data(records: grown_data.GrownRecords) -> batching.SequenceData:
  """(source, sample) pairs with their rewards and behaviour log-probs, ready for batching."""
  return batching.SequenceData(inputs=records.source_tokens, targets=records.sample_tokens,
                               rewards=records.reward.astype(np.float32),
                               behaviour_logprobs=records.behaviour_logprobs)
