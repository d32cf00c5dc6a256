"""Named model shapes. `tiny`, `base` and `big` are the paper's policies; `toy` is for CPU tests.

Gin experiments select a preset by name (`rest_loop.run.model = @model_config()` with
`model_config.preset = "tiny"`) and may override single fields.
"""

from __future__ import annotations

from rest_jax.configs import ModelConfig

# Shapes only; vocab_size comes from the task's vocabulary.
PRESETS: dict[str, dict] = {
    # A few hundred thousand parameters: fast enough for unit tests on two CPU cores.
    "toy": dict(d_model=32, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=2),
    # Small enough for the CPU quickstart on the embedded corpus.
    "small": dict(d_model=256, num_heads=4, d_ff=1024, num_encoder_layers=3,
                  num_decoder_layers=3),
    # The paper's IWSLT14 De-En policy.
    "tiny": dict(d_model=512, num_heads=4, d_ff=1024, num_encoder_layers=6, num_decoder_layers=6),
    # The paper's WMT20 Zh-En policy.
    "base": dict(d_model=512, num_heads=8, d_ff=2048, num_encoder_layers=6, num_decoder_layers=6),
    # The paper's web-domain En-Zh policy.
    "big": dict(d_model=1024, num_heads=16, d_ff=8192, num_encoder_layers=6,
                num_decoder_layers=6),
}


def model_config(preset: str, vocab_size: int, **overrides) -> ModelConfig:
  """Builds a validated ModelConfig from a preset name plus field overrides."""
  if preset not in PRESETS:
    raise ValueError(f"Unknown model preset {preset!r}; allowed: {sorted(PRESETS)}.")
  fields = dict(PRESETS[preset])
  if overrides.get("decoder_only"):
    # A decoder-only variant keeps the total depth of the encoder-decoder preset.
    fields["num_decoder_layers"] += fields["num_encoder_layers"]
    fields["num_encoder_layers"] = 0
  unknown = set(overrides) - set(ModelConfig.__dataclass_fields__)
  if unknown:
    raise ValueError(f"Unknown ModelConfig field(s) {sorted(unknown)}; allowed: "
                     f"{sorted(ModelConfig.__dataclass_fields__)}.")
  fields.update(overrides)
  return ModelConfig(vocab_size=vocab_size, **fields)
