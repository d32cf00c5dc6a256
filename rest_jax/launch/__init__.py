"""Launch tooling: the command sequences that run rest_jax experiments on cloud machines.

Kept free of jax and of any network access so that a laptop with only the Google Cloud CLI can
plan, print and start a run; `tpu` builds the Cloud TPU VM commands, scripts/tpu_vm.py runs them.
"""
