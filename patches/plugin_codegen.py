"""Generate `domainbed/fgmix_plugin.py` for an upstream checkout from this project's sources.

The plug-in is this project's package `domainbed/algorithms/fgmix/`, its modules pasted in
dependency order (`package_source`: each module's code after its imports, the relative
imports between them dropped, the other imports gathered at the top) with their source
text unchanged except for what only exists in this project:

- `from domainbed.algorithms.base import Algorithm`: replaced by this project's base class
  itself (`domainbed/algorithms/base.py`, inlined verbatim: own generators, full-state
  checkpoints, `declare_hparams`) and the upstream glue of `plugin_shim.py`;
- `from domainbed.algorithms.registry import register_algorithm`: dropped with the
  decorators; the decorated classes become the plug-in's `ALGORITHMS`, registered in
  upstream's `algorithms.py` by the patch instead;
- `domainbed.lib.per_sample`: the functions used are inlined (with what they depend on),
  and `from domainbed.lib import per_sample` becomes a namespace of them, so that the code
  of fgmix.py is pasted unchanged.

Every other `domainbed` import is refused except `from domainbed import networks`, whose
`Featurizer`/`Classifier` upstream also has. Generating is deterministic, so "installed
file == freshly generated file" is the test that the two code bases are in sync.
"""
import ast
import hashlib
import pathlib

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
FGMIX_SOURCE = PROJECT_ROOT / "domainbed" / "algorithms" / "fgmix"
PER_SAMPLE_SOURCE = PROJECT_ROOT / "domainbed" / "lib" / "per_sample.py"
BASE_SOURCE = PROJECT_ROOT / "domainbed" / "algorithms" / "base.py"
SHIM_SOURCE = pathlib.Path(__file__).resolve().with_name("plugin_shim.py")
SHIM_MARKER = "# ---- plug-in support code starts here ----"

PLUGIN_MODULE = "fgmix_plugin"
PLUGIN_PATH = f"domainbed/{PLUGIN_MODULE}.py"

BASE_MODULE = "domainbed.algorithms.base"
REGISTRY_MODULE = "domainbed.algorithms.registry"
PER_SAMPLE_MODULE = "domainbed.lib.per_sample"
KEPT_DOMAINBED_IMPORTS = {("domainbed", "networks")}  # (module, name) upstream also has


class CodegenError(ValueError):
    """fgmix.py uses something the generator cannot translate for upstream."""


# -- the package as one source text ----------------------------------------------------------
def _relative_imports(tree):
    """The sibling modules a package module imports (`from .x import ...`, `from . import x`)."""
    siblings = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level != 1:
                raise CodegenError(f"line {node.lineno}: only `from .module import ...` is "
                                   f"supported inside the package")
            siblings.update([node.module] if node.module else [a.name for a in node.names])
    return siblings


def _dependency_order(imports):
    """Module names, each after the siblings it imports (ties by name): a pasted module's
    names are then defined before any module that uses them at import time."""
    ordered, done = [], set()

    def visit(name, path):
        if name in done:
            return
        if name in path:
            raise CodegenError(f"the package's modules import each other in a cycle: "
                               f"{' -> '.join(path + [name])}")
        for sibling in sorted(imports[name]):
            visit(sibling, path + [name])
        done.add(name)
        ordered.append(name)

    for name in sorted(imports):
        visit(name, [])
    return ordered


def package_source(folder):
    """One module's text standing for the package in `folder`: its `__init__.py`'s
    docstring, every other import of its modules (each once), then each module's code in
    dependency order, without its docstring and imports. Names stay those of the package,
    so the modules' code is pasted unchanged."""
    folder = pathlib.Path(folder)
    sources = {path.stem: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.py"))
               if path.stem != "__init__"}
    trees = {name: ast.parse(text, filename=str(folder / f"{name}.py"))
             for name, text in sources.items()}
    unknown = {s for tree in trees.values() for s in _relative_imports(tree)} - set(sources)
    if unknown:
        raise CodegenError(f"the package imports {', '.join(sorted(unknown))}, which it lacks")
    init = (folder / "__init__.py").read_text(encoding="utf-8")
    imports, bodies = [], []
    for name in _dependency_order({n: _relative_imports(t) for n, t in trees.items()}):
        tree, lines = trees[name], sources[name].splitlines(keepends=True)
        import_nodes = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        imports += [ast.get_source_segment(sources[name], n) for n in import_nodes
                    if not getattr(n, "level", 0)]
        skipped = {ln for n in import_nodes for ln in range(n.lineno, n.end_lineno + 1)}
        code = [line for number, line in enumerate(lines, 1)
                if number > _docstring_end(tree) and number not in skipped]
        bodies.append(f"# -- {folder.name}/{name}.py\n" + "".join(code).strip("\n") + "\n")
    docstring = "".join(init.splitlines(keepends=True)[:_docstring_end(ast.parse(init))])
    unique = "\n".join(dict.fromkeys(imports))
    return f"{docstring}{unique}\n\n\n" + "\n\n\n".join(bodies)


def _read_source(path):
    """fgmix's source text: a package folder read as one module, or a single file."""
    path = pathlib.Path(path)
    return package_source(path) if path.is_dir() else path.read_text(encoding="utf-8")


def sha256_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _relative(path):
    path = pathlib.Path(path).resolve()
    try:
        return path.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return path.name


# -- reading fgmix.py's imports ---------------------------------------------------------------
class _ImportPlan:
    """What to do with each of fgmix.py's top-level imports."""

    def __init__(self):
        self.kept = []                  # ast import nodes pasted as they are
        self.aliases = []               # (alias, provided name): `alias = name` lines
        self.per_sample_names = set()   # per_sample definitions fgmix uses directly
        self.per_sample_modules = set() # names bound to the per_sample module itself


def _plan_imports(tree):
    plan = _ImportPlan()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            _plan_one_import(node, plan)
    _refuse_nested_domainbed_imports(tree)
    return plan


def _plan_one_import(node, plan):
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "domainbed":
                raise CodegenError(f"line {node.lineno}: `import {alias.name}` is not supported; "
                                   f"use `from ... import ...`")
        plan.kept.append(node)
        return
    module = node.module or ""
    if node.level or module.split(".")[0] != "domainbed":
        plan.kept.append(node)
        return
    names = {(module, a.name) for a in node.names}
    if names <= KEPT_DOMAINBED_IMPORTS:
        plan.kept.append(node)
        return
    for alias in node.names:
        _translate_name(module, alias, node.lineno, plan)


def _translate_name(module, alias, lineno, plan):
    bound = alias.asname or alias.name
    if module == BASE_MODULE and alias.name == "Algorithm":
        provided = "Algorithm"
    elif module == REGISTRY_MODULE and alias.name == "register_algorithm":
        if bound != "register_algorithm":
            raise CodegenError(f"line {lineno}: import register_algorithm without renaming it")
        return
    elif module == PER_SAMPLE_MODULE:
        plan.per_sample_names.add(alias.name)
        provided = alias.name
    elif module == "domainbed.lib" and alias.name == "per_sample":
        plan.per_sample_modules.add(bound)
        return
    else:
        raise CodegenError(
            f"line {lineno}: `from {module} import {alias.name}` has no upstream translation; "
            f"extend patches/plugin_codegen.py or import something upstream also has")
    if bound != provided:
        plan.aliases.append((bound, provided))


def _refuse_nested_domainbed_imports(tree):
    top_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        module = getattr(node, "module", None) or ""
        names = [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
        mentions = module.startswith("domainbed") or any(n.startswith("domainbed") for n in names)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and mentions and id(node) not in top_level:
            raise CodegenError(f"line {node.lineno}: domainbed imports must be at module level")


# -- rewriting fgmix.py's text ----------------------------------------------------------------
def _registered_classes(tree):
    """(class names decorated with register_algorithm, line numbers of those decorators)."""
    names, lines, decorator_uses = [], set(), 0
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            deco_name = deco.attr if isinstance(deco, ast.Attribute) else getattr(deco, "id", None)
            if deco_name == "register_algorithm":
                names.append(node.name)
                lines.update(range(deco.lineno, deco.end_lineno + 1))
                decorator_uses += 1
    uses = sum(isinstance(n, ast.Name) and n.id == "register_algorithm" for n in ast.walk(tree))
    if uses != decorator_uses:
        raise CodegenError("register_algorithm is used other than as a class decorator")
    if not names:
        raise CodegenError("no class is decorated with @register_algorithm")
    return names, lines


def _used_module_attributes(tree, module_names):
    return {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id in module_names}


def _docstring_end(tree):
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str):
        return first.end_lineno
    return 0


def _split_fgmix(source, tree, decorator_lines):
    """(docstring text, body text) of fgmix.py with translated imports and decorators gone."""
    lines = source.splitlines(keepends=True)
    import_lines = {ln for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                    for ln in range(node.lineno, node.end_lineno + 1)}
    doc_end = _docstring_end(tree)
    removed = import_lines | decorator_lines
    body = [line for number, line in enumerate(lines, 1)
            if number > doc_end and number not in removed]
    return "".join(lines[:doc_end]), "".join(body).strip("\n") + "\n"


# -- the other sources ------------------------------------------------------------------------
def _definitions(tree):
    """Top-level name -> node for functions, classes and simple assignments."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = node
    return found


def _with_dependencies(wanted, definitions):
    needed, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        if name not in definitions:
            raise CodegenError(f"domainbed/lib/per_sample.py defines no {name!r}")
        needed.add(name)
        todo += [n.id for n in ast.walk(definitions[name])
                 if isinstance(n, ast.Name) and n.id in definitions]
    return needed


def _inlined_per_sample(per_sample_source, wanted):
    """(import nodes, source of the wanted definitions in file order)."""
    tree = ast.parse(per_sample_source)
    definitions = _definitions(tree)
    needed = _with_dependencies(wanted, definitions)
    chunks = [ast.get_source_segment(per_sample_source, node, padded=True)
              for node in tree.body if node in {definitions[n] for n in needed}]
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return imports, "\n\n\n".join(chunks) + "\n"


def _shim_parts(shim_source):
    """(import nodes, code) of the template after its marker line."""
    if SHIM_MARKER not in shim_source:
        raise CodegenError(f"{SHIM_SOURCE.name} lost its marker line {SHIM_MARKER!r}")
    code = shim_source.split(SHIM_MARKER, 1)[1]
    tree = ast.parse(code)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    import_lines = {ln for n in imports for ln in range(n.lineno, n.end_lineno + 1)}
    kept = [line for number, line in enumerate(code.splitlines(keepends=True), 1)
            if number not in import_lines]
    return imports, "".join(kept).strip("\n") + "\n"


def _base_parts(base_source):
    """(import nodes, code) of the project's base class module, without its docstring."""
    tree = ast.parse(base_source)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    body = [n for n in tree.body if n not in imports and not (
        isinstance(n, ast.Expr) and isinstance(getattr(n, "value", None), ast.Constant))]
    return imports, "\n\n\n".join(ast.get_source_segment(base_source, n, padded=True)
                                  for n in body) + "\n"


def _merged_imports(*groups):
    """Import statements, each once, in first-seen order; domainbed's after the others."""
    seen, outside, inside = set(), [], []
    for node in (n for group in groups for n in group):
        text = ast.unparse(node)
        if text not in seen:
            seen.add(text)
            is_ours = (getattr(node, "module", None) or "").startswith("domainbed")
            (inside if is_ours else outside).append(text)
    return "\n".join(outside + ([""] if outside and inside else []) + inside) + "\n"


def _bindings(plan, module_attributes):
    """`alias = name` for renamed imports; a namespace for `per_sample` used as a module."""
    lines = [f"{alias} = {name}\n" for alias, name in plan.aliases]
    for module in sorted(plan.per_sample_modules):
        members = "".join(f"    {n}={n},\n" for n in sorted(module_attributes))
        lines.append(f"{module} = types.SimpleNamespace(\n{members})\n")
    return "".join(lines)


# -- assembling the plug-in -------------------------------------------------------------------
def _section(title):
    return f"# {'-' * 4} {title} {'-' * max(4, 86 - len(title))}\n"


def _check_no_clash(fgmix_tree, inlined_names):
    clashes = sorted(set(_definitions(fgmix_tree)) & (inlined_names | {"Algorithm",
                                                                        "declare_hparams",
                                                                        "ALGORITHMS"}))
    if clashes:
        raise CodegenError(f"fgmix.py defines {', '.join(clashes)}, which the plug-in "
                           f"also defines (inlined or shim code)")


def generate_plugin(fgmix_path=FGMIX_SOURCE, per_sample_path=PER_SAMPLE_SOURCE,
                    shim_path=SHIM_SOURCE):
    """(plug-in source text, registered class names) for the current sources."""
    fgmix_source = _read_source(fgmix_path)
    per_sample_source = pathlib.Path(per_sample_path).read_text(encoding="utf-8")
    base_source = BASE_SOURCE.read_text(encoding="utf-8")
    shim_source = pathlib.Path(shim_path).read_text(encoding="utf-8")
    content, names = _content(fgmix_source, per_sample_source, base_source, shim_source,
                              fgmix_path)
    header = _header(fgmix_path, fgmix_source, [per_sample_path, BASE_SOURCE],
                     per_sample_source + base_source, content)
    return header + content, names


def _content(fgmix_source, per_sample_source, base_source, shim_source, fgmix_path):
    """The plug-in below its header: imports, base class, shim, inlined per_sample, fgmix.py,
    names."""
    tree = ast.parse(fgmix_source, filename=str(fgmix_path))
    plan = _plan_imports(tree)
    names, decorator_lines = _registered_classes(tree)
    module_attributes = _used_module_attributes(tree, plan.per_sample_modules)
    wanted = plan.per_sample_names | module_attributes
    ps_imports, ps_code = _inlined_per_sample(per_sample_source, wanted) if wanted else ([], "")
    _check_no_clash(tree, _with_dependencies(wanted, _definitions(ast.parse(per_sample_source))))
    base_imports, base_code = _base_parts(base_source)
    shim_imports, shim_code = _shim_parts(shim_source)
    docstring, body = _split_fgmix(fgmix_source, tree, decorator_lines)

    namespace_import = [ast.parse("import types").body[0]] if plan.per_sample_modules else []
    imports = _merged_imports(plan.kept, namespace_import, base_imports, shim_imports, ps_imports)
    parts = [docstring, "\n", imports, "\n\n"]
    parts += [_section("The project's base class (domainbed/algorithms/base.py)"),
              base_code, "\n\n"]
    parts += [_section("Upstream glue (patches/plugin_shim.py)"), shim_code, "\n\n"]
    if ps_code:
        parts += [_section("Inlined from domainbed/lib/per_sample.py"), ps_code, "\n\n"]
    bindings = _bindings(plan, module_attributes)
    if bindings:
        parts += [bindings, "\n\n"]
    parts += [_section("domainbed/algorithms/fgmix/, its modules in dependency order"), body,
              "\n\n"]
    parts += [_section("Registration in upstream's algorithms.py and hparams_registry.py"),
              f"ALGORITHMS = {names!r}\n"]
    return "".join(parts).lstrip("\n"), names


def _header(fgmix_path, fgmix_source, inlined_paths, inlined_source, content):
    return (
        "# GENERATED FILE: do not edit. Regenerate with `python patches/apply_fgmix.py CHECKOUT`\n"
        "# (domainbed-fgmix project), which installs FGMix in an upstream DomainBed checkout.\n"
        f"# Source: {_relative(fgmix_path)} sha256={sha256_text(fgmix_source)}\n"
        f"# Inlined: {', '.join(_relative(p) for p in inlined_paths)} "
        f"sha256={sha256_text(inlined_source)}\n"
        f"# Content sha256={sha256_text(content)}\n"
    )


HEADER_LINES = 5


def split_header(plugin_text):
    """(header, content) of a generated plug-in."""
    lines = plugin_text.splitlines(keepends=True)
    return "".join(lines[:HEADER_LINES]), "".join(lines[HEADER_LINES:])


def content_hash_matches(plugin_text):
    """False when a generated file was edited after generation."""
    header, content = split_header(plugin_text)
    return f"# Content sha256={sha256_text(content)}\n" in header
