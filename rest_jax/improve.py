"""Training phases: behaviour cloning and Improve rounds share one early-stopping loop.

`train_phase` runs a jitted train step over deterministic batches (a function of (seed, step)),
evaluates the validation reward every `eval_every` steps, keeps the parameters with the best
validation reward (the phase's starting policy counts as a candidate, so a round never ends
worse than it began on that measure) and stops after `patience` evaluations without
improvement. At every evaluation it checkpoints the full state and the loop position, so a
killed run resumes mid-phase and continues with exactly the same batches and keys. After SIGTERM
(`rest_jax.preemption`) it checkpoints at the end of the step in flight and raises `Preempted`.
A NaN or infinite loss (seen at every log and evaluation step) stops the phase with
`NonFiniteLossError` before that state is saved, so the newest checkpoint stays a sound one.

`round_data` turns the grown records of a Grow step into one Improve round's training set.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable

import jax
import numpy as np
import tqdm

from rest_jax import batching, filters, grown_data, preemption
from rest_jax import sharding as sharding_lib
from rest_jax.configs import OptimizerConfig

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite (checked at every log and evaluation step)."""


@dataclasses.dataclass(frozen=True)
class TrainPhaseConfig:
  """One training phase (BC, value pretraining or an Improve round).

  Toy defaults (batch 64, 1000 steps) sized for CPU runs. The paper trains each Improve round
  "while validation reward improves" and keeps the best checkpoint: set `max_steps`, `eval_every`
  and `patience` per experiment (the IWSLT/WMT gin files do). BVMPO anneals its BC-KL weight
  over `max_steps` (see `losses.bvmpo`).
  """
  batch_size: int = 64
  max_steps: int = 1000
  optimizer: OptimizerConfig = OptimizerConfig()
  eval_every: int = 200  # Steps between validation-reward evaluations (and checkpoints).
  patience: int = 0  # Evaluations without improvement before stopping; 0 = never stop early.
  log_every: int = 50
  dropout: bool = True
  seed: int = 0
  # Pad each batch only to the smallest of these lengths that fits it (one compiled shape per
  # bucket); () pads every batch to the run's full lengths. See batching.BatchSchedule.
  length_buckets: tuple[int, ...] = ()

  def __post_init__(self):
    for field in ("batch_size", "max_steps", "eval_every", "log_every"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"TrainPhaseConfig.{field}={value!r} is invalid: expected a positive "
                         "integer.")
    if any(not isinstance(b, int) or b <= 0 for b in self.length_buckets):
      raise ValueError(f"TrainPhaseConfig.length_buckets={self.length_buckets!r} is invalid: "
                       "expected positive integers.")
    if not isinstance(self.patience, int) or self.patience < 0:
      raise ValueError(f"TrainPhaseConfig.patience={self.patience!r} is invalid: expected an "
                       "integer >= 0 (0 disables early stopping).")

  def replace(self, **changes) -> "TrainPhaseConfig":
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class PhaseProgress:
  """What a phase checkpoint records about its own progress (JSON-serialisable)."""
  step: int = 0
  best_score: float = -math.inf
  best_step: int = -1
  bad_evals: int = 0
  finished: bool = False
  evals: list = dataclasses.field(default_factory=list)  # [(step, score)]

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["best_score"] = None if math.isinf(self.best_score) else self.best_score
    return d

  @staticmethod
  def from_json(d: dict) -> "PhaseProgress":
    d = dict(d)
    d["best_score"] = -math.inf if d.get("best_score") is None else d["best_score"]
    d["evals"] = [tuple(e) for e in d.get("evals", [])]
    return PhaseProgress(**d)


@dataclasses.dataclass
class PhaseHooks:
  """The loop's callbacks into checkpointing, evaluation and logging."""
  evaluate: Callable[[Any], float] | None  # params -> validation reward (0-100); None: no eval
  save_state: Callable[[Any, PhaseProgress], None]  # mid-phase checkpoint
  save_best: Callable[[Any, PhaseProgress], None]  # best params so far
  load_best: Callable[[], Any]  # -> best params
  log_metrics: Callable[[dict, int], None]  # (metrics, step)


def train_phase(name: str, state, step_fn, data: batching.SequenceData,
                config: TrainPhaseConfig, mesh, hooks: PhaseHooks, progress: PhaseProgress,
                rng: jax.Array, lengths: tuple[int, int],
                start_params_score: float | None = None):
  """Runs (or resumes) one training phase; returns (final state, best params, progress).

  `lengths` = the (source_len, target_len) batches are padded to, fixed for a run (below them,
  `config.length_buckets`), so each loss compiles once per shape.
  """
  schedule = batching.BatchSchedule(data, config.batch_size, config.seed, *lengths,
                                    length_buckets=config.length_buckets)
  if progress.step == 0 and start_params_score is not None and progress.best_step < 0:
    progress.best_score, progress.best_step = start_params_score, 0
    hooks.save_best(state.params, progress)
  bar = tqdm.tqdm(total=config.max_steps, initial=progress.step, desc=name,
                  disable=jax.process_index() != 0)
  rows = sharding_lib.process_rows(config.batch_size)
  while not progress.finished and progress.step < config.max_steps:
    step = progress.step
    batch = schedule.batch(step)
    batch = sharding_lib.shard_batch({k: v[rows] for k, v in batch.items()}, mesh)
    state, metrics = step_fn(state, batch, jax.random.fold_in(rng, step))
    progress.step = step + 1
    bar.update(1)
    saved = progress.step % config.eval_every == 0 or progress.step == config.max_steps
    if saved or progress.step % config.log_every == 0:
      host_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      bar.set_postfix(loss=f"{host_metrics['loss']:.3f}")
      hooks.log_metrics(host_metrics, progress.step)
      if not math.isfinite(host_metrics["loss"]):  # Checked before this state is saved.
        bar.close()
        raise NonFiniteLossError(
            f"{name}: the training loss is {host_metrics['loss']} at step {progress.step}; "
            "this state is not saved. Lower the phase's OptimizerConfig.learning_rate (or check "
            "the data) and run the same command again: it resumes from the newest checkpoint.")
    if saved:
      _evaluate_and_checkpoint(state, config, hooks, progress)
    if preemption.stop_requested():
      if not saved:
        hooks.save_state(state, progress)
      bar.close()
      raise preemption.Preempted(f"{name}: stopped after step {progress.step} (checkpointed).")
  bar.close()
  progress.finished = True
  best = hooks.load_best() if progress.best_step >= 0 else state.params
  return state, best, progress


def _evaluate_and_checkpoint(state, config, hooks, progress):
  if hooks.evaluate is None:  # No selection (value pretraining): the last params are the result.
    hooks.save_state(state, progress)
    return
  score = hooks.evaluate(state.params)
  progress.evals.append((progress.step, score))
  if score > progress.best_score:
    progress.best_score, progress.best_step, progress.bad_evals = score, progress.step, 0
    hooks.save_best(state.params, progress)
  else:
    progress.bad_evals += 1
  if config.patience and progress.bad_evals >= config.patience:
    logger.info("Early stopping at step %d (best %.2f at step %d).", progress.step,
                 progress.best_score, progress.best_step)
    progress.finished = True
  hooks.save_state(state, progress)


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
