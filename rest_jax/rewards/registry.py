"""Name -> reward registry, so configs, gin files and scripts pick a reward by string.

    make_reward("chrf")                               sentence chrF / 100
    make_reward("bleu", tokenize="zh")                sentence BLEU / 100
    make_reward("exact_match", case_fold=True)        {0, 1} verifier
    make_reward("final_answer", compare="numeric")    {0, 1}: the solution's final answer line
    make_reward("python", fn="my_pkg.checks:ok")      {0, 1}: a predicate by import path
    make_reward("learned", path="/work/rm")           trained reward model checkpoint
    make_reward("learned", pretrained="ding_de_en")   a reward model shipped with the package

`reward_from_spec` parses the same thing from one string, for gin bindings and flags:

    spec   := NAME [":" option ("," option)*]
    option := KEY "=" VALUE        VALUE: int, float, true/false, else a string

e.g. "chrf", "chrf:word_order=2,num_workers=4", "learned:path=/work/rm,batch_size=256".
Unknown names and unknown options fail at once with the list of valid ones.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from rest_jax.rewards import answer_verifiers, base, metric_rewards, verifiers


PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


def pretrained_reward_models() -> list[str]:
  """Names of the reward model checkpoints shipped with the package (`learned:pretrained=NAME`)."""
  if not os.path.isdir(PRETRAINED_DIR):
    return []
  return sorted(d for d in os.listdir(PRETRAINED_DIR)
                if os.path.isdir(os.path.join(PRETRAINED_DIR, d)))


def pretrained_reward_model_path(name: str) -> str:
  names = pretrained_reward_models()
  if name not in names:
    raise ValueError(f"reward 'learned': unknown pretrained={name!r}; pretrained reward models "
                     f"shipped with rest_jax: {names}")
  return os.path.join(PRETRAINED_DIR, name)


def _learned(path: str | None = None, pretrained: str | None = None, step: int | None = None,
             batch_size: int = 64) -> base.Reward:
  if (path is None) == (pretrained is None):
    raise ValueError("reward 'learned' needs exactly one of the options 'path' (a reward model "
                     "checkpoint directory) and 'pretrained' (one of "
                     f"{pretrained_reward_models()}), e.g. 'learned:path=/work/rm'")
  if pretrained is not None:
    path = pretrained_reward_model_path(str(pretrained))
  # Imported here so that metric rewards never pay for importing JAX.
  from rest_jax.rewards import reward_model  # pylint: disable=g-import-not-at-top
  return reward_model.LearnedReward.from_checkpoint(path, step, batch_size=batch_size)


_FACTORIES: dict[str, Callable[..., base.Reward]] = {
    "chrf": metric_rewards.ChrfReward,
    "bleu": metric_rewards.BleuReward,
    "exact_match": verifiers.ExactMatchVerifier,
    "final_answer": answer_verifiers.FinalAnswerVerifier,
    "python": answer_verifiers.python_verifier,
    "learned": _learned,
}


def list_rewards() -> list[str]:
  return sorted(_FACTORIES)


def register_reward(name: str, factory: Callable[..., base.Reward]) -> None:
  """Adds a reward factory under a new name (e.g. a project-specific PredicateVerifier)."""
  if name in _FACTORIES:
    raise ValueError(f"a reward named {name!r} is already registered; registered: "
                     f"{list_rewards()}")
  _FACTORIES[name] = factory


def _options_of(factory: Callable[..., Any]) -> list[str]:
  return [p.name for p in inspect.signature(factory).parameters.values()
          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def make_reward(name: str, **kwargs: Any) -> base.Reward:
  """The reward registered under `name`, built with `kwargs`."""
  if name not in _FACTORIES:
    raise ValueError(f"unknown reward {name!r}; valid rewards: {list_rewards()}")
  factory = _FACTORIES[name]
  valid = _options_of(factory)
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for reward {name!r}; valid: {valid}")
  required = [p.name for p in inspect.signature(factory).parameters.values()
              if p.default is inspect.Parameter.empty and p.name not in kwargs
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
  if required:
    raise ValueError(f"reward {name!r} needs option(s) {required}, e.g. "
                     f"'{name}:{required[0]}=...'")
  return factory(**kwargs)


def _parse_value(text: str) -> Any:
  lowered = text.lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  if lowered == "none":
    return None
  for convert in (int, float):
    try:
      return convert(text)
    except ValueError:
      pass
  return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
  """'name:key=value,...' -> (name, {key: parsed value})."""
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"reward spec {spec!r} is invalid: expected 'name' or "
                     "'name:key=value,...' with name one of " + str(list_rewards()))
  name, _, options_text = spec.strip().partition(":")
  options: dict[str, Any] = {}
  for option in filter(None, (o.strip() for o in options_text.split(","))):
    key, sep, value = option.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"reward spec {spec!r}: option {option!r} is not key=value")
    options[key.strip()] = _parse_value(value.strip())
  return name.strip(), options


def reward_from_spec(spec: str) -> base.Reward:
  """The reward described by a spec string (see the module docstring)."""
  name, options = parse_spec(spec)
  return make_reward(name, **options)
