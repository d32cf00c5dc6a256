"""The ReST loop: BC, then Grow / (value pretraining) / Improve rounds, with resume.

`run` checks the configuration, builds the run's shared objects (`_Loop`: the data, the policy
model, the device mesh, the checkpoints and the reporter) and runs the phases that
`rest_jax.phases` plans, each by its runner there. A newcomer follows one Grow step as:

  rest_jax.phases.run_grow -> rest_jax.grow.grow (sample, score, write shards;
  rest_jax.sampling, rest_jax.rewards, rest_jax.grown_data) -> rest_jax.phases.run_improve ->
  rest_jax.improve.round_data (rest_jax.filters) -> rest_jax.train.train_phase with the round's
  loss (rest_jax.losses) -> rest_jax.run_report (evaluation rows, plots).

Every round continues from the previous round's best policy with a lower learning rate
(`ImproveConfig.lr_decay_per_round`), or — ReST-EM — the first round of each Grow step restarts
from the BC policy (`restart_from="bc"`). Every phase starts a fresh optimizer: Adam moments, the
warm-up (`improve/OptimizerConfig.warmup_steps`, 0 for none) and BVMPO's duals restart in every
round. The decay exponent counts the rounds of the Grow step (`lr_decay_over='grow_step'`: each
Grow step's first round trains at the full rate again) or of the whole run (`'run'`); the paper
says only that each round continues with a lower learning rate.

Resume: the newest checkpoint under `<workdir>/checkpoints` (`rest_jax.run_checkpoints`) says
where to continue — at a phase boundary, or mid-phase with the same batches and keys; if it cannot
be read it is set aside (`<step>.unreadable`) and the newest readable one is used. Grown data
lives in `<workdir>/grown` and resumes shard by shard; a shard found damaged later is regrown
with the saved Grow policy. Results go to `results.jsonl/csv/md`, PNG plots and TensorBoard
events under `<workdir>/tensorboard`; only process 0 writes them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp

from rest_jax import batching, checkpointing, configs, evaluate, fileio, grow as grow_lib
from rest_jax import grown_data, hf_checkpoints, improve, optim, phases as phases_lib, preemption
from rest_jax import pretrained_policies, run_checkpoints, run_report, train, train_state
from rest_jax import sharding as sharding_lib
from rest_jax import online as online_lib
from rest_jax.losses import registry as loss_registry
from rest_jax.models import Transformer, model_config

logger = logging.getLogger(__name__)

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
  # Tokenize the task with this vocabulary spec instead of its own (rest_jax.data.vocab, e.g.
  # 'hf=DIR'); a run with init_policy='hf=DIR' uses that checkpoint's tokenizer when this is None.
  vocabulary: str | None = None
  # Text put before every source when it is tokenized, for checkpoints trained with task
  # prefixes (T5 / flan-t5: 'translate German to English: '). Sources as rewards, reports and
  # sample files see them stay unprefixed.
  source_prefix: str = ""

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
    if self.vocabulary is not None and (not isinstance(self.vocabulary, str)
                                        or not self.vocabulary):
      raise ValueError(f"DataConfig.vocabulary={self.vocabulary!r} is invalid: expected None "
                       "(the task's own) or a vocabulary spec such as 'hf=/path/to/checkpoint'.")
    if not isinstance(self.source_prefix, str):
      raise ValueError(f"DataConfig.source_prefix={self.source_prefix!r} is invalid: expected a "
                       "string, e.g. 'translate German to English: ' ('' for none).")


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


def run(workdir: str, *, task: str | None = None, model_preset: str = "small",
        model_overrides: Any = None, mesh: configs.MeshConfig = configs.MeshConfig(),
        data: DataConfig = DataConfig(), bc: train.TrainPhaseConfig = train.TrainPhaseConfig(),
        num_grow_steps: int = 1, grow: grow_lib.GrowConfig = grow_lib.GrowConfig(),
        improve_config: improve.ImproveConfig = improve.ImproveConfig(),
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
  `init_policy='hf=DIR'` starts from a Hugging Face checkpoint directory (Llama/Qwen2/Gemma/Marian
  config.json + safetensors + tokenizer; rest_jax.hf_checkpoints): the model is the
  checkpoint's architecture (`model_preset` is not used; `model_overrides` may set non-shape
  fields such as dtype or dropout_rate), the task is tokenized with the checkpoint's tokenizer
  (DataConfig.vocabulary), and a fresh value head is added.
  """
  if task is not None:
    data = dataclasses.replace(data, task=task)
  if not isinstance(num_grow_steps, int) or num_grow_steps < 0:
    raise ValueError(f"run.num_grow_steps={num_grow_steps!r} is invalid: expected an integer "
                     ">= 0.")
  hf_dir = hf_checkpoints.init_directory(init_policy)
  if hf_dir is not None:  # The checkpoint's architecture; config errors surface here.
    hf_model = hf_checkpoints.read_model_config(hf_dir, **dict(model_overrides or {}))
    hf_spec = hf_checkpoints.HF_PREFIX + hf_dir
    if data.vocabulary is None:
      data = dataclasses.replace(data, vocabulary=hf_spec)
    elif data.vocabulary != hf_spec:
      raise ValueError(f"DataConfig.vocabulary={data.vocabulary!r} with run.init_policy="
                       f"{init_policy!r}: a run started from a Hugging Face checkpoint tokenizes "
                       "with its tokenizer; leave DataConfig.vocabulary unset.")
  else:
    hf_model = None
    model_config(model_preset, 8, **dict(model_overrides or {}))  # Validates before loading.
  bc_loss_config = loss_registry.make_config("bc", **dict(bc_loss_overrides or {}))
  if bc_selection_metric not in SELECTION_METRICS:
    raise ValueError(f"run.bc_selection_metric={bc_selection_metric!r} is invalid; allowed: "
                     f"{list(SELECTION_METRICS)}.")
  init_dir = (None if init_policy is None or hf_dir is not None
              else pretrained_policies.resolve(init_policy))
  if init_policy_mode not in INIT_POLICY_MODES:
    raise ValueError(f"run.init_policy_mode={init_policy_mode!r} is invalid; allowed: "
                     f"{list(INIT_POLICY_MODES)}.")
  phases = phases_lib.run_phases(num_grow_steps, improve_config, online)
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
               bc_selection_metric, init_dir, init_policy_mode, online=online,
               hf_dir=hf_dir, hf_model=hf_model)
  try:
    return loop.run(stop_after_phase, on_start)
  finally:
    loop.close()


class _Loop:
  """The run's shared objects (data, model, mesh, checkpoints, reporter), the training helper
  every phase uses, and the loop over the phases (`rest_jax.phases` runs each one)."""

  def __init__(self, workdir, phases, data_cfg, preset, overrides, mesh_cfg, bc_cfg, grow_cfg,
               improve_cfg, eval_cfg, reward, seed, bc_loss_config, bc_selection_metric,
               init_dir=None, init_policy_mode="load", online=None, hf_dir=None,
               hf_model=None):
    # Imported here so that config errors above surface before TensorFlow/seqio start.
    from rest_jax.data import pipeline

    self.workdir, self.phases = fileio.abspath(workdir), phases
    self.data_cfg, self.bc_cfg, self.grow_cfg = data_cfg, bc_cfg, grow_cfg
    self.improve_cfg, self.eval_cfg, self.seed = improve_cfg, eval_cfg, seed
    self.bc_loss_config = bc_loss_config
    self.bc_selection_metric = bc_selection_metric
    self.reward = reward
    fileio.makedirs(self.workdir)

    from rest_jax.data import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
    from rest_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    if data_cfg.vocabulary is not None:  # The task, tokenized with another vocabulary.
      data_cfg = dataclasses.replace(
          data_cfg, task=tasks_lib.with_vocabulary(data_cfg.task, data_cfg.vocabulary))
    if data_cfg.source_prefix:  # ... and with the prefix's tokens before every source.
      data_cfg = dataclasses.replace(
          data_cfg, task=tasks_lib.with_source_prefix(data_cfg.task, data_cfg.source_prefix))
    if data_cfg.vocabulary is not None:  # A pretrained decoder's BOS first, as its tokenizer.
      bos_ids = getattr(vocab_lib.get_vocabulary(data_cfg.vocabulary), "bos_ids", [])
      data_cfg = dataclasses.replace(data_cfg, task=tasks_lib.with_bos(data_cfg.task, bos_ids))
    self.data_cfg = data_cfg
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
    self.init_dir, self.init_step, self.init_policy_mode = init_dir, None, init_policy_mode
    self.hf_dir = hf_dir
    if hf_model is not None:  # Its vocabulary (DataConfig.vocabulary) has the model's rows.
      model_cfg = dataclasses.replace(hf_model, value_head=True)
    else:
      model_cfg = model_config(preset, self.vocab.vocab_size, **dict(overrides, value_head=True))
    self.online_cfg = online
    if init_dir is not None:  # Checked before the training data loads.
      self.init_step, meta = pretrained_policies.read_meta(init_dir)
      pretrained_policies.check_compatible(
          init_dir, meta,
          model_cfg,
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
    self.model = Transformer(model_cfg)
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
    self.reporter = run_report.PhaseReporter(
        self.workdir, self.evaluator, eval_cfg, reward,
        {"validation": self.validation, **self.tests}, self.es_subset, seed,
        self._reasoning_evaluator)
    fingerprint = {"model": dataclasses.asdict(self.model.config), "task": data_cfg.task,
                   "lengths": list(self.lengths)}
    # What the BC phase trains with; a workdir whose BC has started must keep it (checked on
    # resume), as its checkpoints and results would otherwise mix two BC configurations.
    bc_settings = json.loads(json.dumps({
        "train": dataclasses.asdict(bc_cfg), "loss": repr(bc_loss_config),
        "selection_metric": bc_selection_metric,
        # The policy's folder name, not its path: a workdir may resume on another machine.
        "init_policy": (init_dir or hf_dir) and os.path.basename(
            os.path.normpath(init_dir or hf_dir)),
        "init_policy_mode": init_policy_mode, "bc_extra_splits": list(data_cfg.bc_extra_splits),
        "bc_train_repeats": data_cfg.bc_train_repeats}, default=str))
    self.checkpoints = run_checkpoints.RunCheckpoints(
        self.workdir, [p.name for p in phases], fingerprint, bc_settings)
    self.grown_cache: dict[int, grown_data.GrownRecords] = {}  # rest_jax.phases.grown
    self.grow_sampler = None  # Grow's compiled sampler, built on first use.
    self.bc_params = None
    self._txs: dict[Any, Any] = {}
    self._steps: dict[Any, Any] = {}
    self._best_in_memory = None
    # The loop's counters, kept in every checkpoint: optimizer steps of all phases, and wall
    # seconds of the training phases after BC (Improve, value, online; Grow's are in its shards).
    self.total_steps = 0
    self.train_wall_s = 0.0

  def close(self):
    self.checkpoints.close()
    self.reporter.close()

  # ------------------------------------------------------------------------------ run
  def run(self, stop_after_phase, on_start=None):
    """Runs the phases from the resume point; a damaged resume checkpoint is set aside (one
    WARNING line naming it and why) and the run resumes from the newest readable one."""
    self._on_start = on_start
    while True:
      try:
        return self._run_phases(stop_after_phase)
      except checkpointing.UnreadableCheckpointError as e:
        moved = self.checkpoints.set_aside_if_resume_point(e)
        if moved is None:
          raise
        logger.warning("Checkpoint %s/%d is unreadable (%s); set aside as %s, resuming from the "
                       "newest readable checkpoint.", e.directory, e.step, e.reason, moved)

  def _run_phases(self, stop_after_phase):
    index, params, mid_meta, self.total_steps, self.train_wall_s = (
        self.checkpoints.resume_point(self.abstract_params()))
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
        params = phases_lib.run_bc(self, index, mid_meta)
      elif phase.kind == "grow":
        phases_lib.run_grow(self, phase, params)
      elif phase.kind == "value":
        params = phases_lib.run_value(self, index, phase, params, mid_meta)
      elif phase.kind == "online":
        params = phases_lib.run_online(self, index, phase, params, mid_meta)
      else:
        params, stopped = phases_lib.run_improve(self, index, phase, params, mid_meta)
        if stopped:
          skip_rest_of_grow = phase.grow_step
      mid_meta = None
      index += 1
      if phase.kind != "grow":
        self.checkpoints.save_policy(index, params, self.total_steps, self.train_wall_s)
      if phase.name == stop_after_phase:
        break
      if index < len(self.phases) and preemption.stop_requested():
        raise preemption.Preempted(f"Stopped before phase {self.phases[index].name} "
                                   "(checkpointed).")
    return self.reporter.finish()

  # ------------------------------------------------------------- what the phases share
  def abstract_params(self):
    return self.factory.abstract_state(self.tx(self.bc_cfg.optimizer))[0].params

  @property
  def has_init_policy(self) -> bool:
    return self.init_dir is not None or self.hf_dir is not None

  def init_params(self):
    """The parameters of `init_policy`, placed on the mesh: a saved policy checkpoint, or a
    Hugging Face checkpoint imported shard by shard (with a fresh value head)."""
    if self.hf_dir is not None:
      return hf_checkpoints.load_sharded(self.hf_dir, self.model.config, self.abstract_params(),
                                         self.vocab.token_map, seed=self.seed)
    return checkpointing.restore_params(self.init_dir, self.init_step, self.abstract_params())

  @property
  def init_policy_name(self) -> str | None:
    return self.init_dir if self.hf_dir is None else hf_checkpoints.HF_PREFIX + self.hf_dir

  def tx(self, optimizer_config: configs.OptimizerConfig, duals: bool = False):
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

  def train(self, index, phase, make_state, tx, spec, loss_cfg, data, cfg, mid_meta,
            start_score, evaluate_fn, wrap_step=None):
    """Trains one phase (`train.train_phase`) from `make_state()` or, resuming, from its
    mid-phase checkpoint; returns (best params, progress)."""
    progress = train.PhaseProgress()
    if mid_meta is not None:
      abstract, shardings = self.factory.abstract_state(tx, spec.init_params(loss_cfg),
                                                        tuple(mid_meta["frozen"]))
      state, _ = self.checkpoints.latest.restore(abstract)
      progress = train.PhaseProgress.from_json(mid_meta["progress"])
    else:
      state, shardings = make_state()
    step_fn = self._step_fn(phase, spec, loss_cfg, tx, shardings, cfg.dropout)
    if wrap_step is not None:  # The online phase: sample and score around the update.
      step_fn = wrap_step(step_fn)
    frozen = tuple(f for f in train_state.FROZEN_FIELDS if getattr(state, f) is not None)
    start_total = self.total_steps - progress.step
    timed = phase.kind != "bc"
    start_wall = self.train_wall_s - (progress.wall_s if timed else 0.0)

    def count(prog):
      self.total_steps = start_total + prog.step
      if timed:
        self.train_wall_s = start_wall + prog.wall_s

    def save_state(st, prog):
      count(prog)
      self.checkpoints.save_state(index, st, prog.to_json(), frozen, self.total_steps,
                                  self.train_wall_s)

    def save_best(params, prog):
      self._best_in_memory = jax.tree_util.tree_map(jnp.copy, params)
      self.checkpoints.save_best(index, prog.best_step, params, prog.best_score)

    def load_best():
      if self._best_in_memory is not None:
        return self._best_in_memory
      return self.checkpoints.load_best(index, self.abstract_params())

    self._best_in_memory = None
    hooks = train.PhaseHooks(
        evaluate=evaluate_fn, save_state=save_state, save_best=save_best, load_best=load_best,
        log_metrics=lambda m, step: self.reporter.train_metrics(m, start_total + step,
                                                                phase.name))
    rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), index)
    state, best, progress = train.train_phase(phase.name, state, step_fn, data, cfg, self.mesh,
                                              hooks, progress, rng, self.lengths, start_score)
    count(progress)
    self._best_in_memory = None
    return best, progress

  def validation_score(self, params, metric: str = "mean_reward") -> float:
    """Early stopping's score: `metric` of the run's reward on the validation subset."""
    summary, _, _ = self.evaluator.evaluate(params, self.es_subset, desc="early-stopping eval")
    return summary[metric]

  @functools.cached_property
  def bc_data(self) -> batching.SequenceData:
    """BC's training pairs: the train split (repeated) and any extra splits; built once, for BC
    and for every Improve round that mixes them in (mix_bc_data)."""
    examples = list(self.train_examples) * self.data_cfg.bc_train_repeats
    for split in self.data_cfg.bc_extra_splits:
      examples += self._load_split(split, None)
    return batching.SequenceData([ex.inputs for ex in examples], [ex.targets for ex in examples])

  def bc_policy(self):
    if self.bc_params is None:
      self.bc_params = self.checkpoints.load_bc(self.abstract_params())
    return self.bc_params

  def _reasoning_evaluator(self, verifier):
    """EvalConfig.pass_at_k's sampler and scorer (the reporter builds it on first use)."""
    from rest_jax import reasoning_eval  # pylint: disable=g-import-not-at-top
    from rest_jax.rewards import registry  # pylint: disable=g-import-not-at-top
    cfg = self.eval_cfg
    reranker = (None if cfg.pass_at_k_reranker is None
                else registry.reward_from_spec(cfg.pass_at_k_reranker))
    return reasoning_eval.ReasoningEvaluator(
        self.model, self.mesh, self.factory.param_shardings, self.vocab, verifier,
        reasoning_eval.ReasoningEvalConfig(
            ks=tuple(cfg.pass_at_k), num_samples=cfg.pass_at_k_samples,
            temperature=cfg.pass_at_k_temperature, max_decode_len=cfg.max_decode_len,
            batch_size=cfg.batch_size),
        source_len=self.data_cfg.max_source_len, selector=reranker)
