r"""Top-k filtering's threshold: `sampling.kth_largest` vs `lax.top_k`, and the floor below both.

With `top_k > 0` every decode step needs each row's k-th largest logit. This script times, in one
process and interleaved repeat by repeat, on the same [rows, vocab] float32 logits:

  ours      `sampling.kth_largest` (bisection on order-preserving int32 keys, 32 passes)
  lax       `jax.lax.top_k(x, k)[0][:, -1:]`, what the sampler called before
  one_pass  `jnp.max(x, axis=-1)`: a single reduction over the logits, the least any exact
            threshold can cost (every logit must be read once)

and checks that ours and lax agree exactly. Shapes: the arithmetic policy's Grow batch (2048 rows,
byte vocabulary 260) and a translation policy's (256 rows, 32000 sub-words) by default.

  PYTHONPATH=. python scripts/benchmark_top_k.py
  PYTHONPATH=. python scripts/benchmark_top_k.py --shapes=512x32000 --k=50 --repeats=9
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shapes", default="2048x260,256x32000",
                      help="comma-separated ROWSxVOCAB logits shapes")
  parser.add_argument("--k", type=int, default=40)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  try:
    args.shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
  except ValueError:
    parser.error(f"--shapes={args.shapes!r}: expected ROWSxVOCAB[,ROWSxVOCAB...], e.g. 2048x260")
  for rows_vocab in args.shapes:
    if len(rows_vocab) != 2 or min(rows_vocab) < 1:
      parser.error(f"--shapes: {rows_vocab} is not a positive ROWSxVOCAB pair")
    if not 1 <= args.k <= rows_vocab[1]:
      parser.error(f"--k={args.k} must lie in [1, vocab={rows_vocab[1]}]")
  if args.repeats < 1:
    parser.error(f"--repeats={args.repeats} must be >= 1")
  return args


def main(args):
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np

  from rest_jax import hardware, sampling

  systems = {
      "ours": jax.jit(lambda x: sampling.kth_largest(x, args.k)),
      "lax": jax.jit(lambda x: jax.lax.top_k(x, args.k)[0][:, -1:]),
      "one_pass": jax.jit(lambda x: jnp.max(x, axis=-1, keepdims=True)),
  }
  print(f"top-k threshold benchmark: {hardware.cpu_model()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, python {platform.python_version()}, k={args.k}, median "
        f"of {args.repeats}")
  for rows, vocab in args.shapes:
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, vocab), jnp.float32) * 4.0
    outs = {name: jax.block_until_ready(fn(x)) for name, fn in systems.items()}  # compile
    if not np.array_equal(np.asarray(outs["ours"]), np.asarray(outs["lax"])):
      raise SystemExit(f"{rows}x{vocab}: kth_largest disagrees with lax.top_k")
    times = {name: [] for name in systems}
    for _ in range(args.repeats):
      for name, fn in systems.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"  {rows} x {vocab}: ours {med['ours']:.2f} ms, lax.top_k {med['lax']:.2f} ms "
          f"(ours {med['lax'] / med['ours']:.1f}x faster), one reduction pass "
          f"{med['one_pass']:.2f} ms (ours = {med['ours'] / med['one_pass']:.1f} passes); "
          "thresholds equal")


if __name__ == "__main__":
  main(parse_args())
