"""On-policy RL in the ReST loop: the baseline the paper compares ReST with (its online PPO).

A run with `rest_loop.run.online = @OnlineConfig()` is `bc -> online`: after BC (or a loaded BC
policy) one training phase alternates, every step,

  1. sample K = `num_samples` outputs for each of the step's B = `train.batch_size` training
     sources from the *current* policy (the Grow sampler, sharded over the mesh);
  2. score each sample once with the run's reward (one reward call per sample);
  3. `inner_epochs` passes over the B*K rows in `minibatches` minibatches of whole sources, each
     one optimizer step of an on-policy loss (`reinforce`: REINFORCE with a leave-one-out /
     group-normalised baseline; `ppo`: clipped ratios and the value head as critic), both with a
     KL penalty to the BC policy and an optional entropy bonus (`rest_jax.losses`).

The phase is an ordinary training phase of the loop (`train.train_phase`): the same policy
state and shardings, validation-reward evaluation every `eval_every` steps with the best
checkpoint kept (the starting BC policy counts as a candidate), early stopping, TensorBoard
logs, mid-phase checkpoints and resume. The sources of a step are a pure function of
(seed, step) and every key is folded from the step, so a resumed run repeats exactly what an
uninterrupted one does. The final policy is reported as the row `online_<loss>`.

For comparisons with ReST per sample and per reward call, the step logs `samples_drawn` and
`reward_calls` (cumulative; equal here: every sample is scored once, truncated ones included)
and `wall_s`, and every evaluation appends {step, samples_drawn, reward_calls, wall_s,
validation_reward} to `<workdir>/online_curve.jsonl`. `wall_s` counts the phase's wall-clock seconds (sampling,
scoring, updates, evaluations); after a resume it continues from the last recorded evaluation, so
the time between that evaluation and a kill is not counted.

PPO's pi_old (token log-probs) and V_old come from one deterministic teacher-forced pass before
the inner epochs; with dropout on in the update (`online/TrainPhaseConfig.dropout`) the first
epoch's ratio is not exactly 1, so the experiment files turn dropout off. Samples are drawn at
`temperature` (1.0 by default: the policy itself); other values sample a different distribution
than the one the loss differentiates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rest_jax import batching, configs, fileio, grow as grow_lib
from rest_jax import train as train_lib
from rest_jax import sharding as sharding_lib
from rest_jax.evaluate import detokenize
from rest_jax.losses import registry as loss_registry
from rest_jax.models.transformer import EOS_ID, Transformer, token_log_probs
from rest_jax.rewards.base import score_batch

logger = logging.getLogger(__name__)

CURVE_NAME = "online_curve.jsonl"
TRUNCATED_SAMPLES = grow_lib.TRUNCATED_SAMPLES


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
  """The online-RL phase. `train.batch_size` is the number of sources per step (B) and
  `train.max_steps` the number of sampling steps; each step draws B * `num_samples` samples.

  truncated_samples: a sample without EOS within `max_decode_len` gets reward 0
  ('zero_reward', as Grow's default), weight 0 ('drop') or its score ('keep').
  """
  loss: str = "reinforce"
  loss_overrides: Any = None  # {hyper-parameter: value} of `loss`.
  num_samples: int = 4
  temperature: float = 1.0
  max_decode_len: int = 64
  inner_epochs: int = 1
  minibatches: int = 1
  truncated_samples: str = "zero_reward"
  train: train_lib.TrainPhaseConfig = train_lib.TrainPhaseConfig()

  def __post_init__(self):
    allowed = loss_registry.list_online_losses()
    if self.loss not in allowed:
      raise ValueError(f"OnlineConfig.loss={self.loss!r} is not an on-policy loss; allowed: "
                       f"{allowed}.")
    self.loss_config()  # Raises on unknown or invalid hyper-parameters.
    for field in ("num_samples", "max_decode_len", "inner_epochs", "minibatches"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"OnlineConfig.{field}={value!r} is invalid: expected a positive "
                         "integer.")
    if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or (
        not self.temperature > 0):
      raise ValueError(f"OnlineConfig.temperature={self.temperature!r} is invalid: expected a "
                       "number > 0 (on-policy RL samples; 1.0 is the policy itself).")
    configs.check_choice("OnlineConfig", "truncated_samples", self.truncated_samples,
                         TRUNCATED_SAMPLES)
    if self.train.batch_size % self.minibatches:
      raise ValueError(f"OnlineConfig.minibatches={self.minibatches} must divide the sources "
                       f"per step, online/TrainPhaseConfig.batch_size={self.train.batch_size}.")

  @property
  def spec(self):
    return loss_registry.get_loss(self.loss)

  def loss_config(self):
    return loss_registry.make_config(self.loss, **dict(self.loss_overrides or {}))

  def sampling_config(self) -> configs.SamplingConfig:
    return configs.SamplingConfig(max_decode_len=self.max_decode_len,
                                  temperature=float(self.temperature),
                                  num_samples=self.num_samples)

  @property
  def updates_per_step(self) -> int:
    return self.inner_epochs * self.minibatches

  @property
  def samples_per_step(self) -> int:
    return self.train.batch_size * self.num_samples

  def check_layout(self, num_batch_shards: int, num_processes: int = 1) -> None:
    """Raises unless the sources of a step and the rows of a minibatch split evenly over the
    processes and the mesh's data-parallel shards (checked before BC starts)."""
    sources = self.train.batch_size
    rows = sources // self.minibatches * self.num_samples
    for what, count in (("online/TrainPhaseConfig.batch_size (sources per step)", sources),
                        ("the rows of a minibatch, batch_size / minibatches * num_samples",
                         rows)):
      if count % num_batch_shards or count % num_processes:
        raise ValueError(f"OnlineConfig: {what} = {count} must be divisible by the "
                         f"{num_batch_shards} data-parallel mesh shards and the "
                         f"{num_processes} process(es).")


def source_data(examples: Sequence[Any]) -> batching.SequenceData:
  """The online phase's training set: sources (references as targets), with their positions as
  ids so each step finds the texts its reward needs."""
  return batching.SequenceData(inputs=[ex.inputs for ex in examples],
                               targets=[ex.targets for ex in examples],
                               ids=np.arange(len(examples)))


def make_old_policy_fn(model: Transformer, mesh, param_shardings) -> Callable:
  """Jitted `(params, batch) -> (token log-probs [R,T], values [R,T])`: pi_old and V_old of the
  sampled rows, from one deterministic teacher-forced pass."""
  rows = sharding_lib.batch_sharding(mesh, 2)

  def old_policy(params, batch):
    logits, values = model.apply({"params": params}, batch["inputs"], batch["targets"],
                                 return_values=True)
    return token_log_probs(logits, batch["targets"]), values

  return jax.jit(old_policy, in_shardings=(param_shardings, None), out_shardings=(rows, rows))


class OnlineStep:
  """The step function `train.train_phase` runs in the online phase:
  `(state, source batch, rng) -> (state, metrics)` = sample, score, `updates_per_step` updates.

  `update` is a jitted train step of the configured loss (`train.make_train_step`); the batch
  carries the positions (`ids`) of its sources in `examples`. `clock()`, when given, is logged
  as the step's `wall_s` (the phase's wall-clock seconds, `OnlineCurve.wall_s`).
  """

  def __init__(self, config: OnlineConfig, update: Callable, sampler: Callable,
               old_policy: Callable | None, reward, examples: Sequence[Any], vocab, mesh,
               clock: Callable[[], float] | None = None):
    self.config, self.update, self.sampler, self.old_policy = config, update, sampler, old_policy
    self.reward, self.examples, self.vocab, self.mesh = reward, examples, vocab, mesh
    self.clock = clock
    self.needs_old = bool(config.spec.requires & {"behaviour_token_logprobs", "old_values"})
    if self.needs_old and old_policy is None:
      raise ValueError(f"Loss {config.loss!r} needs the sampling policy's log-probs and values: "
                       "pass old_policy (make_old_policy_fn).")
    self.steps_done = 0  # Online steps completed, set from the state at every call.

  def _rollout(self, state, batch, rng) -> dict[str, np.ndarray]:
    """This process's rows: sources repeated K times, samples, rewards, weights, group ids."""
    k = self.config.num_samples
    out = self.sampler(state.params, batch["inputs"], rng)
    tokens_bxKxT = sharding_lib.local_to_host(out.tokens)
    ids_b = sharding_lib.local_to_host(batch["ids"])
    inputs_bxS = sharding_lib.local_to_host(batch["inputs"])
    b, _, t = tokens_bxKxT.shape
    samples_RxT = tokens_bxKxT.reshape(b * k, t).astype(np.int32)
    chosen = [self.examples[int(i)] for i in ids_b]
    hyps = detokenize(self.vocab, samples_RxT)
    rewards_R = score_batch(self.reward, [ex.source for ex in chosen for _ in range(k)], hyps,
                            [ex.reference for ex in chosen for _ in range(k)])
    finished_R = (samples_RxT == EOS_ID).any(-1)
    weights_R = np.ones(b * k, np.float32)
    if self.config.truncated_samples == "zero_reward":
      rewards_R = np.where(finished_R, rewards_R, 0.0)
    elif self.config.truncated_samples == "drop":
      weights_R = finished_R.astype(np.float32)
    first_group = jax.process_index() * b
    return {"inputs": np.repeat(inputs_bxS, k, axis=0), "targets": samples_RxT,
            "rewards": np.asarray(rewards_R, np.float32), "weights": weights_R,
            "group_ids": np.repeat(np.arange(first_group, first_group + b, dtype=np.int32), k)}

  def __call__(self, state, batch, rng):
    config, k = self.config, self.config.num_samples
    step = int(jax.device_get(state.round_step)) // config.updates_per_step
    sample_key, update_key = jax.random.split(rng)
    rows = self._rollout(state, batch, sample_key)
    if self.needs_old:
      logprobs, values = self.old_policy(state.params, sharding_lib.shard_batch(rows, self.mesh))
      rows["behaviour_logprobs"] = sharding_lib.local_to_host(logprobs)
      rows["old_values"] = sharding_lib.local_to_host(values)
    b = len(rows["targets"]) // k
    per_minibatch = b // config.minibatches
    metrics = {}
    for epoch in range(config.inner_epochs):
      key = jax.random.fold_in(update_key, epoch)
      order = np.asarray(jax.random.permutation(key, b))
      for m in range(config.minibatches):
        sources = order[m * per_minibatch:(m + 1) * per_minibatch]
        picked = (sources[:, None] * k + np.arange(k)[None, :]).reshape(-1)
        minibatch = sharding_lib.shard_batch({n: v[picked] for n, v in rows.items()}, self.mesh)
        state, metrics = self.update(state, minibatch,
                                     jax.random.fold_in(key, config.minibatches + m))
    self.steps_done = step + 1
    finished = (rows["targets"] == EOS_ID).any(-1)
    samples = self.steps_done * config.samples_per_step
    metrics = dict(metrics, sample_reward=float(rows["rewards"].mean()),
                   truncated_fraction=float(1.0 - finished.mean()),
                   sample_length=float((rows["targets"] != 0).sum(-1).mean()),
                   samples_drawn=samples, reward_calls=samples)
    if self.clock is not None:
      metrics["wall_s"] = self.clock()
    return state, metrics


class OnlineCurve:
  """Validation reward against samples drawn, reward calls and wall time, one JSON line per
  evaluation of the online phase (`<workdir>/online_curve.jsonl`, rewritten whole through a
  rename). Resuming at step s drops the lines of later steps (they are redone) and continues the
  wall clock from the last line kept."""

  def __init__(self, workdir: str, resume_step: int, write: bool = True):
    self.path = os.path.join(workdir, CURVE_NAME)
    self.write = write
    self.rows = [row for row in self._read() if row["step"] <= resume_step]
    self.offset_s = self.rows[-1]["wall_s"] if self.rows else 0.0
    self.start = time.perf_counter()

  def _read(self) -> list[dict]:
    if not fileio.exists(self.path):
      return []
    rows = []
    for line in fileio.read_bytes(self.path).decode("utf-8", "replace").splitlines():
      try:
        row = json.loads(line)
        if isinstance(row, dict) and isinstance(row.get("step"), int):
          rows.append(row)
      except ValueError:
        logger.warning("%s: dropped an unreadable line %r.", self.path, line[:80])
    return rows

  def wall_s(self) -> float:
    return self.offset_s + time.perf_counter() - self.start

  def record(self, step: int, samples_per_step: int, validation_reward: float) -> float:
    """Appends one evaluation; returns `validation_reward` (so it can wrap an evaluate hook)."""
    self.rows = [row for row in self.rows if row["step"] < step]
    self.rows.append({"step": step, "samples_drawn": step * samples_per_step,
                      "reward_calls": step * samples_per_step, "wall_s": round(self.wall_s(), 3),
                      "validation_reward": validation_reward})
    if self.write:
      text = "".join(json.dumps(row) + "\n" for row in self.rows)
      fileio.write_atomic(self.path, text.encode("utf-8"))
    return validation_reward
