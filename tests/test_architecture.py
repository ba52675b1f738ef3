"""docs/architecture.md's import rules, checked on the source (`ast`, nothing imported):
no module outside domainbed/scripts/ imports domainbed.scripts, no module imports a layer
above its own, and the import graph of the package's modules (top-level and
function-level imports alike) has no cycle."""
import ast
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "domainbed"


# docs/architecture.md's layers, highest first: a module may import its own layer and those
# below it. (`domainbed` itself: the package's lazy facade, `load_model` and `train`.)
LAYERS = [
    ("domainbed",),
    ("domainbed.scripts",),
    ("domainbed.studies",),
    ("domainbed.sweeps", "domainbed.soups"),
    ("domainbed.launchers", "domainbed.command_launchers", "domainbed.pool_launcher"),
    ("domainbed.training",),
    ("domainbed.model_selection", "domainbed.results", "domainbed.model_files",
     "domainbed.hparams_registry", "domainbed.sharpness", "domainbed.sharpness_plots",
     # upstream's import paths of the results package's modules: aliases of its layer
     "domainbed.lib.query", "domainbed.lib.reporting", "domainbed.lib.plots"),
    ("domainbed.algorithms",),
    ("domainbed.networks", "domainbed.datasets"),
    ("domainbed.lib",),
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
                                      "domainbed.datasets"))
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
