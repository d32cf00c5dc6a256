r"""Reward "unit tests": does a reward score each reference above its corruptions?

The ReST paper probed its learned reward this way (repeating a sentence *raised* its reward, a
warning of reward hacking). For every (source, reference) pair this script makes each
corruption of rest_jax/rewards/corruptions.py (the ones scripts/make_reward_data.py trains
against), scores the reference and the corruptions with every --reward, and prints one markdown
table: per corruption kind the number of pairs it applies to, the mean reward, its difference
to the reference's mean on those pairs, and the share of pairs in which the reference scores
strictly higher (the win rate; a tie is a loss).

  python scripts/probe_reward_model.py --reward=learned:pretrained=de_en --reward=chrf \
      --task=de_en --split=test_dict --split=test_software --max_examples=300 \
      --min_win_rate=0.9 --heldout_tsv=/tmp/rm/heldout.tsv --json_out=/tmp/rm/probe.json

--min_win_rate=R makes it a check: it exits with status 1, naming each reward and corruption
kind whose win rate is below R. --heldout_tsv=FILE (source<TAB>hypothesis<TAB>label, e.g. made
by make_reward_data.py for sources the model never saw) adds Spearman's rho, same-source
pairwise accuracy and MSE of each reference-free reward against the labels. Inputs are --task
with one or more --split (default: validation) or --tsv files (source<TAB>reference);
--max_examples takes the first pairs of each. Reference-based rewards get the true reference,
so they pass trivially; reference-free rewards see only (source, hypothesis).
"""

import argparse
import json
import sys

from rest_jax.rewards import corruptions
from rest_jax.rewards import probes
from rest_jax.rewards import reward_data as rd


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--reward", action="append", required=True,
                 help="reward spec, repeatable: chrf, learned:pretrained=NAME, "
                      "learned:path=DIR, ...")
  p.add_argument("--task", default="ding_de_en")
  p.add_argument("--split", action="append", default=None,
                 help="repeatable; default: validation")
  p.add_argument("--tsv", action="append", default=[],
                 help="repeatable source<TAB>reference file used instead of --task/--split")
  p.add_argument("--max_examples", type=int, default=500, help="first pairs of each input")
  p.add_argument("--kinds", default=",".join(corruptions.KINDS),
                 help=f"comma-separated subset of {','.join(corruptions.KINDS)}")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--min_win_rate", type=float, default=None,
                 help="exit 1 if any kind's win rate is below this share, in [0, 1]")
  p.add_argument("--heldout_tsv", default=None,
                 help="source<TAB>hypothesis<TAB>label file for Spearman / pairwise accuracy")
  p.add_argument("--json_out", default=None, help="also write the results as JSON here")
  return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
  if args.min_win_rate is not None and not 0.0 <= args.min_win_rate <= 1.0:
    raise ValueError(f"--min_win_rate={args.min_win_rate} is invalid: expected a share in "
                     "[0, 1]")
  if args.max_examples is not None and args.max_examples < 1:
    raise ValueError(f"--max_examples={args.max_examples} is invalid: expected >= 1")
  if args.tsv and args.split:
    raise ValueError("--tsv and --split are alternatives: give one of them")
  try:
    corruptions.parse_kinds(args.kinds)
  except ValueError as e:
    raise ValueError(f"--kinds={args.kinds!r}: {e}") from None


def heldout_table(rewards: dict, path: str) -> tuple[str, dict]:
  # Imported here: only held-out metrics need the (JAX) training module.
  # pylint: disable-next=g-import-not-at-top
  from rest_jax.rewards import reward_model_training as training
  rows, report = training.read_reward_tsv(path, "regression")
  lines = [report.summary(), "", "| reward | rows | Spearman ρ | pairwise acc. | MSE |",
           "|---|---:|---:|---:|---:|"]
  metrics = {}
  for spec, reward in rewards.items():
    if reward.needs_reference:
      lines.append(f"| {spec} | - | needs references | | |")
      continue
    m = metrics[spec] = probes.heldout_metrics(reward, rows)
    lines.append(f"| {spec} | {m['num_rows']} | {m['spearman']:.3f} | "
                 f"{m['pairwise_accuracy']:.3f} | {m['mse']:.4f} |")
  return "\n".join(lines), metrics


def failure_message(reports: dict, min_win_rate: float) -> str | None:
  failures = []
  for spec, report in reports.items():
    bad = report.failing(min_win_rate)
    if bad:
      failures.append(f"{spec}: " + ", ".join(f"{r.kind} ({r.win_rate:.1%})" for r in bad))
  if not failures:
    return None
  return (f"reference wins less than --min_win_rate={min_win_rate:g} of the pairs against "
          + "; ".join(failures))


def main(argv=None) -> int:
  args = parse_args(argv)
  check_args(args)
  from rest_jax.rewards import registry  # pylint: disable=g-import-not-at-top
  rewards = {spec: registry.reward_from_spec(spec) for spec in args.reward}
  sources, references, inputs = rd.load_pairs(args.task, args.split or ["validation"],
                                              args.tsv, args.max_examples)
  if not sources:
    raise ValueError("no (source, reference) pairs in the inputs")
  kinds = corruptions.parse_kinds(args.kinds)
  reports = {spec: probes.run_probes(reward, sources, references, kinds, args.seed)
             for spec, reward in rewards.items()}
  print("; ".join(inputs))
  print(probes.format_table(reports, args.min_win_rate))
  results = {"inputs": inputs, "seed": args.seed, "min_win_rate": args.min_win_rate,
             "probes": probes.to_json(reports)}
  if args.heldout_tsv:
    table, results["heldout"] = heldout_table(rewards, args.heldout_tsv)
    print("\n" + table)
  checked = args.min_win_rate is not None
  message = failure_message(reports, args.min_win_rate) if checked else None
  results["passed"] = (message is None) if checked else None
  if args.json_out:
    with open(args.json_out, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)
  if message:
    print(f"FAILED: {message}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    sys.exit(f"error: {e}")
