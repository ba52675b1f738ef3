"""Hyperparameters: defaults and the per-name seeded random search of upstream DomainBed.

Every hparam draws from its own stream `RandomState(seed_hash(random_seed, name))`, one
draw each, so a value depends only on (seed, name, distribution): declaring another
hparam, or adding an algorithm, never changes anybody's draws. Values are native Python
types (JSON-safe).

Each hparam is declared by its owner, with `hparam(name, default, random_fn)`:

1. here, the unconditional ones (the networks' and the training loop's);
2. the dataset class's own (`declare_hparams(hparam)`: e.g. the invariance unit tests'
   problem sizes and their lr, weight_decay and batch_size); they hold for every algorithm;
3. the algorithm class's (`declare_hparams(hparam, dataset)`, next to the class; a
   wrapped name `ERM+SWAD` declares ERM's, then SWAD's), told the dataset's facts
   (`datasets.base.DatasetFacts`: its name, `small_images`, its lr and weight_decay
   distributions) rather than testing dataset names; a name the dataset declared in 2 is
   left out;
4. the dataset class's defaults (`declare_default_hparams`: lr, weight_decay and
   batch_size by upstream's small-image rule, the MLP's sizes on vector inputs), for the
   names nobody declared.
"""
import numpy as np

from domainbed.errors import BadInput
from domainbed.lib import misc, validation


def _dataset_class(dataset):
    """The registered dataset class; the base class for an unknown name (upstream accepts
    any name and draws the large-image distributions for it)."""
    from domainbed import datasets

    try:
        return datasets.get_dataset_class(dataset)
    except NotImplementedError:
        return datasets.MultipleDomainDataset


def _hparams(algorithm, dataset, random_seed):
    """name -> (default value, random value) for this algorithm and dataset."""
    hparams = {}

    def _hparam(name, default_val, random_val_fn):
        """Declare one hparam; its random value comes from a fresh, name-seeded stream."""
        assert name not in hparams, f"hparam {name!r} declared twice"
        random_state = np.random.RandomState(misc.seed_hash(random_seed, name))
        hparams[name] = (misc.to_native(default_val), misc.to_native(random_val_fn(random_state)))

    # 1. Unconditional hparams, in upstream's order.
    _hparam("data_augmentation", True, lambda r: True)
    _hparam("resnet18", False, lambda r: False)
    _hparam("resnet50_augmix", True, lambda r: True)
    _hparam("dinov2", False, lambda r: False)
    _hparam("vit", False, lambda r: False)
    # Compatibility only: read by nothing here (upstream's ViT backbone, which this fork
    # does not build), declared so that records carry upstream's keys and draws.
    _hparam("vit_attn_tune", False, lambda r: False)
    _hparam("freeze_bn", False, lambda r: False)
    # Compatibility: upstream declares these for every algorithm although only ERM++ reads
    # them (`lars` must stay False); kept here so that every record has upstream's keys.
    _hparam("lars", False, lambda r: False)
    _hparam("linear_steps", 500, lambda r: 500)
    _hparam("resnet_dropout", 0.0, lambda r: r.choice([0.0, 0.1, 0.5]))
    # Compatibility only (upstream's ViT dropout, see vit_attn_tune): its draw is recorded.
    _hparam("vit_dropout", 0.0, lambda r: r.choice([0.0, 0.1, 0.5]))
    _hparam("class_balanced", False, lambda r: False)
    # TODO in upstream too: nonlinear classifiers are disabled for reproducibility.
    _hparam("nonlinear_classifier", False, lambda r: bool(r.choice([False, False])))
    # This fork: train image networks from scratch when ImageNet weights are unavailable.
    _hparam("pretrained", True, lambda r: True)

    from domainbed.algorithms import get_algorithm_class

    dataset_class = _dataset_class(dataset)
    unconditional = set(hparams)

    # 2. The dataset's own.
    dataset_class.declare_hparams(_hparam)
    datasets_own = set(hparams) - unconditional

    def _hparam_unless_in(names):
        """_hparam, leaving out a name that is in `names` (when it is called)."""
        def declare(name, default_val, random_val_fn):
            if name not in names:
                _hparam(name, default_val, random_val_fn)
        return declare

    # 3. The algorithm's, told the dataset's facts.
    get_algorithm_class(algorithm).declare_hparams(_hparam_unless_in(datasets_own),
                                                   dataset_class.hparam_facts(dataset))
    # 4. The dataset's defaults, where nobody declared the name.
    dataset_class.declare_default_hparams(_hparam_unless_in(hparams))
    return hparams


def default_hparams(algorithm, dataset):
    return {name: default for name, (default, _) in _hparams(algorithm, dataset, 0).items()}


def random_hparams(algorithm, dataset, seed):
    return {name: random for name, (_, random) in _hparams(algorithm, dataset, seed).items()}


class HparamError(BadInput, ValueError):
    """An override refused: unknown name, wrong type or value out of range (one line;
    exit 2)."""


def apply_overrides(hparams, overrides):
    """`hparams` updated with user overrides, refusing unknown names, wrong types and
    values out of range (non-finite numbers, lr <= 0, batch_size not a positive integer...;
    see lib/validation.py). `train.py` and `sweep launch` both check --hparams here.

    Any number is accepted for a number (JSON has one number type, and some hparams
    default to an int but draw floats); a bool is never accepted for a number, nor a
    number for a bool.
    """
    if not isinstance(overrides, dict):
        raise HparamError("hparams overrides must be a JSON object, e.g. '{\"lr\": 0.001}'.")
    updated = dict(hparams)
    for name, value in overrides.items():
        if name not in hparams:
            raise HparamError(
                f"unknown hparam {name!r} for this algorithm and dataset."
                f"{misc.did_you_mean(name, hparams)} Known: {', '.join(sorted(hparams))}.")
        expected = hparams[name]
        if not _same_kind(expected, value):
            raise HparamError(
                f"hparam {name!r} expects {type(expected).__name__} (like {expected!r}), "
                f"got {type(value).__name__} {value!r}.")
        try:
            validation.check_hparam_value(name, value)
        except validation.ValidationError as e:
            raise HparamError(str(e)) from None
        updated[name] = value
    return updated


def _same_kind(expected, value):
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool)
    if isinstance(expected, (int, float)):
        # Numbers are interchangeable: some hparams default to an int and draw floats.
        return isinstance(value, (int, float))
    if expected is None:
        return True
    return isinstance(value, type(expected))
