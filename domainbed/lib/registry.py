"""A name -> object registry with "did you mean" errors (torch-free).

A thing is registered once, with a decorator, where it is defined; every list of names is
derived from the registry rather than kept by hand.
"""
from domainbed.lib.misc import did_you_mean


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, obj=None, *, name=None):
        """Use as `@registry.register` or `registry.register(obj, name=...)`."""
        def add(thing):
            key = name or thing.__name__
            if key in self._entries and self._entries[key] is not thing:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = thing
            return thing

        return add if obj is None else add(obj)

    def get(self, name):
        if name not in self._entries:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, self._entries)} "
                f"Known: {', '.join(self._entries)}."
            )
        return self._entries[name]

    def __contains__(self, name):
        return name in self._entries

    def names(self):
        return list(self._entries)


class UnknownNameError(NotImplementedError, KeyError):
    """Raised for an unknown registered name. A NotImplementedError like upstream's, and a
    KeyError so `REGISTRY[name]` callers keep working."""

    def __str__(self):
        return self.args[0] if self.args else ""
