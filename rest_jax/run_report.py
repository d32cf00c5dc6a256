"""What a run reports after each phase: evaluation rows, tables, plots and TensorBoard.

After BC, every Improve round and the online phase, `PhaseReporter.phase_done` evaluates the
phase's best policy on validation and every test split, scored by the reported reward
(`EvalConfig.reward`, default the run's reward), adds Best-of-N and the sampled reasoning
metrics (pass@k, maj@k) when configured, and writes a row per split to `results.jsonl/csv/md`,
TensorBoard (`<workdir>/tensorboard`), the first outputs of each split (`samples/`), and the
plots (`rest_jax.report`, `rest_jax.reasoning_eval`). With a learned reward it also runs the
reward-hacking check. Only process 0 writes; every process evaluates (the evaluation is sharded).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Mapping, Sequence

import jax

from rest_jax import evaluate, fileio, report
from rest_jax import sharding as sharding_lib

logger = logging.getLogger(__name__)


class PhaseReporter:
  """Evaluates finished phases and writes the run's results and plots."""

  def __init__(self, workdir: str, evaluator: evaluate.Evaluator, eval_cfg: evaluate.EvalConfig,
               reward, splits: Mapping[str, Sequence[Any]], es_subset: Sequence[Any], seed: int,
               make_reasoning_evaluator: Callable[[Any], Any]):
    """`splits`: validation first, then the test splits. `make_reasoning_evaluator(reward)`
    builds the pass@k sampler (on first use: it compiles)."""
    self.workdir, self.evaluator, self.eval_cfg = workdir, evaluator, eval_cfg
    self.splits, self.es_subset, self.seed = dict(splits), es_subset, seed
    self._make_reasoning_evaluator = make_reasoning_evaluator
    self._reasoning_evaluator = None
    # What the reported metrics are scored with (EvalConfig.reward), e.g. the task's final-answer
    # accuracy while Grow keeps samples by a stricter verifier; early stopping uses the run's.
    if eval_cfg.reward is None:
      self.reward = reward
    else:
      from rest_jax.rewards import registry  # pylint: disable=g-import-not-at-top
      self.reward = registry.reward_from_spec(eval_cfg.reward)
    self.results = report.ResultsLog(workdir) if sharding_lib.is_chief() else None
    self.tb = report.TensorBoardWriter(os.path.join(workdir, "tensorboard")) \
        if sharding_lib.is_chief() else None

  def close(self):
    if self.tb is not None:
      self.tb.close()

  def train_metrics(self, metrics: dict, step: int, phase_name: str) -> None:
    if self.tb is not None:
      self.tb.scalars(metrics, step, prefix=f"train/{phase_name}/")

  def phase_done(self, run_name: str, position: int, params, progress, fields: dict,
                 point: Mapping[str, int] | None) -> None:
    """Evaluates a phase's policy on every split and records one row per split.

    `run_name`: the row's run (G0I0, G2I1, online_ppo); `position`: the phase's index (the
    TensorBoard step); `point`: {'grow_step', 'improve_step'} for a ReST phase, None otherwise.
    """
    rows = []
    for split, examples in self.splits.items():
      summary, hyps, _ = self.evaluator.evaluate(params, examples, desc=f"{run_name} {split}",
                                                 reward=self.reward)
      row = dict(summary, run=run_name, **(point or {}), split=split, **fields)
      row.setdefault("threshold", "")
      row["best_step"] = progress.best_step
      row["early_stopping_reward"] = progress.best_score
      if self.eval_cfg.reward is not None:  # The reward column is not the run's reward.
        row["eval_reward"] = self.eval_cfg.reward
      if split == "validation" and self.eval_cfg.best_of_n:
        row["best_of_n"] = {str(n): r for n, r in self.evaluator.best_of_n(
            params, self.es_subset, jax.random.PRNGKey(self.seed), reward=self.reward)}
      if self.eval_cfg.pass_at_k:
        row.update(self._reasoning_metrics(params, examples))
      rows.append(row)
      if sharding_lib.is_chief():
        write_samples(self.workdir, run_name, split, examples, hyps)
    if not sharding_lib.is_chief():
      return
    for row in rows:
      self.results.record(row)
      if self.tb is not None:
        self.tb.scalars({k: v for k, v in row.items() if isinstance(v, (int, float))},
                        position, prefix=f"eval/{row['split']}/")
    self.write_reports()
    for warning in ([] if self.exact_reward() else report.hacking_warnings(self.results.rows)):
      if warning.run == run_name:
        logger.warning("Reward-hacking check: %s", warning.message)

  def _reasoning_metrics(self, params, examples):
    """pass@k and maj@k of one split (EvalConfig.pass_at_k); the same key for every policy."""
    if self._reasoning_evaluator is None:
      self._reasoning_evaluator = self._make_reasoning_evaluator(self.reward)
    return self._reasoning_evaluator.evaluate(params, examples,
                                              jax.random.PRNGKey(self.seed + 1))

  def write_reports(self) -> None:
    rows = self.results.rows
    report.write_markdown(self.workdir, rows, self.exact_reward())
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

  def finish(self) -> list[dict]:
    """Writes the reports once more and prints each split's table; returns the rows."""
    if not sharding_lib.is_chief():
      return []
    rows = self.results.rows
    self.write_reports()
    for split in report.splits_of(rows):
      print(f"{split}:\n{report.markdown_table(rows, split)}")
    print(report.hacking_section(rows, self.exact_reward()))
    return rows

  def exact_reward(self) -> str | None:
    """The reported reward's name when it is an exact verifier (the hacking check does not
    apply)."""
    reward = self.reward
    return getattr(reward, "name", "reward") if getattr(reward, "exact", False) else None


def write_samples(workdir: str, run_name: str, split: str, examples: Sequence[Any],
                  hyps: Sequence[str], limit: int = 200) -> None:
  """Writes the first translations of a split next to the results, for inspection."""
  path = report.samples_path(workdir, run_name, split)
  fileio.makedirs(os.path.dirname(path))
  lines = [json.dumps({"source_id": ex.source_id, "source": ex.source, "reference": ex.reference,
                       "hypothesis": hyp}, ensure_ascii=False)
           for ex, hyp in list(zip(examples, hyps))[:limit]]
  fileio.write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
