"""Every gin file under experiments/ parses, and every experiment builds valid configs."""

import glob
import os

import gin
import pytest

from rest_jax import main
from rest_jax import rest_loop  # noqa: F401
from rest_jax.models import model_config

GIN_FILES = sorted(os.path.relpath(p, main.EXPERIMENTS_DIR)
                   for p in glob.glob(os.path.join(main.EXPERIMENTS_DIR, "**", "*.gin"),
                                      recursive=True))
# Experiment files wire rest_loop.run (they include base.gin); the others are fragments.
EXPERIMENTS = [f for f in GIN_FILES
               if "include 'base.gin'" in open(os.path.join(main.EXPERIMENTS_DIR, f)).read()
               or f.startswith(("iwslt14_de_en/rest_g2", "ding_de_en/"))]
CONFIG_ARGS = ("mesh", "data", "bc", "grow", "improve_config", "evaluation")


def test_there_are_experiments():
  assert "ding_de_en/quickstart.gin" in GIN_FILES
  assert {"iwslt14_de_en/rest_g1.gin", "iwslt14_de_en/rest_g2.gin", "wmt20_zh_en/rest.gin",
          "wmt19_de_en/rest_big.gin", "test/tiny_e2e.gin"} <= set(GIN_FILES)


@pytest.mark.parametrize("gin_file", GIN_FILES)
def test_gin_file_parses(gin_file):
  gin.clear_config()
  try:
    main.parse_gin([gin_file], [], [main.EXPERIMENTS_DIR], finalize=False)
  finally:
    gin.clear_config()


@pytest.mark.parametrize("gin_file", EXPERIMENTS)
def test_experiment_builds_valid_configs(gin_file):
  text = open(os.path.join(main.EXPERIMENTS_DIR, gin_file)).read()
  assert "python -m rest_jax.main" in text, "experiment files start with their command"
  gin.clear_config()
  try:
    main.parse_gin([gin_file], [], [main.EXPERIMENTS_DIR], finalize=False)
    for arg in CONFIG_ARGS:  # Constructing runs each dataclass's validation.
      gin.query_parameter(f"rest_loop.run.{arg}").scoped_configurable_fn()
    preset = gin.query_parameter("%MODEL")
    model_config(preset, 32000)
    assert isinstance(gin.query_parameter("%TASK"), str)
  finally:
    gin.clear_config()


def test_gin_flag_rewriting():
  argv = ["prog", "--gin.rest_loop.run.num_grow_steps=2", "--workdir=/x", "--gin_file=a.gin"]
  assert main.rewrite_gin_args(argv) == [
      "prog", "--gin_bindings=rest_loop.run.num_grow_steps=2", "--workdir=/x", "--gin_file=a.gin"]


def test_missing_gin_file_is_a_clear_error():
  with pytest.raises(FileNotFoundError, match="nope.gin"):
    main.parse_gin(["nope.gin"], [], [main.EXPERIMENTS_DIR])
