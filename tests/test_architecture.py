"""docs/architecture.md's import rules, checked on the source (`ast`, nothing imported):
no module outside domainbed/scripts/ imports domainbed.scripts, no module imports a layer
above its own, and the import graph of the package's modules (top-level and
function-level imports alike) has no cycle. And its rooms: only domainbed/settings.py reads
DOMAINBED_* variables, every error a user sees is a `domainbed.errors.DomainBedError`, and
only the front ends (domainbed/scripts/, lib/cli.py) exit."""
import ast
import pathlib
import re
import support

REPO_ROOT = support.REPO_ROOT
PACKAGE = REPO_ROOT / "domainbed"


# docs/architecture.md's layers, highest first: a module may import its own layer and those
# below it. (`domainbed` itself: the package's lazy facade, `load_model` and `train`.)
LAYERS = [
    ("domainbed",),
    ("domainbed.scripts",),
    ("domainbed.studies",),
    ("domainbed.sweeps", "domainbed.soups"),
    ("domainbed.launchers", "domainbed.command_launchers", "domainbed.pool_launcher"),
    ("domainbed.training",
     # former import paths of modules moved into training/ (aliases of its layer)
     "domainbed.lib.checkpoint", "domainbed.lib.tensorboard_logs"),
    ("domainbed.model_selection", "domainbed.results", "domainbed.model_files",
     "domainbed.hparams_registry", "domainbed.sharpness", "domainbed.sharpness_plots",
     # upstream's import paths of the results package's modules: aliases of its layer
     "domainbed.lib.query", "domainbed.lib.reporting", "domainbed.lib.plots"),
    ("domainbed.algorithms", "domainbed.lib.param_utils", "domainbed.lib.autocast",
     "domainbed.lib.per_sample"),
    ("domainbed.networks", "domainbed.datasets", "domainbed.lib.fast_data_loader"),
    ("domainbed.lib", "domainbed.errors", "domainbed.settings", "domainbed.config"),
]


def layer(module):
    """The index of the module's layer in LAYERS (0: highest)."""
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or (p != "domainbed" and module.startswith(p + ".")) for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md")


def module_name(path):
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules():
    """{module name: path} of every .py file of the package."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path, name, known):
    """The package's modules that the module `name` (file `path`) imports anywhere in its
    body: `import a.b` -> a.b; `from a import b` -> a.b when that is a module, else a;
    relative imports resolved against the module's package."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    return {t for t in targets if t in known and t != name}


def import_graph():
    modules = package_modules()
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One cycle as [a, b, ..., a], or None (depth-first search, iterative)."""
    state = {}   # name -> 1 (on the current path) or 2 (finished)
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert {"domainbed.training.api", "domainbed.sweeps.commands", "domainbed.launchers.pool",
            "domainbed.studies.iut_suite", "domainbed.scripts.train"} <= set(graph)
    assert "domainbed.training.run" in graph["domainbed.training.api"]
    assert "domainbed.studies.iut_diagnostics" in graph["domainbed.studies.iut_suite"]


def test_nothing_outside_scripts_imports_scripts():
    offenders = sorted(f"{name} imports {target}" for name, targets in import_graph().items()
                       if not name.startswith("domainbed.scripts")
                       for target in targets if target.startswith("domainbed.scripts"))
    assert not offenders, "; ".join(offenders)


def test_no_module_imports_a_layer_above_its_own():
    graph = import_graph()
    upward = sorted(f"{name} imports {target}" for name, targets in graph.items()
                    for target in targets if layer(target) < layer(name))
    assert not upward, "; ".join(upward)


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_upstream_import_paths_are_the_moved_modules():
    import domainbed.command_launchers
    import domainbed.pool_launcher
    from domainbed.launchers import command_launchers, pool

    assert domainbed.command_launchers is command_launchers
    assert domainbed.pool_launcher is pool
    assert command_launchers.REGISTRY["pool"] is pool.pool_launcher


# Modules moved out of lib/ (issue 32: lib holds what is generic), each still importable
# under its former name (upstream's, for fast_data_loader) as the very same module.
MOVED_OUT_OF_LIB = {"checkpoint": "domainbed.training", "tensorboard_logs": "domainbed.training",
                    "param_utils": "domainbed.algorithms", "autocast": "domainbed.algorithms",
                    "per_sample": "domainbed.algorithms", "fast_data_loader": "domainbed.datasets"}


def test_modules_moved_out_of_lib_keep_their_former_names():
    import importlib

    for name, package in MOVED_OUT_OF_LIB.items():
        assert importlib.import_module(f"domainbed.lib.{name}") is \
            importlib.import_module(f"{package}.{name}"), name
    # Only aliases import them by the former names: the package itself uses the new ones.
    graph = import_graph()
    users = {module: sorted(f"domainbed.lib.{n}" for n in MOVED_OUT_OF_LIB
                            if f"domainbed.lib.{n}" in targets)
             for module, targets in graph.items() if not module.startswith("domainbed.lib.")}
    assert {m: u for m, u in users.items() if u} == {}


# ---------------------------------------------------------------------------------------
# Results (issue 32): one package reads results, without torch, and computes every paired
# comparison.

RESULTS = "domainbed.results"
RESULTS_ALIASES = ("domainbed.model_selection", "domainbed.lib.query", "domainbed.lib.reporting",
                   "domainbed.lib.plots")
STUDIES_THAT_PAIR = ("domainbed.studies.reproduce", "domainbed.studies.hparam_study",
                     "domainbed.studies.iut_suite", "domainbed.studies.precision_study")
# Modules outside the results package that compute a standard error by hand, and why.
STANDARD_ERRORS_ELSEWHERE = {}


def results_modules():
    return sorted(name for name in package_modules()
                  if name == RESULTS or name.startswith(RESULTS + "."))


def sample_spread_calls(path):
    """Where a module computes a sample spread by hand: a call with `ddof`, a call of
    statistics' stdev / variance, or a division by `len(...) - 1`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", None)
            if any(keyword.arg == "ddof" for keyword in node.keywords):
                found.append(f"line {node.lineno}: ddof")
            elif name in ("stdev", "variance"):
                found.append(f"line {node.lineno}: {name}")
        elif (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
              and isinstance(node.right, ast.BinOp) and isinstance(node.right.op, ast.Sub)
              and isinstance(node.right.left, ast.Call)
              and getattr(node.right.left.func, "id", None) == "len"):
            found.append(f"line {node.lineno}: / (len(...) - 1)")
    return found


def test_only_the_results_package_computes_standard_errors():
    """Paired differences, their standard errors and win counts are `results.paired`'s;
    no other module computes a sample spread (a second copy of the paired comparison)."""
    modules = package_modules()
    offenders = sorted(f"{name} {where}" for name, path in modules.items()
                       if not (name == RESULTS or name.startswith(RESULTS + "."))
                       and name not in STANDARD_ERRORS_ELSEWHERE
                       for where in sample_spread_calls(path))
    assert not offenders, "use domainbed.results.paired: " + "; ".join(offenders)
    for name in STANDARD_ERRORS_ELSEWHERE:   # the exceptions are still needed
        assert sample_spread_calls(modules[name]), f"{name} no longer needs its exception"
    assert sample_spread_calls(modules["domainbed.results.paired"])


def test_the_studies_pair_through_results_paired():
    graph = import_graph()
    for study in STUDIES_THAT_PAIR:
        assert "domainbed.results.paired" in graph[study], study


def test_the_results_package_imports_no_torch():
    """No module of the results package (nor an alias of it) imports torch, torchvision,
    timm or wilds, at the top or in a function; the modules it imports stay below it."""
    modules = package_modules()
    heavy = ("torch", "torchvision", "timm", "wilds")
    graph = import_graph()
    for name in results_modules() + list(RESULTS_ALIASES):
        tree = ast.parse(modules[name].read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in imported if m.split(".")[0] in heavy}, name
        assert all(target.startswith((RESULTS, "domainbed.lib.", "domainbed.algorithms",
                                      "domainbed.datasets", "domainbed.errors"))
                   for target in graph[name]), (name, graph[name])


def test_the_results_package_imports_without_torch(fresh_python):
    """Every module of the package and every alias imports with torch, torchvision, timm
    and wilds unimportable (`sys.modules[name] = None`)."""
    names = results_modules() + list(RESULTS_ALIASES)
    result = fresh_python(
        "import importlib, sys\n"
        "for heavy in ('torch', 'torchvision', 'timm', 'wilds'):\n"
        "    sys.modules[heavy] = None\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(len(sys.modules['domainbed.results.published'].PUBLISHED))\n")
    assert result.stdout.strip() == "24"


def test_results_import_paths_are_the_moved_modules():
    import domainbed.lib.plots
    import domainbed.lib.query
    import domainbed.lib.reporting
    import domainbed.model_selection
    from domainbed.results import plots, query, records, selection, tables

    assert domainbed.model_selection is selection
    assert domainbed.lib.query is query
    assert domainbed.lib.plots is plots
    # upstream's reporting API, and the names of the former lib/reporting package
    assert domainbed.lib.reporting.load_records is records.load_records
    assert domainbed.lib.reporting.get_grouped_records is records.get_grouped_records
    assert domainbed.lib.reporting.build is tables.build
    assert domainbed.lib.reporting.render is tables.render
    # the names of the former module domainbed/results.py
    import domainbed.results

    assert {"build", "EnvironmentNames", "registry_order", "class_environments"} <= set(
        vars(domainbed.results))


# The environment: DOMAINBED_* variables are read in domainbed/settings.py only

SETTINGS_MODULE = PACKAGE / "settings.py"
# Files that read a DOMAINBED_* variable themselves, and why.
ENVIRONMENT_READ_EXCEPTIONS = {
    "domainbed/algorithms/fgmix/captured.py":
        "DOMAINBED_CUDA_GRAPHS: patches/ installs the FGMix package in an unmodified upstream "
        "DomainBed, which has no domainbed.settings (settings.cuda_graphs() states the rule)",
}
VARIABLE_NAME = re.compile(r"^DOMAINBED_[A-Z0-9_]+$")


def _is_environ(node):
    """`os.environ` (or `environ`, as `from os import environ` binds it)."""
    return ((isinstance(node, ast.Attribute) and node.attr == "environ"
             and isinstance(node.value, ast.Name) and node.value.id == "os")
            or (isinstance(node, ast.Name) and node.id == "environ"))


def _string_bindings(tree):
    """{name: {str, ...}}: module-level `NAME = "text"` and the targets of `for` loops and
    comprehensions over tuples or lists of strings (`for name in ("A", "B")`)."""
    bindings = {}

    def bind(target, values):
        if isinstance(target, ast.Name) and values:
            bindings.setdefault(target.id, set()).update(values)

    def strings(node):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            return set(values) if values and all(isinstance(v, str) for v in values) else set()
        return set()

    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            for target in node.targets:
                bind(target, {node.value.value})
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.comprehension)):
            bind(node.target, strings(node.iter))
    return bindings


def _key_names(key, bindings):
    """The variable names an environment key expression can be; None when unknown."""
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return {key.value}
    if isinstance(key, ast.Name) and key.id in bindings:
        return bindings[key.id]
    if isinstance(key, ast.JoinedStr) and key.values and isinstance(key.values[0], ast.Constant):
        return {key.values[0].value + "..."}   # an f-string: its fixed start
    return None


def _environment_key(node):
    """(True, the key expression or None) when `node` uses the environment by key, else
    (False, None)."""
    if isinstance(node, ast.Subscript) and _is_environ(node.value):
        return True, node.slice
    if isinstance(node, ast.Call):
        func, first = node.func, (node.args[0] if node.args else None)
        if isinstance(func, ast.Attribute) and (
                (func.attr in ("get", "setdefault", "pop") and _is_environ(func.value))
                or (func.attr == "getenv" and isinstance(func.value, ast.Name)
                    and func.value.id == "os")):
            return True, first
        if isinstance(func, ast.Name) and func.id == "getenv":
            return True, first
    if (isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn))
                                              for op in node.ops)
            and any(_is_environ(c) for c in node.comparators)):
        return True, node.left
    return False, None


def environment_reads(source):
    """[(line, {names} or None)] of every use of the process environment by key in
    `source`: os.environ[key] (read, write or del), os.environ.get/setdefault/pop(key),
    os.getenv(key), `key in os.environ`. None: a key this scan cannot name."""
    tree = ast.parse(source)
    bindings = _string_bindings(tree)
    reads = []
    for node in ast.walk(tree):
        uses, key = _environment_key(node)
        if uses:
            reads.append((node.lineno, None if key is None else _key_names(key, bindings)))
    return sorted(reads, key=lambda read: read[0])


def variable_name_constants(source):
    """Lines of the string constants that are exactly a DOMAINBED_* name, but docstrings and
    the keys of subscript assignments (`env["DOMAINBED_X"] = ...`: a child's environment)."""
    tree = ast.parse(source)
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            allowed.add(id(node.value))   # docstrings and other bare strings
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            allowed.add(id(node.slice))
    return sorted(node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and VARIABLE_NAME.match(node.value) and id(node) not in allowed)


def environment_offences(path):
    """What `path` does with the environment that only domainbed/settings.py may do."""
    source = path.read_text()
    offences = []
    for line, names in environment_reads(source):
        if names is None:
            offences.append(f"{line}: reads a variable this test cannot name")
        elif any(name.startswith("DOMAINBED_") for name in names):
            offences.append(f"{line}: reads {', '.join(sorted(names))}")
    offences += [f"{line}: names a DOMAINBED_* variable"
                 for line in variable_name_constants(source)]
    return offences


def test_only_the_settings_module_reads_domainbed_variables():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if path == SETTINGS_MODULE or relative in ENVIRONMENT_READ_EXCEPTIONS:
            continue
        offenders += [f"{relative}:{offence}" for offence in environment_offences(path)]
    assert not offenders, ("read these through domainbed/settings.py: " + "; ".join(offenders))


def test_the_exceptions_to_the_settings_rule_still_read_their_variable():
    for relative in ENVIRONMENT_READ_EXCEPTIONS:
        assert environment_offences(REPO_ROOT / relative), f"{relative}: drop its exception"


def test_the_environment_scan_sees_every_form_of_read():
    source = '''
import os
from os import environ
NAME = "DOMAINBED_A"
a = os.environ["DOMAINBED_B"]
b = os.environ.get(NAME)
c = os.getenv("DOMAINBED_C", "1")
d = "DOMAINBED_D" in os.environ
e = [os.environ.get(n) for n in ("DOMAINBED_E", "HOME")]
f = environ.setdefault(f"DOMAINBED_{x}", "")
g = os.environ.get(key_from_somewhere)
h = os.environ.get("HOME")
'''
    assert environment_reads(source) == [
        (5, {"DOMAINBED_B"}), (6, {"DOMAINBED_A"}), (7, {"DOMAINBED_C"}), (8, {"DOMAINBED_D"}),
        (9, {"DOMAINBED_E", "HOME"}), (10, {"DOMAINBED_..."}), (11, None), (12, {"HOME"})]
    assert variable_name_constants('"""DOMAINBED_A"""\nenv["DOMAINBED_B"] = "1"\n'
                                   'SLURM = {"x": "DOMAINBED_C"}\nm = "set DOMAINBED_D=1"\n') == [3]


# ---------------------------------------------------------------------------------------
# Errors: one base; library code raises, only the front ends exit

# Exception classes of the package that are not DomainBedErrors, and why: internal signals
# that their one caller catches and words for the user.
NOT_DOMAINBED_ERRORS = {
    "domainbed.soups.SkipGroup":
        "make_soups' signal that one group cannot be souped: it prints the reason as a note, "
        "goes on with the other groups and exits 1 at the end",
    "domainbed.training.loop.NonFiniteLoss":
        "the loop's signal to training/failures.py, which prints its own line with advice "
        "and exits 3",
    "domainbed.training.checkpoint.CheckpointError":
        "checkpoint.pt's signal to training/resume.py, which sets the file aside, or refuses "
        "with a BadInput that quotes it",
    "domainbed.lib.jobdir.JobLockError":
        "an OSError of the lock file: train.py refuses with its strerror, sweep's delete "
        "goes on",
    "domainbed.lib.jobdir.NotRegularFileError":
        "the readers' signal that a protocol file is no regular file: they treat it as "
        "unreadable, or refuse it in words of their own",
}

EXCEPTION_SCAN = r'''
import importlib, inspect, json, pkgutil, sys
import domainbed
from domainbed.errors import DomainBedError
found = {}
for info in pkgutil.walk_packages(domainbed.__path__, "domainbed."):
    module = importlib.import_module(info.name)
    for name, value in vars(module).items():
        if (inspect.isclass(value) and issubclass(value, BaseException)
                and value.__module__ == module.__name__):
            found[f"{value.__module__}.{value.__qualname__}"] = issubclass(value, DomainBedError)
json.dump(found, sys.stdout)
'''


def exception_classes():
    """{module.Class: derives from DomainBedError} of every exception class the package's
    modules define (imported in a child process: plug-in modules register names)."""
    import json
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", EXCEPTION_SCAN], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    return json.loads(result.stdout)


def test_every_error_a_user_sees_is_a_domainbed_error():
    classes = exception_classes()
    assert {"domainbed.errors.DomainBedError", "domainbed.lib.validation.ValidationError",
            "domainbed.datasets.download.fetch.DownloadError", "domainbed.training.loop.NonFiniteLoss",
            "domainbed.sweeps.errors.SweepError"} <= set(classes)
    others = sorted(name for name, based in classes.items()
                    if not based and name not in NOT_DOMAINBED_ERRORS)
    assert not others, ("derive these from domainbed.errors.DomainBedError (or list them in "
                        "NOT_DOMAINBED_ERRORS with a reason): " + ", ".join(others))
    stale = sorted(name for name in NOT_DOMAINBED_ERRORS if classes.get(name, True))
    assert not stale, ("NOT_DOMAINBED_ERRORS lists classes that are gone or based: "
                       + ", ".join(stale))


# The front ends: the scripts and the command-line plumbing they share.
FRONT_ENDS = ("domainbed/scripts/", "domainbed/lib/cli.py")


def exits(source):
    """Lines where `source` exits the process or raises SystemExit: SystemExit (but in an
    `except`), sys.exit(), os._exit(), exit(), quit()."""
    tree = ast.parse(source)
    caught = {id(node) for handler in ast.walk(tree) if isinstance(handler, ast.ExceptHandler)
              and handler.type is not None for node in ast.walk(handler.type)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "SystemExit" and id(node) not in caught:
            lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("exit", "quit"):
                lines.append(node.lineno)
            elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                  and (func.value.id, func.attr) in (("sys", "exit"), ("os", "_exit"))):
                lines.append(node.lineno)
    return sorted(lines)


def test_library_code_raises_and_only_the_front_ends_exit():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if not relative.startswith(FRONT_ENDS):
            offenders += [f"{relative}:{line}" for line in exits(path.read_text())]
    assert not offenders, ("library code raises a DomainBedError instead of exiting: "
                           + ", ".join(offenders))


def test_the_exit_scan_sees_every_way_out():
    source = ('import sys, os\nraise SystemExit("no")\nsys.exit(2)\nos._exit(1)\nexit()\n'
              'try:\n    pass\nexcept SystemExit:\n    pass\nparser.exit(2)\n')
    assert exits(source) == [2, 3, 4, 5]


# ---------------------------------------------------------------------------------------
# A run's configuration (issue 32): one frozen RunConfig, made where a run is asked for and
# only read after. Inside training/, only the command line's module (arguments.py) sees an
# argparse namespace; the rest reads `config`, never `args` or a flag with its own default.

TRAINING = PACKAGE / "training"
NAMESPACE_MODULES = {"arguments.py"}


def namespace_uses(source):
    """Lines that read a run's flags the old way: a name `args`, `vars(...)` of anything,
    or `getattr` of the config or the job with a default (a value read back with a default
    of its own, rather than declared where the object is made)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "getattr" and len(node.args) == 3 \
                and re.search(r"\b(job|config)\b", ast.unparse(node.args[0])):
            lines.append(node.lineno)
        if isinstance(node, ast.Name) and node.id == "args":
            lines.append(node.lineno)
        elif isinstance(node, ast.arg) and node.arg == "args":
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "vars":
            lines.append(node.lineno)
    return sorted(set(lines))


def test_training_reads_its_flags_from_the_run_config_only():
    offenders = [f"{path.name}:{line}" for path in sorted(TRAINING.glob("*.py"))
                 if path.name not in NAMESPACE_MODULES
                 for line in namespace_uses(path.read_text())]
    assert not offenders, ("read the run's flags from its RunConfig (domainbed/config.py): "
                           + ", ".join(offenders))


def test_the_namespace_scan_sees_every_form():
    source = ("def f(args):\n    pass\nx = vars(y)\nz = args.seed\n"
              "a = getattr(self.job, 'started', None)\nb = getattr(loader, 'close', None)\n")
    assert namespace_uses(source) == [1, 3, 4, 5]


def test_the_sweep_checks_its_jobs_as_run_configs():
    """A sweep's jobs are checked by making each one's RunConfig (the checks train.py meets),
    not by a second list of checks."""
    source = (PACKAGE / "sweeps" / "checks.py").read_text()
    assert "RunConfig.from_args(train_args)" in source
    assert "check_train_args" not in (PACKAGE / "lib" / "validation.py").read_text()


# ---------------------------------------------------------------------------------------
# Tests grouped like the package (docs/architecture.md, "Tests"): a test file is found by
# the room it checks, and moving one never breaks another, since none imports another.

TESTS = REPO_ROOT / "tests"
TEST_FOLDERS = {"algorithms", "training", "datasets", "sweeps", "results", "studies", "lib"}


def imported_test_modules(source):
    """The test modules (test_*, tests.*) that `source` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [n for n in names if n.split(".")[0] == "tests"
                  or n.split(".")[-1].startswith("test_")]
    return found


def test_no_test_file_imports_another():
    offenders = {path.relative_to(REPO_ROOT).as_posix(): imported_test_modules(path.read_text())
                 for path in TESTS.rglob("*.py")}
    offenders = {path: names for path, names in offenders.items() if names}
    assert not offenders, f"share helpers through tests/support.py instead: {offenders}"
    assert imported_test_modules("from test_resume import x\nimport tests.test_a\n") == [
        "test_resume", "tests.test_a"]


def test_test_files_sit_in_the_package_folders():
    folders = {path.parent.relative_to(TESTS).as_posix() for path in TESTS.rglob("test_*.py")}
    assert folders <= TEST_FOLDERS | {"."}, folders - TEST_FOLDERS
    top = sorted(path.name for path in TESTS.glob("test_*.py"))
    assert top == ["test_architecture.py", "test_patches.py", "test_readme_examples.py"], top


def test_one_rho_ball_ascent():
    """SAM, FGMix's look-ahead and the sharpness measure perturb weights by ε = ρ g/‖g‖
    through algorithms/rho_ball.py, and nothing else in the package computes that scale."""
    users = {"algorithms/sam.py", "algorithms/fgmix/lookahead.py", "sharpness.py"}
    for relative in users:
        assert "rho_ball.ascent(" in (PACKAGE / relative).read_text(), relative
    scale = re.compile(r"rho\s*/\s*\(?\s*norm")
    offenders = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                 if path.name != "rho_ball.py" and scale.search(path.read_text())]
    assert not offenders, offenders
