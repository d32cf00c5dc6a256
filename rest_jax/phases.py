"""The phases of a run, and what each one does.

A run is a fixed list of phases computed from its configuration (`run_phases`):

  bc, grow1, [value1], improve1.0, improve1.1, ..., grow2, [value2], improve2.0, ...

or `bc, online` for on-policy RL. `value<g>` (behaviour value estimation of the critic) appears
only when a round of that Grow step uses a loss with a value head (BVMPO, OAC). Improve round i
of Grow step g is reported as `G<g>I<i>`: round 0 uses the first filter of the schedule (the
paper's τ = 0 row, "I=0"). BC is `G0I0`.

One function runs each kind of phase against the run's shared objects (`rest_loop`'s `_Loop`:
the model, mesh, data, checkpoints, reporter and the `train` helper around
`rest_jax.train.train_phase`):

  run_bc       behaviour cloning on the human data (or load `init_policy`);
  run_grow     sample the Grow split with the current policy and score it (`rest_jax.grow`);
  run_value    pretrain the critic on the grown data;
  run_improve  filter the grown data (`rest_jax.improve`) and fine-tune with the round's loss;
  run_online   on-policy RL from the BC policy (`rest_jax.online`).

Every training phase starts a fresh optimizer: Adam moments, the warm-up and BVMPO's duals
restart in every round (ImproveConfig documents the learning-rate decay between rounds).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp

from rest_jax import batching, checkpointing, filters, grow as grow_lib, grown_data, improve
from rest_jax import online as online_lib
from rest_jax import report, sampling, train
from rest_jax import sharding as sharding_lib
from rest_jax.losses import registry as loss_registry

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Phase:
  kind: str  # "bc" | "grow" | "value" | "improve" | "online"
  grow_step: int = 0
  round: int = -1

  @property
  def name(self) -> str:
    if self.kind == "bc":
      return "bc"
    if self.kind == "online":
      return "online"
    if self.kind == "improve":
      return f"improve{self.grow_step}.{self.round}"
    return f"{self.kind}{self.grow_step}"

  @property
  def run_name(self) -> str:
    return report.run_name(self.grow_step, max(self.round, 0))


def plan_phases(num_grow_steps: int, improve_config: improve.ImproveConfig) -> list[Phase]:
  phases = [Phase("bc")]
  for g in range(1, num_grow_steps + 1):
    phases.append(Phase("grow", g))
    if any(loss_registry.get_loss(improve_config.loss_of(i)).needs_value_head
           for i in range(improve_config.num_rounds)):
      phases.append(Phase("value", g))
    phases.extend(Phase("improve", g, i) for i in range(improve_config.num_rounds))
  return phases


def run_phases(num_grow_steps: int, improve_config: improve.ImproveConfig,
               online: online_lib.OnlineConfig | None) -> list[Phase]:
  """The phases of a run: ReST's (`plan_phases`), or BC then on-policy RL when `online` is set."""
  phases = plan_phases(num_grow_steps, improve_config)
  if online is not None:  # On-policy RL after BC instead of ReST (rest_jax.online).
    if num_grow_steps:
      raise ValueError(f"run.num_grow_steps={num_grow_steps!r} with run.online set: an online-RL "
                       "run is BC then the online phase; set NUM_GROW_STEPS = 0.")
    phases.append(Phase("online"))
  return phases


def report_phase(loop, phase: Phase, params, progress: train.PhaseProgress, fields: dict):
  """Evaluates and records a finished phase's policy (one row per split)."""
  if phase.kind == "online":  # Not a (Grow, Improve) point: listed after those, by name.
    run_name, point = f"online_{fields['loss']}", None
  else:
    run_name = "G0I0" if phase.kind == "bc" else phase.run_name
    point = {"grow_step": phase.grow_step, "improve_step": max(phase.round, 0)}
  loop.reporter.phase_done(run_name, loop.phases.index(phase), params, progress, fields, point)


# ---------------------------------------------------------------------------------- BC
def run_bc(loop, index: int, mid_meta: dict | None):
  """Behaviour cloning on the human data; with `init_policy` it loads (or fine-tunes) that."""
  phase = loop.phases[index]
  if loop.has_init_policy and loop.init_policy_mode == "load":
    return _load_init_policy(loop, phase)
  spec = loss_registry.get_loss("bc")
  tx = loop.tx(loop.bc_cfg.optimizer)
  make_state = lambda: loop.factory.create(jax.random.PRNGKey(loop.seed), tx)
  if loop.has_init_policy:  # Fine-tune: the saved parameters, a fresh optimizer.
    make_state = lambda: loop.factory.start_phase(loop.init_params(), jnp.zeros((), jnp.int32),
                                                  tx)
  data = loop.bc_data
  params, progress = loop.train(index, phase, make_state, tx, spec, loop.bc_loss_config, data,
                                loop.bc_cfg, mid_meta, None,
                                lambda p: loop.validation_score(p, loop.bc_selection_metric))
  loop.checkpoints.save_bc(params, progress.best_score, loop.init_policy_name)
  loop.bc_params = params
  report_phase(loop, phase, params, progress, {"loss": "bc", "num_grown": 0,
                                               "num_kept": len(data)})
  return params


def _load_init_policy(loop, phase):
  """The BC phase of a run that starts from a saved policy: load, record, evaluate."""
  params = loop.init_params()
  logging.info("BC phase: starting from the saved policy %s", loop.init_policy_name)
  progress = train.PhaseProgress()
  progress.best_score = loop.validation_score(params, loop.bc_selection_metric)
  progress.best_step = 0
  loop.checkpoints.save_bc(params, progress.best_score, loop.init_policy_name)
  loop.bc_params = params
  report_phase(loop, phase, params, progress, {"loss": "pretrained", "num_grown": 0,
                                               "num_kept": 0})
  return params


# -------------------------------------------------------------------------------- Grow
def run_grow(loop, phase: Phase, params) -> None:
  """Samples and scores Grow step g's data with `params` (resumes shard by shard)."""
  g = phase.grow_step
  loop.checkpoints.save_grow_policy(g, params, loop.total_steps)
  grow_shards(loop, g, params, loop.total_steps)
  records = grown(loop, g)
  samples = records.reward[~records.is_original]
  logger.info("Grow %d: %d samples, mean reward %.3f.", g, len(samples), samples.mean())
  if sharding_lib.is_chief():
    plot_histograms(loop)


def grow_shards(loop, g: int, params, policy_step: int) -> None:
  """Writes every missing shard of Grow step g."""
  if loop.grow_sampler is None:
    loop.grow_sampler = sampling.make_sampler(loop.model, loop.grow_cfg.sampling_config(),
                                              loop.mesh, loop.factory.param_shardings)
  grow_lib.grow(g, params, policy_step, loop.grow_examples, loop.grow_sampler, loop.vocab,
                loop.reward, _store(loop, g), loop.grow_cfg, loop.mesh,
                loop.data_cfg.max_source_len, num_global_sources=len(loop.grow_pool),
                settings={"task": loop.data_cfg.task, "reward": str(loop.reward.name)})
  loop.grown_cache.pop(g, None)


def _store(loop, g: int) -> grown_data.GrowStore:
  return grown_data.GrowStore(os.path.join(loop.workdir, "grown"), g)


def grown(loop, g: int) -> grown_data.GrownRecords:
  """Grow step g's records (read once; damaged shards are set aside and regrown)."""
  if g not in loop.grown_cache:
    store = _store(loop, g)
    try:
      records = store.read_all()
    except grown_data.UnreadableShardsError as e:
      _regrow(loop, g, store, e)
      records = store.read_all()
    loop.grown_cache.clear()
    loop.grown_cache[g] = records
  return loop.grown_cache[g]


def _regrow(loop, g, store, error):
  """Sets damaged shards aside and samples them again with Grow step g's saved policy."""
  grow_ckpt = loop.checkpoints.grow
  if g not in grow_ckpt.all_steps():
    raise checkpointing.CheckpointError(
        f"{error} Grow step {g}'s policy is not in {grow_ckpt.directory} (only the "
        f"latest Grow step's is kept), so they cannot be regrown here; delete "
        f"{store.directory} and its later phases' checkpoints to redo it.") from error
  for path, reason in error.shards:
    target = store.set_aside(path) if sharding_lib.is_chief() else path + grown_data.UNREADABLE_SUFFIX
    logger.warning("Grown shard %s is unreadable (%s); set aside as %s and regrown.", path,
                   reason, target)
  sharding_lib.barrier(f"grow{g}_set_aside")
  params, meta = grow_ckpt.restore(loop.abstract_params(), g)
  grow_shards(loop, g, params, meta["policy_step"])


def plot_histograms(loop) -> None:
  """reward_histograms.png: each Grow step's sample rewards and the rounds' thresholds."""
  rewards, thresholds = {}, {}
  taus = [s.tau for s in filters.make_schedule(list(loop.improve_cfg.filter_schedule)).rounds
          if isinstance(s, filters.Threshold)]
  for g in range(1, max(p.grow_step for p in loop.phases) + 1):
    store = _store(loop, g)
    if not store.shard_files():
      continue
    try:
      records = grown(loop, g) if g in loop.grown_cache else store.read_all()
    except grown_data.UnreadableShardsError as e:  # An earlier step's: regrown if re-run.
      logger.warning("Reward histogram without Grow step %d: %s", g, e)
      continue
    rewards[g] = records.reward[~records.is_original]
    thresholds[g] = taus
  report.plot_reward_histograms(rewards, thresholds,
                                os.path.join(loop.workdir, "reward_histograms.png"))


# ------------------------------------------------------------------------ value, Improve
def run_value(loop, index: int, phase: Phase, params, mid_meta):
  """Pretrains the critic (value head) on Grow step g's data before its rounds."""
  spec = loss_registry.get_loss("value_pretrain")
  data = improve.records_to_data(grown(loop, phase.grow_step))
  cfg_i = loop.improve_cfg
  cfg = cfg_i.train.replace(max_steps=cfg_i.value_pretrain_steps,
                            eval_every=cfg_i.value_pretrain_steps, patience=0)
  tx = loop.tx(cfg.optimizer)
  make_state = lambda: loop.factory.start_phase(
      params, jnp.asarray(loop.total_steps, jnp.int32), tx)
  best, _ = loop.train(index, phase, make_state, tx, spec, cfg_i.value_pretrain_config(), data,
                       cfg, mid_meta, None, None)
  return best


def run_improve(loop, index: int, phase: Phase, params, mid_meta) -> tuple[Any, bool]:
  """One Improve round: filter, train with the round's loss, report. Returns (policy, stop):
  `stop` when the filter kept nothing and ImproveConfig.on_empty says to end the Grow step."""
  g, i = phase.grow_step, phase.round
  cfg_i = loop.improve_cfg
  records = grown(loop, g)
  data, fres = improve.round_data(records, cfg_i.filter_of(i), cfg_i.original_data)
  if data is None:
    message = filters.describe_empty(fres, i)
    logger.warning("%s", message)
    if sharding_lib.is_chief():
      print(f"[{phase.name}] {message}")
    return params, cfg_i.on_empty == "stop"
  if cfg_i.mix_bc_data:
    data = batching.concat_inputs_targets(data, loop.bc_data)
    logging.info("%s: %d kept samples + %d BC examples (mix_bc_data)", phase.name,
                 fres.num_kept, len(data) - fres.num_kept)
  if i == 0 and cfg_i.restart_from == "bc":
    params = loop.bc_policy()
  loss_name = cfg_i.loss_of(i)
  spec, loss_cfg = loss_registry.get_loss(loss_name), cfg_i.loss_config(loss_name)
  tx = loop.tx(cfg_i.train.optimizer, duals=bool(spec.init_params(loss_cfg)))
  frozen = {}
  if spec.requires & {"bc_logits", "bc_token_logprobs"}:
    frozen["bc_params"] = loop.bc_policy()
  if "lagged_token_logprobs" in spec.requires:
    frozen["lagged_params"] = params
  if "prev_logits" in spec.requires:
    frozen["prev_params"] = params
  make_state = lambda: loop.factory.start_phase(
      params, jnp.asarray(loop.total_steps, jnp.int32), tx, spec.init_params(loss_cfg),
      frozen, lr_scale=cfg_i.lr_scale(g, i))
  start_score = None if mid_meta is not None else loop.validation_score(params)
  best, progress = loop.train(index, phase, make_state, tx, spec, loss_cfg, data, cfg_i.train,
                              mid_meta, start_score, loop.validation_score)
  samples, reward_calls = grow_lib.sample_counts(loop.grow_cfg, len(loop.grow_pool))
  report_phase(loop, phase, best, progress, {
      "loss": loss_name, "num_grown": int((~records.is_original).sum()),
      "num_kept": int(fres.num_kept), "threshold": fres.threshold_description,
      "num_trained": len(data),  # num_kept, plus BC's examples under mix_bc_data.
      # Up to this Grow step, for comparisons with online RL per sample / reward call / second.
      "samples_drawn": g * samples, "reward_calls": g * reward_calls,
      "wall_s": rest_wall_seconds(loop, g)})
  return best, False


def rest_wall_seconds(loop, g: int) -> float | None:
  """Wall seconds of ReST after BC up to now: Grow steps 1..g (sampling and scoring, from their
  shards) and every training phase after BC (Improve rounds, value pretraining, with their
  validation evaluations); not the reports' evaluations, as for the online phase's `wall_s`.
  None when a Grow step's shards carry no times (grown before they recorded them)."""
  grow_walls = [_store(loop, step).wall_seconds() for step in range(1, g + 1)]
  if any(w is None for w in grow_walls):
    return None
  return sum(grow_walls) + loop.train_wall_s


# ------------------------------------------------------------------------------ online
def run_online(loop, index: int, phase: Phase, params, mid_meta):
  """On-policy RL from the BC policy (`rest_jax.online`) on the sources Grow samples from
  (`DataConfig.grow_split`); reported as `online_<loss>`."""
  cfg = loop.online_cfg
  spec, loss_cfg = cfg.spec, cfg.loss_config()
  tx = loop.tx(cfg.train.optimizer, duals=bool(spec.init_params(loss_cfg)))
  frozen = {"bc_params": loop.bc_policy()} if "bc_logits" in spec.requires else {}
  make_state = lambda: loop.factory.start_phase(
      params, jnp.asarray(loop.total_steps, jnp.int32), tx, spec.init_params(loss_cfg), frozen)
  curve = online_lib.OnlineCurve(loop.workdir, 0 if mid_meta is None else
                                 mid_meta["progress"]["step"], write=sharding_lib.is_chief())
  start_score = None
  if mid_meta is None:  # The BC policy is the curve's first point and a best candidate.
    start_score = curve.record(0, cfg.samples_per_step, loop.validation_score(params))
  sampler = sampling.make_sampler(loop.model, cfg.sampling_config(), loop.mesh,
                                  loop.factory.param_shardings)
  old_policy = online_lib.make_old_policy_fn(loop.model, loop.mesh, loop.factory.param_shardings)
  steps = []

  def wrap(update):
    steps.append(online_lib.OnlineStep(cfg, update, sampler, old_policy, loop.reward,
                                       loop.grow_pool, loop.vocab, loop.mesh,
                                       clock=curve.wall_s))
    return steps[-1]

  evaluate_fn = lambda p: curve.record(steps[-1].steps_done, cfg.samples_per_step,
                                       loop.validation_score(p))
  best, progress = loop.train(index, phase, make_state, tx, spec, loss_cfg,
                              online_lib.source_data(loop.grow_pool), cfg.train,
                              mid_meta, start_score, evaluate_fn, wrap_step=wrap)
  samples = progress.step * cfg.samples_per_step
  report_phase(loop, phase, best, progress, {
      "loss": cfg.loss, "num_grown": samples, "samples_drawn": samples,
      "reward_calls": samples, "online_steps": progress.step, "wall_s": curve.wall_s()})
  return best
