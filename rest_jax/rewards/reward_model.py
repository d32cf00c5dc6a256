"""Learned, reference-free reward model R(source, hypothesis) in [0, 1], and its checkpoints.

The paper's reward (Metric X) needs no reference, so ReST can score samples for sources that
have none and judge fluency and adequacy rather than n-gram overlap. This module is that kind
of model, built from the policy's own `Transformer` encoder.

Architecture (shape legend: B batch, S source length, T hypothesis length, L = max(S, T),
D d_model):

  1. Source and hypothesis are encoded *separately* by the policy's `Transformer` encoder
     (`Transformer.encode`), each as `tokens EOS` (PAD=0 right padding); both go through one
     encoder call as a [2B, L] batch.
  2. One alignment block (`AlignmentPool`), used in both directions: each query token softly
     aligns to the other side's encoder states (one attention head over the raw states, as in
     BERTScore-style soft matching), adds Dense([context, token * context]) residually, then
     the Transformer's `MLP` block, then a masked mean over the query tokens.
       hypothesis -> source  "is each output token supported by the input" (precision-like)
       source -> hypothesis  "is each input token covered by the output" (recall-like)
  3. Head: [pooled_hyp, pooled_src, log(1+S), log(1+T), log((1+T)/(1+S))] (token counts)
     -> Dense(D), relu -> Dense(1) = logit; the reward is sigmoid(logit).

`RewardModelOptions.pooling` chooses the pooling of step 2: "mean" (the default, and the only
one of the models shipped before the option existed) or "mean_max", which concatenates a
masked max over the query tokens to the mean. A mean dilutes one out-of-place token (a word
shuffled into the wrong position, a runaway "rrrrrr" piece) by the sentence length; a max keeps
it. Checkpoints record the options in their meta ("reward_model_options"); a meta without them
means the defaults, so older checkpoints load unchanged.

Why not encode the concatenation `source EOS hypothesis EOS`: the encoder has no segment
embedding, so every token would first have to work out which side of the separator it is on;
with separate encodings the alignment sees the two sides directly (a toy model learns a
token-overlap reward to Spearman 0.9 in about a hundred steps). The encoder's parameters keep
exactly the names and shapes of a policy's encoder (`params["encoder"]`), so a reward model
could be warm-started from a policy checkpoint.

Scoring runs in jitted fixed-shape batches sharded over the mesh's batch axes: rows are sorted
by length, each batch is padded to a power-of-two length bucket (at least 16, at most the
model's max length; longer inputs are truncated to keep their EOS) and the last batch is
filled with dummy rows, so a whole Grow step compiles only a handful of shapes.

Checkpoints are `rest_jax.checkpointing.Checkpointer` directories holding {"params": ...} and
the JSON meta {"kind": "reward_model", "model_config", "vocabulary", "max_source_len",
"max_hypothesis_len", "training"}; `LearnedReward.from_checkpoint(path)` rebuilds everything
from them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

from absl import logging
from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rest_jax import checkpointing, fileio
from rest_jax import sharding as sharding_lib
from rest_jax.configs import MeshConfig, ModelConfig
from rest_jax.data import vocab as vocab_lib
from rest_jax.models.transformer import EOS_ID, MLP, NEG_INF, PAD_ID, LayerNorm, Transformer
from rest_jax.rewards import base

CHECKPOINT_KIND = "reward_model"
REQUIRED_META = ("kind", "model_config", "vocabulary", "max_source_len", "max_hypothesis_len")
MIN_BUCKET = 16
POOLINGS = ("mean", "mean_max")


@dataclasses.dataclass(frozen=True)
class RewardModelOptions:
  """Reward-model choices beyond the encoder's `ModelConfig` (see the module docstring)."""
  pooling: str = "mean"

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"RewardModelOptions.pooling={self.pooling!r} is invalid: expected one "
                       f"of {list(POOLINGS)}")

  @classmethod
  def from_meta(cls, meta: dict[str, Any]) -> "RewardModelOptions":
    return cls(**(meta.get("reward_model_options") or {}))


class AlignmentPool(nn.Module):
  """Soft alignment of query tokens to the other side's tokens, then a masked mean -> [B, D].

  Each query token attends (one head, learned query/key projections) over the *unprojected*
  encoder states of the other side, so its context is a mixture of actual token states; the
  residual update is Dense([context, query * context]) — the product says how well the token
  is matched — followed by the Transformer's MLP block and a masked mean over query tokens.
  The mean is blind to repetition ("A. A." pools like "A."): only the length features of the
  head can tell the two apart (docs/rewards.md shows what that means in practice).
  """

  config: ModelConfig
  pooling: str = "mean"

  @nn.compact
  def __call__(self, queries_BxTxD, query_valid_BxT, keys_BxSxD, key_valid_BxS,
               deterministic: bool):
    cfg = self.config
    d, pdt = cfg.d_model, jnp.dtype(cfg.param_dtype)
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    param = lambda name, shape, axes: self.param(
        name, nn.with_logical_partitioning(init, axes), shape, pdt).astype(cfg.dtype)
    h_BxTxD = LayerNorm(cfg, name="pre_alignment_norm")(queries_BxTxD)
    q_BxTxD = h_BxTxD @ param("query", (d, d), ("embed", "mlp"))
    k_BxSxD = keys_BxSxD @ param("key", (d, d), ("embed", "mlp"))
    logits_BxTxS = jnp.einsum("btd,bsd->bts", q_BxTxD, k_BxSxD).astype(jnp.float32) * d ** -0.5
    logits_BxTxS = logits_BxTxS + jnp.where(key_valid_BxS, 0.0, NEG_INF)[:, None, :]
    probs_BxTxS = jax.nn.softmax(logits_BxTxS, axis=-1).astype(cfg.dtype)
    context_BxTxD = jnp.einsum("bts,bsd->btd", probs_BxTxS, keys_BxSxD)
    fused = jnp.concatenate([context_BxTxD, h_BxTxD * context_BxTxD], axis=-1)
    x = queries_BxTxD + fused @ param("fuse", (2 * d, d), ("mlp", "embed"))
    x = x + MLP(cfg, name="mlp")(LayerNorm(cfg, name="pre_mlp_norm")(x), deterministic)
    x = LayerNorm(cfg, name="output_norm")(x).astype(jnp.float32)
    weights_BxT = query_valid_BxT.astype(jnp.float32)
    mean_BxD = (x * weights_BxT[..., None]).sum(1) / jnp.maximum(weights_BxT.sum(1), 1.0)[:, None]
    if self.pooling == "mean":
      return mean_BxD
    max_BxD = jnp.where(query_valid_BxT[..., None], x, NEG_INF).max(1)
    max_BxD = jnp.where(query_valid_BxT.any(1)[:, None], max_BxD, 0.0)
    return jnp.concatenate([mean_BxD, max_BxD], axis=-1)


class RewardModel(nn.Module):
  """(sources [B,S], hypotheses [B,T]) -> reward logits [B]; see the module docstring."""

  config: ModelConfig
  options: RewardModelOptions = RewardModelOptions()

  def setup(self):
    cfg = self.config
    self.encoder = Transformer(cfg)
    self.align = AlignmentPool(cfg, pooling=self.options.pooling)
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    self.head_hidden = nn.Dense(
        cfg.d_model, kernel_init=nn.with_logical_partitioning(init, (None, "mlp")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))
    self.head_out = nn.Dense(
        1, kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp", None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))

  def __call__(self, sources_BxS, hypotheses_BxT, deterministic: bool = True):
    b = sources_BxS.shape[0]
    length = max(sources_BxS.shape[1], hypotheses_BxT.shape[1])
    pad = lambda x: jnp.pad(x, [(0, 0), (0, length - x.shape[1])], constant_values=PAD_ID)
    # Both sides in one encoder call ([sources; hypotheses] along the batch): half the program.
    tokens_2BxL = jnp.concatenate([pad(sources_BxS), pad(hypotheses_BxT)], axis=0)
    valid_2BxL = tokens_2BxL != PAD_ID
    states_2BxLxD = self.encoder.encode(tokens_2BxL, deterministic)
    # Row i < B: source i attends to hypothesis i; row B + i: hypothesis i attends to source i.
    swap = lambda x: jnp.concatenate([x[b:], x[:b]], axis=0)
    pooled_2BxD = self.align(states_2BxLxD, valid_2BxL, swap(states_2BxLxD), swap(valid_2BxL),
                             deterministic)
    lengths_2B = valid_2BxL.sum(1).astype(jnp.float32)
    log_s, log_t = jnp.log1p(lengths_2B[:b]), jnp.log1p(lengths_2B[b:])
    features = jnp.concatenate(
        [pooled_2BxD[b:], pooled_2BxD[:b], jnp.stack([log_s, log_t, log_t - log_s], axis=1)], 1)
    logit_Bx1 = self.head_out(nn.relu(self.head_hidden(features)))
    return logit_Bx1[:, 0]


# ---------------------------------------------------------------------------- tokens & shapes
def tokenize(vocabulary, texts: Sequence[str], max_len: int) -> tuple[list[np.ndarray], int]:
  """`text EOS` ids per text, truncated to max_len tokens (EOS kept); also the truncated count."""
  rows, truncated = [], 0
  for text in texts:
    ids = list(vocabulary.encode(text))
    if len(ids) + 1 > max_len:
      ids, truncated = ids[:max_len - 1], truncated + 1
    rows.append(np.asarray(ids + [EOS_ID], np.int32))
  return rows, truncated


def pad_rows(rows: Sequence[np.ndarray], length: int, num_rows: int | None = None) -> np.ndarray:
  """[num_rows, length] int32; rows beyond len(rows) are dummy `EOS` rows."""
  out = np.full((num_rows or len(rows), length), PAD_ID, np.int32)
  out[len(rows):, 0] = EOS_ID
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def bucket_length(longest: int, max_len: int) -> int:
  """The smallest power of two >= longest (and >= MIN_BUCKET), capped at max_len."""
  return min(max_len, max(MIN_BUCKET, 1 << max(longest - 1, 0).bit_length()))


def round_batch_size(batch_size: int, mesh: Mesh) -> int:
  shards = sharding_lib.num_batch_shards(mesh)
  return -(-batch_size // shards) * shards


# ------------------------------------------------------------------------------ parameters
def abstract_boxed_params(model: RewardModel):
  dummy = jnp.ones((1, 8), jnp.int32)
  return jax.eval_shape(lambda rng: model.init(rng, dummy, dummy)["params"],
                        jax.random.PRNGKey(0))


@functools.lru_cache(maxsize=16)
def param_shardings(config: ModelConfig, mesh: Mesh,
                    rules: tuple = sharding_lib.DEFAULT_RULES,
                    options: RewardModelOptions = RewardModelOptions()) -> Any:
  return sharding_lib.param_shardings(abstract_boxed_params(RewardModel(config, options)), mesh,
                                      rules)


def init_params(config: ModelConfig, seed: int, mesh: Mesh,
                options: RewardModelOptions = RewardModelOptions()) -> Any:
  """Freshly initialised params for `seed`, created directly on their shardings.

  The initial values come from an RBG key: its initialiser compiles in about half the time of
  a threefry one on CPU (which dominates short training runs); they are deterministic for a
  given seed, backend and mesh.
  """
  return _compiled_init(config, mesh, options)(jax.random.key(seed, impl="rbg"))


def warm_start_encoder(params: Any, policy_params: Any) -> Any:
  """`params` with every leaf of params["encoder"] taken from the policy's parameters.

  The reward model's encoder is a `Transformer` of which only `encode` runs, so its leaves are a
  subset of a policy's (embeddings, encoder layers) under the same names. Each one must exist in
  `policy_params` with the same shape (a ValueError names the first that does not); it is cast to
  the reward model's parameter dtype and placed on the fresh leaf's sharding. The policy's
  decoder and value head are not used.
  """
  flat_policy = traverse_util.flatten_dict(nn.meta.unbox(policy_params), sep="/")
  flat = traverse_util.flatten_dict(params["encoder"], sep="/")
  for name, fresh in flat.items():
    if name not in flat_policy:
      raise ValueError(f"cannot warm-start the reward model: the policy has no parameter "
                       f"{name!r} (its encoder side has {sorted(flat_policy)[:8]}...)")
    source = flat_policy[name]
    if tuple(source.shape) != tuple(fresh.shape):
      raise ValueError(f"cannot warm-start the reward model: parameter {name!r} has shape "
                       f"{tuple(source.shape)} in the policy, {tuple(fresh.shape)} in the "
                       "reward model (build the reward model with the policy's architecture)")
    sharding = getattr(fresh, "sharding", None)
    value = jnp.asarray(jax.device_get(source), dtype=fresh.dtype)
    flat[name] = jax.device_put(value, sharding) if sharding is not None else value
  return dict(params, encoder=traverse_util.unflatten_dict(flat, sep="/"))


@functools.lru_cache(maxsize=16)
def _compiled_init(config: ModelConfig, mesh: Mesh, options: RewardModelOptions):
  model, dummy = RewardModel(config, options), jnp.ones((1, 8), jnp.int32)
  return jax.jit(lambda key: nn.meta.unbox(model.init(key, dummy, dummy)["params"]),
                 out_shardings=param_shardings(config, mesh, options=options))


@functools.lru_cache(maxsize=16)
def compiled_scorer(config: ModelConfig, mesh: Mesh,
                    options: RewardModelOptions = RewardModelOptions()):
  """Jitted `(params, sources [B,S], hypotheses [B,T]) -> rewards [B]`, batch-sharded.

  Cached per (config, mesh, options), so every LearnedReward of one model shares compiled
  executables.
  """
  model = RewardModel(config, options)
  batch2 = sharding_lib.batch_sharding(mesh, 2)
  return jax.jit(lambda p, s, h: jax.nn.sigmoid(model.apply({"params": p}, s, h)),
                 in_shardings=(param_shardings(config, mesh, options=options), batch2, batch2),
                 out_shardings=sharding_lib.batch_sharding(mesh, 1))


def default_mesh() -> Mesh:
  return sharding_lib.make_mesh(MeshConfig())


# ----------------------------------------------------------------------------- checkpoints
def save_reward_model(directory: str, step: int, params: Any, config: ModelConfig,
                      vocabulary_spec: str, max_source_len: int, max_hypothesis_len: int,
                      training: dict[str, Any] | None = None,
                      options: RewardModelOptions = RewardModelOptions()) -> None:
  """Writes params and everything `LearnedReward.from_checkpoint` needs to `directory/<step>`."""
  meta = {"kind": CHECKPOINT_KIND, "model_config": dataclasses.asdict(config),
          "vocabulary": vocabulary_spec, "max_source_len": int(max_source_len),
          "max_hypothesis_len": int(max_hypothesis_len), "training": training or {},
          "reward_model_options": dataclasses.asdict(options)}
  checkpointer = checkpointing.Checkpointer(directory, max_to_keep=None)
  checkpointer.save(step, {"params": params}, meta)
  checkpointer.close()


def load_reward_model(path: str, step: int | None = None, mesh: Mesh | None = None
                      ) -> tuple[ModelConfig, Any, dict[str, Any]]:
  """(model config, params on `mesh`, meta) of a reward model checkpoint directory.

  The options are `RewardModelOptions.from_meta(meta)`.

  FileNotFoundError if `path` does not exist; CheckpointError naming the path if it holds no
  reward model checkpoint or a malformed one.
  """
  if not fileio.exists(path):
    raise FileNotFoundError(f"reward model checkpoint directory {path!r} does not exist "
                            "(expected the output_dir of scripts/train_reward_model.py)")
  mesh = mesh or default_mesh()
  checkpointer = checkpointing.Checkpointer(path, max_to_keep=None)
  try:
    meta = checkpointer.restore_meta(step)
    config = _config_from_meta(path, meta)
    options = _options_from_meta(path, meta)
    shardings = param_shardings(config, mesh, options=options)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nn.meta.unbox(abstract_boxed_params(RewardModel(config, options))), shardings)
    state, _ = checkpointer.restore({"params": abstract}, step)
  except checkpointing.CheckpointError as e:
    raise checkpointing.CheckpointError(f"reward model checkpoint {path!r}: {e}") from e
  except (OSError, ValueError, KeyError) as e:
    raise checkpointing.CheckpointError(
        f"reward model checkpoint {path!r} is malformed or unreadable: {e}") from e
  finally:
    checkpointer.close()
  return config, state["params"], meta


def _config_from_meta(path: str, meta: Any) -> ModelConfig:
  missing = [key for key in REQUIRED_META if not isinstance(meta, dict) or key not in meta]
  if missing:
    raise checkpointing.CheckpointError(
        f"reward model checkpoint {path!r}: meta lacks {missing}; expected keys {REQUIRED_META}")
  if meta["kind"] != CHECKPOINT_KIND:
    raise checkpointing.CheckpointError(
        f"checkpoint {path!r} holds kind={meta['kind']!r}, not a {CHECKPOINT_KIND!r}")
  try:
    return ModelConfig(**meta["model_config"])
  except (TypeError, ValueError) as e:
    raise checkpointing.CheckpointError(
        f"reward model checkpoint {path!r}: bad model_config in meta: {e}") from e


def _options_from_meta(path: str, meta: dict[str, Any]) -> RewardModelOptions:
  try:
    return RewardModelOptions.from_meta(meta)
  except (TypeError, ValueError) as e:
    raise checkpointing.CheckpointError(
        f"reward model checkpoint {path!r}: bad reward_model_options in meta: {e}") from e


# ---------------------------------------------------------------------------------- reward
class LearnedReward(base.Reward):
  """A trained `RewardModel` as a reference-free reward (sigmoid output in [0, 1])."""

  needs_reference = False

  def __init__(self, config: ModelConfig, params: Any, vocabulary_spec: str, *,
               max_source_len: int, max_hypothesis_len: int, batch_size: int = 64,
               mesh: Mesh | None = None, name: str = "learned",
               options: RewardModelOptions = RewardModelOptions()):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f"LearnedReward.batch_size={batch_size!r} is invalid: expected a "
                       "positive integer")
    self.name = name
    self.config = config
    self.options = options
    self.vocabulary_spec = vocabulary_spec
    self.vocabulary = vocab_lib.get_vocabulary(vocabulary_spec)
    self.max_source_len, self.max_hypothesis_len = max_source_len, max_hypothesis_len
    self.mesh = mesh or default_mesh()
    self.batch_size = round_batch_size(batch_size, self.mesh)
    self.params = jax.device_put(params, param_shardings(config, self.mesh, options=options))
    self._score_fn = compiled_scorer(config, self.mesh, options)

  @classmethod
  def from_checkpoint(cls, path: str, step: int | None = None, *, batch_size: int = 64,
                      mesh: Mesh | None = None) -> "LearnedReward":
    mesh = mesh or default_mesh()
    config, params, meta = load_reward_model(path, step, mesh)
    return cls(config, params, meta["vocabulary"], max_source_len=meta["max_source_len"],
               max_hypothesis_len=meta["max_hypothesis_len"], batch_size=batch_size, mesh=mesh,
               options=RewardModelOptions.from_meta(meta))

  def score(self, sources: Sequence[str], hypotheses: Sequence[str],
            references: Sequence[str] | None = None) -> np.ndarray:
    del references  # Reference-free.
    source_ids, cut_s = tokenize(self.vocabulary, sources, self.max_source_len)
    hypothesis_ids, cut_t = tokenize(self.vocabulary, hypotheses, self.max_hypothesis_len)
    if cut_s or cut_t:
      logging.warning("reward %r truncated %d source(s) to %d tokens and %d hypothesis(es) to "
                      "%d tokens", self.name, cut_s, self.max_source_len, cut_t,
                      self.max_hypothesis_len)
    return self.score_token_ids(source_ids, hypothesis_ids)

  def score_token_ids(self, source_ids: Sequence[np.ndarray],
                      hypothesis_ids: Sequence[np.ndarray]) -> np.ndarray:
    """Scores EOS-terminated id rows (no longer than the max lengths) in bucketed batches."""
    longest = [max(len(s), len(h)) for s, h in zip(source_ids, hypothesis_ids)]
    order = np.argsort(longest, kind="stable")
    cap = max(self.max_source_len, self.max_hypothesis_len)
    scores = np.zeros(len(order), np.float32)
    for start in range(0, len(order), self.batch_size):
      rows = order[start:start + self.batch_size]
      length = bucket_length(max(longest[i] for i in rows), cap)
      batch = sharding_lib.shard_batch(
          (pad_rows([source_ids[i] for i in rows], length, self.batch_size),
           pad_rows([hypothesis_ids[i] for i in rows], length, self.batch_size)), self.mesh)
      scores[rows] = np.asarray(self._score_fn(self.params, *batch))[:len(rows)]
    return scores
