"""Registries: name -> object tables, and the plug-ins that add to them (torch-free).

One mechanism serves algorithms, averaging wrappers, datasets and command launchers:

* A thing is registered once, by the registry's decorator on its definition
  (`@register_algorithm`, `@register_wrapper`, `@register_dataset`,
  `@register_launcher("local")`). No list of names is kept by hand.
* Listing names imports nothing: the registry reads the source of its package's modules
  (its sub-packages' too) for that decorator (`ast`, no import), so `sweep` and
  `collect_results` list algorithms without importing torch. Upstream's names come
  first, in upstream's order, then ours in module order, then the plug-ins'.
* Looking a name up imports the one module that defines it (then torch, for an algorithm)
  and returns what its decorator registered; an unknown name is an `UnknownNameError`
  with "did you mean".
* Plug-ins: the modules named in DOMAINBED_PLUGINS (comma-separated import paths) are
  imported by `load_plugins()`, which every registry calls before it lists or looks up a
  name; what they register follows the package's own names.

A `Registry` is also a mapping (`REGISTRY[name]`, `REGISTRY[name] = fn`, `in`, iteration
over the names), as upstream's `command_launchers.REGISTRY` dict.
"""
import ast
import importlib
import importlib.util
import os
import sys
from collections.abc import MutableMapping

from domainbed import settings
from domainbed.errors import EXIT_FAILURE, BadInput, DomainBedError
from domainbed.lib.misc import did_you_mean

PLUGINS_VARIABLE = settings.PLUGINS.name


class UnknownNameError(BadInput, NotImplementedError, KeyError):
    """Raised for an unknown registered name, with "did you mean" (exit 2). A
    NotImplementedError like upstream's, and a KeyError so `REGISTRY[name]` callers keep
    working."""

    def __str__(self):
        return self.args[0] if self.args else ""


class PluginError(DomainBedError, ImportError):
    """A module named in DOMAINBED_PLUGINS cannot be imported (exit 1; train.py and sweep
    refuse it as bad input, exit 2)."""

    exit_code = EXIT_FAILURE


def plugin_modules():
    """The import paths listed in DOMAINBED_PLUGINS, in order."""
    return settings.plugins()


def load_plugins():
    """Import the modules named in DOMAINBED_PLUGINS (each once; they register algorithms,
    datasets and launchers on import). A PluginError when one cannot be imported."""
    for module in plugin_modules():
        if module in sys.modules:
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise PluginError(f"{PLUGINS_VARIABLE}: cannot import {module!r} ({error}); fix "
                              "the module path or unset the variable") from error


def declared_names(path, decorator):
    """[name, ...] of the top-level classes and functions in the source file `path` that
    carry `@decorator` (the name: the decorator's first string argument, or the
    definition's own name). Reads the file; imports nothing."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    names = []
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            target_name = target.attr if isinstance(target, ast.Attribute) else getattr(
                target, "id", None)
            if target_name != decorator:
                continue
            name = node.name
            if call and call.args and isinstance(call.args[0], ast.Constant):
                name = call.args[0].value
            names.append(name)
    return names


def package_modules(folder):
    """The dotted names (relative to the package in `folder`) of its public modules, in
    listing order: its modules and sub-packages by name, a sub-package's own modules (by
    name, recursively) in its place; so a module split into a package (`fgmix.py` into
    `fgmix/`) lists its names where it did. Names starting with `_` are private."""
    entries = sorted(
        (entry[:-3] if entry.endswith(".py") else entry, entry)
        for entry in os.listdir(folder) if not entry.startswith(("_", "."))
        and (entry.endswith(".py")
             or os.path.isfile(os.path.join(folder, entry, "__init__.py"))))
    modules = []
    for name, entry in entries:
        if entry.endswith(".py"):
            modules.append(name)
        else:
            modules += [f"{name}.{module}"
                        for module in package_modules(os.path.join(folder, entry))]
    return modules


class Registry(MutableMapping):
    """The `kind` things registered by `@decorator` in the modules of `package`.

    package: the dotted name of the package holding the defining modules; modules: their
    names in it (dotted for a sub-package's), in listing order (default: `package_modules`);
    upstream_order: upstream's names, listed first and in that order."""

    def __init__(self, kind, package, decorator, modules=None, upstream_order=()):
        self.kind = kind
        self.package = package
        self.decorator = decorator
        self._modules = modules
        self._upstream_rank = {name: i for i, name in enumerate(upstream_order)}
        self._entries = {}
        self._declared = None     # name -> defining module, read from the source once

    # -- registration ----------------------------------------------------------------
    def register(self, obj=None, *, name=None):
        """Use as `@registry.register` or `registry.register(obj, name=...)`."""
        def add(thing):
            key = name or thing.__name__
            if key in self._entries and self._entries[key] is not thing:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = thing
            return thing

        return add if obj is None else add(obj)

    def __setitem__(self, name, obj):
        self.register(obj, name=name)

    def __delitem__(self, name):
        if name in self.declared():
            raise ValueError(f"{self.kind} {name!r} is defined in the package; it cannot be "
                             "unregistered")
        del self._entries[name]

    # -- names, without imports ------------------------------------------------------------
    def _package_dir(self):
        spec = importlib.util.find_spec(self.package)
        return list(spec.submodule_search_locations)[0]

    def declared(self):
        """{name: module} of the package's own entries, read off the source (cached)."""
        if self._declared is None:
            folder = self._package_dir()
            modules = self._modules
            if modules is None:
                modules = package_modules(folder)
            declared = {}
            for module in modules:
                path = os.path.join(folder, *module.split(".")) + ".py"
                for name in declared_names(path, self.decorator):
                    declared.setdefault(name, f"{self.package}.{module}")
            self._declared = declared
        return self._declared

    def names(self, plugins=True):
        """Every name: upstream's in upstream's order, then the package's, then plug-ins'
        (`plugins` False: without loading them)."""
        if plugins:
            load_plugins()
        names = list(self.declared())
        names += [name for name in self._entries if name not in names]
        rank = self._upstream_rank
        return (sorted((n for n in names if n in rank), key=rank.get)
                + [n for n in names if n not in rank])

    def __contains__(self, name):
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self.names())

    # -- lookup ------------------------------------------------------------------------
    def __getitem__(self, name):
        """The thing registered as `name` (its module imported on first use); an
        UnknownNameError with "did you mean" otherwise."""
        load_plugins()
        if name not in self._entries and name in self.declared():
            importlib.import_module(self.declared()[name])
        if name not in self._entries:
            known = self.names()
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{did_you_mean(name, known)} "
                                   f"Known: {', '.join(known)}.")
        return self._entries[name]

    def load_all(self):
        """Import every defining module (and plug-in): everything is registered."""
        load_plugins()
        for module in sorted(set(self.declared().values())):
            importlib.import_module(module)
