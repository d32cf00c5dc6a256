"""The ReST loop: BC, then Grow / (value pretraining) / Improve rounds, with resume.

The run is a fixed list of phases computed from the configuration:

  bc, grow1, [value1], improve1.0, improve1.1, ..., grow2, [value2], improve2.0, ...

`value<g>` (behaviour value estimation of the critic) appears only when a round of that Grow step
uses a loss with a value head (BVMPO, OAC). Improve round i of Grow step g is reported as
`G<g>I<i>`: round 0 uses the first filter of the schedule (the paper's τ = 0 row, "I=0"). BC is
`G0I0`. Every round continues from the previous round's best policy with a lower learning rate
(`ImproveConfig.lr_decay_per_round`), or — ReST-EM — the first round of each Grow step restarts
from the BC policy (`restart_from="bc"`). Every phase starts a fresh optimizer: Adam moments, the
warm-up (`improve/OptimizerConfig.warmup_steps`, 0 for none) and BVMPO's duals restart in every
round. The decay exponent counts the rounds of the Grow step (`lr_decay_over='grow_step'`: each
Grow step's first round trains at the full rate again) or of the whole run (`'run'`); the paper
says only that each round continues with a lower learning rate.

Checkpoints: one orbax manager under `<workdir>/checkpoints` holds either a full mid-phase state
("state", saved at each evaluation) or a phase-boundary policy ("policy"), ordered by
`phase_index * 10**6 + step`. The latest one says where to resume; if it cannot be read it is
set aside (`<step>.unreadable`) and the newest readable one is used. Grown data lives in
`<workdir>/grown` and resumes shard by shard; `<workdir>/checkpoints_grow` keeps the policy of
the latest Grow step so that a shard found damaged later is regrown identically. Results go to
`results.jsonl/csv/md`, PNG plots and TensorBoard events under `<workdir>/tensorboard`; only
process 0 writes them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rest_jax import checkpointing, configs, evaluate, fileio, filters, grow as grow_lib
from rest_jax import grown_data, preemption, pretrained_policies
from rest_jax import batching, improve, optim, report, sampling, train, train_state
from rest_jax import sharding as sharding_lib
from rest_jax import online as online_lib
from rest_jax.losses import registry as loss_registry
from rest_jax.models import Transformer, model_config

logger = logging.getLogger(__name__)

PHASE_STRIDE = 10**6
ON_EMPTY = ("stop", "skip")
RESTART_FROM = ("previous", "bc")
ORIGINAL_DATA = ("keep", "filter", "drop")
LR_DECAY_OVER = ("grow_step", "run")
SELECTION_METRICS = ("mean_reward", "bleu", "chrf")
INIT_POLICY_MODES = ("load", "finetune")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which task and how much of it. Toy defaults: the length limits (48) fit the embedded
  corpus; the paper's IWSLT/WMT runs decode up to 128 tokens (set by their task gin files)."""
  task: str = "ding_de_en"
  max_source_len: int = 48  # Longer pairs are dropped (and counted), never truncated.
  max_target_len: int = 48
  max_train_examples: int | None = None
  max_validation_examples: int | None = None
  max_test_examples: int | None = None
  early_stopping_examples: int = 256  # Validation subset scored during training phases.
  # Splits evaluated after BC and every Improve round besides validation (max_test_examples
  # applies to each); each gets its rows (split=<name>) and its table in results.md.
  test_splits: tuple[str, ...] = ("test",)
  # Splits that BC trains on besides "train" (e.g. the dictionary terms of the `de_en` task).
  # Grow samples, and Improve keeps original pairs, from "train" only.
  bc_extra_splits: tuple[str, ...] = ()
  # BC sees each "train" pair this many times per pass over its data (upsamples the in-domain
  # pairs against large extra splits).
  bc_train_repeats: int = 1
  # The split Grow samples from (default: the BC data). A reasoning task's pool of problems with
  # answers only (e.g. the `arith` task's "grow") is larger than its worked solutions; its
  # references are bare answers, so Improve rounds should drop them (original_data='drop').
  grow_split: str = "train"

  def __post_init__(self):
    for field in ("max_source_len", "max_target_len", "early_stopping_examples",
                  "bc_train_repeats"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"DataConfig.{field}={value!r} is invalid: expected a positive integer.")
    if not isinstance(self.grow_split, str) or self.grow_split in ("", "validation"):
      raise ValueError(f"DataConfig.grow_split={self.grow_split!r} is invalid: expected the name "
                       "of a split other than 'validation', e.g. 'train' or 'grow'.")
    object.__setattr__(self, "test_splits", _check_test_splits(self.test_splits))
    extra = self.bc_extra_splits
    if isinstance(extra, str) or not isinstance(extra, (tuple, list)) or not all(
        isinstance(x, str) and x and x not in ("train", "validation") for x in extra):
      raise ValueError(f"DataConfig.bc_extra_splits={extra!r} is invalid: expected a tuple of "
                       "split names other than 'train' and 'validation', e.g. ('train_terms',)")
    object.__setattr__(self, "bc_extra_splits", tuple(extra))


def _check_test_splits(splits: Any) -> tuple[str, ...]:
  """A non-empty tuple of distinct split names (a list is accepted and turned into a tuple)."""
  problem = None
  if isinstance(splits, str):
    problem = f"it is a single string; a one-split tuple needs its comma: ({splits!r},)"
  elif not isinstance(splits, (tuple, list)) or not splits:
    problem = "it is not a non-empty tuple"
  elif not all(isinstance(x, str) and x for x in splits):
    problem = "not every entry is a non-empty string"
  elif len(set(splits)) != len(splits):
    problem = "a split is listed twice"
  elif "validation" in splits:
    problem = "'validation' is always evaluated; list only the test splits"
  if problem:
    raise ValueError(f"DataConfig.test_splits={splits!r} is invalid: {problem}. Expected a "
                     "non-empty tuple of split names, e.g. ('test',) or "
                     "('test_dict', 'test_software').")
  return tuple(splits)


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
  train: improve.TrainPhaseConfig = improve.TrainPhaseConfig()

  def __post_init__(self):
    configs.check_choice("ImproveConfig", "original_data", self.original_data, ORIGINAL_DATA)
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


@dataclasses.dataclass(frozen=True)
class Phase:
  kind: str  # "bc" | "grow" | "value" | "improve"
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


def plan_phases(num_grow_steps: int, improve_config: ImproveConfig) -> list[Phase]:
  phases = [Phase("bc")]
  for g in range(1, num_grow_steps + 1):
    phases.append(Phase("grow", g))
    if any(loss_registry.get_loss(improve_config.loss_of(i)).needs_value_head
           for i in range(improve_config.num_rounds)):
      phases.append(Phase("value", g))
    phases.extend(Phase("improve", g, i) for i in range(improve_config.num_rounds))
  return phases


def run_phases(num_grow_steps: int, improve_config: ImproveConfig,
               online: online_lib.OnlineConfig | None) -> list[Phase]:
  """The phases of a run: ReST's (`plan_phases`), or BC then on-policy RL when `online` is set."""
  phases = plan_phases(num_grow_steps, improve_config)
  if online is not None:  # On-policy RL after BC instead of ReST (rest_jax.online).
    if num_grow_steps:
      raise ValueError(f"run.num_grow_steps={num_grow_steps!r} with run.online set: an online-RL "
                       "run is BC then the online phase; set NUM_GROW_STEPS = 0.")
    phases.append(Phase("online"))
  return phases


def _is_chief() -> bool:
  return jax.process_index() == 0


def run(workdir: str, *, task: str | None = None, model_preset: str = "small",
        model_overrides: Any = None, mesh: configs.MeshConfig = configs.MeshConfig(),
        data: DataConfig = DataConfig(), bc: improve.TrainPhaseConfig = improve.TrainPhaseConfig(),
        num_grow_steps: int = 1, grow: grow_lib.GrowConfig = grow_lib.GrowConfig(),
        improve_config: ImproveConfig = ImproveConfig(),
        evaluation: evaluate.EvalConfig = evaluate.EvalConfig(), reward: str = "chrf",
        reward_options: Any = None, bc_loss_overrides: Any = None,
        bc_selection_metric: str = "mean_reward", seed: int = 0,
        init_policy: str | None = None, init_policy_mode: str = "load",
        stop_after_phase: str | None = None, on_start: Any = None,
        online: online_lib.OnlineConfig | None = None) -> list[dict]:
  """Runs (or resumes) a ReST experiment in `workdir`; returns the results rows.

  `reward` is a reward spec ("chrf", "bleu", "exact_match", "learned:path=/dir"); options in
  `reward_options` (a dict, convenient from gin) are added to the spec's own.
  `bc_loss_overrides` sets hyper-parameters of the BC phase's loss (e.g. label_smoothing).
  `bc_selection_metric` is what BC's early stopping maximises on the validation subset: the
  reward ("mean_reward"), or corpus "bleu" or "chrf" against the references. A learned reward
  can prefer an under-trained, repetitive policy early in BC (reward hacking before any RL);
  selecting BC on a reference metric avoids that. Improve rounds always select on the reward.

  `online` (an `online.OnlineConfig`; needs `num_grow_steps=0`) runs on-policy RL (REINFORCE
  with a group baseline, PPO) from the BC policy instead of ReST: phases `bc`, `online`.

  `stop_after_phase` (a phase name such as "grow1") ends the run after that phase — used to
  inspect grown data before Improve, and by the resume tests.

  `on_start()` is called once the configuration and the workdir's checkpoints have been checked,
  before any phase runs (`rest_jax.main` writes config.gin then, so a refused configuration
  does not overwrite the config of the run the workdir holds).

  `init_policy` ('pretrained=NAME', a workdir or a checkpoint directory; see
  rest_jax.pretrained_policies) makes the BC phase load that policy instead of training one; its
  row (G0I0, loss 'pretrained') is evaluated like a trained BC policy's. With
  `init_policy_mode='finetune'` BC trains as configured but starts from that policy's parameters
  (a fresh optimizer), which continues a BC policy on a new machine or new data.
  """
  if task is not None:
    data = dataclasses.replace(data, task=task)
  if not isinstance(num_grow_steps, int) or num_grow_steps < 0:
    raise ValueError(f"run.num_grow_steps={num_grow_steps!r} is invalid: expected an integer "
                     ">= 0.")
  model_config(model_preset, 8, **dict(model_overrides or {}))  # Validates before loading data.
  bc_loss_config = loss_registry.make_config("bc", **dict(bc_loss_overrides or {}))
  if bc_selection_metric not in SELECTION_METRICS:
    raise ValueError(f"run.bc_selection_metric={bc_selection_metric!r} is invalid; allowed: "
                     f"{list(SELECTION_METRICS)}.")
  init_dir = None if init_policy is None else pretrained_policies.resolve(init_policy)
  if init_policy_mode not in INIT_POLICY_MODES:
    raise ValueError(f"run.init_policy_mode={init_policy_mode!r} is invalid; allowed: "
                     f"{list(INIT_POLICY_MODES)}.")
  phases = run_phases(num_grow_steps, improve_config, online)
  if stop_after_phase is not None and stop_after_phase not in [p.name for p in phases]:
    raise ValueError(f"run.stop_after_phase={stop_after_phase!r} is not a phase of this run; "
                     f"phases: {[p.name for p in phases]}.")
  from rest_jax.rewards import registry as reward_registry
  reward_name, options = reward_registry.parse_spec(reward)
  options.update(dict(reward_options or {}))
  reward_fn = reward_registry.make_reward(reward_name, **options)
  if improve_config.original_data == "filter" and reward_fn.needs_reference:
    raise ValueError(
        f"ImproveConfig.original_data='filter' with the reference-based reward {reward!r}: each "
        "human reference would be scored against itself (the maximum reward), pass every filter "
        "and set per-source maxima. Use 'keep' (the paper: the grown set contains the original "
        "data) or 'drop', or a reference-free reward (e.g. 'learned:...').")
  loop = _Loop(workdir, phases, data, model_preset, dict(model_overrides or {}), mesh, bc,
               grow, improve_config, evaluation, reward_fn, seed, bc_loss_config,
               bc_selection_metric, init_dir, init_policy_mode, online=online)
  try:
    return loop.run(stop_after_phase, on_start)
  finally:
    loop.close()


class _Loop:
  """Holds the run's shared objects and executes its phases."""

  def __init__(self, workdir, phases, data_cfg, preset, overrides, mesh_cfg, bc_cfg, grow_cfg,
               improve_cfg, eval_cfg, reward, seed, bc_loss_config, bc_selection_metric,
               init_dir=None, init_policy_mode="load", online=None):
    # Imported here so that config errors above surface before TensorFlow/seqio start.
    from rest_jax.data import pipeline

    self.workdir, self.phases = fileio.abspath(workdir), phases
    self.data_cfg, self.bc_cfg, self.grow_cfg = data_cfg, bc_cfg, grow_cfg
    self.improve_cfg, self.eval_cfg, self.seed = improve_cfg, eval_cfg, seed
    self.bc_loss_config = bc_loss_config
    self.bc_selection_metric = bc_selection_metric
    self.reward = reward
    # What the reported metrics are scored with (EvalConfig.reward), e.g. the task's final-answer
    # accuracy while Grow keeps samples by a stricter verifier; early stopping uses self.reward.
    if eval_cfg.reward is None:
      self.report_reward = reward
    else:
      from rest_jax.rewards import registry  # pylint: disable=g-import-not-at-top
      self.report_reward = registry.reward_from_spec(eval_cfg.reward)
    fileio.makedirs(self.workdir)

    self.vocab = pipeline.get_task_vocabulary(data_cfg.task)
    splits = pipeline.get_task(data_cfg.task).splits
    if data_cfg.grow_split not in splits:
      raise ValueError(f"DataConfig.grow_split={data_cfg.grow_split!r}: task {data_cfg.task!r} "
                       f"has no such split; its splits: {sorted(splits)}.")
    for field in ("test_splits", "bc_extra_splits"):
      missing = [s for s in getattr(data_cfg, field) if s not in splits]
      if missing:  # Checked before the (possibly long) training-data load.
        raise ValueError(f"DataConfig.{field}={getattr(data_cfg, field)!r}: task "
                         f"{data_cfg.task!r} has no split {missing}; its splits: "
                         f"{sorted(splits)}.")
    lengths = dict(max_source_len=data_cfg.max_source_len,
                   max_target_len=data_cfg.max_target_len)
    load = lambda split, limit, **kw: pipeline.load_examples(
        data_cfg.task, split, max_examples=limit, **lengths, **kw)
    self._load_split = load
    self.init_dir, self._init_step, self.init_policy_mode = init_dir, None, init_policy_mode
    self.online_cfg = online
    if init_dir is not None:  # Checked before the training data loads.
      self._init_step, meta = pretrained_policies.read_meta(init_dir)
      pretrained_policies.check_compatible(
          init_dir, meta,
          model_config(preset, self.vocab.vocab_size, **dict(overrides, value_head=True)),
          lambda task: task == data_cfg.task or pipeline.get_task_vocabulary(task) == self.vocab)
    self.train_examples = load("train", data_cfg.max_train_examples)
    # A separate Grow split holds problems only Grow uses: just its first max_sources are read.
    self.grow_pool = (self.train_examples if data_cfg.grow_split == "train"
                      else load(data_cfg.grow_split, grow_cfg.max_sources))
    # Grow sources: this process's share (every process_count-th source).
    self.grow_examples = self.grow_pool[jax.process_index()::jax.process_count()]
    self.validation = load("validation", data_cfg.max_validation_examples)
    self.tests = {split: load(split, data_cfg.max_test_examples)
                  for split in data_cfg.test_splits}
    self.es_subset = self.validation[: data_cfg.early_stopping_examples]

    # The loop's policy always carries the (small) value head, so runs that differ only in their
    # Improve losses can share the BC and Grow phases of one workdir (loss sweeps).
    self.model = Transformer(model_config(preset, self.vocab.vocab_size,
                                          **dict(overrides, value_head=True)))
    longest = lambda seqs: max((len(x) for x in seqs), default=1)
    self.lengths = (batching.round_up(longest([e.inputs for e in self.train_examples
                                               + self.grow_pool]), 8),
                    batching.round_up(max(longest([e.targets for e in self.train_examples]),
                                          grow_cfg.max_decode_len,
                                          online.max_decode_len if online else 0), 8))
    self.mesh = sharding_lib.make_mesh(mesh_cfg)
    if online is not None:
      online.check_layout(sharding_lib.num_batch_shards(self.mesh), jax.process_count())
    self.factory = train_state.StateFactory(self.model, self.mesh, sharding_lib.rules_of(mesh_cfg))
    self.evaluator = evaluate.Evaluator(self.model, self.mesh, self.factory.param_shardings,
                                        self.vocab, self.reward, eval_cfg,
                                        source_len=data_cfg.max_source_len)
    self.ckpt = checkpointing.Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                           max_to_keep=2)
    self.best_ckpt = checkpointing.Checkpointer(os.path.join(self.workdir, "checkpoints_best"),
                                                max_to_keep=1)
    self.bc_ckpt = checkpointing.Checkpointer(os.path.join(self.workdir, "checkpoints_bc"),
                                              max_to_keep=1)
    # The policy that sampled the latest Grow step, to regrow a shard found damaged later.
    self.grow_ckpt = checkpointing.Checkpointer(os.path.join(self.workdir, "checkpoints_grow"),
                                                max_to_keep=1)
    self.results = report.ResultsLog(self.workdir) if _is_chief() else None
    self.tb = report.TensorBoardWriter(os.path.join(self.workdir, "tensorboard")) \
        if _is_chief() else None
    self.fingerprint = {"model": dataclasses.asdict(self.model.config), "task": data_cfg.task,
                        "lengths": list(self.lengths)}
    # What the BC phase trains with; a workdir whose BC has started must keep it (checked on
    # resume), as its checkpoints and results would otherwise mix two BC configurations.
    self.bc_settings = json.loads(json.dumps({
        "train": dataclasses.asdict(bc_cfg), "loss": repr(bc_loss_config),
        "selection_metric": bc_selection_metric,
        # The policy's folder name, not its path: a workdir may resume on another machine.
        "init_policy": init_dir and os.path.basename(os.path.normpath(init_dir)),
        "init_policy_mode": init_policy_mode, "bc_extra_splits": list(data_cfg.bc_extra_splits),
        "bc_train_repeats": data_cfg.bc_train_repeats}, default=str))
    self._grown_cache: dict[int, grown_data.GrownRecords] = {}
    self._txs: dict[Any, Any] = {}
    self._steps: dict[Any, Any] = {}
    self._bc_params = None
    self._best_in_memory = None
    self._sampler = None
    self._reasoning_evaluator = None  # EvalConfig.pass_at_k's sampler, built on first use.
    self.total_steps = 0

  def close(self):
    for c in (self.ckpt, self.best_ckpt, self.bc_ckpt, self.grow_ckpt):
      c.close()
    if self.tb is not None:
      self.tb.close()

  # --------------------------------------------------------------------------- resume
  def _resume_point(self):
    """(phase index, params or None, mid-phase meta or None)."""
    self.total_steps = 0
    step = self.ckpt.latest_step()
    if step is None:
      return 0, None, None
    meta = self.ckpt.restore_meta(step)
    index = meta["phase_index"]
    names = [p.name for p in self.phases]
    done = meta.get("phases", [])[:index]
    if meta.get("fingerprint") != self.fingerprint or done != names[:index]:
      raise checkpointing.CheckpointError(
          f"The checkpoints in {self.workdir} belong to a different experiment: it completed "
          f"phases {done} with {meta.get('fingerprint')}, but this configuration plans "
          f"{names[:index]} with {self.fingerprint}. A run may only change phases it has not "
          "started; use a new --workdir otherwise.")
    saved_bc = meta.get("bc_settings")
    if saved_bc is not None and saved_bc != self.bc_settings:
      changed = sorted(k for k in self.bc_settings if saved_bc.get(k) != self.bc_settings[k])
      raise checkpointing.CheckpointError(
          f"The checkpoints in {self.workdir} were made with another BC configuration "
          f"({', '.join(f'{k}: {saved_bc.get(k)} -> {self.bc_settings[k]}' for k in changed)}); "
          "a started BC phase cannot change. Restore those settings, or use a new --workdir "
          "(rest_loop.run.init_policy can start it from this workdir's BC policy).")
    self.total_steps = meta["total_steps"]
    if meta["kind"] == "policy":
      params, _ = self.ckpt.restore(self._abstract_params(), step)
      return index, params, None
    return index, None, meta

  def _abstract_params(self):
    return self.factory.abstract_state(self._tx(self.bc_cfg.optimizer))[0].params

  # ------------------------------------------------------------------------------ run
  def run(self, stop_after_phase, on_start=None):
    """Runs the phases from the resume point; a damaged resume checkpoint is set aside (one
    WARNING line naming it and why) and the run resumes from the newest readable one."""
    self._on_start = on_start
    while True:
      try:
        return self._run_phases(stop_after_phase)
      except checkpointing.UnreadableCheckpointError as e:
        if e.directory != self.ckpt.directory:
          raise
        moved = self.ckpt.set_aside(e.step)
        logger.warning("Checkpoint %s/%d is unreadable (%s); set aside as %s, resuming from the "
                       "newest readable checkpoint.", e.directory, e.step, e.reason, moved)

  def _run_phases(self, stop_after_phase):
    index, params, mid_meta = self._resume_point()
    if self._on_start is not None:  # Once: the configuration fits this workdir.
      self._on_start()
      self._on_start = None
    if index > 0 or mid_meta is not None:
      step = "" if mid_meta is None else f", step {mid_meta['progress']['step']}"
      logger.info("Resuming at phase %s%s.", self.phases[min(index, len(self.phases) - 1)].name,
                  step)
    skip_rest_of_grow = None
    while index < len(self.phases):
      phase = self.phases[index]
      if skip_rest_of_grow == phase.grow_step and phase.kind == "improve":
        logger.info("Skipping %s: an earlier round of Grow step %d kept no data.", phase.name,
                     phase.grow_step)
      elif phase.kind == "bc":
        params = self._run_bc(index, mid_meta)
      elif phase.kind == "grow":
        self._run_grow(phase, params)
      elif phase.kind == "value":
        params = self._run_value(index, phase, params, mid_meta)
      elif phase.kind == "online":
        params = self._run_online(index, phase, params, mid_meta)
      else:
        params, stopped = self._run_improve(index, phase, params, mid_meta)
        if stopped:
          skip_rest_of_grow = phase.grow_step
      mid_meta = None
      index += 1
      if phase.kind != "grow":
        self._save_policy(index, params)
      if phase.name == stop_after_phase:
        break
      if index < len(self.phases) and preemption.stop_requested():
        raise preemption.Preempted(f"Stopped before phase {self.phases[index].name} "
                                   "(checkpointed).")
    return self._finish()

  def _save_policy(self, index, params):
    meta = {"kind": "policy", "phase_index": index, "total_steps": self.total_steps,
            "fingerprint": self.fingerprint, "phases": [p.name for p in self.phases],
            "bc_settings": self.bc_settings}
    self.ckpt.save(index * PHASE_STRIDE, params, meta)

  # ---------------------------------------------------------------------- training phase
  def _tx(self, optimizer_config: configs.OptimizerConfig, duals: bool = False):
    """The phase's optimizer; losses with dual variables give them their own Adam."""
    if (optimizer_config, duals) not in self._txs:
      tx = optim.make_optimizer(optimizer_config)
      self._txs[optimizer_config, duals] = (
          optim.with_dual_optimizer(tx, optimizer_config) if duals else tx)
    return self._txs[optimizer_config, duals]

  def _step_fn(self, phase, spec, loss_cfg, tx, shardings, dropout):
    """Compiled train steps are reused by every phase with the same loss and state layout."""
    improving = phase.kind == "improve"
    lag = self.improve_cfg.lagged_sync_every if improving else 0
    trust = self.improve_cfg.trust_region_sync_every if improving else 0
    key = (spec.name, loss_cfg, id(tx), dropout, lag, trust,
           jax.tree_util.tree_structure(shardings))
    if key not in self._steps:
      self._steps[key] = train.make_train_step(self.model, spec, loss_cfg, tx, shardings,
                                               self.mesh, dropout=dropout,
                                               lagged_sync_every=lag,
                                               trust_region_sync_every=trust)
    return self._steps[key]

  def _train(self, index, phase, make_state, tx, spec, loss_cfg, data, cfg, mid_meta,
             start_score, evaluate_fn, wrap_step=None):
    """Trains one phase from `make_state()` or, resuming, from its mid-phase checkpoint."""
    progress = improve.PhaseProgress()
    if mid_meta is not None:
      abstract, shardings = self.factory.abstract_state(tx, spec.init_params(loss_cfg),
                                                        tuple(mid_meta["frozen"]))
      state, _ = self.ckpt.restore(abstract)
      progress = improve.PhaseProgress.from_json(mid_meta["progress"])
    else:
      state, shardings = make_state()
    step_fn = self._step_fn(phase, spec, loss_cfg, tx, shardings, cfg.dropout)
    if wrap_step is not None:  # The online phase: sample and score around the update.
      step_fn = wrap_step(step_fn)
    frozen = tuple(f for f in train_state.FROZEN_FIELDS if getattr(state, f) is not None)
    start_total = self.total_steps - progress.step

    def save_state(st, prog):
      self.total_steps = start_total + prog.step
      meta = {"kind": "state", "phase_index": index, "progress": prog.to_json(),
              "frozen": list(frozen), "total_steps": self.total_steps,
              "fingerprint": self.fingerprint, "phases": [p.name for p in self.phases],
              "bc_settings": self.bc_settings}
      self.ckpt.save(index * PHASE_STRIDE + prog.step, st, meta)

    def save_best(params, prog):
      self._best_in_memory = jax.tree_util.tree_map(jnp.copy, params)
      self.best_ckpt.save(index * PHASE_STRIDE + prog.best_step, params,
                          {"phase_index": index, "score": prog.best_score,
                           "fingerprint": self.fingerprint})

    def load_best():
      if self._best_in_memory is not None:
        return self._best_in_memory
      step = self.best_ckpt.latest_step()
      meta = self.best_ckpt.restore_meta(step)
      if meta["phase_index"] != index:
        raise checkpointing.CheckpointError(f"Best-params checkpoint belongs to phase "
                                            f"{meta['phase_index']}, expected {index}.")
      return self.best_ckpt.restore(self._abstract_params(), step)[0]

    def log_metrics(metrics, step):
      if self.tb is not None:
        self.tb.scalars(metrics, start_total + step, prefix=f"train/{phase.name}/")

    self._best_in_memory = None
    hooks = improve.PhaseHooks(evaluate=evaluate_fn, save_state=save_state, save_best=save_best,
                               load_best=load_best, log_metrics=log_metrics)
    rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), index)
    state, best, progress = improve.train_phase(phase.name, state, step_fn, data, cfg, self.mesh,
                                                hooks, progress, rng, self.lengths, start_score)
    self.total_steps = start_total + progress.step
    self._best_in_memory = None
    return best, progress

  def _validation_score(self, params, metric: str = "mean_reward") -> float:
    summary, _, _ = self.evaluator.evaluate(params, self.es_subset, desc="early-stopping eval")
    return summary[metric]

  def _run_bc(self, index, mid_meta):
    phase = self.phases[index]
    if self.init_dir is not None and self.init_policy_mode == "load":
      return self._load_init_policy(phase)
    spec = loss_registry.get_loss("bc")
    tx = self._tx(self.bc_cfg.optimizer)
    make_state = lambda: self.factory.create(jax.random.PRNGKey(self.seed), tx)
    if self.init_dir is not None:  # Fine-tune: the saved parameters, a fresh optimizer.
      make_state = lambda: self.factory.start_phase(
          checkpointing.restore_params(self.init_dir, self._init_step, self._abstract_params()),
          jnp.zeros((), jnp.int32), tx)
    data = self._bc_data
    params, progress = self._train(index, phase, make_state, tx, spec, self.bc_loss_config, data,
                                   self.bc_cfg, mid_meta, None,
                                   lambda p: self._validation_score(p, self.bc_selection_metric))
    self.bc_ckpt.save(0, params, {"best_score": progress.best_score,
                                  "fingerprint": self.fingerprint,
                                  "init_policy": self.init_dir})
    self._bc_params = params
    self._report(phase, params, progress, {"loss": "bc", "num_grown": 0,
                                           "num_kept": len(data)})
    return params

  @functools.cached_property
  def _bc_data(self) -> batching.SequenceData:
    """BC's training pairs: the train split (repeated) and any extra splits; built once, for BC
    and for every Improve round that mixes them in (mix_bc_data)."""
    examples = list(self.train_examples) * self.data_cfg.bc_train_repeats
    for split in self.data_cfg.bc_extra_splits:
      examples += self._load_split(split, None)
    return batching.SequenceData([ex.inputs for ex in examples], [ex.targets for ex in examples])

  def _load_init_policy(self, phase):
    """The BC phase of a run that starts from a saved policy: load, record, evaluate."""
    params = checkpointing.restore_params(self.init_dir, self._init_step,
                                          self._abstract_params())
    logging.info("BC phase: starting from the saved policy %s/%d", self.init_dir,
                 self._init_step)
    progress = improve.PhaseProgress()
    progress.best_score = self._validation_score(params, self.bc_selection_metric)
    progress.best_step = 0
    self.bc_ckpt.save(0, params, {"best_score": progress.best_score,
                                  "fingerprint": self.fingerprint, "init_policy": self.init_dir})
    self._bc_params = params
    self._report(phase, params, progress, {"loss": "pretrained", "num_grown": 0,
                                           "num_kept": 0})
    return params

  def _bc_policy(self):
    if self._bc_params is None:
      self._bc_params = self.bc_ckpt.restore(self._abstract_params())[0]
    return self._bc_params

  def _run_value(self, index, phase, params, mid_meta):
    spec = loss_registry.get_loss("value_pretrain")
    records = self._grown(phase.grow_step)
    data = improve.records_to_data(records)
    cfg = self.improve_cfg.train.replace(max_steps=self.improve_cfg.value_pretrain_steps,
                                         eval_every=self.improve_cfg.value_pretrain_steps,
                                         patience=0)
    tx = self._tx(cfg.optimizer)
    make_state = lambda: self.factory.start_phase(
        params, jnp.asarray(self.total_steps, jnp.int32), tx)
    best, _ = self._train(index, phase, make_state, tx, spec,
                          self.improve_cfg.value_pretrain_config(), data, cfg, mid_meta, None,
                          None)
    return best

  def _run_improve(self, index, phase, params, mid_meta):
    g, i = phase.grow_step, phase.round
    cfg_i = self.improve_cfg
    records = self._grown(g)
    data, fres = improve.round_data(records, cfg_i.filter_of(i), cfg_i.original_data)
    if data is None:
      message = filters.describe_empty(fres, i)
      logger.warning("%s", message)
      if _is_chief():
        print(f"[{phase.name}] {message}")
      return params, cfg_i.on_empty == "stop"
    if cfg_i.mix_bc_data:
      data = batching.concat_inputs_targets(data, self._bc_data)
      logging.info("%s: %d kept samples + %d BC examples (mix_bc_data)", phase.name,
                   fres.num_kept, len(data) - fres.num_kept)
    if i == 0 and cfg_i.restart_from == "bc":
      params = self._bc_policy()
    loss_name = cfg_i.loss_of(i)
    spec, loss_cfg = loss_registry.get_loss(loss_name), cfg_i.loss_config(loss_name)
    tx = self._tx(cfg_i.train.optimizer, duals=bool(spec.init_params(loss_cfg)))
    frozen = {}
    if spec.requires & {"bc_logits", "bc_token_logprobs"}:
      frozen["bc_params"] = self._bc_policy()
    if "lagged_token_logprobs" in spec.requires:
      frozen["lagged_params"] = params
    if "prev_logits" in spec.requires:
      frozen["prev_params"] = params
    make_state = lambda: self.factory.start_phase(
        params, jnp.asarray(self.total_steps, jnp.int32), tx, spec.init_params(loss_cfg),
        frozen, lr_scale=cfg_i.lr_scale(g, i))
    start_score = None if mid_meta is not None else self._validation_score(params)
    best, progress = self._train(index, phase, make_state, tx, spec, loss_cfg, data,
                                 cfg_i.train, mid_meta, start_score, self._validation_score)
    samples, reward_calls = grow_lib.sample_counts(self.grow_cfg, len(self.grow_pool))
    self._report(phase, best, progress, {
        "loss": loss_name, "num_grown": int((~records.is_original).sum()),
        "num_kept": int(fres.num_kept), "threshold": fres.threshold_description,
        "num_trained": len(data),  # num_kept, plus BC's examples under mix_bc_data.
        # Up to this Grow step, for comparisons with online RL per sample / reward call.
        "samples_drawn": g * samples, "reward_calls": g * reward_calls})
    return best, False

  def _run_online(self, index, phase, params, mid_meta):
    """On-policy RL from the BC policy (`rest_jax.online`) on the sources Grow samples from
    (`DataConfig.grow_split`); reported as `online_<loss>`."""
    cfg = self.online_cfg
    spec, loss_cfg = cfg.spec, cfg.loss_config()
    tx = self._tx(cfg.train.optimizer, duals=bool(spec.init_params(loss_cfg)))
    frozen = {"bc_params": self._bc_policy()} if "bc_logits" in spec.requires else {}
    make_state = lambda: self.factory.start_phase(
        params, jnp.asarray(self.total_steps, jnp.int32), tx, spec.init_params(loss_cfg), frozen)
    curve = online_lib.OnlineCurve(self.workdir, 0 if mid_meta is None else
                                   mid_meta["progress"]["step"], write=_is_chief())
    start_score = None
    if mid_meta is None:  # The BC policy is the curve's first point and a best candidate.
      start_score = curve.record(0, cfg.samples_per_step, self._validation_score(params))
    sampler = sampling.make_sampler(self.model, cfg.sampling_config(), self.mesh,
                                    self.factory.param_shardings)
    old_policy = online_lib.make_old_policy_fn(self.model, self.mesh,
                                               self.factory.param_shardings)
    steps = []

    def wrap(update):
      steps.append(online_lib.OnlineStep(cfg, update, sampler, old_policy, self.reward,
                                         self.grow_pool, self.vocab, self.mesh,
                                         clock=curve.wall_s))
      return steps[-1]

    evaluate_fn = lambda p: curve.record(steps[-1].steps_done, cfg.samples_per_step,
                                         self._validation_score(p))
    best, progress = self._train(index, phase, make_state, tx, spec, loss_cfg,
                                 online_lib.source_data(self.grow_pool), cfg.train,
                                 mid_meta, start_score, evaluate_fn, wrap_step=wrap)
    samples = progress.step * cfg.samples_per_step
    self._report(phase, best, progress, {
        "loss": cfg.loss, "num_grown": samples, "samples_drawn": samples,
        "reward_calls": samples, "online_steps": progress.step, "wall_s": curve.wall_s()})
    return best

  # ------------------------------------------------------------------------------ grow
  def _grown(self, g):
    if g not in self._grown_cache:
      store = grown_data.GrowStore(os.path.join(self.workdir, "grown"), g)
      try:
        records = store.read_all()
      except grown_data.UnreadableShardsError as e:
        self._regrow(g, store, e)
        records = store.read_all()
      self._grown_cache = {g: records}
    return self._grown_cache[g]

  def _regrow(self, g, store, error):
    """Sets damaged shards aside and samples them again with Grow step g's saved policy."""
    if g not in self.grow_ckpt.all_steps():
      raise checkpointing.CheckpointError(
          f"{error} Grow step {g}'s policy is not in {self.grow_ckpt.directory} (only the "
          f"latest Grow step's is kept), so they cannot be regrown here; delete "
          f"{store.directory} and its later phases' checkpoints to redo it.") from error
    for path, reason in error.shards:
      target = store.set_aside(path) if _is_chief() else path + grown_data.UNREADABLE_SUFFIX
      logger.warning("Grown shard %s is unreadable (%s); set aside as %s and regrown.", path,
                     reason, target)
    sharding_lib.barrier(f"grow{g}_set_aside")
    params, meta = self.grow_ckpt.restore(self._abstract_params(), g)
    self._grow_shards(g, params, meta["policy_step"])

  def _run_grow(self, phase, params):
    g = phase.grow_step
    self.grow_ckpt.save(g, params, {"grow_step": g, "policy_step": self.total_steps,
                                    "fingerprint": self.fingerprint})
    self._grow_shards(g, params, self.total_steps)
    records = self._grown(g)
    samples = records.reward[~records.is_original]
    logger.info("Grow %d: %d samples, mean reward %.3f.", g, len(samples), samples.mean())
    if _is_chief():
      self._plot_histograms()

  def _grow_shards(self, g, params, policy_step):
    """Writes every missing shard of Grow step g."""
    if self._sampler is None:
      self._sampler = sampling.make_sampler(self.model, self.grow_cfg.sampling_config(),
                                            self.mesh, self.factory.param_shardings)
    store = grown_data.GrowStore(os.path.join(self.workdir, "grown"), g)
    grow_lib.grow(g, params, policy_step, self.grow_examples, self._sampler, self.vocab,
                  self.reward, store, self.grow_cfg, self.mesh, self.data_cfg.max_source_len,
                  num_global_sources=len(self.grow_pool),
                  settings={"task": self.data_cfg.task, "reward": str(self.reward.name)})
    self._grown_cache.pop(g, None)

  # --------------------------------------------------------------------------- reports
  def _report(self, phase, params, progress, fields):
    if phase.kind == "bc":
      run_name = "G0I0"
    elif phase.kind == "online":
      run_name = f"online_{fields['loss']}"
    else:
      run_name = phase.run_name
    rows = []
    for split, examples in [("validation", self.validation), *self.tests.items()]:
      summary, hyps, _ = self.evaluator.evaluate(params, examples, desc=f"{run_name} {split}",
                                                 reward=self.report_reward)
      row = dict(summary, run=run_name, grow_step=phase.grow_step,
                 improve_step=max(phase.round, 0), split=split, **fields)
      row.setdefault("threshold", "")
      if phase.kind == "online":  # Not a (Grow, Improve) point: listed after those, by name.
        del row["grow_step"], row["improve_step"]
      row["best_step"] = progress.best_step
      row["early_stopping_reward"] = progress.best_score
      if self.eval_cfg.reward is not None:  # The reward column is not the run's reward.
        row["eval_reward"] = self.eval_cfg.reward
      if split == "validation" and self.eval_cfg.best_of_n:
        row["best_of_n"] = {str(n): r for n, r in self.evaluator.best_of_n(
            params, self.es_subset, jax.random.PRNGKey(self.seed), reward=self.report_reward)}
      if self.eval_cfg.pass_at_k:
        row.update(self._reasoning_metrics(params, examples))
      rows.append(row)
      if _is_chief():
        _write_samples(self.workdir, run_name, split, examples, hyps)
    if _is_chief():
      for row in rows:
        self.results.record(row)
        if self.tb is not None:
          self.tb.scalars({k: v for k, v in row.items() if isinstance(v, (int, float))},
                          self.phases.index(phase), prefix=f"eval/{row['split']}/")
      self._write_reports()
      for warning in ([] if self._exact_reward() else report.hacking_warnings(self.results.rows)):
        if warning.run == run_name:
          logger.warning("Reward-hacking check: %s", warning.message)

  def _reasoning_metrics(self, params, examples):
    """pass@k and maj@k of one split (EvalConfig.pass_at_k); the same key for every policy."""
    from rest_jax import reasoning_eval  # pylint: disable=g-import-not-at-top
    if self._reasoning_evaluator is None:
      cfg = self.eval_cfg
      from rest_jax.rewards import registry  # pylint: disable=g-import-not-at-top
      reranker = (None if cfg.pass_at_k_reranker is None
                  else registry.reward_from_spec(cfg.pass_at_k_reranker))
      self._reasoning_evaluator = reasoning_eval.ReasoningEvaluator(
          self.model, self.mesh, self.factory.param_shardings, self.vocab, self.report_reward,
          reasoning_eval.ReasoningEvalConfig(
              ks=tuple(cfg.pass_at_k), num_samples=cfg.pass_at_k_samples,
              temperature=cfg.pass_at_k_temperature, max_decode_len=cfg.max_decode_len,
              batch_size=cfg.batch_size),
          source_len=self.data_cfg.max_source_len, selector=reranker)
    return self._reasoning_evaluator.evaluate(params, examples,
                                              jax.random.PRNGKey(self.seed + 1))

  def _write_reports(self):
    rows = self.results.rows
    report.write_markdown(self.workdir, rows, self._exact_reward())
    if any(r.get("split") == "validation" for r in rows):  # None if its line was garbled.
      report.plot_reward_per_step(rows, os.path.join(self.workdir, "reward_per_step.png"))
      report.plot_reward_vs_chrf(rows, os.path.join(self.workdir, "reward_vs_chrf.png"))
    curves = {r["run"]: sorted((int(n), v) for n, v in r["best_of_n"].items())
              for r in rows if r.get("split") == "validation" and r.get("best_of_n")}
    if curves:
      report.plot_best_of_n(curves, os.path.join(self.workdir, "best_of_n.png"))
    if self.eval_cfg.pass_at_k:
      from rest_jax import reasoning_eval  # pylint: disable=g-import-not-at-top
      reasoning_eval.write_reports(rows, self.workdir)

  def _plot_histograms(self):
    rewards, thresholds = {}, {}
    taus = [s.tau for s in filters.make_schedule(list(self.improve_cfg.filter_schedule)).rounds
            if isinstance(s, filters.Threshold)]
    for g in range(1, max(p.grow_step for p in self.phases) + 1):
      store = grown_data.GrowStore(os.path.join(self.workdir, "grown"), g)
      if not store.shard_files():
        continue
      try:
        records = self._grown(g) if g in self._grown_cache else store.read_all()
      except grown_data.UnreadableShardsError as e:  # An earlier step's: regrown if re-run.
        logger.warning("Reward histogram without Grow step %d: %s", g, e)
        continue
      rewards[g] = records.reward[~records.is_original]
      thresholds[g] = taus
    report.plot_reward_histograms(rewards, thresholds,
                                  os.path.join(self.workdir, "reward_histograms.png"))

  def _finish(self):
    if not _is_chief():
      return []
    rows = self.results.rows
    self._write_reports()
    for split in report.splits_of(rows):
      print(f"{split}:\n{report.markdown_table(rows, split)}")
    print(report.hacking_section(rows, self._exact_reward()))
    return rows

  def _exact_reward(self) -> str | None:
    """The reported reward's name when it is an exact verifier (the hacking check does not
    apply)."""
    reward = self.report_reward
    return getattr(reward, "name", "reward") if getattr(reward, "exact", False) else None


def _write_samples(workdir: str, run_name: str, split: str, examples: Sequence[Any],
                   hyps: Sequence[str], limit: int = 200) -> None:
  """Writes the first translations of a split next to the results, for inspection."""
  path = report.samples_path(workdir, run_name, split)
  fileio.makedirs(os.path.dirname(path))
  lines = [json.dumps({"source_id": ex.source_id, "source": ex.source, "reference": ex.reference,
                       "hypothesis": hyp}, ensure_ascii=False)
           for ex, hyp in list(zip(examples, hyps))[:limit]]
  fileio.write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
