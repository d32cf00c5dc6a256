"""Policy networks: the Transformer and its named presets."""

from rest_jax.models.presets import PRESETS, model_config
from rest_jax.models.transformer import EOS_ID, PAD_ID, Transformer, token_log_probs

__all__ = ["PRESETS", "model_config", "EOS_ID", "PAD_ID", "Transformer", "token_log_probs"]
