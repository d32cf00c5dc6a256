r"""Writes the model card of a trained reward model from the files its build left behind.

A shipped reward model is only as trustworthy as what is known about it: which data (and its
hash), which commands, how well it ranks held-out hypotheses, and which hacks it resists. This
script collects that from the build's own outputs instead of hand-copied numbers:

  python scripts/write_reward_model_card.py --name=de_en --model_dir=/tmp/rm/reward_model \
      --data_summary=/tmp/rm/train.tsv.summary.json \
      --data_summary=/tmp/rm/validation.tsv.summary.json --train_tsv=/tmp/rm/train.tsv \
      --probe_json=/tmp/rm/probe.json --commands=/tmp/rm/commands.sh \
      --output=rest_jax/rewards/pretrained/de_en/MODEL_CARD.md

--model_dir is the output of scripts/train_reward_model.py (its meta holds the configuration
and the training summary), --data_summary the *.summary.json files of
scripts/make_reward_data.py, --probe_json the --json_out of scripts/probe_reward_model.py.
"""

import argparse
import json
import math
import os
import sys

import jax
import numpy as np

from rest_jax import checkpointing
from rest_jax.configs import ModelConfig
from rest_jax.rewards import reward_data
from rest_jax.rewards import reward_model as rm


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--name", required=True, help="the pretrained name, e.g. de_en")
  p.add_argument("--model_dir", required=True)
  p.add_argument("--data_summary", action="append", default=[])
  p.add_argument("--train_tsv", default=None, help="the training file, to quote its sha256")
  p.add_argument("--probe_json", required=True)
  p.add_argument("--commands", required=True, help="file with the exact build commands")
  p.add_argument("--output", required=True)
  return p.parse_args(argv)


def read_json(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def directory_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def model_section(model_dir: str) -> tuple[list[str], dict]:
  checkpointer = checkpointing.Checkpointer(model_dir, max_to_keep=None)
  try:
    step = checkpointer.latest_step()
    meta = checkpointer.restore_meta(step)
  finally:
    checkpointer.close()
  config = ModelConfig(**meta["model_config"])
  options = rm.RewardModelOptions.from_meta(meta)
  shapes = jax.tree_util.tree_leaves(rm.abstract_boxed_params(rm.RewardModel(config, options)))
  count = sum(int(np.prod(getattr(x, "value", x).shape)) for x in shapes)
  size = directory_bytes(os.path.join(model_dir, str(step)))
  lines = ["## Model", "",
           f"Reference-free `RewardModel` (rest_jax/rewards/reward_model.py): d_model "
           f"{config.d_model}, encoder layers {config.num_encoder_layers}, heads "
           f"{config.num_heads}, "
           f"d_ff {config.d_ff}, dropout {config.dropout_rate}, pooling "
           f"`{options.pooling}`, vocabulary `{meta['vocabulary']}` ({config.vocab_size} ids), "
           f"inputs cut to {meta['max_source_len']} source / {meta['max_hypothesis_len']} "
           f"hypothesis tokens. {count:,} parameters; checkpoint step {step}, "
           f"{size / 1e6:.2f} MB on disk.", ""]
  return lines, meta.get("training") or {}


def data_section(paths: list[str], train_tsv: str | None) -> list[str]:
  lines = ["## Data", ""]
  if train_tsv:
    with open(train_tsv, "rb") as f:
      rows = sum(1 for _ in f)
    lines += [f"Training file `{os.path.basename(train_tsv)}`: {rows:,} rows, sha256 "
              f"`{reward_data.sha256_of(train_tsv)}` (the concatenation below, see the commands).", ""]
  for path in paths:
    s = read_json(path)
    lines += [f"`{os.path.basename(s['output_tsv'])}`: {s['rows']:,} {s['format']} rows for "
              f"{s['num_sources']:,} sources ({'; '.join(s['inputs'])}), labels {s['metric']}, "
              f"corruptions labelled {s['corruption_label']}; sha256 `{s['sha256']}`.", "",
              "| origin | hypotheses | mean label |", "|---|---:|---:|"]
    lines += [f"| {origin} | {v['hypotheses']:,} | {v['mean_label']:.3f} |"
              for origin, v in s["origins"].items()]
    lines.append("")
  return lines


def training_section(training: dict) -> list[str]:
  if not training:
    return []
  best = training.get("best_validation", {})
  config = training.get("config", {})
  return ["## Training", "",
          f"Regression on the labels, {config.get('steps')} steps at batch "
          f"{config.get('batch_size')}, learning rate {config.get('learning_rate')}; "
          f"{training.get('num_train_rows'):,} training rows, "
          f"{training.get('num_validation_rows'):,} validation rows; "
          f"{training.get('train_seconds')} s of training. The checkpoint is the best by "
          f"validation Spearman: step {training.get('best_step')}, Spearman "
          f"{best.get('spearman', math.nan):.3f}, same-source pairwise accuracy "
          f"{best.get('pairwise_accuracy', math.nan):.3f}, MSE {best.get('mse', math.nan):.4f}.",
          ""]


def probe_section(probe: dict) -> list[str]:
  lines = ["## Held-out results", ""]
  for spec, m in (probe.get("heldout") or {}).items():
    lines.append(f"`{spec}` on held-out labelled hypotheses ({m['num_rows']:,} rows, sources "
                 f"never trained on): Spearman ρ **{m['spearman']:.3f}**, same-source pairwise "
                 f"accuracy **{m['pairwise_accuracy']:.3f}**, MSE {m['mse']:.4f}.")
  threshold = probe.get("min_win_rate")
  lines += ["", f"Probes on {'; '.join(probe['inputs'])} (seed {probe['seed']}): per "
            "corruption kind, the mean reward and the share of pairs in which the reference "
            "scores strictly higher (ref wins)"
            + (f"; the bar is {threshold:.0%} for every kind" if threshold is not None else "")
            + ".", ""]
  names = list(probe["probes"])
  lines += ["| probe | pairs | " + " | ".join(f"{n} mean | ref wins" for n in names) + " |",
            "|---|---:|" + "---:|---:|" * len(names)]
  first = probe["probes"][names[0]]
  lines.append(f"| reference | {first['num_pairs']} | " + " | ".join(
      f"{probe['probes'][n]['reference_mean']:.3f} | " for n in names) + " |")
  for k, kind in enumerate(first["kinds"]):
    cells = []
    for n in names:
      r = probe["probes"][n]["kinds"][k]
      cells.append("n/a | " if not r["num_pairs"] else f"{r['mean']:.3f} | {r['win_rate']:.1%}")
    lines.append(f"| {kind['kind']} | {kind['num_pairs']} | " + " | ".join(cells) + " |")
  if probe.get("passed") is not None:
    lines += ["", "Result: " + ("**passed**." if probe["passed"] else "**FAILED**.")]
  return lines + [""]


def card(args) -> str:
  model_lines, training = model_section(args.model_dir)
  with open(args.commands, encoding="utf-8") as f:
    commands = f.read().strip()
  head = [f"# Reward model `{args.name}`", "",
          f"`learned:pretrained={args.name}`: a small reference-free reward R(source, "
          "hypothesis) in [0, 1] for German→English, trained to rank translations like chrF "
          "does and to score degenerate outputs (repetitions, truncations, copied source, "
          "shuffled words, another sentence's translation, runaway characters, near-empty "
          "output) below the reference. Written by scripts/write_reward_model_card.py from the "
          "build's outputs.", "",
          "## How it was built", "", "```bash", commands, "```", ""]
  limits = ["## Limits", "",
            "The probes use the same corruption families as the training negatives "
            "(rest_jax/rewards/corruptions.py), on held-out sources: passing them shows the model "
            "learned those families, not that it resists every hack. A policy optimised against "
            "it can still find outputs it over-rates; watch BLEU/chrF, the length ratio and the "
            "repetition rate beside the reward (results.md's reward-hacking check).", ""]
  return "\n".join(head + model_lines + data_section(args.data_summary, args.train_tsv)
                   + training_section(training) + probe_section(read_json(args.probe_json))
                   + limits)


def main(argv=None) -> int:
  args = parse_args(argv)
  text = card(args)
  with open(args.output, "w", encoding="utf-8") as f:
    f.write(text)
  print(f"wrote {args.output}")
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (ValueError, FileNotFoundError, KeyError, checkpointing.CheckpointError) as e:
    sys.exit(f"error: {e}")
