"""Ablation sweeps: a declarative grid of gin experiments, expanded, validated and run.

The paper's ablations (loss comparison, thresholds, number of Grow steps) are grids of runs that
differ in a few gin bindings. A sweep file names a base experiment and the axes that vary; this
module turns it into points (one gin configuration and one workdir each), checks every point's
configuration before anything runs, emits launch commands, and runs the points locally.

Sweep files are Python literals (a dict read with `ast.literal_eval`: comments allowed, no code
runs, no new dependency). See docs/sweeps.md for the format; in short:

    {"base": "test/tiny_e2e.gin",
     "bindings": {"improve/TrainPhaseConfig.max_steps": 6},
     "axes": [{"name": "loss", "values": {"bc": {"ImproveConfig.losses": ("bc",)},
                                          "gold_s": {"include": ["losses/gold_s.gin"]}}},
              {"name": "tau", "binding": "ImproveConfig.filter_schedule",
               "values": {"0.1": ("threshold:tau=0.0", "threshold:tau=0.1")}}],
     "zip": []}

A binding value that is a `str` is gin text, used as written (`"'bc'"` is the gin string bc,
`"@MyConfig()"` a reference); any other value is a Python literal written with `repr`.

Prefix sharing. Runs whose BC and Grow phases are identical may start from one copy of a
workdir stopped after `grow1` (`rest_loop.run` refuses a workdir whose completed phases belong
to a different experiment, and continues the phases it has not started). Whether two points
have identical BC and Grow phases is decided on the resolved configuration, not on binding
names: every argument of `rest_loop.run` except the three that only shape later phases
(`num_grow_steps`, `improve_config`, `stop_after_phase`) is constructed from the point's gin
config and compared. A loss, threshold or G=1/G=2 sweep thus runs BC and the first Grow step
once; a new `rest_loop.run` argument is compared too until it is known to be Improve-only.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import itertools
import json
import os
import posixpath
import re
import shlex
from typing import Any, Mapping, Sequence

SWEEP_KEYS = ("description", "base", "bindings", "axes", "zip")
AXIS_KEYS = ("name", "binding", "values")
INCLUDE_KEY = "include"
# rest_loop.run arguments that only change phases after `grow1`; every other argument (model,
# task, data, BC, Grow, evaluation, reward, mesh, seed, and any argument added later) is part of
# the BC + Grow prefix key.
IMPROVE_ONLY_ARGS = ("num_grow_steps", "improve_config", "stop_after_phase")
PREFIX_PHASE = "grow1"
PREFIX_DIR = "_prefixes"
MANIFEST_NAME = "sweep.json"
POINT_NAME = "sweep_point.json"
POINT_BINDINGS_NAME = "point_bindings.gin"
CONFIG_NAME, OPERATIVE_NAME = "config.gin", "operative_config.gin"
PREFIX_DONE_NAME = "prefix_done.json"
_AXIS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")
_LITERAL_TYPES = (bool, int, float, type(None), tuple, list, dict, str)


class SweepError(ValueError):
  """A sweep file or one of its points is invalid; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class Setting:
  """What one axis value sets: extra gin files and (name, gin text) bindings."""
  includes: tuple[str, ...] = ()
  bindings: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Axis:
  name: str
  labels: tuple[str, ...]
  settings: tuple[Setting, ...]


@dataclasses.dataclass(frozen=True)
class Sweep:
  base: tuple[str, ...]
  bindings: tuple[tuple[str, str], ...]
  axes: tuple[Axis, ...]
  zip_groups: tuple[tuple[str, ...], ...] = ()
  description: str = ""
  path: str | None = None


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the sweep: its name is also its workdir's name under the sweep root."""
  name: str
  axis_values: tuple[tuple[str, str], ...]  # (axis name, value label), in axis order.
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]  # "NAME = VALUE" gin bindings, fixed ones first.

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "axis_values": dict(self.axis_values),
            "gin_files": list(self.gin_files), "bindings": list(self.bindings)}


# ------------------------------------------------------------------------------ sweep files


def gin_value(value: Any, where: str) -> str:
  """Gin text of a sweep value: a str is gin text already; other literals go through repr."""
  def check(v):
    if not isinstance(v, _LITERAL_TYPES):
      raise SweepError(f"{where}: value {v!r} of type {type(v).__name__} is not allowed; use "
                       "numbers, bools, None, strings (gin text), tuples, lists or dicts.")
    if isinstance(v, (tuple, list)):
      for item in v:
        check(item)
    if isinstance(v, dict):
      for k, item in v.items():
        check(k)
        check(item)
  check(value)
  if isinstance(value, str):
    if not value.strip():
      raise SweepError(f"{where}: empty gin value.")
    return value.strip()
  return repr(value)


def _bindings(spec: Any, where: str) -> tuple[tuple[str, str], ...]:
  if not isinstance(spec, dict):
    raise SweepError(f"{where} must be a dict {{gin binding name: value}}, got "
                     f"{type(spec).__name__}.")
  out = []
  for name, value in spec.items():
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w./]*", name):
      raise SweepError(f"{where}: {name!r} is not a gin binding name (e.g. "
                       "'ImproveConfig.losses', 'improve/OptimizerConfig.learning_rate', 'SEED').")
    out.append((name, gin_value(value, f"{where}[{name!r}]")))
  return tuple(out)


def _default_label(value: Any) -> str:
  if isinstance(value, str):
    value = value.strip().strip("'\"")
  text = re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(value)).strip("_")
  return text or "value"


def _parse_axis(spec: Any, index: int) -> Axis:
  where = f"axes[{index}]"
  if not isinstance(spec, dict):
    raise SweepError(f"{where} must be a dict with keys {list(AXIS_KEYS)}, got "
                     f"{type(spec).__name__}.")
  unknown = sorted(set(spec) - set(AXIS_KEYS))
  if unknown:
    raise SweepError(f"{where}: unknown key(s) {unknown}; allowed: {list(AXIS_KEYS)}.")
  name = spec.get("name")
  if not isinstance(name, str) or not _AXIS_NAME.match(name):
    raise SweepError(f"{where}.name={name!r} is invalid: expected an identifier such as 'loss'.")
  where = f"axis {name!r}"
  values = spec.get("values")
  if not values:
    raise SweepError(f"{where} has no values; give a non-empty list or dict under 'values'.")
  binding = spec.get("binding")
  if binding is not None:
    if isinstance(values, (list, tuple)):
      pairs = [(_default_label(v), v) for v in values]
    elif isinstance(values, dict):
      pairs = list(values.items())
    else:
      raise SweepError(f"{where}: 'values' must be a list or a {{label: value}} dict.")
    settings = [Setting(bindings=_bindings({binding: v}, f"{where}")) for _, v in pairs]
  else:
    if not isinstance(values, dict):
      raise SweepError(f"{where} has no 'binding', so its 'values' must be a dict {{label: "
                       "{binding name: value, 'include': [gin files]}}.")
    pairs, settings = list(values.items()), []
    for label, group in values.items():
      if not isinstance(group, dict):
        raise SweepError(f"{where} value {label!r} must be a dict of bindings, got "
                         f"{type(group).__name__}.")
      group = dict(group)
      includes = group.pop(INCLUDE_KEY, [])
      if isinstance(includes, str):
        includes = [includes]
      if not all(isinstance(f, str) and f for f in includes):
        raise SweepError(f"{where} value {label!r}: '{INCLUDE_KEY}' must list gin files.")
      if not group and not includes:
        raise SweepError(f"{where} value {label!r} sets nothing.")
      settings.append(Setting(tuple(includes), _bindings(group, f"{where} value {label!r}")))
  labels = [str(label) for label, _ in pairs]
  for label in labels:
    if not _LABEL.match(label):
      raise SweepError(f"{where}: label {label!r} may only use letters, digits and '_.+-' (it "
                       "becomes part of a directory name).")
  duplicates = sorted({l for l in labels if labels.count(l) > 1})
  if duplicates:
    raise SweepError(f"{where}: duplicate point names: several values have the label(s) "
                     f"{duplicates}; give distinct labels with a {{label: value}} dict.")
  return Axis(name, tuple(labels), tuple(settings))


def parse_sweep(spec: Any, path: str | None = None) -> Sweep:
  """Checks a sweep dict and returns the Sweep it describes."""
  where = path or "sweep"
  if not isinstance(spec, dict):
    raise SweepError(f"{where}: a sweep is a dict with keys {list(SWEEP_KEYS)}.")
  unknown = sorted(set(spec) - set(SWEEP_KEYS))
  if unknown:
    raise SweepError(f"{where}: unknown key(s) {unknown}; allowed: {list(SWEEP_KEYS)}.")
  base = spec.get("base")
  base = [base] if isinstance(base, str) else base
  if not base or not all(isinstance(f, str) and f for f in base):
    raise SweepError(f"{where}: 'base' must name a gin file (or a list of them), e.g. "
                     "'ding_de_en/quickstart.gin'.")
  fixed = _bindings(spec.get("bindings", {}), f"{where}: 'bindings'")
  axes_spec = spec.get("axes")
  if not isinstance(axes_spec, (list, tuple)) or not axes_spec:
    raise SweepError(f"{where}: 'axes' must be a non-empty list of axes.")
  axes = [_parse_axis(a, i) for i, a in enumerate(axes_spec)]
  names = [a.name for a in axes]
  if len(set(names)) != len(names):
    raise SweepError(f"{where}: duplicate axis names in {names}.")
  _check_binding_overlap(fixed, axes)
  zip_groups = _parse_zip(spec.get("zip", []), axes, where)
  description = spec.get("description", "")
  if not isinstance(description, str):
    raise SweepError(f"{where}: 'description' must be a string.")
  return Sweep(tuple(base), fixed, tuple(axes), zip_groups, description, path)


def _check_binding_overlap(fixed, axes) -> None:
  owner = {name: "the fixed 'bindings'" for name, _ in fixed}
  for axis in axes:
    names = {name for s in axis.settings for name, _ in s.bindings}
    for name in sorted(names):
      if name in owner:
        raise SweepError(f"binding {name!r} is set both by {owner[name]} and by axis "
                         f"{axis.name!r}; set each binding in one place.")
    owner.update({name: f"axis {axis.name!r}" for name in names})


def _parse_zip(spec, axes, where) -> tuple[tuple[str, ...], ...]:
  if not isinstance(spec, (list, tuple)):
    raise SweepError(f"{where}: 'zip' must be a list of lists of axis names.")
  by_name, seen, groups = {a.name: a for a in axes}, set(), []
  for group in spec:
    if not isinstance(group, (list, tuple)) or len(group) < 2:
      raise SweepError(f"{where}: zip group {group!r} must list at least two axis names.")
    for name in group:
      if name not in by_name:
        raise SweepError(f"{where}: zip group {list(group)} names unknown axis {name!r}; axes: "
                         f"{list(by_name)}.")
      if name in seen:
        raise SweepError(f"{where}: axis {name!r} appears in more than one zip group.")
      seen.add(name)
    lengths = {name: len(by_name[name].labels) for name in group}
    if len(set(lengths.values())) != 1:
      raise SweepError(f"{where}: zipped axes need the same number of values, got {lengths}.")
    groups.append(tuple(group))
  return tuple(groups)


def load_sweep(path: str) -> Sweep:
  """Reads a sweep file (a Python literal dict; see the module docstring)."""
  if not os.path.exists(path):
    raise SweepError(f"--sweep={path!r} does not exist.")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    spec = ast.literal_eval(text)
  except (SyntaxError, ValueError) as e:
    raise SweepError(f"{path} is not a Python literal dict ({type(e).__name__}: {e}); sweep "
                     "files hold only literals: no names, calls or expressions.") from e
  return parse_sweep(spec, path)


def expand(sweep: Sweep) -> list[Point]:
  """One point per combination (product over axes; zipped axes advance together)."""
  factors, placed = [], set()
  for axis in sweep.axes:
    if axis.name in placed:
      continue
    group = next((g for g in sweep.zip_groups if axis.name in g), (axis.name,))
    factors.append(group)
    placed.update(group)
  by_name = {a.name: a for a in sweep.axes}
  choices = [[{n: i for n in group} for i in range(len(by_name[group[0]].labels))]
             for group in factors]
  points = []
  for combo in itertools.product(*choices):
    index = {k: v for part in combo for k, v in part.items()}
    axis_values, files, bindings = [], list(sweep.base), [f"{n} = {v}" for n, v in sweep.bindings]
    for axis in sweep.axes:
      setting = axis.settings[index[axis.name]]
      axis_values.append((axis.name, axis.labels[index[axis.name]]))
      files.extend(setting.includes)
      bindings.extend(f"{n} = {v}" for n, v in setting.bindings)
    name = ",".join(f"{a}={l}" for a, l in axis_values)
    points.append(Point(name, tuple(axis_values), tuple(files), tuple(bindings)))
  names = [p.name for p in points]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise SweepError(f"duplicate point names {duplicates}; give the axes distinct labels.")
  return points


# ------------------------------------------------------------------------------ validation


@dataclasses.dataclass(frozen=True)
class PointConfig:
  """What validation learned about a point: its gin text and the BC+Grow prefix it can share."""
  config_str: str
  prefix_key: str | None  # None: the point cannot start from a shared prefix.
  num_grow_steps: int


def _resolve(value: Any) -> Any:
  import gin
  if isinstance(value, gin.config.ConfigurableReference):
    return value.scoped_configurable_fn() if value.evaluate else repr(value)
  if isinstance(value, (list, tuple)):
    return type(value)(_resolve(v) for v in value)
  if isinstance(value, dict):
    return {k: _resolve(v) for k, v in value.items()}
  return value


def _canonical(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {"__class__": type(value).__name__,
            **{f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}}
  if isinstance(value, dict):
    return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
  if isinstance(value, (list, tuple)):
    return [_canonical(v) for v in value]
  if isinstance(value, (bool, int, float, str, type(None))):
    return value
  return repr(value)


def _run_arguments() -> dict[str, Any]:
  """Every rest_loop.run argument as the parsed gin config would pass it (configs built)."""
  import gin
  from rest_jax import rest_loop
  args = {}
  for name, param in inspect.signature(rest_loop.run).parameters.items():
    if name == "workdir":
      continue
    try:
      bound = gin.query_parameter(f"rest_loop.run.{name}")
    except ValueError:  # Not bound: the Python default applies.
      args[name] = param.default
      continue
    args[name] = _resolve(bound)  # Builds the config dataclasses, running their checks.
  return args


def check_point(point: Point, search_paths: Sequence[str]) -> PointConfig:
  """Parses the point's gin config (not finalized) and builds its configs; raises SweepError."""
  import gin
  from rest_jax import main, phases as phases_lib
  from rest_jax.models import model_config
  gin.clear_config()
  try:
    main.parse_gin(point.gin_files, point.bindings, search_paths, finalize=False)
    config_str = gin.config_str()
    args = _run_arguments()
    model_config(args["model_preset"], 8, **dict(args["model_overrides"] or {}))
    grow_steps = args["num_grow_steps"]
    if not isinstance(grow_steps, int) or grow_steps < 0:
      raise ValueError(f"run.num_grow_steps={grow_steps!r} is invalid: expected an integer >= 0.")
    phases = [p.name for p in phases_lib.run_phases(grow_steps, args["improve_config"],
                                                      args["online"])]
    stop = args["stop_after_phase"]
    if stop is not None and stop not in phases:
      raise ValueError(f"run.stop_after_phase={stop!r} is not a phase of this run; phases: "
                       f"{phases}.")
  except Exception as e:  # Gin raises many types; all of them mean this point is invalid.
    hint = _string_hint(point)
    raise SweepError(f"sweep point {point.name!r}: {type(e).__name__}: {e}{hint}") from e
  finally:
    gin.clear_config()
  shareable = grow_steps >= 1 and stop != "bc"
  key = None
  if shareable:
    prefix = {name: _canonical(v) for name, v in args.items() if name not in IMPROVE_ONLY_ARGS}
    if args["task"] is not None:  # run() lets `task` override DataConfig.task.
      prefix["data"]["task"] = args["task"]
    key = hashlib.sha256(json.dumps(prefix, sort_keys=True).encode()).hexdigest()[:12]
  return PointConfig(config_str, key, grow_steps)


def _string_hint(point: Point) -> str:
  bare = [b for b in point.bindings if re.fullmatch(r"[\w./]+ = [A-Za-z_][\w-]*", b)
          and b.split(" = ")[1] not in ("True", "False", "None")]
  if not bare:
    return ""
  return (f" (a str value in a sweep file is gin text: write \"'text'\" for a gin string; "
          f"bindings that may need quotes: {bare})")


def check_points(points: Sequence[Point],
                 search_paths: Sequence[str]) -> dict[str, PointConfig]:
  """Validates every point before any runs; the first invalid point raises SweepError."""
  return {p.name: check_point(p, search_paths) for p in points}


# ------------------------------------------------------------------------------ commands


def _quote(arg: str) -> str:
  if re.fullmatch(r"[\w@%+=:,./-]+", arg):
    return arg
  if not re.search(r"[\"$`\\!]", arg):
    return f'"{arg}"'
  return shlex.quote(arg)


def point_workdir(root: str, point: Point) -> str:
  return posixpath.join(root, point.name) if "://" in root else os.path.join(root, point.name)


def _binding_pair(binding: str) -> tuple[str, str]:
  name, value = binding.split(" = ", 1)
  return name, value


def launch_command(point: Point, root: str, python: str = "python") -> str:
  """The `python -m rest_jax.main` command line that runs `point` from scratch."""
  args = [python, "-m", "rest_jax.main"] + [f"--gin_file={f}" for f in point.gin_files]
  args.append(f"--workdir={point_workdir(root, point)}")
  args += [f"--gin.{n}={v}" for n, v in map(_binding_pair, point.bindings)]
  return " ".join(_quote(a) for a in args)


def tpu_command(point: Point, root: str, vm_name: str, zone: str, index: int = 0,
                extra_args: Sequence[str] = (), python: str = "python") -> str:
  """The `scripts/tpu_vm.py run` command line for `point`. `{index}` in the VM name becomes the
  point's index (to spread a sweep over several VMs); the job's run name is the point name
  with characters other than letters, digits and '._-' replaced, so logs never collide."""
  run_name = re.sub(r"[^A-Za-z0-9._-]+", "_", point.name)
  args = [python, "scripts/tpu_vm.py", "run", f"--name={vm_name.replace('{index}', str(index))}",
          f"--zone={zone}", f"--run_name={run_name}", *extra_args]
  args += [f"--gin_file={f}" for f in point.gin_files]
  args.append(f"--workdir={point_workdir(root, point)}")
  args += [f"--gin={n}={v}" for n, v in map(_binding_pair, point.bindings)]
  return " ".join(_quote(a) for a in args)


# ------------------------------------------------------------------------------ workdirs


def read_rows(workdir: str) -> list[dict[str, Any]]:
  """results.jsonl rows keyed by (run, split), last row wins; read-only (unlike ResultsLog, an
  incomplete last line of a run still writing is skipped, not truncated)."""
  path = os.path.join(workdir, "results.jsonl")
  if not os.path.exists(path):
    return []
  rows: dict[tuple[str, str], dict[str, Any]] = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue
      if isinstance(row, dict) and "run" in row and "split" in row:
        rows[(row["run"], row["split"])] = row
  return list(rows.values())


def point_status(workdir: str) -> str:
  """'complete' (the run returned: main wrote operative_config.gin), 'started' (it holds a
  checkpoint, so running it again resumes) or 'new'."""
  if os.path.exists(os.path.join(workdir, OPERATIVE_NAME)) and read_rows(workdir):
    return "complete"
  ckpt = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt)):
    return "started"
  return "new"


def write_text(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_point_files(point: Point, workdir: str, config: PointConfig) -> None:
  """Writes the point's axis values and bindings and its full gin config into its workdir;
  refuses a workdir that an earlier sweep ran with other settings."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, POINT_NAME)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    new = point.to_json()
    if (old.get("gin_files"), old.get("bindings")) != (new["gin_files"], new["bindings"]):
      raise SweepError(f"{workdir} belongs to point {old.get('name')!r} with gin files "
                       f"{old.get('gin_files')} and bindings {old.get('bindings')}, not "
                       f"{new['gin_files']} and {new['bindings']}; use a new --root or delete "
                       "that workdir.")
  write_text(path, json.dumps(point.to_json(), indent=2) + "\n")
  lines = [f"# Point {point.name}: gin files {', '.join(point.gin_files)}, then:"]
  write_text(os.path.join(workdir, POINT_BINDINGS_NAME), "\n".join(lines + list(point.bindings))
              + "\n")
  if point_status(workdir) != "complete":
    write_text(os.path.join(workdir, CONFIG_NAME), config.config_str)


def write_manifest(sweep: Sweep, points: Sequence[Point], configs: Mapping[str, PointConfig],
                   root: str) -> str:
  os.makedirs(root, exist_ok=True)
  manifest = {"sweep_file": sweep.path, "description": sweep.description,
              "axes": [a.name for a in sweep.axes],
              "points": [dict(p.to_json(), prefix=configs[p.name].prefix_key) for p in points]}
  path = os.path.join(root, MANIFEST_NAME)
  write_text(path, json.dumps(manifest, indent=2) + "\n")
  return path


def read_manifest(root: str) -> dict[str, Any]:
  path = os.path.join(root, MANIFEST_NAME)
  if not os.path.exists(path):
    raise SweepError(f"{path} not found: --root must be a sweep root written by "
                     "`scripts/sweep.py run` or `emit`.")
  with open(path, encoding="utf-8") as f:
    return json.load(f)
