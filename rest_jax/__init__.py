"""rest_jax: Reinforced Self-Training (ReST) for sequence models in JAX/Flax."""

__version__ = "0.1.0"
