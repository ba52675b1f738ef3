"""`Q`: a small query language over lists of result records (torch-free).

Semantics follow upstream DomainBed because model selection relies on them:
* a selector is a key (`"a"`), a nested key (`"a.b"`), a tuple of selectors (`"a,b"`) or a function;
* `group` returns `(value, Q)` pairs sorted by value, unhashable values keyed by their JSON;
* `argmax` keeps the first maximal element; `sorted` is stable and treats NaN keys as -inf;
* `unique` keeps first-seen order; `std` is the population std.
"""
import json
import math
import warnings

import numpy as np


def make_selector_fn(selector):
    """A function record -> value for a selector string (or the function itself)."""
    if isinstance(selector, str):
        if "," in selector:
            parts = [make_selector_fn(part.strip()) for part in selector.split(",")]
            return lambda obj: tuple(part(obj) for part in parts)
        if "." in selector:
            keys = selector.split(".")

            def nested(obj):
                for key in keys:
                    obj = obj[key]
                return obj
            return nested
        key = selector.strip()
        return lambda obj: obj[key]
    if callable(selector):
        return selector
    raise TypeError(f"a selector must be a string or a function, not {type(selector).__name__}")


def hashable(obj):
    """`obj` itself when hashable, else its sorted JSON (so dicts and lists can be grouped)."""
    try:
        hash(obj)
        return obj
    except TypeError:
        return json.dumps({"_": obj}, sort_keys=True)


def _nan_as_neg_inf(value):
    if isinstance(value, float) and math.isnan(value):
        return float("-inf")
    return value


class Q:
    """A list of records with query helpers; every list-returning helper returns a Q."""

    def __init__(self, list_):
        self._list = list(list_)

    # -- list behaviour
    def __len__(self):
        return len(self._list)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return Q(self._list[key])
        return self._list[key]

    def __iter__(self):
        return iter(self._list)

    def __eq__(self, other):
        if isinstance(other, Q):
            return self._list == other._list
        return self._list == other

    def __add__(self, other):
        return Q(self._list + list(other))

    def __str__(self):
        return str(self._list)

    def __repr__(self):
        return repr(self._list)

    def _append(self, item):
        self._list.append(item)

    # -- grouping and mapping
    def group(self, selector):
        """[(value, Q of records with that value)], sorted by value."""
        selector_fn = make_selector_fn(selector)
        groups = {}
        for record in self._list:
            value = selector_fn(record)
            key = hashable(value)
            if key not in groups:
                groups[key] = (value, Q([]))
            groups[key][1]._append(record)
        return Q([groups[key] for key in sorted(groups)])

    def group_map(self, selector, fn):
        """`group` then `fn(value, group)` for each group."""
        return Q([fn(value, group) for value, group in self.group(selector)])

    def map(self, fn):
        """Apply `fn` to each element; tuples are unpacked when `fn` takes several arguments."""
        if _takes_several_arguments(fn):
            return Q([fn(*item) for item in self._list])
        return Q([fn(item) for item in self._list])

    def select(self, selector):
        selector_fn = make_selector_fn(selector)
        return Q([selector_fn(record) for record in self._list])

    # -- reductions
    def min(self):
        return min(self._list)

    def max(self):
        return max(self._list)

    def sum(self):
        return sum(self._list)

    def len(self):
        return len(self._list)

    def mean(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(np.mean(self._list))

    def std(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(np.std(self._list))

    def mean_std(self):
        return (self.mean(), self.std())

    def argmax(self, selector):
        """The first element with the largest selected value."""
        selector_fn = make_selector_fn(selector)
        return max(self._list, key=selector_fn)

    # -- filters and reshaping
    def filter(self, fn):
        return Q([item for item in self._list if fn(item)])

    def filter_equals(self, selector, value):
        """Records whose selected value equals `value` (use a tuple with a "a,b" selector)."""
        selector_fn = make_selector_fn(selector)
        return self.filter(lambda record: selector_fn(record) == value)

    def filter_not_none(self):
        return self.filter(lambda item: item is not None)

    def filter_not_nan(self):
        return self.filter(lambda item: not (isinstance(item, float) and math.isnan(item)))

    def flatten(self):
        return Q([item for sub in self._list for item in sub])

    def unique(self):
        seen = set()
        result = []
        for item in self._list:
            key = hashable(item)
            if key not in seen:
                seen.add(key)
                result.append(item)
        return Q(result)

    def sorted(self, key=None):
        """Stable sort; NaN keys sort as -inf (first)."""
        key_fn = key if key is not None else (lambda item: item)
        return Q(sorted(self._list, key=lambda item: _nan_as_neg_inf(key_fn(item))))


def _takes_several_arguments(fn):
    import inspect

    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature take one argument
        return False
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return len(positional) > 1 or any(p.kind == p.VAR_POSITIONAL for p in parameters)
