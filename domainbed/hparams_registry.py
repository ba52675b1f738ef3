"""Hyperparameters: defaults and the per-name seeded random search of upstream DomainBed.

Every hparam draws from its own stream `RandomState(seed_hash(random_seed, name))`, one
draw each, so a value depends only on (seed, name, distribution): declaring another
hparam, or adding an algorithm, never changes anybody's draws. Values are native Python
types (JSON-safe). Algorithm-specific entries are declared next to each algorithm class
(`declare_hparams`); the unconditional and dataset-dependent ones live here.
"""
import numpy as np

from domainbed.lib import misc, validation

# Upstream's list; datasets of ours declare SMALL_IMAGES = True on their class instead.
SMALL_IMAGES = ["Debug28", "RotatedMNIST", "ColoredMNIST"]


def _dataset_flag(dataset, flag):
    """A boolean class attribute of a registered dataset (False for unknown names)."""
    from domainbed import datasets

    try:
        return bool(getattr(datasets.get_dataset_class(dataset), flag, False))
    except NotImplementedError:
        return False


def _is_small_images(dataset):
    return dataset in SMALL_IMAGES or _dataset_flag(dataset, "SMALL_IMAGES")


def _dataset_class(dataset):
    """The registered dataset class, or None for an unknown name."""
    from domainbed import datasets

    try:
        return datasets.get_dataset_class(dataset)
    except NotImplementedError:
        return None


def _has_vector_inputs(dataset_class):
    shape = getattr(dataset_class, "INPUT_SHAPE", None)
    return shape is not None and len(shape) == 1


def _hparams(algorithm, dataset, random_seed):
    """name -> (default value, random value) for this algorithm and dataset."""
    hparams = {}

    def _hparam(name, default_val, random_val_fn):
        """Declare one hparam; its random value comes from a fresh, name-seeded stream."""
        assert name not in hparams, f"hparam {name!r} declared twice"
        random_state = np.random.RandomState(misc.seed_hash(random_seed, name))
        hparams[name] = (misc.to_native(default_val), misc.to_native(random_val_fn(random_state)))

    # Unconditional hparams.
    _hparam("data_augmentation", True, lambda r: True)
    _hparam("resnet18", False, lambda r: False)
    _hparam("resnet50_augmix", True, lambda r: True)
    _hparam("dinov2", False, lambda r: False)
    _hparam("vit", False, lambda r: False)
    _hparam("vit_attn_tune", False, lambda r: False)
    _hparam("freeze_bn", False, lambda r: False)
    _hparam("lars", False, lambda r: False)
    _hparam("linear_steps", 500, lambda r: 500)
    _hparam("resnet_dropout", 0.0, lambda r: r.choice([0.0, 0.1, 0.5]))
    _hparam("vit_dropout", 0.0, lambda r: r.choice([0.0, 0.1, 0.5]))
    _hparam("class_balanced", False, lambda r: False)
    # TODO in upstream too: nonlinear classifiers are disabled for reproducibility.
    _hparam("nonlinear_classifier", False, lambda r: bool(r.choice([False, False])))
    # This fork: train image networks from scratch when ImageNet weights are unavailable.
    _hparam("pretrained", True, lambda r: True)

    # Algorithm-specific hparams, declared next to the algorithm. A wrapped name
    # ("ERM+SWAD") declares its algorithm's and then the wrapper's own; everything below
    # depends on the algorithm it trains ("ERM").
    from domainbed.algorithms import get_algorithm_class
    from domainbed.algorithms.registry import base_algorithm_name

    get_algorithm_class(algorithm).declare_hparams(_hparam, dataset)
    algorithm = base_algorithm_name(algorithm)

    # Ours: dataset-level hparams, declared by the dataset class (a no-op for upstream's).
    dataset_class = _dataset_class(dataset)
    if dataset_class is not None:
        dataset_class.declare_hparams(_hparam, algorithm)

    def _generic(name, default_val, random_val_fn):
        """A generic dataset-dependent hparam, unless the dataset declared its own."""
        if name not in hparams:
            _hparam(name, default_val, random_val_fn)

    # Dataset-dependent hparams (some also depend on the algorithm, as upstream).
    small = _is_small_images(dataset)
    if small:
        if algorithm == "ADRMX":
            _generic("lr", 3e-3, lambda r: r.choice([5e-4, 1e-3, 2e-3, 3e-3]))
        _generic("lr", 1e-3, lambda r: 10**r.uniform(-4.5, -2.5))
        _generic("weight_decay", 0.0, lambda r: 0.0)
        _generic("batch_size", 64, lambda r: int(2**r.uniform(3, 9)))
    else:
        if algorithm == "ADRMX":
            _generic("lr", 3e-5, lambda r: r.choice([2e-5, 3e-5, 4e-5, 5e-5]))
        _generic("lr", 5e-5, lambda r: 10**r.uniform(-5, -3.5))
        _generic("weight_decay", 0.0, lambda r: 10**r.uniform(-6, -2))
        if algorithm == "ARM":
            _generic("batch_size", 8, lambda r: 8)
        elif algorithm == "RDM":
            if dataset in ["DomainNet", "TerraIncognita"]:
                _generic("batch_size", 40, lambda r: int(r.uniform(30, 60)))
            else:
                _generic("batch_size", 88, lambda r: int(r.uniform(70, 100)))
        elif dataset == "DomainNet":
            _generic("batch_size", 32, lambda r: int(2**r.uniform(3, 5)))
        else:
            _generic("batch_size", 32, lambda r: int(2**r.uniform(3, 5.5)))

    if _has_vector_inputs(dataset_class):
        # Ours: vector inputs (no upstream dataset has them). "linear" = identity featurizer,
        # i.e. a linear model on the inputs; "mlp" = upstream's MLP, whose mlp_* hparams are
        # declared here unless the algorithm declares them (DANN, CDANN: same distributions).
        _hparam("vector_featurizer", "linear", lambda r: "linear")
        _generic("mlp_width", 256, lambda r: int(2**r.uniform(6, 10)))
        _generic("mlp_depth", 3, lambda r: int(r.choice([3, 4, 5])))
        _generic("mlp_dropout", 0.0, lambda r: r.choice([0.0, 0.1, 0.5]))

    if _dataset_flag(dataset, "CPU_SIZED"):
        # Ours: the offline datasets train a CPU-sized network, so that the main job's sweep
        # (random search, trials, steps to convergence) fits a laptop: by default an MLP on
        # 14x14-pooled inputs ("mlp", about 40x cheaper per step than the CNN below), or
        # upstream's MNIST CNN at a quarter width ("cnn", width `mnist_cnn_width`).
        _hparam("offline_net", "mlp", lambda r: "mlp")
        _hparam("offline_mlp_width", 128, lambda r: 128)
        _hparam("mnist_cnn_width", 16, lambda r: 16)

    if algorithm in ["DANN", "CDANN"]:
        if small:
            _generic("lr_g", 1e-3, lambda r: 10**r.uniform(-4.5, -2.5))
            _generic("lr_d", 1e-3, lambda r: 10**r.uniform(-4.5, -2.5))
            _generic("weight_decay_g", 0.0, lambda r: 0.0)
        else:
            _generic("lr_g", 5e-5, lambda r: 10**r.uniform(-5, -3.5))
            _generic("lr_d", 5e-5, lambda r: 10**r.uniform(-5, -3.5))
            _generic("weight_decay_g", 0.0, lambda r: 10**r.uniform(-6, -2))

    if algorithm == "URM":
        if small:
            _hparam("urm_discriminator_lr", 1e-3, lambda r: 10**r.uniform(-5.5, -3.5))
        else:
            _hparam("urm_discriminator_lr", 5e-5, lambda r: 10**r.uniform(-6, -4.5))

    return hparams


def default_hparams(algorithm, dataset):
    return {name: default for name, (default, _) in _hparams(algorithm, dataset, 0).items()}


def random_hparams(algorithm, dataset, seed):
    return {name: random for name, (_, random) in _hparams(algorithm, dataset, seed).items()}


class HparamError(ValueError):
    """An override refused: unknown name, wrong type or value out of range (one line)."""


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
