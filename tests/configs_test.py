"""Bad configuration values fail early with errors that name the field and what is allowed."""

import pytest

from rest_jax.configs import (BeamSearchConfig, ModelConfig, OptimizerConfig, SamplingConfig)
from rest_jax.models import model_config


def _model(**kw):
  fields = dict(vocab_size=100, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                num_decoder_layers=1)
  fields.update(kw)
  return ModelConfig(**fields)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_heads=5), r"ModelConfig.num_heads=5 .*must divide d_model=32"),
    (dict(d_model=0), r"ModelConfig.d_model=0 .*positive integer"),
    (dict(activation="swish"),
     r"ModelConfig.activation='swish' .*allowed: \('relu', 'gelu', 'silu', 'gelu_exact'\)"),
    (dict(dtype="float8"), r"ModelConfig.dtype='float8' .*allowed"),
    (dict(decoder_only=True), r"ModelConfig.num_encoder_layers=1 .*must be 0 when decoder_only"),
    (dict(dropout_rate=1.0), r"ModelConfig.dropout_rate=1.0"),
    (dict(vocab_size=2), r"ModelConfig.vocab_size=2"),
])
def test_model_config_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _model(**kwargs)


def test_head_dim_override_allows_non_dividing_heads():
  assert _model(num_heads=5, head_dim=8).resolved_head_dim == 8


def test_preset_errors():
  with pytest.raises(ValueError, match=r"Unknown model preset 'huge'; allowed: \['base', 'big'"):
    model_config("huge", 100)
  with pytest.raises(ValueError, match=r"Unknown ModelConfig field\(s\) \['heads'\]"):
    model_config("toy", 100, heads=3)


def test_decoder_only_preset_keeps_total_depth():
  cfg = model_config("tiny", 100, decoder_only=True)
  assert (cfg.num_encoder_layers, cfg.num_decoder_layers) == (0, 12)


@pytest.mark.parametrize("cls, kwargs, message", [
    (OptimizerConfig, dict(decay="step"), r"OptimizerConfig.decay='step' .*allowed"),
    (OptimizerConfig, dict(learning_rate=0), r"OptimizerConfig.learning_rate=0"),
    (OptimizerConfig, dict(grad_clip_norm=0.0), r"OptimizerConfig.grad_clip_norm=0.0"),
    (SamplingConfig, dict(top_p=0.0), r"SamplingConfig.top_p=0.0 .*0 < top_p <= 1"),
    (SamplingConfig, dict(temperature=-1.0), r"SamplingConfig.temperature=-1.0"),
    (SamplingConfig, dict(top_k=-2), r"SamplingConfig.top_k=-2"),
    (SamplingConfig, dict(num_samples=0), r"SamplingConfig.num_samples=0"),
    (BeamSearchConfig, dict(beam_size=0), r"BeamSearchConfig.beam_size=0"),
])
def test_other_config_errors(cls, kwargs, message):
  with pytest.raises(ValueError, match=message):
    cls(**kwargs)


def test_a_model_config_saved_before_the_variant_fields_compares_equal():
  """Fingerprints and policy metadata written before a ModelConfig field existed lack it; read
  back, the missing fields take their defaults, so old workdirs resume and old policies load."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from rest_jax import configs  # pylint: disable=g-import-not-at-top
  current = dataclasses.asdict(configs.ModelConfig(vocab_size=16, d_model=8, num_heads=2, d_ff=8,
                                                   num_encoder_layers=1, num_decoder_layers=1))
  old = {k: v for k, v in current.items()
         if k not in ("norm", "positions", "rope_theta", "mlp", "num_kv_heads",
                      "tie_embeddings", "logits_scale")}
  assert configs.model_config_dict(old) == current
  assert configs.model_config_dict(dict(old, norm="rmsnorm")) != current
