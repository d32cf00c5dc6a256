r"""Exports a trained BC policy as a policy shipped with the package (`pretrained=NAME`).

  python scripts/export_pretrained_policy.py --workdir=/tmp/de_en_bc --name=de_en_small \
      --command="python -m rest_jax.main --gin_file=de_en/bc_pretrain.gin --workdir=/tmp/de_en_bc"

Reads `<workdir>/checkpoints_bc` (the selected BC policy), stores its parameters only — no
optimizer state — in `rest_jax/policies/pretrained/<NAME>/` as an orbax checkpoint (bfloat16 by
default, which halves the size; they are cast back to the run's dtype when loaded), and writes
a model card with the command that trained it, the hash of the training data, the metrics of
the workdir's G0I0 rows and the metrics of the exported (cast) parameters on the same splits.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, REPO)

from rest_jax import checkpointing, pretrained_policies  # pylint: disable=wrong-import-position
from rest_jax.rewards import reward_model_training  # pylint: disable=wrong-import-position

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a ReST workdir whose BC phase finished")
  parser.add_argument("--name", required=True, help="the shipped name (pretrained=NAME)")
  parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
  parser.add_argument("--command", default="", help="the command that trained the policy")
  parser.add_argument("--output_root", default=pretrained_policies.PRETRAINED_DIR)
  parser.add_argument("--note", default="", help="a status paragraph for the model card")
  return parser.parse_args(argv)


def data_hash(task: str) -> str:
  """SHA-256 over the shipped files of a corpus (its manifest lists them), or '' if unknown."""
  from rest_jax.data import ding_tfds  # pylint: disable=g-import-not-at-top
  builders = {cls.name: cls for cls in (ding_tfds.DingDeEn, ding_tfds.DeEn)}
  if task not in builders:
    return ""
  digest = hashlib.sha256()
  for split in builders[task].SPLITS:
    with open(builders[task].shipped_split_path(split), "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()


def g0i0_rows(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "results.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [row for row in rows if row.get("run") == "G0I0"]


def model_card(name: str, meta: dict, rows: list[dict], args, size_bytes: int, digest: str,
               num_params: int) -> str:
  fingerprint = meta.get("fingerprint", {})
  model = fingerprint.get("model", {})
  shape = ", ".join(f"{k}={model.get(k)}" for k in (
      "d_model", "num_heads", "d_ff", "num_encoder_layers", "num_decoder_layers", "vocab_size"))
  lines = [f"# Pretrained policy `{name}`", "",
           f"A BC (behaviour cloning) translation policy for the task `{fingerprint.get('task')}`,"
           " shipped so that ReST runs can start from a policy that translates without hours of "
           f"CPU training: `rest_loop.run.init_policy = 'pretrained={name}'` (or "
           "`init_policy_mode = 'finetune'` to train it further).", ""]
  if args.note:
    lines += ["**Status.** " + args.note, ""]
  lines += [
      f"- model: encoder-decoder Transformer, {shape}; {num_params:,} parameters "
      f"(value head included), stored as {args.dtype} ({size_bytes / 1e6:.1f} MB)",
      f"- trained by: `{args.command or 'see the workdir config'}`",
      f"- training data: SHA-256 of the task's shipped files `{digest}`",
      f"- BC selection: the best validation score ({meta.get('best_score')}) of the "
      "evaluations during training", "",
      "Metrics of the BC workdir's policy (float32, greedy decoding, sacrebleu):", "",
      "| split | BLEU | chrF | length ratio | repetition |", "|---|---:|---:|---:|---:|"]
  for row in rows:
    lines.append(f"| {row['split']} | {row.get('bleu', 0):.2f} | {row.get('chrf', 0):.2f} | "
                 f"{row.get('length_ratio', 0):.3f} | {row.get('repetition_rate', 0):.3f} |")
  lines += ["", "Rebuild: run the command above, then", "",
            f"    python scripts/export_pretrained_policy.py --workdir=<that workdir> "
            f"--name={name} --dtype={args.dtype}", ""]
  return "\n".join(lines)


def main(argv=None) -> None:
  args = parse_args(argv)
  source = os.path.join(args.workdir, "checkpoints_bc")
  if not os.path.isdir(source):
    raise SystemExit(f"--workdir={args.workdir}: no checkpoints_bc/ (BC has not finished)")
  policy = reward_model_training.load_policy_for_sampling(source)
  cast = jax.tree_util.tree_map(lambda x: jnp.asarray(x, DTYPES[args.dtype]), policy.params)
  out = os.path.join(args.output_root, args.name)
  if os.path.exists(out):
    shutil.rmtree(out)
  meta = dict(policy.meta)
  meta.update({"kind": "policy", "exported_dtype": args.dtype, "exported_from": source})
  checkpointer = checkpointing.Checkpointer(out, max_to_keep=1)
  try:
    checkpointer.save(0, cast, meta)
  finally:
    checkpointer.close()
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(cast))
  card = model_card(args.name, meta, g0i0_rows(args.workdir), args, size,
                    data_hash(meta.get("fingerprint", {}).get("task", "")), num_params)
  with open(os.path.join(out, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
    f.write(card)
  print(card)


if __name__ == "__main__":
  main(sys.argv[1:])
