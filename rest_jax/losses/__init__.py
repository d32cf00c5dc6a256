"""Improve-step losses of ReST, chosen per round by name (see `registry`).

Every loss is a pure, jit-able `(LossInputs, loss_params, config) -> (loss, metrics)`; token
sums are normalised by the number of weighted target tokens (see `sequence_math`).
"""
from rest_jax.losses.base import LossInputs
from rest_jax.losses.base import LossSpec
from rest_jax.losses.registry import get_loss
from rest_jax.losses.registry import list_losses
from rest_jax.losses.registry import make_config
from rest_jax.losses.registry import register_loss

__all__ = ["LossInputs", "LossSpec", "get_loss", "list_losses", "make_config",
           "register_loss"]
