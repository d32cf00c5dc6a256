"""Gin registrations: the entry function and the config dataclasses, nothing else.

Library modules stay gin-free; experiments bind `rest_loop.run` and construct the config
dataclasses (`@bc/TrainPhaseConfig()`, `@GrowConfig()`, ...) from gin files. Importing this module
registers everything once.
"""

from __future__ import annotations

import gin

from rest_jax import configs, evaluate, grow, improve, online, rest_loop, train

_REGISTERED = False


def register() -> None:
  global _REGISTERED
  if _REGISTERED:
    return
  for cls in (configs.MeshConfig, configs.OptimizerConfig, configs.SamplingConfig,
              configs.BeamSearchConfig, rest_loop.DataConfig, improve.ImproveConfig,
              train.TrainPhaseConfig, grow.GrowConfig, evaluate.EvalConfig, online.OnlineConfig):
    gin.external_configurable(cls, module="rest_jax")
  gin.external_configurable(rest_loop.run, name="run", module="rest_loop")
  _REGISTERED = True


register()
