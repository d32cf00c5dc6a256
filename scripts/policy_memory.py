r"""Prints a policy's parameter count and the training state's memory per device on a mesh.

  python scripts/policy_memory.py --hf_config=experiments/hf_configs/qwen2_0.5b.json --fsdp=4
  python scripts/policy_memory.py --preset=base --vocab_size=32000 --fsdp=8

The state of a training phase is the parameters, their gradients, AdamW's two moments (all in
the parameters' dtype, float32 by default) and the frozen copies the phase's loss keeps (none:
bc, reward_weighted_nll, oac; the BC policy: reinforce, ppo; two: gold_s/gold_p with their lagged
and BC policies, bvmpo with its BC policy and trust-region reference). The policy carries the
loop's value head. With the default sharding rules, the `fsdp` and `model` mesh axes split the
state; `data` replicates it. Activations, the sampler's KV cache and XLA's temporaries come on
top and depend on the batch and lengths: measure them on the machine
(`jax.devices()[0].memory_stats()`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GIB = 1024 ** 3


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--hf_config", help="a Hugging Face config.json (Llama/Qwen2/Gemma/Marian)")
  source.add_argument("--preset", help="a rest_jax model preset (rest_jax.models.PRESETS)")
  p.add_argument("--vocab_size", type=int, default=32000, help="with --preset")
  p.add_argument("--decoder_only", action="store_true", help="with --preset")
  p.add_argument("--fsdp", type=int, default=1)
  p.add_argument("--model", type=int, default=1)
  p.add_argument("--param_dtype", default="float32", choices=("float32", "bfloat16"))
  args = p.parse_args(argv)
  if args.fsdp < 1 or args.model < 1:
    p.error(f"--fsdp={args.fsdp} --model={args.model}: both must be >= 1")

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import linen as nn  # pylint: disable=g-import-not-at-top
  from rest_jax import hf_checkpoints, train_state  # pylint: disable=g-import-not-at-top
  from rest_jax.models import Transformer, model_config  # pylint: disable=g-import-not-at-top
  if args.hf_config:
    with open(args.hf_config, encoding="utf-8") as f:
      config = hf_checkpoints.model_config_from_hf(json.load(f))
  else:
    config = model_config(args.preset, args.vocab_size, decoder_only=args.decoder_only)
  config = dataclasses.replace(config, value_head=True, param_dtype=args.param_dtype)
  shapes = train_state.abstract_boxed_params(Transformer(config))  # Value head included.
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(shapes))
  count = sum(math.prod(x.shape) for x in leaves)
  width = np.dtype(jax.numpy.dtype(args.param_dtype)).itemsize
  shards = args.fsdp * args.model
  print(f"parameters: {count:,} ({count * width / GIB:.2f} GiB in {args.param_dtype})")
  print(f"mesh: fsdp={args.fsdp} x model={args.model} (the state is split {shards} ways)\n")
  print("| phase state | copies of the parameters | GiB in all | GiB per device |")
  print("|---|---:|---:|---:|")
  for name, copies in (("bc, reward_weighted_nll, oac (and ReST-EM)", 4),
                       ("reinforce, ppo (a frozen BC policy)", 5),
                       ("gold_s/gold_p, bvmpo (two frozen copies)", 6)):
    total = copies * count * width / GIB  # params + grads + 2 Adam moments + frozen copies.
    print(f"| {name} | {copies} | {total:.2f} | {total / shards:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
