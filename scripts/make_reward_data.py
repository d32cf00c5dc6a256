r"""Makes reward-model training data: hypotheses for sources, labelled so hacks score low.

  # samples of several policies (weak to strong), the reference itself, and corruptions
  python scripts/make_reward_data.py --task=de_en --split=train --max_examples=4000 \
      --policy=/tmp/runs/bc1_snapshots/1000 --policy=/tmp/runs/bc1/checkpoints_bc \
      --samples_per_source=4 --reference_rate=0.5 --corruption_rate=2 \
      --output_tsv=/tmp/rm/train.tsv
  # without any policy: randomly edited references (the older bootstrap mode)
  python scripts/make_reward_data.py --policy=random_perturbation --task=ding_de_en \
      --split=train --max_examples=1000 --samples_per_source=4 --output_tsv=/tmp/rm/train.tsv

Per source the hypotheses are, in this order:

  --policy=DIR (repeatable)  --samples_per_source samples of each policy: a ReST workdir, a
                             checkpoint directory or one step directory of it (e.g. a copied
                             `checkpoints/2000`); labelled with --metric (chrF by default)
  --policy=random_perturbation  --samples_per_source references with 0..--max_edits random word
                             edits (--sentence_edit_rate of them said twice or the source copied)
  the reference              for a --reference_rate share of the sources, labelled with the
                             metric against itself (1.0 for chrF)
  corruptions                --corruption_rate per source on average (e.g. 2, or 0.5) of the
                             --corruption_kinds (rest_jax/rewards/corruptions.py: repeated
                             n-gram, sentence twice, truncation, copied source, shuffled words,
                             another reference, runaway characters, near-empty), labelled
                             --corruption_label: a number (0.0 by default) or cap:X for
                             min(metric, X)

Inputs are --task with one or more --split, or --tsv files (source<TAB>reference); --max_examples
takes the first pairs of each. Writes source<TAB>hypothesis<TAB>label (--format=regression) or
source<TAB>chosen<TAB>rejected for every same-source pair whose labels differ by at least
--preference_margin (--format=preference), the formats of scripts/train_reward_model.py, and
OUTPUT.summary.json (rows, sha256 of the TSV, per-origin counts and mean labels, the flags).
Deterministic for a given --seed. Run from the repository root (after `pip install -e .`).
"""

import argparse
import json
import sys

from rest_jax.rewards import corruptions
from rest_jax.rewards import reward_data as rd

RANDOM_PERTURBATION = "random_perturbation"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--policy", action="append", default=[],
                 help=f"repeatable: a policy checkpoint directory or '{RANDOM_PERTURBATION}'")
  p.add_argument("--task", default="ding_de_en")
  p.add_argument("--split", action="append", default=None,
                 help="repeatable; default: train")
  p.add_argument("--tsv", action="append", default=[],
                 help="repeatable source<TAB>reference file used instead of --task/--split")
  p.add_argument("--max_examples", type=int, default=None, help="first pairs of each input")
  p.add_argument("--samples_per_source", type=int, default=4, help="per policy")
  p.add_argument("--metric", default="chrf",
                 help="reward spec of the labelling metric, e.g. chrf, bleu, chrf:word_order=2")
  p.add_argument("--reference_rate", type=float, default=0.0,
                 help="share of sources whose reference is added as a hypothesis, in [0, 1]")
  p.add_argument("--corruption_rate", type=float, default=0.0,
                 help="corrupted references per source on average (>= 0)")
  p.add_argument("--corruption_kinds", default=",".join(corruptions.KINDS),
                 help=f"comma-separated subset of {','.join(corruptions.KINDS)}")
  p.add_argument("--corruption_label", default="0.0",
                 help="label of corruptions: a number in [0, 1] or cap:X for min(metric, X)")
  p.add_argument("--format", choices=("regression", "preference"), default="regression")
  p.add_argument("--preference_margin", type=float, default=0.05)
  p.add_argument("--output_tsv", required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max_edits", type=int, default=4, help="random_perturbation: most edits")
  p.add_argument("--sentence_edit_rate", type=float, default=0.0,
                 help="random_perturbation: share of hypotheses that are instead the whole "
                      "reference repeated twice or the copied source")
  p.add_argument("--temperature", type=float, default=0.8, help="policy sampling temperature")
  p.add_argument("--top_k", type=int, default=0)
  p.add_argument("--max_decode_len", type=int, default=64)
  p.add_argument("--max_source_len", type=int, default=64,
                 help="policy sampling: longer sources are cut to this many tokens")
  p.add_argument("--batch_size", type=int, default=32, help="sources per sampling batch")
  p.add_argument("--checkpoint_step", type=int, default=None,
                 help="step of every --policy directory (default: its latest)")
  p.add_argument("--policy_vocab", default=None,
                 help="vocabulary spec of the policies when their checkpoint meta records none")
  return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> rd.CorruptionLabel:
  """Fails on bad flags (naming the flag and what is allowed) before reading or sampling."""
  if args.samples_per_source < 1:
    raise ValueError(f"--samples_per_source={args.samples_per_source} is invalid: expected >= 1")
  if not 0.0 <= args.reference_rate <= 1.0:
    raise ValueError(f"--reference_rate={args.reference_rate} is invalid: expected a share in "
                     "[0, 1]")
  if not 0.0 <= args.corruption_rate < float("inf"):
    raise ValueError(f"--corruption_rate={args.corruption_rate} is invalid: expected a number "
                     ">= 0 (corruptions per source)")
  try:
    corruptions.parse_kinds(args.corruption_kinds)
  except ValueError as e:
    raise ValueError(f"--corruption_kinds={args.corruption_kinds!r}: {e}") from None
  if args.tsv and args.split:
    raise ValueError("--tsv and --split are alternatives: give one of them")
  if not (args.policy or args.reference_rate or args.corruption_rate):
    raise ValueError("nothing to write: give --policy, --reference_rate > 0 or "
                     "--corruption_rate > 0")
  if len(set(args.policy)) != len(args.policy):
    raise ValueError(f"--policy: each policy once, got {args.policy}")
  return rd.parse_corruption_label(args.corruption_label)


def policy_part(args, index: int, policy: str, sources, references):
  if policy == RANDOM_PERTURBATION:
    return rd.perturbation_hypotheses(sources, references, args.samples_per_source,
                                      args.max_edits, args.sentence_edit_rate, args.seed)
  options = rd.SamplingOptions(
      samples_per_source=args.samples_per_source, temperature=args.temperature,
      top_k=args.top_k, max_decode_len=args.max_decode_len, max_source_len=args.max_source_len,
      batch_size=args.batch_size, seed=args.seed)
  return rd.sample_policy(policy, sources, options, index, checkpoint_step=args.checkpoint_step,
                          vocabulary_spec=args.policy_vocab)


# ----------------------------------------------------------------------------------- output
def clean(text: str) -> str:
  return " ".join(text.replace("\t", " ").split())


def write_rows(path: str, fmt: str, sources, hypotheses, labels, margin: float) -> int:
  count = 0
  with open(path, "w", encoding="utf-8") as f:
    for source, hyps, row_labels in zip(sources, hypotheses, labels):
      texts = [clean(h.text) for h in hyps]
      if fmt == "regression":
        for text, value in zip(texts, row_labels):
          f.write(f"{clean(source)}\t{text}\t{value:.6f}\n")
          count += 1
        continue
      for i in range(len(texts)):
        for j in range(len(texts)):
          if (row_labels[i] - row_labels[j] >= margin and texts[i] != texts[j] and texts[i]
              and texts[j]):
            f.write(f"{clean(source)}\t{texts[i]}\t{texts[j]}\n")
            count += 1
  return count


def main(argv=None) -> int:
  args = parse_args(argv)
  corruption_label = check_args(args)
  from rest_jax.rewards import registry  # pylint: disable=g-import-not-at-top
  metric = registry.reward_from_spec(args.metric)  # Bad specs fail before any sampling.
  sources, references, inputs = rd.load_pairs(args.task, args.split or ["train"], args.tsv,
                                              args.max_examples)
  print("\n".join(inputs))
  if not sources:
    raise ValueError("no (source, reference) pairs in the inputs")
  parts = [policy_part(args, i, policy, sources, references)
           for i, policy in enumerate(args.policy)]
  parts.append(rd.reference_hypotheses(references, args.reference_rate, args.seed))
  parts.append(rd.corruption_hypotheses(sources, references, args.corruption_rate,
                                        args.corruption_kinds, args.seed))
  hypotheses = rd.merge(*parts)
  labels = rd.label(metric, sources, references, hypotheses, corruption_label)
  count = write_rows(args.output_tsv, args.format, sources, hypotheses, labels,
                     args.preference_margin)
  origins = rd.origin_summary(hypotheses, labels)
  summary = {"output_tsv": args.output_tsv, "format": args.format, "rows": count,
             "sha256": rd.sha256_of(args.output_tsv), "num_sources": len(sources),
             "inputs": inputs, "metric": args.metric,
             "corruption_label": corruption_label.describe(), "origins": origins,
             "args": vars(args)}
  with open(args.output_tsv + ".summary.json", "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  print_origins(origins, args.metric)
  print(f"wrote {count} {args.format} rows to {args.output_tsv} (sha256 {summary['sha256']})")
  return 0


def print_origins(origins: dict, metric: str) -> None:
  print(f"| origin | hypotheses | mean label ({metric}) |\n|---|---:|---:|")
  for origin, stats in origins.items():
    print(f"| {origin} | {stats['hypotheses']} | {stats['mean_label']:.3f} |")
  total = sum(s["hypotheses"] for s in origins.values())
  mean = sum(s["hypotheses"] * s["mean_label"] for s in origins.values()) / max(total, 1)
  print(f"| all | {total} | {mean:.3f} |")


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (ValueError, FileNotFoundError, RuntimeError) as e:  # RuntimeError: CheckpointError.
    sys.exit(f"error: {e}")
