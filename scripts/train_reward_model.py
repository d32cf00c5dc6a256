r"""Trains the learned, reference-free reward model and saves a checkpoint for `make_reward`.

  # regression on source<TAB>hypothesis<TAB>score (e.g. from scripts/make_reward_data.py)
  python scripts/train_reward_model.py --train_tsv=/tmp/rm/train.tsv --mode=regression \
      --vocab=ding --preset=toy --steps=600 --output_dir=/tmp/rm/model
  # pairwise preferences on source<TAB>chosen<TAB>rejected
  python scripts/train_reward_model.py --train_tsv=prefs.tsv --mode=preference ...

The validation rows come from --validation_tsv or, without it, a held-out share of the training
sources (--validation_fraction). The checkpoint keeps the best-by-validation parameters (Spearman
in regression mode, pairwise accuracy in preference mode) and is loaded with
`make_reward("learned", path=OUTPUT_DIR)` or the spec "learned:path=OUTPUT_DIR". Run from the
repository root with `PYTHONPATH=.` (or after `pip install -e .`).
"""

import argparse
import dataclasses
import json
import os
import sys
import time

from rest_jax import checkpointing, pretrained_policies
from rest_jax.models import presets
from rest_jax.data import vocab as vocab_lib
from rest_jax.rewards import reward_model as rm
from rest_jax.rewards import reward_model_training as training


def parse_args(argv=None) -> argparse.Namespace:
  defaults = training.RewardTrainingConfig()
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--train_tsv", required=True, help="training TSV (plain or .gz)")
  p.add_argument("--validation_tsv", default=None,
                 help="validation TSV; default: hold out --validation_fraction of the sources")
  p.add_argument("--validation_fraction", type=float, default=0.1)
  p.add_argument("--mode", choices=training.MODES, default=defaults.mode)
  p.add_argument("--vocab", default="ding", help=f"vocabulary spec: {vocab_lib.ACCEPTED_SPECS}")
  p.add_argument("--preset", choices=sorted(presets.PRESETS), default="toy")
  p.add_argument("--d_model", type=int, default=None, help="override the preset's width")
  p.add_argument("--d_ff", type=int, default=None, help="override the preset's MLP width")
  p.add_argument("--num_heads", type=int, default=None)
  p.add_argument("--num_layers", type=int, default=None,
                 help="override the preset's number of encoder layers")
  p.add_argument("--pooling", choices=rm.POOLINGS, default="mean",
                 help="mean, or mean_max (mean and max over tokens; see reward_model.py)")
  p.add_argument("--dropout_rate", type=float, default=0.0)
  p.add_argument("--steps", type=int, default=defaults.steps)
  p.add_argument("--batch_size", type=int, default=defaults.batch_size)
  p.add_argument("--learning_rate", type=float, default=defaults.learning_rate)
  p.add_argument("--warmup_steps", type=int, default=defaults.warmup_steps)
  p.add_argument("--weight_decay", type=float, default=defaults.weight_decay)
  p.add_argument("--max_source_len", type=int, default=defaults.max_source_len)
  p.add_argument("--max_hypothesis_len", type=int, default=defaults.max_hypothesis_len)
  p.add_argument("--eval_every", type=int, default=defaults.eval_every)
  p.add_argument("--length_group_batches", type=int, default=defaults.length_group_batches,
                 help="> 0: sort chunks of this many batches by length so each batch is "
                      "padded short (faster steps); 0: plain shuffling")
  p.add_argument("--seed", type=int, default=defaults.seed)
  p.add_argument("--strict", action="store_true", help="fail on the first malformed TSV line")
  p.add_argument("--init_encoder_from", default=None,
                 help="a policy checkpoint (ReST workdir, checkpoint directory or step directory, "
                      "or pretrained=NAME): the reward model takes that policy's architecture "
                      "(--preset/--d_model/--d_ff/--num_heads/--num_layers must not be given) "
                      "and starts from its embeddings and encoder layers")
  p.add_argument("--output_dir", required=True, help="checkpoint directory to create")
  p.add_argument("--overwrite", action="store_true",
                 help="allow an output_dir that already holds checkpoints")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  config = training.RewardTrainingConfig(
      mode=args.mode, steps=args.steps, batch_size=args.batch_size,
      learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
      weight_decay=args.weight_decay, max_source_len=args.max_source_len,
      max_hypothesis_len=args.max_hypothesis_len, eval_every=args.eval_every, seed=args.seed,
      length_group_batches=args.length_group_batches)
  vocabulary = vocab_lib.get_vocabulary(args.vocab)
  overrides = {field: value for field, value in (
      ("d_model", args.d_model), ("d_ff", args.d_ff), ("num_heads", args.num_heads),
      ("num_encoder_layers", args.num_layers)) if value is not None}
  model_config = presets.model_config(args.preset, vocabulary.vocab_size,
                                      dropout_rate=args.dropout_rate,
                                      max_len=max(args.max_source_len, args.max_hypothesis_len),
                                      **overrides)
  init_encoder = None
  if args.init_encoder_from:
    given = [f"--{name}" for name in ("d_model", "d_ff", "num_heads", "num_layers")
             if getattr(args, name) is not None]
    if given:
      sys.exit(f"--init_encoder_from takes the policy's architecture; drop {', '.join(given)}")
    try:
      policy_dir = pretrained_policies.resolve(args.init_encoder_from)
    except ValueError as e:
      sys.exit(f"--init_encoder_from={args.init_encoder_from!r} is invalid: {e}")
    policy = training.load_policy_for_sampling(policy_dir, vocabulary_spec=args.vocab)
    declared = policy.meta.get("vocabulary")
    if declared is not None and declared != args.vocab:
      sys.exit(f"--init_encoder_from={args.init_encoder_from} was trained with vocabulary "
               f"{declared!r}, not --vocab={args.vocab}: they must be the same vocabulary")
    if policy.model.config.vocab_size < vocabulary.vocab_size:
      sys.exit(f"--init_encoder_from={args.init_encoder_from} embeds "
               f"{policy.model.config.vocab_size} ids; --vocab={args.vocab} has "
               f"{vocabulary.vocab_size}")
    model_config = dataclasses.replace(
        policy.model.config, dropout_rate=args.dropout_rate, value_head=False,
        dtype="float32", param_dtype="float32",
        max_len=max(args.max_source_len, args.max_hypothesis_len))
    init_encoder = policy.params
    print(f"reward model encoder from {args.init_encoder_from} (step {policy.step}): "
          f"d_model={model_config.d_model} layers={model_config.num_encoder_layers}")
  options = rm.RewardModelOptions(pooling=args.pooling)
  if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite:
    sys.exit(f"--output_dir={args.output_dir} is not empty; pass --overwrite or choose another")

  rows, report = training.read_reward_tsv(args.train_tsv, args.mode, strict=args.strict)
  print(report.summary())
  if args.validation_tsv:
    train_rows = rows
    validation_rows, validation_report = training.read_reward_tsv(
        args.validation_tsv, args.mode, strict=args.strict)
    print(validation_report.summary())
  else:
    train_rows, validation_rows = training.split_by_source(rows, args.validation_fraction,
                                                           args.seed)
  architecture = (f"architecture of {args.init_encoder_from}" if args.init_encoder_from
                  else f"preset={args.preset} {overrides or ''}")
  print(f"{len(train_rows)} training rows, {len(validation_rows)} validation rows; "
        f"mode={args.mode} {architecture} pooling={args.pooling} vocab={args.vocab}")

  start = time.time()
  result = training.train_reward_model(model_config, config, args.vocab, train_rows,
                                       validation_rows, options=options,
                                       init_encoder=init_encoder)
  elapsed = time.time() - start
  summary = {"best_step": result.best_step, "best_validation": result.best_metrics,
             "train_seconds": round(elapsed, 1), "train_tsv": args.train_tsv,
             "num_train_rows": len(train_rows), "num_validation_rows": len(validation_rows),
             "config": vars(args), "history": result.history}
  rm.save_reward_model(args.output_dir, result.best_step, result.params, model_config, args.vocab,
                       args.max_source_len, args.max_hypothesis_len, training=summary,
                       options=options)
  print(json.dumps({k: summary[k] for k in ("best_step", "best_validation", "train_seconds")}))
  print(f"saved {args.output_dir} (use reward spec 'learned:path={args.output_dir}')")
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (ValueError, FileNotFoundError, checkpointing.CheckpointError) as e:
    sys.exit(f"error: {e}")
