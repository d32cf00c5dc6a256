"""rest_jax: Reinforced Self-Training (ReST) for sequence models in JAX/Flax."""

from rest_jax import _quiet_tensorflow

_quiet_tensorflow.install()

__version__ = "0.1.0"
