"""Trains the learned reward model on scored or preference TSV files; loads policies to sample.

Two ways to supervise a reference-free reward model, one file format each:

  regression   source<TAB>hypothesis<TAB>score, score in [0, 1] (e.g. chrF of the hypothesis
               against the reference, written by scripts/make_reward_data.py);
               loss = mean (sigmoid(logit) - score)^2.
  preference   source<TAB>chosen<TAB>rejected (human or metric preferences);
               Bradley-Terry loss = mean -log sigmoid(logit_chosen - logit_rejected)
               (on logits; the reward is sigmoid(logit), so the ranking is the same).

The validation split is held out *by source* (a seeded hash of the source text), so the several
hypotheses of one source never straddle train and validation. Validation reports Spearman's rho
between predicted and target scores (regression only) and pairwise accuracy: for regression,
the fraction of same-source pairs with different targets that the model orders correctly (the
ranking Grow-time filters rely on); for preference, the fraction of held-out pairs with
score(chosen) > score(rejected). Ties count one half. Training keeps the parameters with the
best validation value (Spearman, or pairwise accuracy in preference mode).

Bad TSV lines follow rest_jax.data.tsv: skipped and reported with counts and line numbers, or
with strict=True the first one raises a ValueError naming the file and line.

`load_policy_for_sampling` restores only the policy parameters of a ReST checkpoint (no optimizer
state), for scripts that sample from a policy to make reward-model data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from jax.sharding import Mesh

from rest_jax import checkpointing, fileio, optim, train_state
from rest_jax import sharding as sharding_lib
from rest_jax.configs import LR_DECAYS, ModelConfig, OptimizerConfig, check_choice
from rest_jax.data import tsv
from rest_jax.data import vocab as vocab_lib
from rest_jax.models.transformer import PAD_ID, Transformer
from rest_jax.rewards import reward_model as rm

MODES = ("regression", "preference")
COLUMNS = {"regression": ("source", "hypothesis", "score"),
           "preference": ("source", "chosen", "rejected")}


@dataclasses.dataclass(frozen=True)
class RewardTrainingConfig:
  mode: str = "regression"
  steps: int = 500
  batch_size: int = 64
  learning_rate: float = 3e-3
  warmup_steps: int = 50
  decay: str = "cosine"
  weight_decay: float = 0.0
  max_source_len: int = 64
  max_hypothesis_len: int = 64
  eval_every: int = 100
  eval_batch_size: int = 256
  seed: int = 0
  length_group_batches: int = 0  # > 0: batches of similar lengths (`epoch_order`).

  def __post_init__(self):
    check_choice("RewardTrainingConfig", "mode", self.mode, MODES)
    check_choice("RewardTrainingConfig", "decay", self.decay, LR_DECAYS)
    if (isinstance(self.length_group_batches, bool)
        or not isinstance(self.length_group_batches, int) or self.length_group_batches < 0):
      raise ValueError(f"RewardTrainingConfig.length_group_batches={self.length_group_batches!r}"
                       " is invalid: expected an integer >= 0 (0 = no grouping)")
    for field in ("steps", "batch_size", "max_source_len", "max_hypothesis_len", "eval_every",
                  "eval_batch_size"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"RewardTrainingConfig.{field}={value!r} is invalid: expected a "
                         "positive integer")
    if min(self.max_source_len, self.max_hypothesis_len) < 2:
      raise ValueError("RewardTrainingConfig.max_source_len/max_hypothesis_len must be >= 2 "
                       "(at least one token plus EOS)")

  def optimizer(self) -> OptimizerConfig:
    return OptimizerConfig(learning_rate=self.learning_rate, warmup_steps=self.warmup_steps,
                           decay=self.decay, total_steps=self.steps,
                           end_learning_rate_fraction=0.1, weight_decay=self.weight_decay)


# ------------------------------------------------------------------------------- TSV input
@dataclasses.dataclass
class RewardTsvReport(tsv.TsvReport):
  """tsv.TsvReport for three-column reward files (its summary lists any problem name)."""

  def summary(self) -> str:
    text = f"{self.path}: {self.num_pairs} rows from {self.num_lines} lines"
    if not self.num_skipped:
      return text
    parts = []
    for problem, count in self.skipped_counts.items():
      lines = ", ".join(map(str, self.skipped_lines[problem]))
      more = ", ..." if count > len(self.skipped_lines[problem]) else ""
      parts.append(f"{problem} x{count} (lines {lines}{more})")
    return f"{text}; skipped {self.num_skipped}: " + "; ".join(parts)


def parse_reward_line(raw: bytes, mode: str) -> tuple[tuple | None, str | None]:
  """(row, None) for a good line, (None, problem) otherwise."""
  try:
    line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
  except UnicodeDecodeError:
    return None, tsv.INVALID_UTF8
  if not line.strip():
    return None, tsv.EMPTY_LINE
  fields = [field.strip() for field in line.split("\t")]
  if len(fields) != 3:
    return None, f"{len(fields)} fields instead of 3"
  for name, field in zip(COLUMNS[mode], fields):
    if not field and name != "hypothesis":  # An empty hypothesis is a legitimate sample.
      return None, f"empty {name}"
  if mode == "preference":
    return tuple(fields), None
  try:
    score = float(fields[2])
  except ValueError:
    return None, "score is not a number"
  if not 0.0 <= score <= 1.0:  # NaN fails too.
    return None, "score outside [0, 1]"
  return (fields[0], fields[1], score), None


def read_reward_tsv(path: str, mode: str, *, strict: bool = False
                    ) -> tuple[list[tuple], RewardTsvReport]:
  """Good rows of a regression or preference TSV (plain or .gz) and the report of bad lines."""
  check_choice("read_reward_tsv", "mode", mode, MODES)
  report, rows = RewardTsvReport(path), []
  with tsv.open_binary(path) as f:
    for line_number, raw in enumerate(f, 1):
      report.num_lines = line_number
      row, problem = parse_reward_line(raw, mode)
      if problem is not None:
        if strict:
          raise ValueError(f"{path}, line {line_number}: {problem}; expected "
                           f"'{'<TAB>'.join(COLUMNS[mode])}'"
                           + (" with score in [0, 1]" if mode == "regression" else ""))
        report.record_skip(problem, line_number)
        continue
      report.num_pairs += 1
      rows.append(row)
  return rows, report


def split_by_source(rows: Sequence[tuple], validation_fraction: float, seed: int = 0
                    ) -> tuple[list[tuple], list[tuple]]:
  """(train, validation): a row is held out iff a seeded hash of its source falls below frac."""
  if not 0.0 < validation_fraction < 1.0:
    raise ValueError(f"validation_fraction={validation_fraction!r} is invalid: expected a value "
                     "strictly between 0 and 1")
  train, validation = [], []
  for row in rows:
    digest = hashlib.sha256(f"{seed}\t{row[0]}".encode("utf-8")).digest()
    (validation if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction
     else train).append(row)
  return train, validation


class TokenizedRows(NamedTuple):
  sources: np.ndarray  # [N, S] int32
  first: np.ndarray  # [N, T] hypotheses (regression) or chosen (preference)
  second: np.ndarray | None  # [N, T] rejected (preference)
  targets: np.ndarray | None  # [N] float32 (regression)
  groups: np.ndarray  # [N] int64 source index (same source text, same group)


def tokenize_rows(rows: Sequence[tuple], mode: str, vocabulary, max_source_len: int,
                  max_hypothesis_len: int) -> TokenizedRows:
  columns = list(zip(*rows)) if rows else [(), (), ()]
  pad = lambda texts, n: rm.pad_rows(rm.tokenize(vocabulary, texts, n)[0], n)
  group_of = {}
  groups = np.asarray([group_of.setdefault(s, len(group_of)) for s in columns[0]], np.int64)
  sources, first = pad(columns[0], max_source_len), pad(columns[1], max_hypothesis_len)
  if mode == "preference":
    return TokenizedRows(sources, first, pad(columns[2], max_hypothesis_len), None, groups)
  return TokenizedRows(sources, first, None, np.asarray(columns[2], np.float32), groups)


# ---------------------------------------------------------------------------------- metrics
def pairwise_accuracy(scores: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> float:
  """Share of same-group pairs with different targets ordered like the targets (ties = 1/2)."""
  correct, total = 0.0, 0
  order = np.argsort(groups, kind="stable")
  boundaries = np.flatnonzero(np.diff(groups[order])) + 1
  for members in np.split(order, boundaries):
    if len(members) < 2:
      continue
    i, j = np.triu_indices(len(members), k=1)
    dt = targets[members][i] - targets[members][j]
    ds = scores[members][i] - scores[members][j]
    informative = dt != 0
    correct += float(np.sum((np.sign(ds) == np.sign(dt))[informative])
                     + 0.5 * np.sum((ds == 0)[informative]))
    total += int(informative.sum())
  return correct / total if total else float("nan")


def spearman(scores: np.ndarray, targets: np.ndarray) -> float:
  """Spearman's rho; 0.0 when either side is constant (no ranking information)."""
  if len(scores) < 2 or np.ptp(scores) == 0 or np.ptp(targets) == 0:
    return 0.0
  return float(scipy.stats.spearmanr(scores, targets).statistic)


# ---------------------------------------------------------------------------------- training
def _state_shardings(tx, params_abstract, param_shardings, mesh):
  repl = sharding_lib.replicated(mesh)
  opt_abstract = jax.eval_shape(tx.init, params_abstract)
  opt_shardings = optax.tree_utils.tree_map_params(
      tx, lambda _, s: s, opt_abstract, param_shardings, transform_non_params=lambda _: repl)
  return {"params": param_shardings, "opt_state": opt_shardings, "step": repl}


def make_train_step(config: ModelConfig, tx: optax.GradientTransformation, mode: str,
                    state_shardings: dict, mesh: Mesh,
                    options: rm.RewardModelOptions = rm.RewardModelOptions()) -> Callable:
  """Jitted, state-donating `(state, batch, rng) -> (state, {loss})` for `mode`."""
  model = rm.RewardModel(config, options)

  def loss_fn(params, batch, rng):
    apply = lambda s, h: model.apply({"params": params}, s, h, deterministic=False,
                                     rngs={"dropout": rng})
    if mode == "regression":
      predictions = jax.nn.sigmoid(apply(batch["sources"], batch["first"]))
      return jnp.mean(jnp.square(predictions - batch["targets"]))
    b = batch["sources"].shape[0]
    logits = apply(jnp.concatenate([batch["sources"]] * 2), jnp.concatenate(
        [batch["first"], batch["second"]]))
    return jnp.mean(-jax.nn.log_sigmoid(logits[:b] - logits[b:]))

  def step(state, batch, rng):
    loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch, rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return ({"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
             "step": state["step"] + 1}, {"loss": loss})

  repl = sharding_lib.replicated(mesh)
  return jax.jit(step, in_shardings=(state_shardings, None, repl),
                 out_shardings=(state_shardings, repl), donate_argnums=(0,))


def _batch(data: TokenizedRows, indices: np.ndarray) -> dict[str, np.ndarray]:
  """The rows `indices`, all token arrays cut (or padded) to one power-of-two length bucket.

  Short batches then run a short program: at most log2(max length / 16) + 1 compiled shapes.
  """
  tokens = {"sources": data.sources[indices], "first": data.first[indices]}
  if data.second is not None:
    tokens["second"] = data.second[indices]
  longest = max(int((x != PAD_ID).sum(1).max()) for x in tokens.values())
  width = rm.bucket_length(longest, max(x.shape[1] for x in tokens.values()))
  batch = {k: np.pad(x[:, :width], [(0, 0), (0, max(0, width - x.shape[1]))])
           for k, x in tokens.items()}
  if data.targets is not None:
    batch["targets"] = data.targets[indices]
  return batch


def epoch_order(num_rows: int, batch_size: int, seed: int, epoch: int,
                lengths: np.ndarray | None = None, group_batches: int = 0) -> np.ndarray:
  """The row order of one epoch: a seeded permutation, optionally grouped by length.

  With `group_batches` = G > 0 the permutation is cut into chunks of G batches, each chunk is
  sorted by `lengths` and the whole batches are shuffled again: a batch then holds rows of
  similar length, is padded to a short bucket, and a step costs far less than one padded to
  the longest of 128 random rows. G = 0 is the plain permutation.
  """
  order = np.random.default_rng([seed, epoch]).permutation(num_rows)
  if not group_batches or lengths is None:
    return order
  chunk = batch_size * group_batches
  order = np.concatenate([c[np.argsort(lengths[c], kind="stable")]
                          for c in np.split(order, range(chunk, num_rows, chunk))])
  full = num_rows // batch_size * batch_size
  batches = order[:full].reshape(-1, batch_size)
  batches = batches[np.random.default_rng([seed, epoch, 1]).permutation(len(batches))]
  return np.concatenate([batches.reshape(-1), order[full:]])


def batch_indices(num_rows: int, batch_size: int, seed: int, step: int,
                  lengths: np.ndarray | None = None, group_batches: int = 0) -> np.ndarray:
  """Rows of training step `step`: deterministic in (seed, step), a fresh order per epoch."""
  per_epoch = max(1, num_rows // batch_size)
  epoch, k = divmod(step, per_epoch)
  order = epoch_order(num_rows, batch_size, seed, epoch, lengths, group_batches)
  return np.resize(order, max(batch_size, num_rows))[k * batch_size:(k + 1) * batch_size]


def _row_lengths(data: TokenizedRows) -> np.ndarray:
  """Tokens of each row's longest side (the length its batch is padded to)."""
  sides = [data.sources, data.first] + ([data.second] if data.second is not None else [])
  return np.max([(x != PAD_ID).sum(1) for x in sides], axis=0)


def score_padded(config: ModelConfig, params: Any, sources: np.ndarray, hypotheses: np.ndarray,
                 batch_size: int, mesh: Mesh,
                 options: rm.RewardModelOptions = rm.RewardModelOptions()) -> np.ndarray:
  """Rewards of already padded rows in fixed-shape batches (one compiled shape)."""
  score_fn = rm.compiled_scorer(config, mesh, options)
  n, out = len(sources), []
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size) % n
    batch = sharding_lib.shard_batch((sources[idx], hypotheses[idx]), mesh)
    out.append(np.asarray(score_fn(params, *batch))[:min(batch_size, n - start)])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def evaluate(config: ModelConfig, params: Any, data: TokenizedRows, mode: str, batch_size: int,
             mesh: Mesh, options: rm.RewardModelOptions = rm.RewardModelOptions()
             ) -> dict[str, float]:
  first = score_padded(config, params, data.sources, data.first, batch_size, mesh, options)
  if mode == "preference":
    second = score_padded(config, params, data.sources, data.second, batch_size, mesh, options)
    return {"pairwise_accuracy": float(np.mean((first > second) + 0.5 * (first == second))),
            "mean_margin": float(np.mean(first - second)), "num_rows": len(first)}
  return {"spearman": spearman(first, data.targets),
          "pairwise_accuracy": pairwise_accuracy(first, data.targets, data.groups),
          "mse": float(np.mean(np.square(first - data.targets))), "num_rows": len(first)}


class TrainedRewardModel(NamedTuple):
  params: Any  # The best-by-validation parameters.
  best_step: int
  best_metrics: dict[str, float]
  history: list[dict[str, float]]


def train_reward_model(model_config: ModelConfig, config: RewardTrainingConfig,
                       vocabulary_spec: str, train_rows: Sequence[tuple],
                       validation_rows: Sequence[tuple], mesh: Mesh | None = None,
                       log: Callable[[str], None] = print,
                       options: rm.RewardModelOptions = rm.RewardModelOptions(),
                       init_encoder: Any = None) -> TrainedRewardModel:
  """Trains; evaluates every `eval_every` steps and keeps the best parameters.

  `init_encoder`: a policy's parameters (a `Transformer` of the same architecture as
  `model_config`'s encoder side); its embeddings and encoder layers replace the fresh ones
  (`rm.warm_start_encoder`), the alignment block and head start fresh.
  """
  if not train_rows or not validation_rows:
    raise ValueError(f"reward model training needs training and validation rows, got "
                     f"{len(train_rows)} and {len(validation_rows)}")
  mesh = mesh or rm.default_mesh()
  vocabulary = vocab_lib.get_vocabulary(vocabulary_spec)
  if vocabulary.vocab_size > model_config.vocab_size:
    raise ValueError(f"ModelConfig.vocab_size={model_config.vocab_size} is smaller than the "
                     f"vocabulary {vocabulary_spec!r} ({vocabulary.vocab_size} ids)")
  lengths = (config.max_source_len, config.max_hypothesis_len)
  train = tokenize_rows(train_rows, config.mode, vocabulary, *lengths)
  validation = tokenize_rows(validation_rows, config.mode, vocabulary, *lengths)
  batch_size = rm.round_batch_size(config.batch_size, mesh)
  eval_batch_size = rm.round_batch_size(config.eval_batch_size, mesh)

  tx = optim.make_optimizer(config.optimizer())
  rng = jax.random.PRNGKey(config.seed)
  params = rm.init_params(model_config, config.seed, mesh, options)
  if init_encoder is not None:
    params = rm.warm_start_encoder(params, init_encoder)
  shardings = _state_shardings(tx, params,
                               rm.param_shardings(model_config, mesh, options=options), mesh)
  state = jax.jit(lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((),
                                                                                      jnp.int32)},
                  out_shardings=shardings)(params)
  step_fn = make_train_step(model_config, tx, config.mode, shardings, mesh, options)
  key = "spearman" if config.mode == "regression" else "pairwise_accuracy"
  best = TrainedRewardModel(None, -1, {key: -math.inf}, [])
  losses = []
  rows_of_step = _step_rows(train, batch_size, config)
  for step in range(config.steps):
    batch = sharding_lib.shard_batch(_batch(train, rows_of_step(step)), mesh)
    state, metrics = step_fn(state, batch, jax.random.fold_in(rng, step + 1))
    losses.append(metrics["loss"])
    if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
      result = evaluate(model_config, state["params"], validation, config.mode, eval_batch_size,
                        mesh, options)
      result = dict(result, step=step + 1, train_loss=float(np.mean(jax.device_get(losses))))
      losses = []
      best.history.append(result)
      log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in result.items()))
      if result[key] > best.best_metrics[key]:
        best = TrainedRewardModel(jax.device_get(state["params"]), step + 1, result, best.history)
  return best


def _step_rows(data: TokenizedRows, batch_size: int, config: RewardTrainingConfig
               ) -> Callable[[int], np.ndarray]:
  """`batch_indices` with the current epoch's order computed once (it sorts every row)."""
  n = len(data.sources)
  lengths = _row_lengths(data) if config.length_group_batches else None
  per_epoch, cache = max(1, n // batch_size), {}

  def rows(step: int) -> np.ndarray:
    epoch, k = divmod(step, per_epoch)
    if epoch not in cache:
      cache.clear()
      cache[epoch] = np.resize(epoch_order(n, batch_size, config.seed, epoch, lengths,
                                           config.length_group_batches), max(batch_size, n))
    return cache[epoch][k * batch_size:(k + 1) * batch_size]

  return rows


# ------------------------------------------------------------------- policies for sampling
class PolicyForSampling(NamedTuple):
  model: Transformer
  params: Any  # The policy parameters, on `param_shardings`.
  param_shardings: Any
  mesh: Mesh
  vocabulary: Any  # seqio.Vocabulary of the policy.
  vocabulary_name: str  # The spec, or "task:<name>" when it came from the task.
  step: int
  meta: dict[str, Any]


def load_policy_for_sampling(checkpoint_dir: str, step: int | None = None,
                             mesh: Mesh | None = None, *,
                             model_config: ModelConfig | None = None,
                             vocabulary_spec: str | None = None) -> PolicyForSampling:
  """Restores only the policy parameters of a ReST checkpoint (latest step by default).

  `checkpoint_dir` is a `Checkpointer` directory, a ReST workdir (its `checkpoints/` is used)
  or one step directory of a `Checkpointer` directory (`.../checkpoints/2000`, or a copy of one
  among other copied steps), which selects that step.
  Both layouts the loop writes are read: a full `PolicyState` (only `.params` is restored, so
  the optimizer that trained it need not be known) or a bare params tree. The model config is
  `model_config`, else meta["model_config"], else meta["fingerprint"]["model"] (what the ReST
  loop records); the vocabulary is `vocabulary_spec`, else meta["vocabulary"], else the
  vocabulary of the task meta["fingerprint"]["task"].
  """
  if not fileio.exists(checkpoint_dir):
    raise FileNotFoundError(f"policy checkpoint directory {checkpoint_dir!r} does not exist")
  if fileio.exists(os.path.join(checkpoint_dir, "checkpoints")):
    checkpoint_dir = os.path.join(checkpoint_dir, "checkpoints")
  checkpoint_dir, step = _split_step_directory(checkpoint_dir, step)
  checkpointer = checkpointing.Checkpointer(checkpoint_dir, max_to_keep=None)
  try:
    meta = checkpointer.restore_meta(step)  # CheckpointError naming the directory if none.
    step = checkpointer.latest_step() if step is None else step
  finally:
    checkpointer.close()
  where = f"policy checkpoint {checkpoint_dir}/{step}"
  fingerprint = meta.get("fingerprint") or {}
  config_fields = model_config or meta.get("model_config") or fingerprint.get("model")
  if config_fields is None:
    raise checkpointing.CheckpointError(
        f"{where}: meta has no 'model_config' (nor 'fingerprint.model'); pass model_config. "
        f"Meta keys: {sorted(meta)}")
  config = (config_fields if isinstance(config_fields, ModelConfig)
            else ModelConfig(**config_fields))
  vocabulary, vocabulary_name = _policy_vocabulary(where, meta, fingerprint, vocabulary_spec)
  model = Transformer(config)
  mesh = mesh or rm.default_mesh()
  param_shardings = train_state.StateFactory(model, mesh).param_shardings
  abstract = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      nn.meta.unbox(train_state.abstract_boxed_params(model)), param_shardings)
  try:
    params = checkpointing.restore_params(checkpoint_dir, step, abstract)
  except checkpointing.CheckpointError as e:
    raise checkpointing.CheckpointError(
        f"{where}: the saved params do not match the model config {config}: {e}") from e
  return PolicyForSampling(model, params,
                           param_shardings, mesh, vocabulary, vocabulary_name, step, meta)


def _split_step_directory(path: str, step: int | None) -> tuple[str, int | None]:
  """(parent, step) if `path` is an orbax step directory (`<int>/` holding a checkpoint)."""
  name = os.path.basename(os.path.normpath(path))
  is_step = name.isdigit() and any(
      fileio.exists(os.path.join(path, marker))
      for marker in ("_CHECKPOINT_METADATA", "commit_success.txt", "meta"))
  if not is_step:
    return path, step
  if step is not None and step != int(name):
    raise ValueError(f"policy checkpoint {path!r} is the directory of step {name}, but step "
                     f"{step} was asked for")
  return os.path.dirname(os.path.normpath(path)), int(name)


def _policy_vocabulary(where: str, meta: dict[str, Any], fingerprint: dict[str, Any],
                       vocabulary_spec: str | None):
  spec = vocabulary_spec or meta.get("vocabulary")
  if spec is not None:
    return vocab_lib.get_vocabulary(spec), spec
  if "task" in fingerprint:
    from rest_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (imports TF)
    return pipeline.get_task_vocabulary(fingerprint["task"]), f"task:{fingerprint['task']}"
  raise checkpointing.CheckpointError(
      f"{where}: meta has no 'vocabulary' (nor 'fingerprint.task'); pass vocabulary_spec. "
      f"Meta keys: {sorted(meta)}")
