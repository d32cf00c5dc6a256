"""Evaluation the expert-iteration literature reports: pass@k, majority@k and Best-of-N.

Greedy pass@1 is the loop's ordinary evaluation (mean verifier reward of greedy outputs). With
N samples per problem at a temperature this module adds, per split:

  pass@k       the unbiased estimator of Chen et al. (2021): with c of n samples correct,
               pass@k = 1 - C(n-c, k) / C(n, k), averaged over problems (k <= n). It is the
               probability that at least one of k samples drawn without replacement from the n
               is correct, which is better than counting over the first k samples only.
  maj@k        majority vote (self-consistency) over the first k samples' final answers: the
               most common answer (ties: the earliest one), correct if the verifier accepts a
               sample that gave it; problems whose samples give no answer count as wrong.
  best-of-N    the sample with the highest selection score among the first N, correct or not.
               Selected by the verifier itself this is pass@N from the first N samples (an
               oracle); selected by a learned reward it measures that reward as a reranker.

All values are percentages (0-100). Answers for the vote come from the reward's `extract`
(the `final_answer` verifier; numbers are compared as fractions), else from the whole stripped
output. Legend: P problems, N samples per problem.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Iterable, Mapping, Sequence

import jax
from matplotlib import ticker
from matplotlib.figure import Figure
import numpy as np

from rest_jax import batching, configs, fileio, report, sampling
from rest_jax import sharding as sharding_lib
from rest_jax.evaluate import detokenize
from rest_jax.models.transformer import EOS_ID
from rest_jax.rewards.answer_verifiers import parse_number
from rest_jax.rewards.base import score_batch


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
  """Unbiased pass@k for one problem with `num_correct` of `num_samples` correct (0-1)."""
  if not 0 <= num_correct <= num_samples or not 1 <= k <= num_samples:
    raise ValueError(f"pass_at_k(num_samples={num_samples}, num_correct={num_correct}, k={k}): "
                     "need 0 <= num_correct <= num_samples and 1 <= k <= num_samples")
  if num_samples - num_correct < k:
    return 1.0
  # 1 - C(n-c, k) / C(n, k) as a product, which stays exact enough for any n.
  ratio = np.prod(1.0 - k / np.arange(num_samples - num_correct + 1, num_samples + 1))
  return float(1.0 - ratio)


def mean_pass_at_k(correct_PxN: np.ndarray, k: int) -> float:
  """pass@k (0-100) averaged over problems, from a [P, N] bool array of verdicts."""
  correct_PxN = np.asarray(correct_PxN, bool)
  n = correct_PxN.shape[1]
  return 100.0 * float(np.mean([pass_at_k(n, int(c), k) for c in correct_PxN.sum(axis=1)]))


def majority_vote(answers: Sequence[str | None]) -> int | None:
  """Index of the first sample giving the most common non-None answer; None if none answers."""
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return None
  best = max(counts.values())
  return next(i for i, a in enumerate(answers) if a is not None and counts[a] == best)


def mean_majority_at_k(answers_PxN: Sequence[Sequence[str | None]], correct_PxN: np.ndarray,
                       k: int) -> float:
  """maj@k (0-100): the majority answer of each problem's first k samples, judged correct."""
  correct_PxN = np.asarray(correct_PxN, bool)
  hits = []
  for answers, correct in zip(answers_PxN, correct_PxN):
    index = majority_vote(list(answers)[:k])
    hits.append(index is not None and bool(correct[index]))
  return 100.0 * float(np.mean(hits))


def mean_best_of_n(scores_PxN: np.ndarray, correct_PxN: np.ndarray, n: int) -> float:
  """Best-of-n (0-100): is the highest-scoring of the first n samples (ties: earliest) correct."""
  scores_PxN, correct_PxN = np.asarray(scores_PxN), np.asarray(correct_PxN, bool)
  picked = np.argmax(scores_PxN[:, :n], axis=1)
  return 100.0 * float(correct_PxN[np.arange(len(picked)), picked].mean())


def answer_key(reward: Any, hypothesis: str) -> str | None:
  """The answer a vote counts: the reward's extracted answer (numbers canonical), else the
  stripped output; None for no answer."""
  extract = getattr(reward, "extract", None)
  answer = extract(hypothesis) if extract is not None else hypothesis.strip()
  if not answer:
    return None
  number = parse_number(answer)
  return str(number) if number is not None else answer


def summarize(correct_PxN: np.ndarray, answers_PxN, ks: Sequence[int],
              selector_scores_PxN: np.ndarray | None = None) -> dict[str, Any]:
  """The metrics of one split from its verdicts, answers and (optional) reranker scores."""
  out: dict[str, Any] = {
      "pass_at_k": {str(k): mean_pass_at_k(correct_PxN, k) for k in ks},
      "maj_at_k": {str(k): mean_majority_at_k(answers_PxN, correct_PxN, k) for k in ks},
  }
  if selector_scores_PxN is not None:
    out["best_of_n_reranked"] = {str(k): mean_best_of_n(selector_scores_PxN, correct_PxN, k)
                                 for k in ks}
  return out


@dataclasses.dataclass(frozen=True)
class ReasoningEvalConfig:
  """Sampled evaluation of a reasoning split: n samples per problem, metrics at each k <= n."""
  ks: tuple[int, ...] = (1, 4, 16)
  num_samples: int = 16
  temperature: float = 0.7
  top_k: int = 0
  max_decode_len: int = 64
  batch_size: int = 64

  def __post_init__(self):
    for field in ("num_samples", "max_decode_len", "batch_size"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ReasoningEvalConfig.{field}={value!r} is invalid: expected a "
                         "positive integer.")
    if not self.ks or any(isinstance(k, bool) or not isinstance(k, int)
                          or not 1 <= k <= self.num_samples for k in self.ks):
      raise ValueError(f"ReasoningEvalConfig.ks={self.ks!r} is invalid: expected a non-empty "
                       f"tuple of integers in [1, num_samples={self.num_samples}].")
    configs.SamplingConfig(max_decode_len=self.max_decode_len, temperature=self.temperature,
                           top_k=self.top_k, num_samples=self.num_samples)


class ReasoningEvaluator:
  """Samples N solutions per problem with a compiled sampler and reports the module's metrics."""

  def __init__(self, model, mesh, param_shardings, vocab, verifier,
               config: ReasoningEvalConfig = ReasoningEvalConfig(), source_len: int = 24,
               selector=None):
    if config.batch_size % sharding_lib.num_batch_shards(mesh):
      raise ValueError(f"ReasoningEvalConfig.batch_size={config.batch_size} must be divisible "
                       f"by the {sharding_lib.num_batch_shards(mesh)} data-parallel mesh shards.")
    self.mesh, self.vocab, self.verifier, self.selector = mesh, vocab, verifier, selector
    self.config, self.source_len = config, source_len
    self._sampler = sampling.make_sampler(
        model, configs.SamplingConfig(max_decode_len=config.max_decode_len,
                                      temperature=config.temperature, top_k=config.top_k,
                                      num_samples=config.num_samples),
        mesh, param_shardings)

  def sample(self, params, examples: Sequence[Any], rng: jax.Array) -> list[list[str]]:
    """N decoded samples per example ([P][N]); unfinished samples (no EOS) become ''."""
    bs, n = self.config.batch_size, self.config.num_samples
    out: list[list[str]] = []
    for k, start in enumerate(range(0, len(examples), bs)):
      chunk = [ex.inputs for ex in examples[start:start + bs]]
      real = len(chunk)
      padded = batching.pad_rows(chunk + [chunk[0]] * (bs - real), self.source_len, np.int32)
      local = padded[sharding_lib.process_rows(bs)]
      tokens = sharding_lib.to_host(self._sampler(
          params, sharding_lib.shard_batch(local, self.mesh), jax.random.fold_in(rng, k)).tokens)
      tokens = tokens[:real].reshape(real * n, -1)
      finished = (tokens == EOS_ID).any(-1)
      texts = [t if f else "" for t, f in zip(detokenize(self.vocab, tokens), finished)]
      out.extend(texts[i * n:(i + 1) * n] for i in range(real))
    return out

  def evaluate(self, params, examples: Sequence[Any], rng: jax.Array) -> dict[str, Any]:
    """pass@k, maj@k (and reranked best-of-k with a selector reward) for one split, 0-100."""
    samples = self.sample(params, examples, rng)
    n = self.config.num_samples
    flat = [s for per in samples for s in per]
    sources = [ex.source for ex in examples for _ in range(n)]
    refs = [ex.reference for ex in examples for _ in range(n)]
    correct = score_batch(self.verifier, sources, flat, refs).reshape(-1, n) == 1.0
    answers = [[answer_key(self.verifier, s) for s in per] for per in samples]
    scores = None
    if self.selector is not None:
      scores = score_batch(self.selector, sources, flat,
                           refs if self.selector.needs_reference else None).reshape(-1, n)
    return dict(summarize(correct, answers, self.config.ks, scores), num_samples=n)


def pass_at_k_path(workdir: str, split: str) -> str:
  return os.path.join(workdir, f"pass_at_k_{split}.png")


def plot_pass_at_k(rows: Iterable[Mapping[str, Any]], path: str, split: str) -> str | None:
  """pass@k (solid) and maj@k (dashed) against k for each run with sampled metrics on `split`."""
  rows = [r for r in rows if r.get("split") == split and r.get("pass_at_k")]
  if not rows:
    return None
  fig = Figure(figsize=(6.0, 4.0), layout="constrained")
  ax = fig.subplots()
  for row in rows:
    ks = sorted(int(k) for k in row["pass_at_k"])
    line, = ax.plot(ks, [row["pass_at_k"][str(k)] for k in ks], marker="o",
                    label=f"{row['run']} pass@k")
    if row.get("maj_at_k"):
      ax.plot(ks, [row["maj_at_k"][str(k)] for k in ks], linestyle="--", marker=".",
              color=line.get_color(), label=f"{row['run']} maj@k")
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
  ax.set_xlabel("k (samples per problem)")
  ax.set_ylabel(f"{split}: % of problems solved")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  return report._save(fig, path)  # pylint: disable=protected-access


def plot_pass_at_k_per_split(rows: Sequence[Mapping[str, Any]], workdir: str) -> list[str]:
  """One `pass_at_k_<split>.png` per split that has sampled metrics; returns the paths."""
  splits = list(dict.fromkeys(r.get("split") for r in rows if r.get("pass_at_k")))
  paths = [plot_pass_at_k(rows, pass_at_k_path(workdir, split), split) for split in splits]
  return [p for p in paths if p]


METRIC_TITLES = (("pass_at_k", "pass@{k}"), ("maj_at_k", "maj@{k}"),
                 ("best_of_n_reranked", "best-of-{k} (reranked)"))


def markdown_tables(rows: Sequence[Mapping[str, Any]]) -> str:
  """One table per split: greedy pass@1 (the reward) and every sampled metric, per run."""
  out = []
  for split in dict.fromkeys(r.get("split") for r in rows if r.get("pass_at_k")):
    split_rows = [r for r in rows if r.get("split") == split and r.get("pass_at_k")]
    columns = [(key, int(k)) for key, _ in METRIC_TITLES
               for k in sorted({int(k) for r in split_rows for k in (r.get(key) or {})})]
    titles = {key: title for key, title in METRIC_TITLES}
    header = ["run", "greedy pass@1"] + [titles[key].format(k=k) for key, k in columns]
    lines = [f"## {split}", "", "| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]
    for r in split_rows:
      cells = [str(r["run"]), f"{r.get('mean_reward', float('nan')):.2f}"]
      cells += [f"{r[key][str(k)]:.2f}" if str(k) in (r.get(key) or {}) else "-"
                for key, k in columns]
      lines.append("| " + " | ".join(cells) + " |")
    out.append("\n".join(lines))
  return "\n\n".join(out)


def write_reports(rows: Sequence[Mapping[str, Any]], workdir: str) -> list[str]:
  """`pass_at_k.md` (tables per split) and `pass_at_k_<split>.png`; returns the paths."""
  text = markdown_tables(rows)
  if not text:
    return []
  path = os.path.join(workdir, "pass_at_k.md")
  header = ("# Sampled evaluation\n\nPercent of problems solved. pass@k: unbiased estimator; "
            "maj@k: majority vote over the first k samples; greedy pass@1: the reward column "
            "of results.md.\n\n")
  fileio.write_atomic(path, (header + text + "\n").encode("utf-8"))
  return [path] + plot_pass_at_k_per_split(rows, workdir)
