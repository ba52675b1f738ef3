"""Baselines A: IRM, VREx, GroupDRO, MLDG, CORAL, MMD, DANN, CDANN, MTL, ARM, SagNet, RSC.

A cheap check of what each method is supposed to do, and its default hparams against
upstream's. The contract every algorithm keeps (updates, predict, exact resume, hparam
draws; the 224x224 path for a few) is in test_algorithm_contract.py, over the registry.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from domainbed import hparams_registry
from domainbed.algorithms import get_algorithm_class
from domainbed.algorithms.adversarial import class_balanced_weights
from domainbed.algorithms.alignment import coral_distance, mmd_distance
from domainbed.algorithms.invariance import irm_penalty, irm_terms, split_logits_by_domain
from domainbed.algorithms.rsc import top_gradient_mask
from domainbed.datasets import get_dataset_class
from domainbed.lib.misc import seed_hash

NUM_CLASSES = 2
DEBUG28_SHAPE = get_dataset_class("Debug28").INPUT_SHAPE


def make_algorithm(name, dataset="Debug28", num_domains=3, overrides=None, seed=0):
    hparams = hparams_registry.default_hparams(name, dataset)
    hparams = hparams_registry.apply_overrides(hparams, overrides or {})
    hparams["mnist_cnn_width"] = 8  # a narrow MNIST CNN: the methods, not the network, are tested
    torch.manual_seed(seed)
    input_shape = get_dataset_class(dataset).INPUT_SHAPE
    return get_algorithm_class(name)(input_shape, NUM_CLASSES, num_domains, hparams)


def make_minibatches(input_shape, sizes, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *input_shape, generator=g),
             torch.randint(0, NUM_CLASSES, (n,), generator=g)) for n in sizes]


# -- behaviour: invariance ----------------------------------------------------------------

def test_irm_penalty_is_zero_at_a_stationary_scale():
    # Zero logits do not depend on the scale: dCE/ds = 0 on both halves.
    y = torch.tensor([0, 1, 1, 0])
    assert irm_penalty(torch.zeros(4, 2), y).item() == 0.0


def test_irm_penalty_is_the_product_of_the_half_batch_scale_gradients():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5], [0.2, 0.9], [1.0, 0.0]])
    y = torch.tensor([1, 0, 0, 1, 1])

    def scale_gradient(z, t):  # d/ds CE(s z) at s = 1, averaged: sum_k p_k z_k - z_t
        p = torch.softmax(z, dim=1)
        return ((p * z).sum(1) - z[torch.arange(len(t)), t]).mean()

    expected = scale_gradient(logits[::2], y[::2]) * scale_gradient(logits[1::2], y[1::2])
    assert irm_penalty(logits, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert irm_penalty(logits[:1], y[:1]).item() == 0.0  # one sample: no pair of halves


def upstream_irm_penalty(logits, y):
    """Upstream's formulation: autograd through a dummy scale, create_graph on both halves."""
    scale = torch.ones((), requires_grad=True)
    loss_1 = F.cross_entropy(logits[::2] * scale, y[::2])
    loss_2 = F.cross_entropy(logits[1::2] * scale, y[1::2])
    grad_1 = torch.autograd.grad(loss_1, [scale], create_graph=True)[0]
    grad_2 = torch.autograd.grad(loss_2, [scale], create_graph=True)[0]
    return torch.sum(grad_1 * grad_2)


@pytest.mark.parametrize("n,classes", [(2, 2), (7, 3), (64, 10)])
def test_irm_penalty_and_its_gradient_equal_upstreams_autograd_formulation(n, classes):
    generator = torch.Generator().manual_seed(n)
    logits = 3 * torch.randn(n, classes, generator=generator)
    y = torch.randint(classes, (n,), generator=generator)
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours_value, theirs_value = irm_penalty(ours, y), upstream_irm_penalty(theirs, y)
    ours_value.backward()
    theirs_value.backward()
    assert ours_value.item() == pytest.approx(theirs_value.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sizes", [(33,) * 10, (4, 4, 4), (3, 4, 5), (1, 1)])
def test_irm_terms_equal_the_per_domain_loop(sizes):
    """The [E, B] block used for equal batch sizes gives the loop's values and gradients."""
    generator = torch.Generator().manual_seed(len(sizes))
    minibatches = [(torch.zeros(n, 1), torch.randint(3, (n,), generator=generator))
                   for n in sizes]
    logits = 2 * torch.randn(sum(sizes), 3, generator=generator)
    block, loop = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    nll, penalty = irm_terms(block, minibatches)
    expected_nll = expected_penalty = 0.0
    for part, (_, y) in zip(split_logits_by_domain(loop, minibatches), minibatches):
        expected_nll = expected_nll + F.cross_entropy(part, y) / len(sizes)
        expected_penalty = expected_penalty + irm_penalty(part, y) / len(sizes)
    (nll + 7 * penalty).backward()
    (expected_nll + 7 * expected_penalty).backward()
    assert nll.item() == pytest.approx(expected_nll.item(), rel=1e-5)
    assert penalty.item() == pytest.approx(expected_penalty.item(), rel=1e-4, abs=1e-6)
    assert torch.allclose(block.grad, loop.grad, rtol=1e-4, atol=1e-6)


def test_irm_weight_switches_and_adam_is_reset_at_the_anneal_step():
    algorithm = make_algorithm("IRM", overrides={"irm_penalty_anneal_iters": 1, "irm_lambda": 1e3})
    shape = DEBUG28_SHAPE
    first_optimizer = algorithm.optimizer
    logs = algorithm.update(make_minibatches(shape, (4, 5, 6), seed=0))
    assert logs["loss"] == pytest.approx(logs["nll"] + 1.0 * logs["penalty"], rel=1e-5)
    assert algorithm.optimizer is first_optimizer
    logs = algorithm.update(make_minibatches(shape, (4, 5, 6), seed=1))
    assert logs["loss"] == pytest.approx(logs["nll"] + 1e3 * logs["penalty"], rel=1e-4, abs=1e-6)
    assert algorithm.optimizer is not first_optimizer
    assert algorithm.update_count.item() == 2


def test_vrex_penalty_is_the_population_variance_of_the_domain_risks():
    algorithm = make_algorithm("VREx")
    minibatches = make_minibatches(DEBUG28_SHAPE, (4, 5, 6), seed=0)
    with torch.no_grad():
        risks = torch.stack([F.cross_entropy(algorithm.predict(x), y) for x, y in minibatches])
    logs = algorithm.update(minibatches)
    assert logs["penalty"] == pytest.approx(risks.var(unbiased=False).item(), rel=1e-3, abs=1e-8)
    assert logs["nll"] == pytest.approx(risks[-1].item(), rel=1e-5)
    expected_loss = risks.mean() + risks.var(unbiased=False)
    assert logs["loss"] == pytest.approx(expected_loss.item(), rel=1e-5)


# -- behaviour: GroupDRO, MLDG ----------------------------------------------------------

def test_groupdro_q_is_a_distribution_that_upweights_the_worse_domain():
    eta = 5.0
    algorithm = make_algorithm("GroupDRO", num_domains=2, overrides={"groupdro_eta": eta})
    shape = DEBUG28_SHAPE
    x = torch.randn(6, *shape)
    with torch.no_grad():
        y_pred = algorithm.predict(x).argmax(1)
    # Domain 0 is labelled as the model predicts, domain 1 against it: a worse domain.
    minibatches = [(x, y_pred), (x.clone(), 1 - y_pred)]
    with torch.no_grad():
        risks = torch.stack([F.cross_entropy(algorithm.predict(xd), yd) for xd, yd in minibatches])
    algorithm.update(minibatches)
    assert algorithm.q.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert algorithm.q[1] > algorithm.q[0]
    assert torch.allclose(algorithm.q, torch.softmax(eta * risks, dim=0), atol=1e-5)


def test_groupdro_refuses_a_wrong_number_of_domains():
    algorithm = make_algorithm("GroupDRO", num_domains=3)
    minibatches = make_minibatches(DEBUG28_SHAPE, (3, 3), seed=0)
    with pytest.raises(ValueError, match="one minibatch per training domain"):
        algorithm.update(minibatches)


def test_mldg_without_meta_train_domains_is_a_valid_null_step():
    # 2 domains, n_meta_test=2 (the default): no pairs; zero grads, weight_decay 0 -> no move.
    algorithm = make_algorithm("MLDG", num_domains=2)
    before = copy.deepcopy(algorithm.network.state_dict())
    logs = algorithm.update(make_minibatches(DEBUG28_SHAPE, (3, 4), seed=0))
    assert logs == {"loss": 0.0}
    for key, value in algorithm.network.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_mldg_with_pairs_moves_the_network():
    algorithm = make_algorithm("MLDG", num_domains=3, overrides={"n_meta_test": 1})
    before = copy.deepcopy(algorithm.network.state_dict())
    logs = algorithm.update(make_minibatches(DEBUG28_SHAPE, (3, 4, 5), seed=0))
    assert logs["loss"] > 0
    changed = [not torch.equal(v, before[k]) for k, v in algorithm.network.state_dict().items()]
    assert all(changed)


# -- behaviour: alignment ---------------------------------------------------------------

def test_coral_and_mmd_distances_are_zero_for_equal_batches_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g)
    assert coral_distance(x, x.clone()).item() == 0.0
    assert mmd_distance(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    shifted = x + 1.0
    assert coral_distance(x, shifted).item() == pytest.approx(1.0, rel=1e-5)  # mean term only
    assert mmd_distance(x, shifted).item() > 1e-2
    assert math.isfinite(coral_distance(x[:1], x[1:2]).item())  # one-sample batches


def test_coral_penalty_is_the_mean_pairwise_distance():
    algorithm = make_algorithm("CORAL")
    minibatches = make_minibatches(DEBUG28_SHAPE, (4, 5, 6), seed=0)
    with torch.no_grad():
        features = [algorithm.featurizer(x) for x, _ in minibatches]
        expected = sum(coral_distance(features[i], features[j])
                       for i, j in [(0, 1), (0, 2), (1, 2)]) / 3
    assert algorithm.update(minibatches)["penalty"] == pytest.approx(expected.item(), rel=1e-4)


# -- behaviour: adversarial ---------------------------------------------------------------

@pytest.mark.parametrize("d_steps, expected", [
    (1, ["gen_loss", "disc_loss", "gen_loss", "disc_loss"]),
    (2, ["disc_loss", "gen_loss", "disc_loss", "disc_loss"]),
])
def test_dann_alternates_discriminator_and_generator_steps(d_steps, expected):
    algorithm = make_algorithm("DANN", overrides={"d_steps_per_g_step": d_steps})
    shape = DEBUG28_SHAPE
    keys = [list(algorithm.update(make_minibatches(shape, (3, 4, 5), seed=s)))[0] for s in range(4)]
    assert keys == expected


def test_dann_discriminator_step_leaves_the_generator_alone():
    algorithm = make_algorithm("CDANN", overrides={"d_steps_per_g_step": 1})
    shape = DEBUG28_SHAPE
    algorithm.update(make_minibatches(shape, (3, 4, 5), seed=0))  # generator step
    featurizer = copy.deepcopy(algorithm.featurizer.state_dict())
    discriminator = copy.deepcopy(algorithm.discriminator.state_dict())
    algorithm.update(make_minibatches(shape, (3, 4, 5), seed=1))  # discriminator step
    assert all(torch.equal(v, featurizer[k]) for k, v in algorithm.featurizer.state_dict().items())
    assert not all(torch.equal(v, discriminator[k])
                   for k, v in algorithm.discriminator.state_dict().items())


def test_cdann_class_balanced_weights():
    weights = class_balanced_weights(torch.tensor([0, 0, 0, 1]))
    assert torch.allclose(weights, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2]))
    assert weights.sum().item() == pytest.approx(1.0)


# -- behaviour: MTL, ARM ------------------------------------------------------------------

def test_mtl_stores_the_ema_embedding_and_predicts_without_noise():
    ema = 0.9
    algorithm = make_algorithm("MTL", overrides={"mtl_ema": ema})
    minibatches = make_minibatches(DEBUG28_SHAPE, (3, 4, 5), seed=0)
    with torch.no_grad():
        means = [algorithm.featurizer(x).mean(0) for x, _ in minibatches]
    algorithm.update(minibatches)
    for env, mean in enumerate(means):  # stored embeddings start at 0
        assert torch.allclose(algorithm.embeddings[env], ema * mean, atol=1e-5)
    algorithm.eval()
    x = minibatches[0][0]
    with torch.no_grad():  # upstream replaced the embedding by fresh noise on every call
        assert torch.equal(algorithm.predict(x), algorithm.predict(x))


def test_arm_trains_its_context_net_and_contexts_stay_within_groups():
    algorithm = make_algorithm("ARM", overrides={"batch_size": 4})
    before = copy.deepcopy(algorithm.context_net.state_dict())
    shape = DEBUG28_SHAPE
    algorithm.update(make_minibatches(shape, (4, 4, 4), seed=0))
    first_conv = algorithm.context_net.context_net[0].weight
    assert not torch.equal(first_conv, before["context_net.0.weight"])
    algorithm.eval()
    a, b = torch.randn(4, *shape), torch.randn(4, *shape)
    with torch.no_grad():
        together = algorithm.predict(torch.cat([a, b]))
        separate = torch.cat([algorithm.predict(a), algorithm.predict(b)])
        odd_batch = algorithm.predict(torch.randn(5, *shape))  # not a multiple: one group
    assert torch.allclose(together, separate, atol=1e-5)
    assert odd_batch.shape == (5, NUM_CLASSES)


# -- behaviour: SagNet, RSC ---------------------------------------------------------------

def test_sagnet_randomize_keeps_each_samples_style_in_content_mode():
    algorithm = make_algorithm("SagNet")
    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, 16, generator=g) * torch.arange(1, 7).view(6, 1) + 3
    content_swapped = algorithm.randomize(features, "content")
    assert torch.allclose(content_swapped.mean(1), features.mean(1), atol=1e-4)
    assert torch.allclose(content_swapped.var(1), features.var(1), rtol=1e-3)
    style_mixed = algorithm.randomize(features, "style")
    assert style_mixed.shape == features.shape and torch.isfinite(style_mixed).all()
    algorithm.eval()
    x = torch.randn(3, *DEBUG28_SHAPE)
    with torch.no_grad():
        assert torch.equal(algorithm.predict(x), algorithm.predict(x))


def test_rsc_mutes_the_top_gradient_features():
    all_g = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.2, 0.7]])
    mask = top_gradient_mask(all_g, 1 - 1 / 3)  # drop the top third
    assert mask.tolist() == [[1.0, 1.0, 1.0, 0.0, 1.0, 0.0]]  # 0.9 and 0.7 muted
    per_row = top_gradient_mask(torch.randn(5, 30), 0.5)
    assert per_row.sum(1).tolist() == [15.0] * 5


# -- hparams ------------------------------------------------------------------------------

UPSTREAM_DEFAULTS = {
    "IRM": {"irm_lambda": 100, "irm_penalty_anneal_iters": 500},
    "VREx": {"vrex_lambda": 10, "vrex_penalty_anneal_iters": 500},
    "GroupDRO": {"groupdro_eta": 0.01},
    "MLDG": {"mldg_beta": 1.0, "n_meta_test": 2},
    "CORAL": {"mmd_gamma": 1.0},
    "MMD": {"mmd_gamma": 1.0},
    "DANN": {"lambda": 1.0, "weight_decay_d": 0.0, "d_steps_per_g_step": 1, "grad_penalty": 0.0,
             "beta1": 0.5, "mlp_width": 256, "mlp_depth": 3, "mlp_dropout": 0.0,
             "lr_g": 5e-5, "lr_d": 5e-5, "weight_decay_g": 0.0},
    "MTL": {"mtl_ema": 0.99},
    "ARM": {"batch_size": 8},
    "SagNet": {"sag_w_adv": 0.1},
    "RSC": {"rsc_f_drop_factor": 1 / 3, "rsc_b_drop_factor": 1 / 3},
}
UPSTREAM_DEFAULTS["CDANN"] = UPSTREAM_DEFAULTS["DANN"]


@pytest.mark.parametrize("name", list(UPSTREAM_DEFAULTS))
def test_default_hparams_match_upstream(name):
    defaults = hparams_registry.default_hparams(name, "VLCS")
    for key, value in UPSTREAM_DEFAULTS[name].items():
        assert defaults[key] == value, key


def test_random_hparams_fixtures_and_ranges():
    irm = hparams_registry.random_hparams("IRM", "ColoredMNIST", seed_hash(1, 0))
    assert irm["irm_lambda"] == 65030.52212762795
    assert irm["irm_penalty_anneal_iters"] == 2
    for hp_seed in range(1, 6):
        seed = seed_hash(hp_seed, 0)
        mldg = hparams_registry.random_hparams("MLDG", "PACS", seed)
        assert type(mldg["n_meta_test"]) is int and mldg["n_meta_test"] in (1, 2)
        dann = hparams_registry.random_hparams("CDANN", "PACS", seed)
        assert type(dann["d_steps_per_g_step"]) is int and 1 <= dann["d_steps_per_g_step"] <= 7
        assert type(dann["mlp_width"]) is int and 64 <= dann["mlp_width"] < 1024
        assert dann["mlp_depth"] in (3, 4, 5) and dann["mlp_dropout"] in (0.0, 0.1, 0.5)
        assert dann["beta1"] in (0.0, 0.5)
        mtl = hparams_registry.random_hparams("MTL", "PACS", seed)
        assert mtl["mtl_ema"] in (0.5, 0.9, 0.99, 1.0)
        rsc = hparams_registry.random_hparams("RSC", "PACS", seed)
        assert 0 <= rsc["rsc_f_drop_factor"] <= 0.5 and 0 <= rsc["rsc_b_drop_factor"] <= 0.5
        assert hparams_registry.random_hparams("ARM", "PACS", seed)["batch_size"] == 8
