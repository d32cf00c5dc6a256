r"""Sampling throughput: our compiled sampler vs Hugging Face `generate` vs no KV cache.

Grow is the expensive half of ReST (N samples per source, every round), so the sampler's speed
decides how large an experiment fits in a budget. This script times, in one process and
interleaved repeat by repeat (so a noisy, shared machine slows all three alike):

  ours      `sampling.make_sampler`: encoder once, KV cache, on-device `lax.while_loop`.
  hf        `transformers` `MarianMTModel.generate` (PyTorch) on the same architecture and sizes
            (scripts/peer_hf_model.py), KV cache on, the same sampling settings.
  no_cache  our `sampling.sample` with decode callbacks that keep no cache: the encoder output is
            kept, but every step re-runs the teacher-forced decoder (self-attention keys/values of
            the whole prefix and the cross-attention keys/values) over the growing prefix, as
            `generate(use_cache=False)` does. Each prefix length is its own branch of a
            `lax.switch`, so no step computes positions it does not need.

Every row decodes exactly --new_tokens tokens (EOS disabled), float32 everywhere, one sample per
source; tokens/s = batch * new_tokens / wall time of the whole call (encoder included). Compile
and warm-up time is reported separately and never enters the medians. Both libraries get the same
CPU cores: --threads pins the process to that many cores before jax or torch starts (the XLA:CPU
thread pool has no size flag; it uses the cores the process may run on) and sets
torch.set_num_threads to the same number.

Run from the repository root (needs the `bench` extra: torch and transformers):

  PYTHONPATH=. python scripts/benchmark_sampling.py                # paper tiny, batch 64
  PYTHONPATH=. python scripts/benchmark_sampling.py --repeats=3 --json_out=/tmp/sampling.json
  # On a GPU (jax with CUDA): the peer on the GPU too, full float32 matmuls in both.
  PYTHONPATH=. python scripts/benchmark_sampling.py --hf_device=cuda --systems=ours,hf

Results and the machine they came from are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="tiny", help="rest_jax.models.presets name")
  parser.add_argument("--vocab_size", type=int, default=32000)
  parser.add_argument("--batch", type=int, default=64, help="sources (rows) per call")
  parser.add_argument("--source_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--temperature", type=float, default=0.8)
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per system")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="CPU cores for both libraries (default: all this process may use)")
  parser.add_argument("--systems", default="ours,hf,no_cache",
                      help="comma-separated subset of ours,hf,no_cache")
  parser.add_argument("--hf_device", default="cpu", choices=("cpu", "cuda"),
                      help="where the PyTorch peer runs (ours runs on jax's default backend)")
  parser.add_argument("--tf32", action="store_true",
                      help="GPU only: let both libraries run float32 matmuls as TF32 (default: "
                           "full float32 in both)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json_out", default="", help="also write the figures here as JSON")
  args = parser.parse_args(argv)
  systems = [s for s in args.systems.split(",") if s]
  unknown = sorted(set(systems) - {"ours", "hf", "no_cache"})
  if unknown or not systems:
    parser.error(f"--systems={args.systems!r}: unknown {unknown}; allowed: ours,hf,no_cache")
  for name in ("vocab_size", "batch", "source_len", "new_tokens", "repeats", "threads"):
    if getattr(args, name) < 1:
      parser.error(f"--{name}={getattr(args, name)} must be >= 1")
  if args.temperature <= 0:
    parser.error(f"--temperature={args.temperature} must be > 0 (the benchmark samples)")
  available = sorted(os.sched_getaffinity(0))
  if args.threads > len(available):
    parser.error(f"--threads={args.threads} but this process may only use {len(available)} "
                 f"cores")
  args.systems = systems
  return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
  # Before jax/torch create their thread pools: both see exactly --threads cores.
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:ARGS.threads])

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rest_jax import hardware, sampling
from rest_jax import sharding as sharding_lib
from rest_jax.configs import MeshConfig, SamplingConfig
from rest_jax.models.presets import model_config
from rest_jax.models.transformer import PAD_ID, Transformer, causal_bias
from rest_jax.train_state import StateFactory
# pylint: enable=g-import-not-at-top,wrong-import-position


# --------------------------------------------------------------------------- no-cache baseline
def _prefix_logits(module: Transformer, encoded_BxSxD, inputs_BxS, prefix_BxT):
  """Next-token logits after `prefix` from a full teacher-forced decoder pass (no cache).

  Mirrors the decoder half of `Transformer.__call__`: the cross-attention keys/values are
  projected from the encoder output and the self-attention ones from the whole prefix, anew.
  """
  b, t = prefix_BxT.shape
  slots_BxT = jnp.broadcast_to(jnp.arange(t), (b, t))
  self_bias = causal_bias(slots_BxT, jnp.ones((b, t), bool))
  cross_bias = jnp.where(inputs_BxS != PAD_ID, 0.0, -1e10)[:, None, None, :]
  cross_kvs = [layer.cross_kv(encoded_BxSxD) for layer in module.decoder_layers]
  hidden, _ = module._run_decoder(prefix_BxT, slots_BxT, self_bias, cross_kvs,  # pylint: disable=protected-access
                                  cross_bias, None, None, True)
  return module._logits(hidden[:, -1:, :])[:, 0]  # pylint: disable=protected-access


def no_cache_decode_fns(model: Transformer) -> sampling.DecodeFns:
  """DecodeFns whose 'cache' holds only the encoder output and the tokens so far."""

  def logits_for(params, state):
    # Branch L runs the decoder over the first L decoder inputs (start token + L-1 samples).
    max_len = state["prefix"].shape[1]
    branches = [
        functools.partial(lambda p, s, length: model.apply(
            {"params": p}, s["encoded"], s["inputs"], s["prefix"][:, :length],
            method=_prefix_logits), length=length)
        for length in range(1, max_len + 1)]
    return jax.lax.switch(state["length"] - 1, branches, params, state)

  def prefill(params, inputs_BxS, num_samples, max_decode_len):
    if num_samples != 1:
      raise ValueError(f"The no-cache baseline draws one sample per source; got "
                       f"num_samples={num_samples}.")
    encoded = model.apply({"params": params}, inputs_BxS, method=Transformer.encode)
    # Decoder inputs: the start token (PAD) then the sampled tokens; one spare slot for the
    # sampler's final (unused) step.
    state = {"encoded": encoded, "inputs": inputs_BxS, "length": jnp.array(1, jnp.int32),
             "prefix": jnp.full((inputs_BxS.shape[0], max_decode_len + 1), PAD_ID, jnp.int32)}
    return logits_for(params, state), state

  def step(params, tokens_R, state):
    prefix = jax.lax.dynamic_update_slice_in_dim(state["prefix"], tokens_R[:, None],
                                                 state["length"], axis=1)
    state = dict(state, prefix=prefix, length=jnp.minimum(state["length"] + 1,
                                                         prefix.shape[1]))
    return logits_for(params, state), state

  def gather_rows(state, indices):
    del state, indices
    raise NotImplementedError("The no-cache baseline is for sampling, not beam search.")

  return sampling.DecodeFns(prefill, step, gather_rows)


# ------------------------------------------------------------------------------------ timing
def time_call(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def build_ours(args, model, config):
  mesh = sharding_lib.make_mesh(MeshConfig(), devices=jax.devices()[:1])
  state, shardings = StateFactory(model, mesh).create(jax.random.PRNGKey(args.seed),
                                                      optax.identity())
  sampler = sampling.make_sampler(model, config, mesh, shardings.params)
  no_cache = jax.jit(functools.partial(sampling.sample, no_cache_decode_fns(model),
                                       config=config))
  return state.params, sampler, no_cache


def build_hf(args, model_cfg, config, sources):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import peer_hf_model  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  torch.backends.cuda.matmul.allow_tf32 = args.tf32
  peer = peer_hf_model.build_peer(model_cfg, seed=args.seed).to(args.hf_device)
  input_ids = torch.from_numpy(sources.astype(np.int64)).to(args.hf_device)
  kwargs = peer_hf_model.generate_kwargs(config)

  def run():
    with torch.inference_mode():
      out = peer.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                          **kwargs)
    if args.hf_device == "cuda":
      torch.cuda.synchronize()
    # The decoder start token plus exactly new_tokens sampled tokens per row.
    if tuple(out.shape) != (args.batch, args.new_tokens + 1):
      raise RuntimeError(f"HF generate returned shape {tuple(out.shape)}, expected "
                         f"{(args.batch, args.new_tokens + 1)}")
    return out

  info = {"torch": torch.__version__, "transformers": transformers.__version__,
          "torch_threads": torch.get_num_threads(), "hf_device": args.hf_device,
          "peer_params": sum(p.numel() for p in peer.parameters()),
          "attn_implementation": getattr(peer.config, "_attn_implementation", "default")}
  return run, info


def summarize(seconds, tokens):
  median = statistics.median(seconds)
  return {"median_s": median, "tokens_per_s": tokens / median,
          "all_s": [round(s, 4) for s in seconds]}


def main(args):
  if jax.default_backend() == "gpu":
    # Full float32 matmuls unless --tf32 (XLA:GPU would otherwise use TF32 and torch would not).
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if args.tf32 else "highest")
  model_cfg = model_config(args.preset, args.vocab_size)
  model = Transformer(model_cfg)
  config = SamplingConfig(max_decode_len=args.new_tokens, temperature=args.temperature,
                          num_samples=1, stop_at_eos=False)
  rng = np.random.RandomState(args.seed)
  # Full-length sources of ordinary tokens (no PAD, no EOS).
  sources = rng.randint(2, args.vocab_size, size=(args.batch, args.source_len)).astype(np.int32)
  tokens = args.batch * args.new_tokens

  params, sampler, no_cache = build_ours(args, model, config)
  runners, compile_s, info = {}, {}, {}
  key = lambda r: jax.random.PRNGKey(1000 + r)
  if "ours" in args.systems:
    runners["ours"] = lambda r: jax.block_until_ready(sampler(params, sources, key(r)))
  if "no_cache" in args.systems:
    runners["no_cache"] = lambda r: jax.block_until_ready(no_cache(params, sources, key(r)))
  if "hf" in args.systems:
    hf_run, info["hf"] = build_hf(args, model_cfg, config, sources)
    runners["hf"] = lambda r: hf_run()

  for name, run in runners.items():
    compile_s[name] = time_call(lambda: run(-1))  # Compile (jax) / first call (torch).
    print(f"[warm-up] {name}: {compile_s[name]:.1f} s", flush=True)
  agreement = None
  if {"ours", "no_cache"} <= set(runners):
    # Same key, same sampling code, cached vs recomputed logits: the tokens must agree.
    a = np.asarray(sampler(params, sources, key(0)).tokens)
    b = np.asarray(no_cache(params, sources, key(0)).tokens)
    agreement = float((a == b).mean())

  seconds = {name: [] for name in runners}
  for r in range(args.repeats):
    for name, run in runners.items():
      seconds[name].append(time_call(lambda: run(r)))
    print(f"[repeat {r + 1}/{args.repeats}] " + ", ".join(
        f"{n}={s[-1]:.2f}s" for n, s in seconds.items()), flush=True)

  results = {name: summarize(s, tokens) for name, s in seconds.items()}
  report = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": {"cpu": hardware.cpu_model(), "cores_used": args.threads,
                  "platform": platform.platform(), "jax_devices": str(jax.devices())},
      "versions": {"jax": jax.__version__, "python": platform.python_version(),
                   **(info.get("hf") or {})},
      "setup": {"preset": args.preset, "vocab_size": args.vocab_size, "batch": args.batch,
                "source_len": args.source_len, "new_tokens": args.new_tokens,
                "temperature": args.temperature, "repeats": args.repeats,
                "dtype": model_cfg.dtype, "tf32": args.tf32},
      "compile_or_first_call_s": compile_s, "results": results,
      "no_cache_token_agreement": agreement,
  }
  ratios = {}
  if "ours" in results:
    for other in ("hf", "no_cache"):
      if other in results:
        per_repeat = [o / u for o, u in zip(seconds[other], seconds["ours"])]
        ratios[f"ours_vs_{other}"] = {
            "ratio_of_medians": results[other]["median_s"] / results["ours"]["median_s"],
            "median_of_per_repeat_ratios": statistics.median(per_repeat)}
  report["speedups"] = ratios
  print_report(report)
  if args.json_out:
    with open(args.json_out, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
  return report


def print_report(report):
  setup = report["setup"]
  print(f"\nSampling benchmark, {report['date']}: {report['machine']['cpu']}, "
        f"{report['machine']['cores_used']} cores for XLA and torch; jax devices "
        f"{report['machine']['jax_devices']}")
  print(f"  {setup['preset']} policy, vocab {setup['vocab_size']}, batch {setup['batch']}, "
        f"source {setup['source_len']}, {setup['new_tokens']} new tokens, temperature "
        f"{setup['temperature']}, {setup['dtype']}, median of {setup['repeats']}")
  print(f"  versions: {report['versions']}")
  print(f"  {'system':10s} {'tokens/s':>10s} {'median s':>9s} {'warm-up s':>10s}  all s")
  for name, r in report["results"].items():
    print(f"  {name:10s} {r['tokens_per_s']:10.1f} {r['median_s']:9.2f} "
          f"{report['compile_or_first_call_s'][name]:10.1f}  {r['all_s']}")
  for name, r in report["speedups"].items():
    target = "  (target >= 3x: " + ("met" if r["ratio_of_medians"] >= 3 else "MISSED") + ")" \
        if name == "ours_vs_hf" else ""
    print(f"  {name}: {r['ratio_of_medians']:.2f}x (median of per-repeat ratios "
          f"{r['median_of_per_repeat_ratios']:.2f}x){target}")
  if report["no_cache_token_agreement"] is not None:
    print(f"  no-cache tokens equal to ours (same key): "
          f"{100 * report['no_cache_token_agreement']:.2f}%")


if __name__ == "__main__":
  main(ARGS)
