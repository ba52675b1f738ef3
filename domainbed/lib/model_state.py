"""What `model.pkl` holds of an algorithm: its weights and buffers, laid out as upstream's.

`checkpoint.pt` keeps the whole training state (`state_dict()` with every `_extra_state`:
optimizer moments, generators, counters) for resume. `model.pkl`'s `model_dict` is the
module's weights and buffers only, under upstream's keys, so that upstream's
`algorithm.load_state_dict(dump["model_dict"])` (strict) works with our files.

An algorithm whose module holds more than upstream's class of that name (TRM's registered
per-domain heads), or a buffer upstream builds empty (GroupDRO's `q`), says so in its own
`model_state_dict()`; this module calls it when it is there.
"""

EXTRA_STATE_KEY = "_extra_state"


def is_extra_state_key(key):
    """True for `_extra_state` and `<submodule>._extra_state` (training state, not weights)."""
    return key.rsplit(".", 1)[-1] == EXTRA_STATE_KEY


def weights_and_buffers(module, exclude_prefixes=()):
    """module.state_dict() without any `_extra_state` entry and without the keys that start
    with one of `exclude_prefixes` (tensors are the module's own, not copies)."""
    exclude_prefixes = tuple(exclude_prefixes)
    return {key: value for key, value in module.state_dict().items()
            if not is_extra_state_key(key)
            and not (exclude_prefixes and key.startswith(exclude_prefixes))}


def model_state_dict(algorithm):
    """The `model_dict` of `model.pkl`: the algorithm's own `model_state_dict()` when it
    defines one (layout differences, wrappers), else its weights and buffers."""
    own = getattr(algorithm, "model_state_dict", None)
    if callable(own):
        return own()
    return weights_and_buffers(algorithm)
