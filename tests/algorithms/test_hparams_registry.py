"""The hparams registry: upstream's per-name seeded draws, value for value (§5 fixtures)."""
import json

import pytest

from domainbed import algorithms, hparams_registry
from domainbed.lib.misc import seed_hash

UPSTREAM_FIXTURES = [
    # (algorithm, dataset, hparams_seed, trial_seed, expected subset)
    ("ERM", "VLCS", 1, 0, {"batch_size": 39, "lr": 2.7028930742148706e-05,
                           "weight_decay": 0.00044832883881609976, "resnet_dropout": 0.5,
                           "vit_dropout": 0.1}),
    ("ERM", "VLCS", 1, 1, {"batch_size": 8, "lr": 2.2352558725944602e-05,
                           "weight_decay": 1.9967320578799288e-06, "resnet_dropout": 0.5}),
    ("ERM", "VLCS", 2, 0, {"batch_size": 25, "lr": 5.6841898471378446e-05,
                           "weight_decay": 0.005100223533962902}),
    ("ERM", "RotatedMNIST", 1, 0, {"batch_size": 372, "lr": 0.00011906162909279594,
                                   "weight_decay": 0.0}),
    ("ERM", "ColoredMNIST", 2, 0, {"batch_size": 126, "lr": 0.0003207929136369226}),
    ("ERM", "RotatedMNIST", 1, 1, {"batch_size": 8, "lr": 9.242078636590432e-05}),
    ("ERM", "DomainNet", 1, 0, {"batch_size": 28, "lr": 2.7028930742148706e-05}),
    ("Mixup", "PACS", 1, 0, {"mixup_alpha": 0.6313491980790861}),
    ("Mixup", "PACS", 2, 0, {"mixup_alpha": 1.9979661236942134}),
    ("Mixup", "PACS", 1, 1, {"mixup_alpha": 0.8238026230521479}),
]


@pytest.mark.parametrize("algorithm, dataset, hp_seed, trial, expected", UPSTREAM_FIXTURES)
def test_random_hparams_match_upstream(algorithm, dataset, hp_seed, trial, expected):
    drawn = hparams_registry.random_hparams(algorithm, dataset, seed_hash(hp_seed, trial))
    for name, value in expected.items():
        assert drawn[name] == value, name


def test_irm_fixture():
    assert "IRM" in algorithms.ALGORITHMS
    drawn = hparams_registry.random_hparams("IRM", "ColoredMNIST", seed_hash(1, 0))
    assert drawn["irm_lambda"] == 65030.52212762795
    assert drawn["irm_penalty_anneal_iters"] == 2


@pytest.mark.parametrize("dataset, lr, batch_size", [("VLCS", 5e-5, 32), ("RotatedMNIST", 1e-3, 64)])
def test_defaults(dataset, lr, batch_size):
    hp = hparams_registry.default_hparams("ERM", dataset)
    assert hp["lr"] == lr and hp["batch_size"] == batch_size and hp["weight_decay"] == 0.0
    assert hp["resnet50_augmix"] is True and hp["nonlinear_classifier"] is False


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
@pytest.mark.parametrize("dataset", ["Debug28", "VLCS", "RotatedMNIST"])
def test_every_algorithm_is_deterministic_and_json_safe(algorithm, dataset):
    first = hparams_registry.random_hparams(algorithm, dataset, 0)
    second = hparams_registry.random_hparams(algorithm, dataset, 0)
    assert first == second
    json.dumps(first)
    json.dumps(hparams_registry.random_hparams(algorithm, dataset, seed_hash(3, 1)))


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
def test_shared_hparams_do_not_depend_on_the_algorithm(algorithm):
    """Per-name seeding: an algorithm's own entries never move anybody else's draws."""
    erm = hparams_registry.random_hparams("ERM", "VLCS", seed_hash(5, 2))
    other = hparams_registry.random_hparams(algorithm, "VLCS", seed_hash(5, 2))
    for name in ["lr", "weight_decay", "resnet_dropout", "vit_dropout"]:
        if algorithm not in ("ADRMX",):
            assert other[name] == erm[name], (algorithm, name)


def test_apply_overrides_accepts_known_names():
    hp = hparams_registry.default_hparams("ERM", "Debug28")
    new = hparams_registry.apply_overrides(hp, {"lr": 0.01, "batch_size": 8})
    assert new["lr"] == 0.01 and new["batch_size"] == 8 and hp["lr"] == 1e-3


@pytest.mark.parametrize("overrides, message", [
    ({"lrr": 0.1}, "Did you mean 'lr'"),
    ({"lr": "fast"}, "expects float"),
    ({"data_augmentation": 1}, "expects bool"),
    ([1, 2], "JSON object"),
])
def test_apply_overrides_refuses_bad_input(overrides, message):
    hp = hparams_registry.default_hparams("ERM", "Debug28")
    with pytest.raises(hparams_registry.HparamError, match=message):
        hparams_registry.apply_overrides(hp, overrides)


def test_small_images_is_the_dataset_class_flag_told_to_the_algorithms():
    """No list of dataset names: an algorithm's `dataset` is the name with the class's facts."""
    from domainbed import datasets

    small = []
    for name in datasets.DATASETS:
        cls = datasets.get_dataset_class(name)
        facts = cls.hparam_facts(name)
        assert facts == name and facts.small_images is bool(cls.SMALL_IMAGES)
        assert facts.lr[0] == cls.optimization_hparams()["lr"][0]
        small += [name] if facts.small_images else []
    assert {"Debug28", "RotatedMNIST", "ColoredMNIST"} <= set(small)   # upstream's list
    assert not {"Debug224", "VLCS", "DomainNet", "IUTExample2"} & set(small)


def test_a_datasets_own_hparams_hold_for_every_algorithm():
    """The invariance unit tests declare lr, weight_decay and batch_size themselves: ADRMX's
    lr grid and ARM's and RDM's batch sizes give way, and DANN's extra optimisers draw like
    the dataset's lr and weight_decay (as they did before these were the datasets' own)."""
    import numpy as np

    seed = seed_hash(1, 0)
    erm = hparams_registry.random_hparams("ERM", "IUTExample2", seed)
    names = ("lr", "weight_decay", "batch_size")
    for algorithm in ("ADRMX", "ARM", "RDM"):
        other = hparams_registry.random_hparams(algorithm, "IUTExample2", seed)
        assert {n: other[n] for n in names} == {n: erm[n] for n in names}, algorithm
    dann = hparams_registry.random_hparams("DANN", "IUTExample2", seed)
    for name, low, high in (("lr_g", -4, -2), ("lr_d", -4, -2), ("weight_decay_g", -6, -2)):
        expected = 10**np.random.RandomState(seed_hash(seed, name)).uniform(low, high)
        assert dann[name] == expected, name
    defaults = hparams_registry.default_hparams("DANN", "IUTExample2")
    assert defaults["lr_g"] == defaults["lr_d"] == defaults["lr"] == 1e-3
