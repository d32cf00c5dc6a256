"""The training loop of every phase, and the jitted train and evaluation steps for any loss.

`train_phase` is the one loop BC, value pretraining, every Improve round and the online phase
run: a jitted train step over deterministic batches (a function of (seed, step)), the validation
reward every `eval_every` steps, the best parameters kept (the phase's starting policy counts as a
candidate, so a round never ends worse than it began on that measure) and a stop after
`patience` evaluations without improvement. At every evaluation it checkpoints the full state
and the loop position through the caller's `PhaseHooks`, so a killed run resumes mid-phase and
continues with exactly the same batches and keys. After SIGTERM (`rest_jax.preemption`) it
checkpoints at the end of the step in flight and raises `Preempted`. A NaN or infinite loss
(seen at every log and evaluation step) stops the phase with `NonFiniteLossError` before that
state is saved, so the newest checkpoint stays a sound one.

`make_train_step` builds `(state, batch, rng) -> (state, metrics)`: one teacher-forced forward
pass of the policy (plus the value head and the frozen copies the loss declares in
`LossSpec.requires`), the loss, gradients with respect to the policy parameters and the loss's
dual variables, and an optax update. The state is donated, and its shardings are fixed by the
`StateFactory`, so the step updates the policy in place on its devices.

Batches are dicts of arrays with a leading batch dimension:
  inputs [B,S] int32 and targets [B,T] int32 (PAD=0 right padding, EOS-terminated; required);
  rewards [B] float32, weights [B] float32, behaviour_logprobs [B,T] float32 (optional).
Padding positions never enter a loss: the mask is `targets != PAD`.

Dropout and frozen copies. With dropout on, the policy pass is a random thinned network. Frozen
logits that enter a KL term (`bc_logits`, `prev_logits`) are computed with the *same* dropout
key, so both sides of the KL are the same thinned network and the KL between identical
parameters is exactly 0: comparing a dropout pass with a deterministic one would report a KL
from the noise alone (and drive BVMPO's trust-region multiplier up for nothing). Frozen
log-probs used as rewards or weights (`bc_token_logprobs`, GOLD's `lagged_token_logprobs`) are
computed deterministically, as the loss definitions assume.

Frozen copies refreshed from the policy during a phase: GOLD's lagged policy every
`lagged_sync_every` steps and BVMPO's trust-region reference (`prev_params`, V-MPO's target
network) every `trust_region_sync_every` steps; 0 never refreshes (the copy stays at the round's
starting policy).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
import tqdm
from jax.sharding import Mesh

from rest_jax import batching, preemption
from rest_jax import sharding as sharding_lib
from rest_jax.configs import OptimizerConfig
from rest_jax.losses import base as loss_base
from rest_jax.models.transformer import PAD_ID, Transformer, token_log_probs
from rest_jax.train_state import PolicyState

logger = logging.getLogger(__name__)

Batch = dict[str, jax.Array]

BATCH_KEYS = ("inputs", "targets", "rewards", "weights", "behaviour_logprobs", "group_ids",
              "old_values")


def check_batch(batch: dict[str, Any]) -> None:
  """Rejects batches with unknown keys or missing tokens before anything is compiled."""
  unknown = set(batch) - set(BATCH_KEYS)
  if unknown:
    raise ValueError(f"Unknown batch key(s) {sorted(unknown)}; allowed: {BATCH_KEYS}.")
  for key in ("inputs", "targets"):
    if key not in batch:
      raise ValueError(f"Batch is missing {key!r}; required keys: ('inputs', 'targets').")


def _frozen_logits(model, params, batch, deterministic=True, rng=None):
  rngs = None if deterministic else {"dropout": rng}
  return jax.lax.stop_gradient(model.apply({"params": params}, batch["inputs"],
                                           batch["targets"], deterministic=deterministic,
                                           rngs=rngs))


def build_loss_inputs(model: Transformer, spec: loss_base.LossSpec, params: Any,
                      state: PolicyState, batch: Batch, rng: jax.Array, deterministic: bool
                      ) -> loss_base.LossInputs:
  """Runs the policy (and the frozen copies the loss needs) on a batch."""
  targets = batch["targets"]
  needs = spec.requires
  outputs = model.apply({"params": params}, batch["inputs"], targets, deterministic=deterministic,
                        return_values="values" in needs, rngs={"dropout": rng})
  logits, values = outputs if "values" in needs else (outputs, None)
  b = targets.shape[0]
  extras: dict[str, Any] = {}
  # KL references share the policy pass's dropout key (see the module docstring).
  kl_reference = lambda frozen: _frozen_logits(model, frozen, batch, deterministic, rng)
  if needs & {"bc_logits", "bc_token_logprobs"}:
    _require_frozen(state.bc_params, "bc_params", spec.name)
  if "bc_logits" in needs:
    extras["bc_logits"] = kl_reference(state.bc_params)
  if "bc_token_logprobs" in needs:
    extras["bc_token_logprobs"] = token_log_probs(
        _frozen_logits(model, state.bc_params, batch), targets)
  if "lagged_token_logprobs" in needs:
    _require_frozen(state.lagged_params, "lagged_params", spec.name)
    extras["lagged_token_logprobs"] = token_log_probs(
        _frozen_logits(model, state.lagged_params, batch), targets)
  if "prev_logits" in needs:
    _require_frozen(state.prev_params, "prev_params", spec.name)
    extras["prev_logits"] = kl_reference(state.prev_params)
  if "behaviour_token_logprobs" in needs:
    if "behaviour_logprobs" not in batch:
      raise ValueError(f"Loss {spec.name!r} needs the batch key 'behaviour_logprobs'.")
    extras["behaviour_token_logprobs"] = batch["behaviour_logprobs"]
  for key in ("group_ids", "old_values"):  # Made by the on-policy step (rest_jax.online).
    if key in needs:
      if key not in batch:
        raise ValueError(f"Loss {spec.name!r} needs the batch key {key!r} (an on-policy loss: "
                         "train it with rest_jax.online).")
      extras[key] = batch[key]
  return loss_base.LossInputs(
      token_logprobs=token_log_probs(logits, targets), logits=logits,
      mask=(targets != PAD_ID).astype(jnp.float32),
      rewards=batch.get("rewards", jnp.zeros((b,), jnp.float32)).astype(jnp.float32),
      weights=batch.get("weights", jnp.ones((b,), jnp.float32)).astype(jnp.float32),
      step=state.round_step, values=values, **extras)


def _require_frozen(value, field, loss_name):
  if value is None:
    raise ValueError(f"Loss {loss_name!r} needs PolicyState.{field}; set it with "
                     f"StateFactory.reset_optimizer(..., frozen={{'{field}': params}}).")


def make_train_step(model: Transformer, spec: loss_base.LossSpec, loss_config: Any,
                    tx: optax.GradientTransformation, state_shardings: PolicyState, mesh: Mesh,
                    *, lagged_sync_every: int = 0, trust_region_sync_every: int = 0,
                    dropout: bool = True
                    ) -> Callable[[PolicyState, Batch, jax.Array], tuple[PolicyState, dict]]:
  """A jitted, state-donating train step for loss `spec`.

  `lagged_sync_every` > 0 refreshes `state.lagged_params` from the policy every that many round
  steps (GOLD's lagged importance-weight policy); `trust_region_sync_every` > 0 does the same
  for `state.prev_params` (V-MPO's trust-region target). Both sync before the step's update.
  """
  if spec.needs_value_head and not model.config.value_head:
    raise ValueError(f"Loss {spec.name!r} needs a value head: set ModelConfig.value_head=True.")
  for field, value in (("lagged_sync_every", lagged_sync_every),
                       ("trust_region_sync_every", trust_region_sync_every)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"make_train_step: {field}={value!r} is invalid: expected an integer "
                       ">= 0 (0 = never refresh).")

  def step(state: PolicyState, batch: Batch, rng: jax.Array):
    state = _refresh(state, "lagged_params", lagged_sync_every)
    state = _refresh(state, "prev_params", trust_region_sync_every)

    def loss_fn(trainable):
      inputs = build_loss_inputs(model, spec, trainable["params"], state, batch, rng,
                                 deterministic=not dropout)
      return spec.fn(inputs, trainable["loss_params"], loss_config)

    trainable = state.trainable()
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    new_state = state.replace(step=state.step + 1, round_step=state.round_step + 1,
                              params=trainable["params"], loss_params=trainable["loss_params"],
                              opt_state=opt_state)
    return new_state, metrics

  repl = sharding_lib.replicated(mesh)
  return jax.jit(step, in_shardings=(state_shardings, None, repl),
                 out_shardings=(state_shardings, repl), donate_argnums=(0,))


def _refresh(state: PolicyState, field: str, every: int) -> PolicyState:
  """`state` with frozen copy `field` set to the policy params when round_step % every == 0."""
  frozen = getattr(state, field)
  if not every or frozen is None:
    return state
  sync = state.round_step % every == 0
  return state.replace(**{field: jax.tree_util.tree_map(
      lambda old, current: jnp.where(sync, current, old), frozen, state.params)})


def make_eval_step(model: Transformer, mesh: Mesh, param_shardings: Any
                   ) -> Callable[[Any, Batch], dict[str, jax.Array]]:
  """Jitted `(params, batch) -> {nll_sum, num_tokens, num_correct}` for validation loss."""

  def evaluate(params, batch):
    targets = batch["targets"]
    logits = model.apply({"params": params}, batch["inputs"], targets)
    mask = (targets != PAD_ID).astype(jnp.float32)
    weights = batch.get("weights", jnp.ones(targets.shape[:1], jnp.float32))[:, None] * mask
    nll = -token_log_probs(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return {"nll_sum": (nll * weights).sum(), "num_tokens": weights.sum(),
            "num_correct": (correct * weights).sum()}

  repl = sharding_lib.replicated(mesh)
  return jax.jit(evaluate, in_shardings=(param_shardings, None), out_shardings=repl)


# ---------------------------------------------------------------------- the phase loop
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
  # Seconds in train_phase (steps, evaluations, checkpoints); a resumed phase continues from its
  # checkpoint's value, so the time between that checkpoint and a kill is not counted.
  wall_s: float = 0.0

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
  clock = _PhaseClock(progress)
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
      _evaluate_and_checkpoint(state, config, hooks, progress, clock)
    if preemption.stop_requested():
      if not saved:
        clock.update()
        hooks.save_state(state, progress)
      bar.close()
      raise preemption.Preempted(f"{name}: stopped after step {progress.step} (checkpointed).")
  bar.close()
  progress.finished = True
  clock.update()
  best = hooks.load_best() if progress.best_step >= 0 else state.params
  return state, best, progress


class _PhaseClock:
  """Keeps `progress.wall_s` = the wall seconds of a phase over all its (resumed) runs."""

  def __init__(self, progress: PhaseProgress):
    self.progress, self.start, self.base = progress, time.monotonic(), progress.wall_s

  def update(self) -> None:
    self.progress.wall_s = self.base + time.monotonic() - self.start


def _evaluate_and_checkpoint(state, config, hooks, progress, clock):
  if hooks.evaluate is None:  # No selection (value pretraining): the last params are the result.
    clock.update()
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
  clock.update()
  hooks.save_state(state, progress)
