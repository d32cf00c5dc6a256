r"""Training throughput and model-FLOPs utilisation (MFU) of the jitted train step.

Improve is the other half of every ReST round. This script times `train.make_train_step` (the
real step: forward, loss, gradients, AdamW with clipping, donated state) on random full-length
batches and reports tokens/s and MFU: model FLOPs per second as a fraction of this machine's
float32 matmul peak, which the script measures itself (a jitted square f32 matmul) between the
train steps of the same run, so that a busy shared machine depresses both alike.

Model FLOPs per train step (forward matmuls x 3: the backward pass costs twice the forward), with
B batch, S source and T target length, D d_model, A = heads * head_dim, F d_ff, V vocab,
Le/Ld encoder/decoder layers:

  encoder layer   2BS(4DA + 2DF) + 4BS^2 A             q,k,v,out + MLP + scores/context
  decoder layer   2BT(6DA + 2DF) + 4BSDA + 4BT^2 A + 4BTSA
                                 self q,k,v,out + cross q,out + MLP, cross k,v from the encoder
                                 output, self- and cross-attention scores/context
  output logits   2BTDV                              (tied embedding)
  train step      3 * (Le * encoder + Ld * decoder + logits)

Attention is counted in full (the model computes the masked entries too); embedding look-ups,
LayerNorm, softmax and the optimizer are not matmuls and are not counted. XLA's own count for the
compiled step (`cost_analysis()["flops"]`, every op) is printed as a cross-check.

Run from the repository root:

  PYTHONPATH=. python scripts/benchmark_train.py                   # paper tiny, 64 x 32/32
  PYTHONPATH=. python scripts/benchmark_train.py --batch=128 --json_out=/tmp/train.json
  # On a GPU: full float32 matmuls in the step and in the peak probe, a larger batch.
  PYTHONPATH=. python scripts/benchmark_train.py --matmul_precision=highest --peak_size=8192 \
      --batch=1024

Results and the machine they came from are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="tiny", help="rest_jax.models.presets name")
  parser.add_argument("--vocab_size", type=int, default=32000)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--source_len", type=int, default=32)
  parser.add_argument("--target_len", type=int, default=32)
  parser.add_argument("--loss", default="bc", help="registered loss name")
  parser.add_argument("--repeats", type=int, default=5, help="timed train steps")
  parser.add_argument("--peak_size", type=int, default=2048,
                      help="side of the square f32 matmul that measures the peak")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="CPU cores the process may use (default: all available)")
  parser.add_argument("--matmul_precision", default="default",
                      choices=("default", "highest", "tensorfloat32"),
                      help="jax_default_matmul_precision for the step and the peak probe alike "
                           "(matters on GPUs, where 'default' may use TF32)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json_out", default="", help="also write the figures here as JSON")
  args = parser.parse_args(argv)
  for name in ("vocab_size", "batch", "source_len", "target_len", "repeats", "peak_size",
               "threads"):
    if getattr(args, name) < 1:
      parser.error(f"--{name}={getattr(args, name)} must be >= 1")
  if args.threads > len(os.sched_getaffinity(0)):
    parser.error(f"--threads={args.threads} but this process may only use "
                 f"{len(os.sched_getaffinity(0))} cores")
  return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
  # Before jax creates its thread pool: XLA:CPU sizes it by the cores the process may use.
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:ARGS.threads])

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from rest_jax import hardware, optim, train
from rest_jax import sharding as sharding_lib
from rest_jax.configs import MeshConfig, ModelConfig, OptimizerConfig
from rest_jax.losses import registry
from rest_jax.models.presets import model_config
from rest_jax.models.transformer import Transformer
from rest_jax.train_state import StateFactory
# pylint: enable=g-import-not-at-top,wrong-import-position


def forward_matmul_flops(cfg: ModelConfig, batch: int, source_len: int, target_len: int
                         ) -> dict[str, int]:
  """Forward-pass matmul FLOPs of the teacher-forced encoder-decoder (see module docstring)."""
  if cfg.decoder_only:
    raise ValueError("forward_matmul_flops counts the encoder-decoder policy; got "
                     "ModelConfig.decoder_only=True.")
  b, s, t, d, f, v = batch, source_len, target_len, cfg.d_model, cfg.d_ff, cfg.vocab_size
  a = cfg.num_heads * cfg.resolved_head_dim
  encoder_layer = 2 * b * s * (4 * d * a + 2 * d * f) + 4 * b * s * s * a
  decoder_layer = (2 * b * t * (6 * d * a + 2 * d * f) + 4 * b * s * d * a
                   + 4 * b * t * t * a + 4 * b * t * s * a)
  return {"encoder": cfg.num_encoder_layers * encoder_layer,
          "decoder": cfg.num_decoder_layers * decoder_layer,
          "logits": 2 * b * t * d * v}


def train_step_model_flops(cfg: ModelConfig, batch: int, source_len: int, target_len: int
                           ) -> int:
  return 3 * sum(forward_matmul_flops(cfg, batch, source_len, target_len).values())


def make_peak_probe(size: int):
  """(run, flops): a jitted size x size f32 matmul on device-resident operands."""
  a = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(2), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  return (lambda: jax.block_until_ready(matmul(a, b))), 2 * size ** 3


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _xla_flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return None if not analysis else analysis.get("flops")


def main(args):
  if args.matmul_precision != "default":
    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
  cfg = model_config(args.preset, args.vocab_size)
  model = Transformer(cfg)
  mesh = sharding_lib.make_mesh(MeshConfig(), devices=jax.devices()[:1])
  tx = optim.make_optimizer(OptimizerConfig())
  state, shardings = StateFactory(model, mesh).create(jax.random.PRNGKey(args.seed), tx)
  spec = registry.get_loss(args.loss)
  step = train.make_train_step(model, spec, registry.make_config(args.loss), tx, shardings,
                               mesh)
  rng = np.random.RandomState(args.seed)
  # Full-length rows of ordinary tokens: every target position carries loss.
  batch = sharding_lib.shard_batch({
      "inputs": rng.randint(2, args.vocab_size, (args.batch, args.source_len)).astype(np.int32),
      "targets": rng.randint(2, args.vocab_size, (args.batch, args.target_len)).astype(np.int32),
  }, mesh)

  start = time.perf_counter()
  compiled = step.lower(state, batch, jax.random.PRNGKey(0)).compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def run_step(i):
    holder["state"], metrics = compiled(holder["state"], batch, jax.random.PRNGKey(i))
    jax.block_until_ready(metrics)

  warmup_s = timed(lambda: run_step(0))
  peak_run, peak_flops = make_peak_probe(args.peak_size)
  model_flops = train_step_model_flops(cfg, args.batch, args.source_len, args.target_len)

  step_s, peak_s = [], []
  for r in range(args.repeats):
    step_s.append(timed(lambda: run_step(r + 1)))
    # The median of three matmuls right after each step: the peak under the same load.
    peak_s.append(statistics.median(timed(peak_run) for _ in range(3)))
    print(f"[repeat {r + 1}/{args.repeats}] step {step_s[-1]:.2f} s, matmul "
          f"{peak_flops / peak_s[-1] / 1e9:.1f} GFLOP/s", flush=True)

  per_repeat_mfu = [(model_flops / s) / (peak_flops / p) for s, p in zip(step_s, peak_s)]
  median_step, median_peak = statistics.median(step_s), statistics.median(peak_s)
  target_tokens = args.batch * args.target_len
  report = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": {"cpu": hardware.cpu_model(), "cores_used": args.threads,
                  "platform": platform.platform(), "jax_devices": str(jax.devices())},
      "versions": {"jax": jax.__version__, "python": platform.python_version()},
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "backend": jax.default_backend(),
      "setup": {"preset": args.preset, "vocab_size": args.vocab_size, "batch": args.batch,
                "source_len": args.source_len, "target_len": args.target_len,
                "loss": args.loss, "repeats": args.repeats, "dtype": cfg.dtype,
                "matmul_precision": args.matmul_precision,
                "peak_matmul_size": args.peak_size},
      "compile_s": compile_s, "first_step_s": warmup_s,
      "step_s": {"median": median_step, "all": [round(s, 3) for s in step_s]},
      "target_tokens_per_s": target_tokens / median_step,
      "all_tokens_per_s": args.batch * (args.source_len + args.target_len) / median_step,
      "model_flops_per_step": model_flops,
      "model_flops_breakdown_forward": forward_matmul_flops(cfg, args.batch, args.source_len,
                                                            args.target_len),
      "xla_flops_per_step": _xla_flops(compiled),
      "achieved_gflops_per_s": model_flops / median_step / 1e9,
      "peak_gflops_per_s": {"median": peak_flops / median_peak / 1e9,
                            "all": [round(peak_flops / p / 1e9, 1) for p in peak_s]},
      "mfu": {"ratio_of_medians": (model_flops / median_step) / (peak_flops / median_peak),
              "median_of_per_repeat": statistics.median(per_repeat_mfu)},
  }
  print_report(report)
  if args.json_out:
    with open(args.json_out, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
  return report


def print_report(report):
  setup = report["setup"]
  print(f"\nTrain benchmark, {report['date']}: {report['machine']['cpu']}, "
        f"{report['machine']['cores_used']} cores, jax {report['versions']['jax']} on "
        f"{report['machine']['jax_devices']}, XLA_FLAGS={report['xla_flags']!r}, matmul "
        f"precision {setup['matmul_precision']}")
  print(f"  {setup['preset']} policy, vocab {setup['vocab_size']}, batch {setup['batch']} x "
        f"source {setup['source_len']} / target {setup['target_len']}, loss {setup['loss']}, "
        f"{setup['dtype']}, median of {setup['repeats']} steps")
  print(f"  compile {report['compile_s']:.1f} s, first step {report['first_step_s']:.2f} s, "
        f"step {report['step_s']['median']:.2f} s {report['step_s']['all']}")
  print(f"  tokens/s: {report['target_tokens_per_s']:.0f} target, "
        f"{report['all_tokens_per_s']:.0f} source+target")
  xla = report["xla_flops_per_step"]
  # On GPUs the matmuls are library calls (cuBLAS) that XLA's cost analysis does not count.
  caveat = "" if report["backend"] == "cpu" else ", library GEMM calls not counted"
  print(f"  model FLOPs/step {report['model_flops_per_step'] / 1e9:.1f} G "
        f"(XLA cost analysis: {'n/a' if xla is None else f'{xla / 1e9:.1f} G'}{caveat})")
  print(f"  achieved {report['achieved_gflops_per_s']:.1f} GFLOP/s; measured f32 matmul peak "
        f"{report['peak_gflops_per_s']['median']:.1f} GFLOP/s {report['peak_gflops_per_s']['all']}")
  mfu = report["mfu"]
  verdict = "met" if mfu["ratio_of_medians"] >= 0.35 else "MISSED"
  print(f"  MFU {100 * mfu['ratio_of_medians']:.1f}% (median of per-repeat "
        f"{100 * mfu['median_of_per_repeat']:.1f}%)  (target >= 35%: {verdict})")


if __name__ == "__main__":
  main(ARGS)
