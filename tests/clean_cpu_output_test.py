"""A CPU run's output starts with our own lines: no CUDA probing from the TensorFlow wheels."""

import os
import re
import subprocess
import sys
import textwrap

from rest_jax import _quiet_tensorflow

# Reads the quickstart task, builds a toy policy and greedy-decodes one batch.
_SCRIPT = textwrap.dedent("""
    import sys
    print("rest_jax job starts", flush=True)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from rest_jax import configs, sampling
    from rest_jax.data import pipeline
    from rest_jax.models import transformer

    examples = pipeline.load_examples("ding_de_en", "validation", max_examples=4)
    vocab = pipeline.get_task_vocabulary("ding_de_en")
    model = transformer.Transformer(configs.ModelConfig(
        vocab_size=vocab.vocab_size, d_model=16, num_heads=2, d_ff=32, num_encoder_layers=1,
        num_decoder_layers=1))
    inputs = pipeline.pad_batch([e.inputs for e in examples], max(len(e.inputs) for e in examples))
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(inputs), jnp.asarray(inputs))["params"]
    config = configs.SamplingConfig(max_decode_len=4, temperature=0.0)
    out = sampling.sample(sampling.model_decode_fns(model), params, jnp.asarray(inputs),
                          jax.random.PRNGKey(1), config)
    print("decoded", np.asarray(out.tokens).shape, flush=True)
""")

_CUDA_LINE = re.compile(r"cuda|cuInit|cudart|cuDNN|cuBLAS|cuFFT|TensorRT|absl::InitializeLog",
                        re.IGNORECASE)


def test_probing_lines_are_recognised_and_others_kept():
  probing = [
      "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
      "I0000 00:00:1796219889.624788   10527 cudart_stub.cc:31] Could not find cuda drivers on "
      "your machine, GPU will not be used.",
      "E0000 00:00:1.0 1 cuda_driver.cc:282] failed call to cuInit: UNKNOWN ERROR (303)",
      "E0000 00:00:1.0 1 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
      "register factory for plugin cuDNN when one has already been registered",
      "I0000 00:00:1.0 1 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to use "
      "available CPU instructions in performance-critical operations.",
  ]
  kept = [
      "Traceback (most recent call last):",
      "ImportError: libstdc++.so.6: version `GLIBCXX_3.4.30' not found",
      "W1202 13:49:46.325997 1 pipeline.py:104] de_en/train shard 0/1: dropped 90 examples",
  ]
  assert all(_quiet_tensorflow.is_probing_line(line) for line in probing)
  assert not any(_quiet_tensorflow.is_probing_line(line) for line in kept)


def test_a_cpu_job_prints_no_accelerator_probing():
  env = dict(os.environ)
  # As on a user's machine: none of the test suite's settings that would hide the lines.
  for name in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS", "XLA_FLAGS",
               "REST_JAX_SHOW_TF_PROBING"):
    env.pop(name, None)
  run = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True,
                       timeout=900, check=False)
  output = run.stdout + run.stderr
  assert run.returncode == 0, output
  assert "decoded (4, 1, 4)" in run.stdout, output
  assert run.stdout.splitlines()[0] == "rest_jax job starts"
  offending = [line for line in output.splitlines() if _CUDA_LINE.search(line)]
  assert not offending, "\n".join(offending)


def test_the_probing_is_shown_on_request():
  """Without the filter the same import prints the lines, so the test above can fail."""
  env = dict(os.environ, REST_JAX_SHOW_TF_PROBING="1")
  for name in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES"):
    env.pop(name, None)
  run = subprocess.run([sys.executable, "-c", "import rest_jax, tensorflow"], env=env,
                       capture_output=True, text=True, timeout=900, check=False)
  assert run.returncode == 0, run.stderr
  lines = (run.stdout + run.stderr).splitlines()
  # The wheels print probing on machines without a GPU; where a GPU driver is present they may
  # print nothing at all, and then there is nothing to check.
  if not any(_CUDA_LINE.search(line) for line in lines):
    import pytest  # pylint: disable=g-import-not-at-top
    pytest.skip("this TensorFlow build prints no accelerator probing on this machine")
  assert any(_quiet_tensorflow.is_probing_line(line) for line in lines)
