"""Test configuration: 8 fake CPU devices, set before jax is imported anywhere.

Everything the tests write goes under pytest's temporary folder for the session: their own
tmp_path folders, and — set up once per test process below — the system temporary folder that
libraries use (TFDS stages dataset info in `tmp*tfds` folders it never removes, TensorFlow's
autograph writes generated modules), the TFDS data folder the shipped corpora are prepared into,
and the persistent compilation cache. The cache is shared by the test processes of a session
(the many tests that compile the same toy computations pay for each compilation once). Child
processes inherit these through the environment.
"""
import os
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow (used by seqio/TFDS input pipelines) must not grab an accelerator.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture(scope="session", autouse=True)
def own_temporary_folders(tmp_path_factory):
  """Points temporary files, TFDS data and the compilation cache into the session's folder."""
  base = tmp_path_factory.getbasetemp()  # pytest-<n>/popen-gw<k> under xdist, else pytest-<n>.
  session = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  system_tmp = base / "system_tmp"
  system_tmp.mkdir(exist_ok=True)
  os.environ["TMPDIR"] = str(system_tmp)
  tempfile.tempdir = str(system_tmp)
  os.environ.setdefault("TFDS_DATA_DIR", str(base / "tensorflow_datasets"))
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    import jax  # pylint: disable=g-import-not-at-top
    cache = str(session / "compilation_cache")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    jax.config.update("jax_compilation_cache_dir", cache)
  yield
