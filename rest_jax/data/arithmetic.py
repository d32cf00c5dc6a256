"""A generated, verifiable reasoning task: chains of integer additions and subtractions.

ReST-EM (expert iteration) needs problems whose answers a program can check exactly, whose worked
solutions a small decoder-only policy can learn on a CPU, and difficulty levels, so that a harder
level the policy never trained on measures generalisation. A problem here is a left-to-right
chain such as `37+8-15+42=`; its worked solution computes one step per line and ends with the
final answer line:

  prompt      37+8-15+42=
  solution    37+8=45
              45-15=30
              30+42=72
              Answer: 72
  answer      72

Level k has k+1 operands (k steps); operands lie in [0, MAX_OPERAND] and a subtraction never takes
the running value below 0, so every intermediate value is a non-negative integer. Levels 1-3 are
in distribution (training, Grow pool, validation); level 4 (more steps than anything in training)
is the out-of-distribution test.

Splits (sizes are arguments; the defaults are the registered task's):

  train          worked solutions (the "human data" BC trains on), levels 1-3
  grow           problems with answers only (what Grow samples on), levels 1-3
  validation     answers only, levels 1-3
  test_l1 .. test_l4   answers only, one level each

Everything is a pure function of the seed: each example comes from a `random.Random` seeded from
sha256(seed, split, index), so the data is identical on every machine and Python version, and no
problem appears in two splits (test splits are drawn first; later splits skip problems already
used). Generating the default sizes takes well under a second, so the data is made at load time
and nothing is shipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from typing import Iterator

MAX_OPERAND = 50
IN_DISTRIBUTION_LEVELS = (1, 2, 3)
OOD_LEVELS = (4,)
LEVELS = IN_DISTRIBUTION_LEVELS + OOD_LEVELS
ANSWER_PREFIX = "Answer: "
# The pattern the `final_answer` verifier uses by default matches this line.
ANSWER_PATTERN = r"Answer:\s*(-?\d+)"

DEFAULT_SIZES = {"train": 3000, "grow": 6000, "validation": 300, "test": 300}
_MAX_DRAWS_PER_EXAMPLE = 1000


@dataclasses.dataclass(frozen=True)
class Problem:
  """One chain problem; `operands[0] op[0] operands[1] op[1] ...` evaluated left to right."""

  level: int
  operands: tuple[int, ...]
  ops: tuple[str, ...]  # "+" or "-", one fewer than operands.

  @property
  def prompt(self) -> str:
    text = str(self.operands[0])
    for op, operand in zip(self.ops, self.operands[1:]):
      text += f"{op}{operand}"
    return text + "="

  def steps(self) -> list[tuple[int, str, int, int]]:
    """(left, op, right, result) per step, in order."""
    out, value = [], self.operands[0]
    for op, operand in zip(self.ops, self.operands[1:]):
      result = value + operand if op == "+" else value - operand
      out.append((value, op, operand, result))
      value = result
    return out

  @property
  def answer(self) -> int:
    return self.steps()[-1][3]

  @property
  def solution(self) -> str:
    """The worked solution: one `a+b=c` line per step, then the answer line."""
    lines = [f"{a}{op}{b}={c}" for a, op, b, c in self.steps()]
    return "\n".join(lines + [f"{ANSWER_PREFIX}{self.answer}"])


def example_rng(seed: int, split: str, index: int) -> random.Random:
  """A generator for one (seed, split, example), the same on every machine and Python."""
  digest = hashlib.sha256(f"arith\t{seed}\t{split}\t{index}".encode("utf-8")).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


def random_problem(rng: random.Random, level: int) -> Problem:
  """A level-`level` problem (level + 1 operands) whose running value never goes below 0."""
  if level not in LEVELS:
    raise ValueError(f"level={level!r} is invalid; allowed: {list(LEVELS)}")
  value = rng.randint(0, MAX_OPERAND)
  operands, ops = [value], []
  for _ in range(level):
    op = rng.choice("+-") if value > 0 else "+"
    operand = rng.randint(0, min(value, MAX_OPERAND) if op == "-" else MAX_OPERAND)
    value = value + operand if op == "+" else value - operand
    operands.append(operand)
    ops.append(op)
  return Problem(level, tuple(operands), tuple(ops))


def _split_plan(sizes: dict[str, int]) -> list[tuple[str, tuple[int, ...], int]]:
  """(split, levels, size) in generation order: test splits first, then validation, train, grow."""
  plan = [(f"test_l{level}", (level,), sizes["test"]) for level in LEVELS]
  plan += [("validation", IN_DISTRIBUTION_LEVELS, sizes["validation"]),
           ("train", IN_DISTRIBUTION_LEVELS, sizes["train"]),
           ("grow", IN_DISTRIBUTION_LEVELS, sizes["grow"])]
  return plan


SPLITS = tuple(name for name, _, _ in _split_plan(DEFAULT_SIZES))


def check_sizes(sizes: dict[str, int]) -> dict[str, int]:
  """Validated split sizes: keys train, grow, validation, test (per level); positive ints."""
  unknown = sorted(set(sizes) - set(DEFAULT_SIZES))
  if unknown:
    raise ValueError(f"arithmetic split sizes {unknown} are unknown; allowed keys: "
                     f"{sorted(DEFAULT_SIZES)}")
  merged = dict(DEFAULT_SIZES, **sizes)
  for key, value in merged.items():
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f"arithmetic split size {key}={value!r} is invalid: expected a positive "
                       "integer")
  return merged


def generate(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[Problem]]:
  """Every split of the task family for `seed` (see the module docstring)."""
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ValueError(f"arithmetic seed={seed!r} is invalid: expected an integer")
  sizes = check_sizes(dict(sizes or {}))
  used: set[str] = set()
  out = {}
  for split, levels, size in _split_plan(sizes):
    out[split] = list(_draw_split(seed, split, levels, size, used))
  return out


def _draw_split(seed: int, split: str, levels: tuple[int, ...], size: int,
                used: set[str]) -> Iterator[Problem]:
  """`size` problems not in `used` (which it extends); levels cycle through `levels`."""
  for index in range(size):
    rng = example_rng(seed, split, index)
    level = levels[index % len(levels)]
    for _ in range(_MAX_DRAWS_PER_EXAMPLE):
      problem = random_problem(rng, level)
      if problem.prompt not in used:
        break
    else:
      raise ValueError(f"arithmetic split {split!r}: could not draw {size} distinct level-"
                       f"{level} problems; ask for fewer examples")
    used.add(problem.prompt)
    yield problem


def target_of(split: str, problem: Problem) -> str:
  """What a split stores as the target: the worked solution (train) or the bare answer."""
  return problem.solution if split == "train" else str(problem.answer)


_PROMPT = re.compile(r"(\d+)((?:[+-]\d+)+)=")
_OPERATION = re.compile(r"([+-])(\d+)")
_STEP = re.compile(r"(\d+)([+-])(\d+)=(\d+)")


def parse_prompt(prompt: str) -> Problem | None:
  """The problem a prompt such as `37+8-15+42=` states, or None if it is not one."""
  match = _PROMPT.fullmatch(prompt.strip())
  if match is None:
    return None
  pairs = _OPERATION.findall(match.group(2))
  return Problem(len(pairs), (int(match.group(1)),) + tuple(int(n) for _, n in pairs),
                 tuple(op for op, _ in pairs))


def solution_is_correct(source: str, hypothesis: str, reference: str) -> bool:
  """A step-checking verifier: True only when every line of the worked solution is the right
  computation, in order, and the answer line follows (a chain has exactly one correct
  derivation). `final_answer` also accepts a wrong step whose final answer is right by accident
  (`29+35-30=` solved as `29+35=74`, `74-30=34`, answer 34); this does not. Use it as the reward
  `python:fn=rest_jax.data.arithmetic:solution_is_correct`."""
  problem = parse_prompt(source)
  if problem is None:
    raise ValueError(f"solution_is_correct: source {source!r} is not an arithmetic chain "
                     "prompt such as '37+8-15+42='")
  del reference  # The prompt determines the one correct solution.
  return hypothesis.strip() == problem.solution


def flawed_steps(hypothesis: str) -> bool:
  """True when a worked solution has a line that is not a correct `a+b=c` / `a-b=c` step
  (before its final answer line); for reading grown data."""
  for line in hypothesis.strip().split("\n")[:-1]:
    match = _STEP.fullmatch(line.strip())
    if match is None:
      return True
    a, op, b, c = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
    if (a + b if op == "+" else a - b) != c:
      return True
  return False
