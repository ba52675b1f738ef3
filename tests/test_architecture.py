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
    ("domainbed.sweeps",),
    ("domainbed.launchers", "domainbed.command_launchers", "domainbed.pool_launcher"),
    ("domainbed.training",),
    ("domainbed.model_selection", "domainbed.results", "domainbed.model_files",
     "domainbed.hparams_registry", "domainbed.sharpness"),
    ("domainbed.algorithms",),
    ("domainbed.networks", "domainbed.datasets"),
    ("domainbed.lib", "domainbed.errors", "domainbed.settings"),
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
