r"""Exports a trained policy as a Hugging Face checkpoint, to serve or evaluate it elsewhere.

  python -m rest_jax.export_hf --policy=/tmp/arith_from_hf --base=/ckpt/Qwen2-0.5B \
      --out=/tmp/arith_from_hf_hf [--which=best|bc|latest] [--dtype=bfloat16]

`--policy` is a ReST workdir or checkpoint directory, as for `rest_jax.evaluate_policy`
(default: the workdir's final policy, checkpoints_best/). `--base` is the Hugging Face
checkpoint the run started from (`rest_loop.run.init_policy='hf=DIR'`): its config.json is the
template of the exported one and the id permutation (rest_jax.hf_checkpoints.TokenMap) is undone
with its ids, and its tokenizer files are copied. The exported directory (config.json,
model.safetensors, the tokenizer) loads with `transformers`' AutoModelForCausalLM (Marian:
MarianMTModel / AutoModelForSeq2SeqLM); the value head is not exported. Every flag and the
checkpoint's meta are checked before anything is read.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import ml_dtypes
import numpy as np

from rest_jax import configs, fileio, hf_checkpoints

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json", "vocab.json",
                   "merges.txt", "source.spm", "target.spm", "spiece.model")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  from rest_jax import evaluate_policy  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog="python -m rest_jax.export_hf",
                              description=__doc__.split("\n\n")[1].strip())
  p.add_argument("--policy", required=True, help=evaluate_policy.POLICY_FORMS)
  p.add_argument("--base", required=True,
                 help="the Hugging Face checkpoint directory the run started from")
  p.add_argument("--out", required=True, help="output directory (created; must be empty)")
  p.add_argument("--which", default="auto", choices=evaluate_policy.WHICH)
  p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
  p.add_argument("--family", default=None, choices=hf_checkpoints.FAMILIES,
                 help="default: the base checkpoint's model_type")
  return p.parse_args(argv)


def export(policy_path: str, base: str, out: str, which: str = "auto", dtype: str = "float32",
           family: str | None = None) -> str:
  """Writes the export; returns the checkpoint path it read."""
  import jax  # pylint: disable=g-import-not-at-top
  from rest_jax import evaluate_policy  # pylint: disable=g-import-not-at-top
  base_config = hf_checkpoints.read_config(base)
  family = family or base_config.get("model_type")
  if family not in hf_checkpoints.FAMILIES:
    raise ValueError(f"--base={base!r}: model_type={family!r}; supported (or pass --family): "
                     f"{list(hf_checkpoints.FAMILIES)}.")
  if fileio.exists(out) and fileio.glob(os.path.join(out, "*")):
    raise ValueError(f"--out={out!r} is not empty; allowed: a new or empty directory.")
  policy = evaluate_policy.find_policy(policy_path, which)
  fingerprint = evaluate_policy.check_fingerprint(policy, vocabulary=None)
  config = configs.ModelConfig(**configs.model_config_dict(fingerprint["model"]))
  hf_checkpoints.check_exportable(config, family)
  if base_config["vocab_size"] != config.vocab_size:
    raise ValueError(f"--base={base!r} has {base_config['vocab_size']} ids, the policy "
                     f"{config.vocab_size}: it did not start from this checkpoint.")
  # The run's vocabulary was the base's tokenizer: its TokenMap is the one to undo.
  loaded = evaluate_policy.load_policy(policy, hf_checkpoints.HF_PREFIX + base)
  token_map = loaded.vocabulary.token_map
  params = jax.tree_util.tree_map(np.asarray, jax.device_get(loaded.params))
  hf_checkpoints.export_policy(params, config, token_map, out, family=family,
                               base_config=base_config, dtype=DTYPES[dtype])
  for name in TOKENIZER_FILES:
    source = os.path.join(base, name)
    if fileio.exists(source):
      fileio.write_atomic(os.path.join(out, name), fileio.read_bytes(source))
  return policy.path


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    path = export(args.policy, args.base, args.out, args.which, args.dtype, args.family)
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 1
  print(f"exported {path} to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
