"""Generate the package `domainbed/fgmix/` for an upstream checkout from this project's sources.

The installed package has the same modules as this project's `domainbed/algorithms/fgmix/`,
each one's text unchanged except for the imports of what only exists in this project, which
point at two support modules generated beside them:

- `from domainbed.algorithms.base import Algorithm` -> `from ._upstream import Algorithm`:
  `_upstream.py` holds this project's base class (`domainbed/algorithms/base.py`, verbatim:
  own generators, full-state checkpoints, `declare_hparams`) and the upstream glue of
  `plugin_shim.py` (a torch version check, `register_algorithm`, `declare_hparams`);
- `from domainbed.algorithms.registry import register_algorithm` -> the `_upstream` one,
  which only records the class: the classes are listed in upstream's `algorithms.py` by the
  patch instead;
- `domainbed.algorithms.per_sample` -> `_per_sample.py` and `domainbed.algorithms.rho_ball`
  -> `_rho_ball.py`, verbatim copies (they import only torch).

`from domainbed import networks` is kept (upstream's `Featurizer`/`Classifier` have the same
signatures); every other `domainbed` import is refused, naming the file and line. Generating
is deterministic, so "installed files == freshly generated files" is the test that the two
code bases are in sync.
"""
import ast
import hashlib
import pathlib

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
FGMIX_SOURCE = PROJECT_ROOT / "domainbed" / "algorithms" / "fgmix"
PER_SAMPLE_SOURCE = PROJECT_ROOT / "domainbed" / "algorithms" / "per_sample.py"
RHO_BALL_SOURCE = PROJECT_ROOT / "domainbed" / "algorithms" / "rho_ball.py"
BASE_SOURCE = PROJECT_ROOT / "domainbed" / "algorithms" / "base.py"
SHIM_SOURCE = pathlib.Path(__file__).resolve().with_name("plugin_shim.py")
SHIM_MARKER = "# ---- plug-in support code starts here ----"

PACKAGE = "fgmix"                       # installed as domainbed/fgmix/
PACKAGE_DIR = f"domainbed/{PACKAGE}"
SUPPORT_MODULE = "_upstream"            # base class + glue
PER_SAMPLE_MODULE_NAME = "_per_sample"
# modules copied verbatim beside the package: name in domainbed.algorithms -> module written
COPIED_FROM = "domainbed.algorithms"
COPIES = {"per_sample": PER_SAMPLE_MODULE_NAME, "rho_ball": "_rho_ball"}
LEGACY_PLUGIN_PATH = "domainbed/fgmix_plugin.py"   # the single file older versions installed

BASE_MODULE = "domainbed.algorithms.base"
REGISTRY_MODULE = "domainbed.algorithms.registry"
KEPT_DOMAINBED_IMPORTS = {("domainbed", "networks")}  # (module, name) upstream also has

GENERATED_MARK = "# GENERATED FILE"
HEADER_LINES = 5


class CodegenError(ValueError):
    """The package uses something the generator cannot translate for upstream."""


def sha256_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _relative(path):
    path = pathlib.Path(path).resolve()
    try:
        return path.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return path.name


# -- the source package ------------------------------------------------------------------------
def read_sources(source):
    """{module name: text} of the package folder `source`; a single module file stands for a
    package whose `__init__.py` it is."""
    source = pathlib.Path(source)
    if source.is_dir():
        texts = {p.stem: p.read_text(encoding="utf-8") for p in sorted(source.glob("*.py"))}
        if "__init__" not in texts:
            raise CodegenError(f"{source} has no __init__.py; give the package folder")
    else:
        texts = {"__init__": source.read_text(encoding="utf-8")}
    clashes = sorted(({SUPPORT_MODULE} | set(COPIES.values())) & set(texts))
    if clashes:
        raise CodegenError(f"the package has a module named {clashes[0]}, which the generator "
                           f"writes itself; rename it")
    return texts


def _sibling_imports(tree):
    """The sibling modules a module imports (`from .x import ...`, `from . import x`)."""
    siblings = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            siblings.update([node.module] if node.module else [a.name for a in node.names])
    return siblings


def module_order(trees):
    """Module names, each after the siblings it imports (ties by name), `__init__` last: the
    order in which importing the package registers their classes."""
    ordered, done = [], set()

    def visit(name, path):
        if name in done or name not in trees:
            return
        if name in path:
            raise CodegenError(f"the package's modules import each other in a cycle: "
                               f"{' -> '.join(path + [name])}")
        for sibling in sorted(_sibling_imports(trees[name])):
            visit(sibling, path + [name])
        done.add(name)
        ordered.append(name)

    for name in sorted(trees):
        visit(name, [])
    return [n for n in ordered if n != "__init__"] + ["__init__"]


def _registered_classes(tree):
    """Names of the classes decorated with `register_algorithm`, in file order."""
    names, decorator_uses = [], 0
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            deco_name = deco.attr if isinstance(deco, ast.Attribute) else getattr(deco, "id", None)
            if deco_name == "register_algorithm":
                names.append(node.name)
                decorator_uses += 1
    uses = sum(isinstance(n, ast.Name) and n.id == "register_algorithm" for n in ast.walk(tree))
    if uses != decorator_uses:
        raise CodegenError("register_algorithm is used other than as a class decorator")
    return names


# -- translating one module's imports ----------------------------------------------------------
def _translated_import(node, where):
    """The replacement text of a top-level import, or None to keep it as it is."""
    if isinstance(node, ast.Import):
        if any(a.name.split(".")[0] == "domainbed" for a in node.names):
            raise CodegenError(f"{where}: `import domainbed...` is not supported; use "
                               f"`from ... import ...`")
        return None
    module = node.module or ""
    if node.level or module.split(".")[0] != "domainbed":
        return None
    if {(module, a.name) for a in node.names} <= KEPT_DOMAINBED_IMPORTS:
        return None
    if module == COPIED_FROM and len(node.names) == 1 and node.names[0].name in COPIES:
        name = node.names[0].name
        return f"from . import {COPIES[name]} as {node.names[0].asname or name}"
    targets = {BASE_MODULE: SUPPORT_MODULE, REGISTRY_MODULE: SUPPORT_MODULE,
               **{f"{COPIED_FROM}.{name}": copy for name, copy in COPIES.items()}}
    allowed = {BASE_MODULE: {"Algorithm"}, REGISTRY_MODULE: {"register_algorithm"}}
    if module not in targets or not {a.name for a in node.names} <= allowed.get(module, {
            a.name for a in node.names}):
        names = ", ".join(a.name for a in node.names)
        raise CodegenError(f"{where}: `from {module} import {names}` has no upstream "
                           f"translation; extend patches/plugin_codegen.py or import "
                           f"something upstream also has")
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    return f"from .{targets[module]} import {names}"


def _refuse_nested_domainbed_imports(tree, filename):
    top_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top_level:
            continue
        module = getattr(node, "module", None) or ""
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if module.startswith("domainbed") or any(n.startswith("domainbed") for n in names):
            raise CodegenError(f"{filename}:{node.lineno}: domainbed imports must be at "
                               f"module level")


def translate_module(text, filename):
    """`text` with its project-specific imports pointing at the generated support modules;
    every other line unchanged."""
    tree = ast.parse(text, filename=filename)
    _refuse_nested_domainbed_imports(tree, filename)
    lines = text.splitlines(keepends=True)
    for node in sorted((n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))),
                       key=lambda n: n.lineno, reverse=True):
        replacement = _translated_import(node, f"{filename}:{node.lineno}")
        if replacement is not None:
            indent = lines[node.lineno - 1][:node.col_offset]
            lines[node.lineno - 1:node.end_lineno] = [f"{indent}{replacement}\n"]
    return "".join(lines)


# -- the support modules -----------------------------------------------------------------------
def _shim_code(shim_source):
    if SHIM_MARKER not in shim_source:
        raise CodegenError(f"{SHIM_SOURCE.name} lost its marker line {SHIM_MARKER!r}")
    return shim_source.split(SHIM_MARKER, 1)[1].strip("\n") + "\n"


def support_module(base_source, shim_source):
    """`_upstream.py`: the project's base class module verbatim, then the upstream glue."""
    return (f'"""Support code for the FGMix package in an upstream DomainBed checkout: this\n'
            f'project\'s `Algorithm` base class (domainbed/algorithms/base.py), then the glue\n'
            f'of patches/plugin_shim.py."""\n'
            f"# ---- domainbed/algorithms/base.py ----\n{base_source.rstrip()}\n\n\n"
            f"# ---- patches/plugin_shim.py ----\n{_shim_code(shim_source)}")


def _verbatim_copy(source_text, label):
    """A lib module's text as it is, refused if it imports domainbed."""
    tree = ast.parse(source_text)
    for node in ast.walk(tree):
        module = getattr(node, "module", None) or ""
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if module.startswith("domainbed") or any(n.startswith("domainbed") for n in names):
            raise CodegenError(f"{label}:{node.lineno} imports domainbed; the plug-in copies "
                               f"it verbatim, so it may import only torch")
    return source_text


# -- the whole package -------------------------------------------------------------------------
def _header(sources, package_hash, content):
    return (f"{GENERATED_MARK}: do not edit. Regenerate with `python patches/apply_fgmix.py "
            f"CHECKOUT`\n"
            f"# (domainbed-fgmix project), which installs FGMix in an upstream DomainBed "
            f"checkout.\n"
            f"# Source: {sources}\n"
            f"# Package sha256={package_hash}\n"
            f"# Content sha256={sha256_text(content)}\n")


def generate_package(source=FGMIX_SOURCE, per_sample_path=PER_SAMPLE_SOURCE,
                     shim_path=SHIM_SOURCE, base_path=BASE_SOURCE, rho_ball_path=RHO_BALL_SOURCE):
    """({checkout path: text} of the files of `domainbed/fgmix/`, registered class names in
    the order importing the package registers them)."""
    texts = read_sources(source)
    origin = pathlib.Path(source)
    trees = {}
    for name, text in texts.items():
        filename = (origin / f"{name}.py") if origin.is_dir() else origin
        trees[name] = ast.parse(text, filename=str(filename))
    order = module_order(trees)
    inputs = {f"{_relative(origin)}/{n}.py" if origin.is_dir() else _relative(origin): t
              for n, t in sorted(texts.items())}
    support_inputs = {_relative(path): pathlib.Path(path).read_text(encoding="utf-8")
                      for path in (base_path, shim_path, per_sample_path, rho_ball_path)}
    package_hash = sha256_text("".join(f"{p}\n{t}" for p, t in {**inputs, **support_inputs}
                                       .items()))
    contents = {}
    for name in order:
        label = next(p for p in inputs if p.endswith(f"/{name}.py")) if origin.is_dir() \
            else _relative(origin)
        contents[f"{name}.py"] = (label, translate_module(texts[name], label))
    names = [cls for module in order for cls in _registered_classes(trees[module])]
    if not names:
        raise CodegenError("no class is decorated with @register_algorithm")
    base_text, shim_text, per_sample_text, rho_ball_text = support_inputs.values()
    contents[f"{SUPPORT_MODULE}.py"] = (
        f"{_relative(base_path)} + {_relative(shim_path)}", support_module(base_text, shim_text))
    for name, path, text in (("per_sample", per_sample_path, per_sample_text),
                             ("rho_ball", rho_ball_path, rho_ball_text)):
        contents[f"{COPIES[name]}.py"] = (_relative(path),
                                              _verbatim_copy(text, _relative(path)))
    files = {f"{PACKAGE_DIR}/{filename}": _header(label, package_hash, content) + content
             for filename, (label, content) in sorted(contents.items())}
    return files, names


def split_header(text):
    """(header, content) of a generated file."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[:HEADER_LINES]), "".join(lines[HEADER_LINES:])


def is_generated(text):
    return text is not None and text.startswith(GENERATED_MARK)


def content_hash_matches(text):
    """False when a generated file was edited after generation."""
    header, content = split_header(text)
    return f"# Content sha256={sha256_text(content)}\n" in header
