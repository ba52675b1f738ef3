"""Baselines B: Fish, Fishr, ANDMask, SANDMask, IGA (gradient_matching), SD, SelfReg
(regularizers), SAM, and the helpers of domainbed.algorithms.param_utils.

What each method is supposed to do and its hparams against upstream's; the contract every
algorithm keeps is in test_algorithm_contract.py, over the registry."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domainbed import hparams_registry
from domainbed.algorithms import get_algorithm_class
from domainbed.algorithms.gradient_matching import (
    and_mask_gradient, classifier_per_sample_gradients, sand_mask_gradient)
from domainbed.algorithms.regularizers import within_class_permutations
from domainbed.algorithms.rho_ball import ascent as sharpness_perturbation
from domainbed.lib.misc import seed_hash
from domainbed.algorithms.param_utils import MovingAverage, ParamDict, l2_between_dicts

SMALL_SHAPE = (3, 28, 28)
NUM_DOMAINS = 3


def make_algorithm(name, seed=0, **overrides):
    torch.manual_seed(seed)
    hparams = hparams_registry.default_hparams(name, "Debug28")
    hparams["mnist_cnn_width"] = 8  # a narrow MNIST CNN: the methods, not the network, are tested
    hparams.update(overrides)
    return get_algorithm_class(name)(SMALL_SHAPE, 2, NUM_DOMAINS, hparams)


def make_minibatches(seed, sizes=(5, 3, 4), shape=SMALL_SHAPE):
    """One (x, y) per domain, of different sizes, both labels in every domain of 2 or more."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for n in sizes:
        y = torch.randint(0, 2, (n,), generator=g)
        y[:2] = torch.tensor([0, 1])[:n]
        batches.append((torch.randn(n, *shape, generator=g), y))
    return batches


# ---------------------------------------------------------------------------------------
# Hyperparameters

# name -> (default, distribution) as in upstream's registry (interface doc §5).
DECLARED = {
    "Fish": {"meta_lr": (0.5, lambda r: r.choice([0.05, 0.1, 0.5]))},
    "Fishr": {"lambda": (1000.0, lambda r: 10**r.uniform(1, 4)),
              "penalty_anneal_iters": (1500, lambda r: int(r.uniform(0, 5000))),
              "ema": (0.95, lambda r: r.uniform(0.90, 0.99))},
    "ANDMask": {"tau": (1, lambda r: r.uniform(0.5, 1.0))},
    "SANDMask": {"tau": (1.0, lambda r: r.uniform(0, 1)),
                 "k": (10.0, lambda r: 10**r.uniform(-3, 5))},
    "IGA": {"penalty": (1000, lambda r: 10**r.uniform(1, 5))},
    "SD": {"sd_reg": (0.1, lambda r: 10**r.uniform(-5, -1))},
    "SelfReg": {},
    "SAM": {"sam_rho": (0.05, lambda r: r.choice([0.01, 0.02, 0.05, 0.1, 0.2]))},
}


@pytest.mark.parametrize("name", list(DECLARED))
def test_algorithm_hparams_follow_upstream_distributions(name):
    defaults = hparams_registry.default_hparams(name, "PACS")
    erm = hparams_registry.default_hparams("ERM", "PACS")
    assert set(defaults) - set(erm) == set(DECLARED[name])
    seed = seed_hash(1, 0)
    drawn = hparams_registry.random_hparams(name, "PACS", seed)
    for hparam, (default, distribution) in DECLARED[name].items():
        assert defaults[hparam] == default and type(defaults[hparam]) is type(default)
        expected = distribution(np.random.RandomState(seed_hash(seed, hparam)))
        assert drawn[hparam] == expected
    if name == "SAM":
        assert {hparams_registry.random_hparams("SAM", "PACS", s)["sam_rho"] for s in range(40)} \
            == {0.01, 0.02, 0.05, 0.1, 0.2}


# ---------------------------------------------------------------------------------------
# param_utils

def test_param_dict_arithmetic_reads_like_the_formula():
    meta = ParamDict(a=torch.tensor([1.0, 2.0]), b=torch.tensor([4.0]))
    inner = ParamDict(a=torch.tensor([3.0, 2.0]), b=torch.tensor([0.0]))
    result = meta + 0.5 * (inner - meta)
    assert isinstance(result, ParamDict)
    assert torch.equal(result["a"], torch.tensor([2.0, 2.0])) and torch.equal(result["b"], torch.tensor([2.0]))
    assert torch.equal((-(meta / 2) * 2 - 1)["a"], torch.tensor([-2.0, -3.0]))
    assert torch.equal((1 - meta)["b"], torch.tensor([-3.0]))


def test_moving_average_corrects_and_survives_a_state_round_trip():
    average = MovingAverage(0.9)
    first = average.update({"w": torch.tensor([1.0, 2.0])})
    assert torch.allclose(first["w"], torch.tensor([[1.0, 2.0]]))  # 0.1·x / 0.1
    restored = MovingAverage(0.9)
    restored.load_state_dict(copy.deepcopy(average.state_dict()))
    second = average.update({"w": torch.tensor([3.0, 0.0])})
    assert torch.allclose(second["w"], torch.tensor([[0.9 * 0.1 * 1 + 0.1 * 3, 0.9 * 0.1 * 2]]) / 0.1)
    assert torch.equal(restored.update({"w": torch.tensor([3.0, 0.0])})["w"], second["w"])
    uncorrected = MovingAverage(0.9, oneminusema_correction=False)
    assert torch.allclose(uncorrected.update({"w": torch.tensor([1.0])})["w"], torch.tensor([[0.1]]))


def test_l2_between_dicts_is_the_mean_squared_difference():
    a = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([[0.0]])}
    b = {"x": torch.tensor([1.0, 0.0]), "y": torch.tensor([[2.0]])}
    assert l2_between_dicts(a, b).item() == pytest.approx((4 + 4) / 3)
    with pytest.raises(ValueError):
        l2_between_dicts(a, {"x": a["x"]})


# ---------------------------------------------------------------------------------------
# Behaviour, one algorithm at a time

def test_fish_with_meta_lr_one_equals_sequential_adam_steps():
    fish = make_algorithm("Fish", meta_lr=1.0)
    reference = copy.deepcopy(fish.network)
    optimizer = torch.optim.Adam(reference.parameters(), lr=fish.hparams["lr"],
                                 weight_decay=fish.hparams["weight_decay"])
    for step in range(2):  # the second update must reuse the inner Adam's moments
        minibatches = make_minibatches(step)
        fish.update(minibatches)
        for x, y in minibatches:
            optimizer.zero_grad()
            F.cross_entropy(reference(x), y).backward()
            optimizer.step()
    for a, b in zip(reference.parameters(), fish.network.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_fish_meta_step_interpolates_towards_the_inner_weights():
    fish = make_algorithm("Fish", meta_lr=0.5)
    start = [p.detach().clone() for p in fish.network.parameters()]
    full_step = make_algorithm("Fish", meta_lr=1.0)
    fish.update(make_minibatches(0))
    full_step.update(make_minibatches(0))
    for s, half, full in zip(start, fish.network.parameters(), full_step.network.parameters()):
        assert torch.allclose(half, s + 0.5 * (full - s), atol=1e-6)


def test_fishr_closed_form_gradients_equal_autograd_per_sample_gradients():
    torch.manual_seed(0)
    classifier = torch.nn.Linear(5, 3).double()
    features = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    closed_form = classifier_per_sample_gradients(features, classifier(features), y)
    for i in range(len(y)):
        loss = F.cross_entropy(classifier(features[i:i + 1]), y[i:i + 1])
        grad_weight, grad_bias = torch.autograd.grad(loss, [classifier.weight, classifier.bias])
        assert torch.allclose(closed_form["weight"][i], grad_weight.flatten(), atol=1e-12)
        assert torch.allclose(closed_form["bias"][i], grad_bias, atol=1e-12)


def test_fishr_penalty_is_zero_for_equal_domains_and_positive_otherwise():
    fishr = make_algorithm("Fishr")
    x, y = make_minibatches(0, sizes=(6,))[0]
    features = fishr.featurizer(torch.cat([x, x, x]))
    penalty = fishr.penalty(features, fishr.classifier(features), torch.cat([y, y, y]), [6, 6, 6])
    assert penalty.item() == pytest.approx(0.0, abs=1e-12)

    other = make_algorithm("Fishr")
    all_x, all_y = (torch.cat(t) for t in zip(*make_minibatches(1, sizes=(6, 6, 6))))
    features = other.featurizer(all_x)
    assert other.penalty(features, other.classifier(features), all_y, [6, 6, 6]).item() > 0


def test_fishr_resets_adam_at_the_anneal_step_and_applies_lambda():
    fishr = make_algorithm("Fishr", penalty_anneal_iters=2)
    optimizers = []
    for step in range(3):
        result = fishr.update(make_minibatches(step))
        optimizers.append(fishr.optimizer)
    assert optimizers[0] is optimizers[1] and optimizers[2] is not optimizers[1]
    assert result["loss"] == pytest.approx(result["nll"] + 1000.0 * result["penalty"], rel=1e-5)
    with pytest.raises(ValueError, match="one minibatch per training domain"):
        fishr.update(make_minibatches(0, sizes=(3, 3)))


def test_and_mask_keeps_only_components_whose_signs_agree():
    grads = torch.tensor([[1.0, 1.0, -2.0, 0.5],
                          [3.0, -1.0, -4.0, 0.5]])
    masked = and_mask_gradient(grads, tau=1)
    kept = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert torch.allclose(masked, kept * grads.mean(0) / 0.75)
    assert torch.equal(and_mask_gradient(grads, tau=0.0) != 0, torch.tensor([True, False, True, True]))


def test_sand_mask_is_soft_between_zero_and_one():
    grads = torch.tensor([[1.0, 1.0, -2.0, 1.0],
                          [3.0, -1.0, -4.0, 1.0],
                          [2.0, 1.0, -3.0, 1.0]])
    masked = sand_mask_gradient(grads, tau=0.5, k=1.0)
    mean = grads.mean(0)
    mask = torch.tanh(1.0 / grads.var(0) * (torch.sign(grads).mean(0).abs() - 0.5)).clamp(min=0)
    mask[3] = 1.0  # zero variance: tanh(+inf) = 1
    assert torch.allclose(masked, mask * mean / mask.mean())
    assert masked[1] == 0 and 0 < mask[0] < 1
    # Upstream's default tau = 1 keeps nothing unless all domains agree with zero variance.
    assert torch.equal(sand_mask_gradient(grads[:, :3], tau=1.0, k=10.0), torch.zeros(3))
    # Full agreement with tau = 1: 0·(1/var) is NaN -> 1e-17, as upstream.
    assert torch.isfinite(sand_mask_gradient(torch.ones(2, 3), tau=1.0, k=10.0)).all()


def test_iga_penalty_is_zero_when_all_domains_see_the_same_batch():
    iga = make_algorithm("IGA")
    x, y = make_minibatches(0, sizes=(4,))[0]
    result = iga.update([(x, y)] * NUM_DOMAINS)
    assert result["penalty"] == pytest.approx(0.0, abs=1e-12)
    assert make_algorithm("IGA").update(make_minibatches(1))["penalty"] > 0


def test_sd_reports_the_mean_squared_logit_before_its_step():
    sd = make_algorithm("SD", sd_reg=0.5)
    minibatches = make_minibatches(0)
    with torch.no_grad():
        logits = sd.predict(torch.cat([x for x, _ in minibatches]))
    assert sd.update(minibatches)["penalty"] == pytest.approx((logits**2).mean().item(), rel=1e-5)


def test_selfreg_trains_its_projector_and_shuffles_within_classes():
    selfreg = make_algorithm("SelfReg")
    before = [p.detach().clone() for p in selfreg.projector.parameters()]
    selfreg.update(make_minibatches(0))
    assert all(not torch.equal(a, b) for a, b in zip(before, selfreg.projector.parameters()))

    sorted_y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    first, second = within_class_permutations(sorted_y, torch.Generator().manual_seed(0))
    for perm in (first, second):
        assert sorted(perm.tolist()) == list(range(9)) and torch.equal(sorted_y[perm], sorted_y)


def test_sam_restores_the_weights_and_steps_with_the_perturbed_gradient():
    sam = make_algorithm("SAM", sam_rho=0.1)
    reference = copy.deepcopy(sam.network)
    optimizer = torch.optim.Adam(reference.parameters(), lr=sam.hparams["lr"],
                                 weight_decay=sam.hparams["weight_decay"])
    minibatches = make_minibatches(0)
    x, y = (torch.cat(t) for t in zip(*minibatches))
    gradients = torch.autograd.grad(F.cross_entropy(reference(x), y), list(reference.parameters()))
    perturbation = sharpness_perturbation(gradients, 0.1)
    norm = torch.sqrt(sum(e.pow(2).sum() for e in perturbation))
    assert norm.item() == pytest.approx(0.1, rel=1e-5)
    perturbed = copy.deepcopy(reference)
    with torch.no_grad():
        for p, e in zip(perturbed.parameters(), perturbation):
            p.add_(e)
    perturbed_grads = torch.autograd.grad(F.cross_entropy(perturbed(x), y),
                                          list(perturbed.parameters()))
    for p, g in zip(reference.parameters(), perturbed_grads):
        p.grad = g
    optimizer.step()  # from the unperturbed weights

    sam.update(minibatches)
    for a, b in zip(reference.parameters(), sam.network.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_sam_with_zero_radius_is_erm():
    sam = make_algorithm("SAM", sam_rho=0.0)
    erm = make_algorithm("ERM")
    for step in range(2):
        assert sam.update(make_minibatches(step)) == erm.update(make_minibatches(step))
    for a, b in zip(sam.network.parameters(), erm.network.parameters()):
        assert torch.equal(a, b)
