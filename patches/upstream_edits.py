"""The edits the FGMix patch makes to an upstream DomainBed checkout (b93c22a layout).

Only whole lines are added, each group between a begin and an end marker line, so that
removing the marked blocks gives back the original file byte for byte. Re-applying starts
from that original, which makes the patch idempotent and lets it update itself when
the FGMix package changes:

- `domainbed/algorithms.py`: after the `ALGORITHMS = [...]` list, import the package's
  classes (upstream's `get_algorithm_class` looks names up in `globals()`) and extend the list;
- `domainbed/hparams_registry.py`: before `_hparams`'s final `return`, hand the package's
  algorithms to its support module's `declare_hparams`, which calls upstream's `_hparam`
  closure (the same per-name seeded draws as this project's registry).
"""
import ast
import pathlib

BEGIN = "# >>> FGMix plug-in: added by patches/apply_fgmix.py (domainbed-fgmix); rerun it, do not edit"
END = "# <<< FGMix plug-in"

ALGORITHMS_PATH = "domainbed/algorithms.py"
HPARAMS_PATH = "domainbed/hparams_registry.py"
REQUIRED_PATHS = (ALGORITHMS_PATH, HPARAMS_PATH, "domainbed/networks.py", "domainbed/lib/misc.py")


class UnrecognisedTree(ValueError):
    """The directory is not an upstream DomainBed checkout the patch knows how to edit."""


def check_layout(root):
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UnrecognisedTree(f"{root} is not a directory")
    missing = [p for p in REQUIRED_PATHS if not (root / p).is_file()]
    if missing:
        raise UnrecognisedTree(f"{root} is not an upstream DomainBed checkout: missing "
                               f"{', '.join(missing)}")


# -- marker blocks --------------------------------------------------------------------------
def strip_blocks(text, path):
    """`text` without the marked blocks (the file as it was before the patch)."""
    kept, inside = [], False
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        marker = line.strip()
        if marker.startswith(BEGIN):
            if inside:
                raise UnrecognisedTree(f"{path}:{number}: FGMix block opened twice; "
                                       f"restore the file from git and rerun")
            inside = True
        elif marker == END:
            if not inside:
                raise UnrecognisedTree(f"{path}:{number}: FGMix block end without a begin")
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise UnrecognisedTree(f"{path}: FGMix block not closed; restore the file from git")
    return "".join(kept)


def _block(indent, body_lines, like):
    """The marked block, with the line endings of the file it goes in (`like`)."""
    newline = "\r\n" if "\r\n" in like else "\n"
    lines = [BEGIN] + list(body_lines) + [END]
    return "".join(indent + line + newline for line in lines)


def _insert_before(text, line_number, block):
    """Insert `block` before 1-based line `line_number` of `text`."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n") and line_number > len(lines):
        lines[-1] += "\n"  # appending after a last line without newline (never upstream's case)
    return "".join(lines[:line_number - 1]) + block + "".join(lines[line_number - 1:])


def _parse(text, path):
    try:
        return ast.parse(text)
    except SyntaxError as error:
        raise UnrecognisedTree(f"{path} does not parse as Python ({error.msg}, line {error.lineno})")


# -- algorithms.py --------------------------------------------------------------------------
def _algorithms_list(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and any(
                isinstance(t, ast.Name) and t.id == "ALGORITHMS" for t in node.targets):
            return node
    return None


def patch_algorithms(original, names, package):
    """algorithms.py with the plug-in's classes imported and listed in ALGORITHMS."""
    node = _algorithms_list(_parse(original, ALGORITHMS_PATH))
    if node is None:
        raise UnrecognisedTree(f"{ALGORITHMS_PATH} has no module-level `ALGORITHMS = [...]` list")
    listed = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    clashes = sorted(listed & set(names))
    if clashes:
        raise UnrecognisedTree(f"{ALGORITHMS_PATH} already lists {', '.join(clashes)}; "
                               f"this checkout has its own version, refusing to shadow it")
    block = _block("", [
        f"from domainbed.{package} import {', '.join(names)}  # noqa: E402",
        f"ALGORITHMS += {names!r}",
    ], original)
    return _insert_before(original, node.end_lineno + 1, block)


# -- hparams_registry.py --------------------------------------------------------------------
def _hparams_function(tree):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "_hparams":
            return node
    raise UnrecognisedTree(f"{HPARAMS_PATH} has no module-level `def _hparams(`")


def _declare_closure(function):
    for node in function.body:
        if isinstance(node, ast.FunctionDef) and node.name == "_hparam":
            return node
    raise UnrecognisedTree(f"{HPARAMS_PATH}: `_hparams` defines no `_hparam(name, default, "
                           f"random_fn)` closure")


def patch_hparams_registry(original, names, package, support_module):
    """hparams_registry.py whose `_hparams` declares the plug-in algorithms' hparams."""
    function = _hparams_function(_parse(original, HPARAMS_PATH))
    _declare_closure(function)
    final = function.body[-1]
    if not isinstance(final, ast.Return):
        raise UnrecognisedTree(f"{HPARAMS_PATH}: `_hparams` does not end with a return statement")
    positional = [a.arg for a in function.args.args]
    if len(positional) < 2:
        raise UnrecognisedTree(f"{HPARAMS_PATH}: expected `_hparams(algorithm, dataset, "
                               f"random_seed)`, got ({', '.join(positional)})")
    algorithm, dataset = positional[:2]
    indent = " " * final.col_offset
    block = _block(indent, [
        f"if {algorithm} in {names!r}:",
        f"    from domainbed.{package} import {support_module}",
        f"    {support_module}.declare_hparams({algorithm}, _hparam, {dataset})",
    ], original)
    return _insert_before(original, final.lineno, block)
