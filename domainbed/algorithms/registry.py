"""The algorithm registry: names, their order, and lazy class lookup (torch-free).

An algorithm is registered once, with `@register_algorithm` on its class, in its family's
module under `domainbed/algorithms/`. Names are listed from those decorators without an
import (lib/registry.py, the mechanism every registry shares), so `collect_results` and
`sweep status` order rows without importing torch; a class is imported when asked for.

Out-of-tree algorithms: put the module(s) defining them (with `@register_algorithm`) in the
environment variable DOMAINBED_PLUGINS (comma-separated import paths). They are imported
before any lookup, also inside every `train.py` a sweep launches.

Wrapped names: `<algorithm>+<wrapper>` (e.g. `ERM+SWAD`, `FGMix+MA`) is the registered
algorithm trained as always, with the weight-averaging wrapper registered under that
suffix (`@register_wrapper`, in `weight_averaging.py`). Such names are not in `ALGORITHMS`
(a sweep's default list stays the plain algorithms); `check_algorithm_name` and
`get_algorithm_class` accept them, and the class is composed once per name.
"""
from domainbed.lib.misc import did_you_mean
from domainbed.lib.registry import Registry, UnknownNameError

# Upstream's ALGORITHMS order (facebookresearch/DomainBed b93c22a). Tables order rows by it
# so that ours can be diffed against upstream's; names we add follow, in module order.
UPSTREAM_ORDER = (
    "ERM", "ERMPlusPlus", "Fish", "IRM", "GroupDRO", "Mixup", "MLDG", "CORAL", "MMD", "DANN",
    "CDANN", "MTL", "SagNet", "ARM", "VREx", "RSC", "SD", "ANDMask", "SANDMask", "IGA",
    "SelfReg", "Fishr", "TRM", "IB_ERM", "IB_IRM", "CAD", "CondCAD", "Transfer",
    "CausIRL_CORAL", "CausIRL_MMD", "EQRM", "RDM", "ADRMX", "URM",
)

ALGORITHM_REGISTRY = Registry("algorithm", "domainbed.algorithms", "register_algorithm",
                              upstream_order=UPSTREAM_ORDER)
WRAPPER_REGISTRY = Registry("averaging wrapper", "domainbed.algorithms", "register_wrapper")
_COMPOSED = {}          # "ERM+SWAD" -> the class composed for it (one per name)
WRAPPER_SEPARATOR = "+"


def register_algorithm(cls):
    """Class decorator: make `cls` available under its class name."""
    return ALGORITHM_REGISTRY.register(cls)


def register_wrapper(cls):
    """Class decorator for a weight-averaging wrapper: `<algorithm>+<class name>` becomes
    an algorithm name for every registered algorithm."""
    return WRAPPER_REGISTRY.register(cls)


def algorithm_names():
    """Every registered name: upstream's in upstream order, then ours, then plug-ins."""
    return ALGORITHM_REGISTRY.names()


def load_all():
    """Import every family module (and plug-in), so that every class is registered."""
    ALGORITHM_REGISTRY.load_all()


def wrapper_names():
    """The averaging wrappers' suffixes (`SWAD`, `MA`, plug-ins'), without importing torch."""
    return WRAPPER_REGISTRY.names()


def split_algorithm_name(algorithm_name):
    """("ERM", "SWAD") for "ERM+SWAD"; (name, None) for a name without a wrapper suffix."""
    base, separator, wrapper = str(algorithm_name).rpartition(WRAPPER_SEPARATOR)
    if not separator:
        return algorithm_name, None
    return base, wrapper


def base_algorithm_name(algorithm_name):
    """The registered algorithm a (possibly wrapped) name trains: "ERM" for "ERM+SWAD"."""
    return split_algorithm_name(algorithm_name)[0]


def check_algorithm_name(algorithm_name):
    """Raise UnknownNameError (a NotImplementedError, with "did you mean") unless the name
    is a registered algorithm or `<registered algorithm>+<wrapper>`. Torch-free."""
    base, wrapper = split_algorithm_name(algorithm_name)
    known = algorithm_names()
    if wrapper is not None:
        wrappers = wrapper_names()
        if wrapper not in wrappers:
            raise UnknownNameError(
                f"unknown averaging wrapper {wrapper!r} in algorithm {algorithm_name!r}."
                f"{did_you_mean(wrapper, wrappers)} Known: "
                f"{', '.join('<algorithm>' + WRAPPER_SEPARATOR + w for w in wrappers)}.")
        if WRAPPER_SEPARATOR in base:
            raise UnknownNameError(
                f"algorithm {algorithm_name!r}: averaging wrappers do not nest; use one "
                f"suffix, e.g. {split_algorithm_name(base)[0]}{WRAPPER_SEPARATOR}{wrapper}.")
    if base not in known:
        where = f" in {algorithm_name!r}" if wrapper is not None else ""
        raise UnknownNameError(f"unknown algorithm {base!r}{where}.{did_you_mean(base, known)} "
                               f"Known: {', '.join(known)}.")


def is_algorithm_name(algorithm_name):
    try:
        check_algorithm_name(algorithm_name)
    except UnknownNameError:
        return False
    return True


def get_algorithm_class(algorithm_name):
    """The class registered as `algorithm_name`, or for `X+WRAPPER` the wrapper composed
    with X's class (the same class object every time); a "did you mean" error otherwise."""
    base, wrapper = split_algorithm_name(algorithm_name)
    if wrapper is None:
        return ALGORITHM_REGISTRY[algorithm_name]
    if algorithm_name not in _COMPOSED:
        check_algorithm_name(algorithm_name)
        base_class = get_algorithm_class(base)
        _COMPOSED[algorithm_name] = WRAPPER_REGISTRY[wrapper].compose(base_class, algorithm_name)
    return _COMPOSED[algorithm_name]
