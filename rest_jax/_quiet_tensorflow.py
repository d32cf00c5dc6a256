"""Keeps TensorFlow's accelerator probing out of a run's output.

rest_jax uses TensorFlow only for data (seqio, TFDS, tf.data); the model runs on JAX. The
TensorFlow wheels from PyPI are built with CUDA support, and loading their shared libraries on a
machine without a GPU prints lines such as

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_driver.cc:...] failed call to cuInit: ...

from C++, before any Python logging is set up and regardless of `TF_CPP_MIN_LOG_LEVEL`. Users
read them as a broken install. `install()` (run when `rest_jax` is imported) adds an import hook:
while the modules listed in `_QUIET_MODULES` execute for the first time, file descriptor 2 goes
to a temporary file; afterwards every captured line that is not such accelerator probing is
written back to stderr, so real import errors and warnings still show. In the same window
TensorFlow is told to use no GPU (as JAX training codebases do): the device enumeration that
prints the `cuInit` lines happens there, and on a GPU machine TensorFlow does not reserve the
memory JAX needs. Set `REST_JAX_SHOW_TF_PROBING=1` to see everything (the GPU stays hidden).
"""

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile
import threading

_QUIET_MODULES = frozenset({"tensorflow", "tensorflow_text"})

# One pattern per kind of line that only reports the absence (or probing) of an accelerator.
_PROBING_LINE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"cudart_stub\.cc",
    r"Could not find cuda drivers",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc:.*already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"cpu_feature_guard\.cc",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"oneDNN custom operations are on",
    r"CUDA error|cuda_(driver|executor|diagnostics)\.cc",
    r"kernel driver does not appear to be running on this host",
    r"retrieving CUDA diagnostic information",
]))

_lock = threading.RLock()  # tensorflow_text imports tensorflow: nested captures.


def is_probing_line(line: str) -> bool:
  """Whether `line` is accelerator probing printed while TensorFlow loads."""
  return bool(_PROBING_LINE.search(line))


@contextlib.contextmanager
def _filtered_stderr():
  """Sends fd 2 to a temporary file for the duration; writes back the lines worth keeping."""
  if os.environ.get("REST_JAX_SHOW_TF_PROBING", "") not in ("", "0"):
    yield
    return
  with _lock, tempfile.TemporaryFile(mode="w+b") as captured:
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(True)
              if not is_probing_line(line)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
  """Wraps a module's loader so that executing it runs under `_filtered_stderr`."""

  def __init__(self, loader):
    self._loader = loader

  def __getattr__(self, name):  # get_resource_reader, is_package, ...: the wrapped loader's.
    return getattr(self._loader, name)

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with _filtered_stderr():
      self._loader.exec_module(module)
      if module.__name__ == "tensorflow":
        _hide_accelerators_from(module)


def _hide_accelerators_from(tf) -> None:
  """TensorFlow runs input pipelines only: it must neither probe nor claim a GPU.

  Without this, TensorFlow's first eager op enumerates GPUs (printing the cuInit lines outside
  the import) and, on a GPU machine, reserves most of the memory that JAX needs.
  """
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError, AttributeError):  # Devices already initialised: leave them.
    pass


class _QuietFinder(importlib.abc.MetaPathFinder):
  """Finds `_QUIET_MODULES` through the other finders and wraps their loaders."""

  def find_spec(self, fullname, path, target=None):
    if fullname not in _QUIET_MODULES:
      return None
    for finder in sys.meta_path:
      if isinstance(finder, _QuietFinder) or not hasattr(finder, "find_spec"):
        continue
      spec = finder.find_spec(fullname, path, target)
      if spec is not None:
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
          spec.loader = _QuietLoader(spec.loader)
        return spec
    return None


def install() -> None:
  """Adds the import hook once; if TensorFlow is already loaded, only hides the GPU from it."""
  if "tensorflow" in sys.modules:
    _hide_accelerators_from(sys.modules["tensorflow"])
    return
  if any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
    return
  sys.meta_path.insert(0, _QuietFinder())
