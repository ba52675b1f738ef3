"""The algorithm registry: names, their order, and lazy class lookup (torch-free).

An algorithm is registered once, with `@register_algorithm` on its class, in its family's
module under `domainbed/algorithms/`. `ALGORITHMS` is derived from those decorators by
reading the modules' source (no import), so `collect_results` and `sweep status` can order
rows without importing torch. Classes are imported only when asked for.

Out-of-tree algorithms: put the module(s) defining them (with `@register_algorithm`) in the
environment variable DOMAINBED_PLUGINS (comma-separated import paths). They are imported
before any lookup, also inside every `train.py` a sweep launches.
"""
import ast
import importlib
import os
import pkgutil

from domainbed.lib.registry import Registry

# Upstream's ALGORITHMS order (facebookresearch/DomainBed b93c22a). Tables order rows by it
# so that ours can be diffed against upstream's; names we add follow, in module order.
UPSTREAM_ORDER = (
    "ERM", "ERMPlusPlus", "Fish", "IRM", "GroupDRO", "Mixup", "MLDG", "CORAL", "MMD", "DANN",
    "CDANN", "MTL", "SagNet", "ARM", "VREx", "RSC", "SD", "ANDMask", "SANDMask", "IGA",
    "SelfReg", "Fishr", "TRM", "IB_ERM", "IB_IRM", "CAD", "CondCAD", "Transfer",
    "CausIRL_CORAL", "CausIRL_MMD", "EQRM", "RDM", "ADRMX", "URM",
)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_FAMILIES = {"base", "registry"}
_REGISTRY = Registry("algorithm")


def register_algorithm(cls):
    """Class decorator: make `cls` available under its class name."""
    return _REGISTRY.register(cls)


def family_modules():
    """The algorithm family modules shipped in this package, in name order."""
    return [m.name for m in pkgutil.iter_modules([_PACKAGE_DIR])
            if m.name not in _NOT_FAMILIES and not m.name.startswith("_")]


def _decorated_class_names(path):
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for deco in node.decorator_list:
                deco_name = deco.attr if isinstance(deco, ast.Attribute) else getattr(deco, "id", None)
                if deco_name == "register_algorithm":
                    names.append(node.name)
    return names


def _declared_names():
    names = []
    for module in family_modules():
        names += _decorated_class_names(os.path.join(_PACKAGE_DIR, module + ".py"))
    return names


def _import_plugins():
    for module in filter(None, os.environ.get("DOMAINBED_PLUGINS", "").split(",")):
        importlib.import_module(module.strip())


def algorithm_names():
    """Every registered name: upstream's in upstream order, then ours, then plug-ins."""
    _import_plugins()
    names = _declared_names()
    names += [n for n in _REGISTRY.names() if n not in names]
    upstream_rank = {name: i for i, name in enumerate(UPSTREAM_ORDER)}
    ours = [n for n in names if n not in upstream_rank]
    return sorted((n for n in names if n in upstream_rank), key=upstream_rank.get) + ours


def load_all():
    """Import every family module (and plug-in), so that every class is registered."""
    _import_plugins()
    for module in family_modules():
        importlib.import_module(f"domainbed.algorithms.{module}")


def get_algorithm_class(algorithm_name):
    """The class registered as `algorithm_name`; a "did you mean" error otherwise."""
    if algorithm_name not in _REGISTRY:
        load_all()
    return _REGISTRY.get(algorithm_name)
