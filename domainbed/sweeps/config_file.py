"""`sweep launch --config FILE`: a sweep declared in a YAML or TOML file (torch-free).

The file says *what* runs: datasets, algorithms, hyperparameters and the search. The
command line keeps *where and how*: `--data_dir`, `--output_dir`, `--command_launcher`,
`--launcher_args`, `--skip_confirmation`, `--selection_method`. A file is a list of
"launch units", each the job list of one plain `sweep launch` with flags
(`equivalent_flags`), made by the same function as the flags' (`job_list.make_args_list`):
its jobs, hashes and commands are exactly those of the equivalent flags.

- `search: random` (the default): one unit per algorithm, `--n_hparams_from` /
  `--n_hparams` as given, `--hparams` the file's fixed hparams (shared, then the
  algorithm's own); without fixed hparams, no `--hparams`, as upstream.
- `search: grid`: every combination of the grid's values (shared `grid`, then the
  algorithm's own; keys in file order, the first varying slowest) is one hparams setting
  per (dataset, algorithm): point i is `--n_hparams_from i --n_hparams i+1` (so that the
  selection methods, which group runs by `hparams_seed`, see one setting per point) with
  `--hparams` holding *every* hparam of the algorithm: its defaults for the dataset, the
  fixed ones, the point. Nothing of point i's random draw is left in the run.

    datasets: [RotatedMNIST5k, ColoredMNIST5k]
    algorithms:                        # a list of names, or name -> its own settings
      ERM: {}
      FGMix:
        hparams: {fgmix_gamma: 0.3}    # fixed, this algorithm only
        grid: {fgmix_kappa: [1.0, 2.0]}
    hparams: {lr: 0.001}               # fixed, every algorithm
    search: grid                       # or random
    grid: {batch_size: [32, 64]}       # every algorithm
    n_trials: 3
    steps: 5001
    single_test_envs: true
"""
import itertools
import json
import os

from domainbed.config import SPEED_CHOICES
from domainbed.sweeps.errors import SweepError

# Keys of the file that stand for a flag of the same name, and the type each takes.
_SCALARS = {"n_trials": int, "steps": int, "holdout_fraction": float, "task": str,
            "single_test_envs": bool, "paired_seeds": bool, "n_hparams": int,
            "n_hparams_from": int, **{name: str for name in SPEED_CHOICES}}
_STRUCTURED = ("datasets", "algorithms", "hparams", "grid", "search")
# The flags the file replaces: giving one of them with --config is refused.
JOB_FLAGS = ("datasets", "algorithms", "hparams", "best_hparams_from") + tuple(_SCALARS)


class SweepConfigError(SweepError):
    """A sweep file that cannot be read or does not say what to run."""


class LaunchUnit:
    """The job list of one plain `sweep launch`: `make_args_list`'s varying arguments."""

    def __init__(self, datasets, algorithm, hparams, n_hparams_from, n_hparams):
        self.datasets = datasets
        self.algorithm = algorithm
        self.hparams = hparams               # the --hparams JSON string, or None
        self.n_hparams_from = n_hparams_from
        self.n_hparams = n_hparams

    def __repr__(self):
        return f"LaunchUnit({self.datasets}, {self.algorithm}, {self.hparams}, " \
               f"{self.n_hparams_from}..{self.n_hparams})"


# -- reading ------------------------------------------------------------------------------------
def read(path):
    """The file's mapping; a SweepConfigError names what is wrong with it."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise SweepConfigError(f"--config {path}: give a .yaml, .yml or .toml file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise SweepConfigError(f"--config {path}: cannot read it ({error.strerror or error})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SweepConfigError(f"--config {path}: not UTF-8 text") from None
    content = _parse_toml(path, text) if suffix == ".toml" else _parse_yaml(path, text)
    if not isinstance(content, dict):
        raise SweepConfigError(f"--config {path}: expected a mapping of keys (datasets, "
                               f"algorithms, ...) at the top, got {_kind(content)}")
    return content


def _parse_toml(path, text):
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SweepConfigError(f"--config {path}: not valid TOML ({error})") from None


def _parse_yaml(path, text):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise SweepConfigError(f"--config {path}: not valid YAML{where} ({problem})") from None


def _kind(value):
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
            type(None): "nothing"}.get(type(value), type(value).__name__)


# -- checking -----------------------------------------------------------------------------------
class _Checker:
    """One-line errors that name the key (`algorithms.FGMix.grid.fgmix_kappa`)."""

    def __init__(self, path):
        self.path = path

    def fail(self, key, problem):
        raise SweepConfigError(f"--config {self.path}: {key}: {problem}")

    def names(self, key, value):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or \
                not all(isinstance(v, str) and v for v in value):
            self.fail(key, f"expected a list of names, got {_kind(value)}")
        if len(set(value)) != len(value):
            self.fail(key, "a name is listed twice")
        return value

    def mapping(self, key, value):
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {_kind(value)}")
        return value

    def hparams(self, key, value):
        for name, hparam in self.mapping(key, value).items():
            self.hparam_value(f"{key}.{name}", hparam)
        return dict(value)

    def hparam_value(self, key, value):
        if isinstance(value, (dict, list)) or value is None:
            self.fail(key, f"expected a number, string or true/false, got {_kind(value)}")
        return value

    def grid(self, key, value):
        grid = {}
        for name, values in self.mapping(key, value).items():
            if not isinstance(values, list) or not values:
                self.fail(f"{key}.{name}", f"expected a non-empty list of values, got "
                                           f"{_kind(values)}")
            grid[name] = [self.hparam_value(f"{key}.{name}", v) for v in values]
        return grid

    def scalar(self, key, value, kind):
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            self.fail(key, f"expected {kind.__name__}, got {_kind(value)} ({value!r})")
        if key in SPEED_CHOICES and value not in SPEED_CHOICES[key]:
            self.fail(key, f"expected one of {', '.join(SPEED_CHOICES[key])}, got {value!r}")
        return value


def _algorithms(check, value):
    """{name: (fixed hparams, grid)} in file order."""
    if isinstance(value, dict):
        if not value:
            check.fail("algorithms", "expected at least one algorithm")
        algorithms = {}
        for name, own in value.items():
            own = {} if own is None else check.mapping(f"algorithms.{name}", own)
            unknown = sorted(set(own) - {"hparams", "grid"})
            if unknown:
                check.fail(f"algorithms.{name}.{unknown[0]}",
                           "unknown key; an algorithm takes hparams and grid")
            algorithms[name] = (check.hparams(f"algorithms.{name}.hparams",
                                              own.get("hparams", {})),
                                check.grid(f"algorithms.{name}.grid", own.get("grid", {})))
        return algorithms
    return {name: ({}, {}) for name in check.names("algorithms", value)}


def parse(content, path):
    """The checked settings of a sweep file: a dict of flag values plus `units_for`."""
    check = _Checker(path)
    known = set(_STRUCTURED) | set(_SCALARS)
    for key in content:
        if key not in known:
            check.fail(key, f"unknown key; a sweep file takes {', '.join(sorted(known))}"
                            f" (--data_dir, --output_dir and the launcher stay flags)")
    for key in ("datasets", "algorithms"):
        if key not in content:
            check.fail(key, "missing; say which to run")
    search = content.get("search", "random")
    if search not in ("random", "grid"):
        check.fail("search", f"expected random or grid, got {search!r}")
    settings = {"search": search,
                "datasets": check.names("datasets", content["datasets"]),
                "algorithms": _algorithms(check, content["algorithms"]),
                "hparams": check.hparams("hparams", content.get("hparams", {})),
                "grid": check.grid("grid", content.get("grid", {}))}
    for key, kind in _SCALARS.items():
        if key in content:
            settings[key] = check.scalar(key, content[key], kind)
    grids = [settings["grid"]] + [grid for _, grid in settings["algorithms"].values()]
    if search == "random" and any(grids):
        key = "grid" if settings["grid"] else next(
            f"algorithms.{a}.grid" for a, (_, g) in settings["algorithms"].items() if g)
        check.fail(key, "a grid needs `search: grid`")
    if search == "grid":
        for key in ("n_hparams", "n_hparams_from"):
            if key in settings:
                check.fail(key, "a grid search runs one setting per grid point; leave it out")
    return settings


# -- expanding ----------------------------------------------------------------------------------
def _json(hparams):
    return json.dumps(hparams) if hparams else None


def grid_points(shared, own):
    """Every combination of the values of `shared` updated by `own` (dicts of lists), in
    file order, the first key varying slowest; [{}] for no grid."""
    grid = {**shared, **own}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _check_hparam_names(settings, path, algorithm, dataset, known):
    """Each hparam the file gives `algorithm` is one it has on `dataset` (a shared one that
    only some algorithms have belongs under those algorithms)."""
    fixed, grid = settings["algorithms"][algorithm]
    for key, names in (("hparams", settings["hparams"]), ("grid", settings["grid"]),
                       (f"algorithms.{algorithm}.hparams", fixed),
                       (f"algorithms.{algorithm}.grid", grid)):
        for name in names:
            if name not in known:
                where = "" if key.startswith("algorithms.") else \
                    f"; give it under algorithms.<name>.{key} of the algorithms that have it"
                raise SweepConfigError(f"--config {path}: {key}.{name}: {algorithm} has no "
                                       f"hparam {name} on {dataset}{where}")


def launch_units(settings, path="the sweep file"):
    """The file as `LaunchUnit`s, in the order of the file."""
    from domainbed import hparams_registry

    units = []
    for algorithm, (fixed, own_grid) in settings["algorithms"].items():
        defaults = {dataset: hparams_registry.default_hparams(algorithm, dataset)
                    for dataset in settings["datasets"]}
        for dataset, known in defaults.items():
            _check_hparam_names(settings, path, algorithm, dataset, known)
        hparams = {**settings["hparams"], **fixed}
        if settings["search"] == "random":
            units.append(LaunchUnit(settings["datasets"], algorithm, _json(hparams),
                                    settings.get("n_hparams_from", 0),
                                    settings.get("n_hparams", 20)))
            continue
        points = grid_points(settings["grid"], own_grid)
        for dataset in settings["datasets"]:
            for index, point in enumerate(points):
                full = {**defaults[dataset], **hparams, **point}
                units.append(LaunchUnit([dataset], algorithm, json.dumps(full), index,
                                        index + 1))
    return units


def equivalent_flags(settings, unit):
    """The `sweep launch` flags (a list of strings, without --data_dir, --output_dir and the
    launcher) whose jobs are `unit`'s."""
    flags = ["--datasets", *unit.datasets, "--algorithms", unit.algorithm,
             "--n_hparams_from", str(unit.n_hparams_from), "--n_hparams", str(unit.n_hparams)]
    if unit.hparams is not None:
        flags += ["--hparams", unit.hparams]
    for key in _SCALARS:
        if key in settings and key not in ("n_hparams", "n_hparams_from"):
            value = settings[key]
            if isinstance(value, bool):
                flags += [f"--{key}"] if value else []
            else:
                flags += [f"--{key}", str(value)]
    return flags


def apply(args, defaults):
    """Read `args.config` into `args`: the flags it stands for, and `args.config_settings`
    (`launch_units` expands them once the names are checked). `defaults`: the parser's
    default of each flag, to refuse a job flag given with it."""
    for name in JOB_FLAGS:
        if name in defaults and getattr(args, name, defaults[name]) != defaults[name]:
            raise SweepConfigError(f"--{name} with --config: the file declares the jobs; set "
                                   f"{name} in {args.config} instead")
    settings = parse(read(args.config), args.config)
    for key in _SCALARS:
        if key in settings and key not in ("n_hparams", "n_hparams_from"):
            setattr(args, key, settings[key])
    args.config_settings = settings
    args.datasets = list(settings["datasets"])
    args.algorithms = list(settings["algorithms"])
    return settings
