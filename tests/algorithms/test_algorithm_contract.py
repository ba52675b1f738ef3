"""Every registered algorithm (parametrized over the registry, so a new one is covered
without editing this file): 3 updates on domains of equal and of different sizes and
predict on Debug28, an exact state_dict round trip, hparam draws; one update at 224x224
for a few algorithms that use the ResNet in different ways. Then upstream's hparams for the second batch of upstream algorithms (ERM++,
TRM, IB_ERM, IB_IRM, CAD, CondCAD, Transfer, CausIRL_*, EQRM, RDM, ADRMX, URM), re-stated
from upstream's registry, and a cheap behaviour check of each of them.
"""
import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domainbed import algorithms, hparams_registry
from domainbed.algorithms import get_algorithm_class
from domainbed.algorithms.disentanglement import domain_weighted_supcon
from domainbed.algorithms.robust import kde_quantile
from domainbed.algorithms.transfer import neumann_inverse_hvp
from domainbed.algorithms.registry import UPSTREAM_ORDER
from domainbed.lib.misc import seed_hash
from support import EVENTS, NUM_CLASSES, NUM_DOMAINS, SHAPE, make_algorithm, make_minibatches

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one thread is faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_finite_float_logs(logs):
    assert isinstance(logs, dict) and logs
    for key, value in logs.items():
        assert isinstance(key, str)
        assert type(value) is float and math.isfinite(value), (key, value)


# ---------------------------------------------------------------------------------------
# The contract, for every registered algorithm

@pytest.mark.parametrize("name", algorithms.ALGORITHMS)
def test_three_updates_predict_and_exact_resume(name):
    """3 updates (finite float logs) that move the weights, predict [n, 2]; a fresh copy
    restored from the state after update 2 makes exactly the same update 3. The domains'
    batches are of equal sizes in update 1 and of different sizes in updates 2 and 3."""
    overrides = EVENTS.get(name, {})
    steps = [make_minibatches(seed, sizes)
             for seed, sizes in enumerate([(4, 4, 4), (5, 3, 4), (3, 4, 5)])]
    original = make_algorithm(name, seed=0, **overrides)
    before = [p.detach().clone() for p in original.parameters()]
    for minibatches in steps[:2]:
        assert_finite_float_logs(original.update(minibatches))
    saved = copy.deepcopy(original.state_dict())
    expected_logs = original.update(steps[2])
    assert_finite_float_logs(expected_logs)
    expected = {k: v.clone() for k, v in original.state_dict().items() if torch.is_tensor(v)}
    assert any(not torch.equal(a, b) for a, b in zip(before, original.parameters()))

    restored = make_algorithm(name, seed=1, **overrides)
    restored.load_state_dict(saved)
    assert restored.update(steps[2]) == expected_logs
    actual = restored.state_dict()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key

    original.eval()
    with torch.no_grad():
        logits = original.predict(torch.randn(8, *SHAPE))
    assert logits.shape == (8, NUM_CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", algorithms.ALGORITHMS)
def test_hparam_draws_are_deterministic_native_and_complete(name):
    for dataset in ("Debug28", "VLCS", "SpawriousO2O_easy"):
        defaults = hparams_registry.default_hparams(name, dataset)
        for seed in (0, seed_hash(1, 0), seed_hash(2, 1)):
            drawn = hparams_registry.random_hparams(name, dataset, seed)
            assert drawn == hparams_registry.random_hparams(name, dataset, seed)
            assert set(drawn) == set(defaults)
            assert json.loads(json.dumps(drawn)) == drawn
            assert not any(isinstance(v, np.generic) for v in drawn.values()), drawn
            assert all(type(v) in (bool, int, float, str) for v in drawn.values()), drawn


# The 224x224 path (ResNet-18 from scratch; one update on tiny batches, one domain of a
# single sample) costs seconds per algorithm on a CPU, so it is run for algorithms that
# use the ResNet in different ways; the contract above covers every algorithm on 28x28.
RESNET_PATHS = {
    "ERM": "featurizer then classifier",
    "CORAL": "feature statistics compared across domains",
    "DANN": "an adversarial discriminator on the features",
    "SAM": "a second forward-backward at perturbed weights",
}
LARGE_SHAPE = (3, 224, 224)
RESNET18_FROM_SCRATCH = {"pretrained": False, "resnet50_augmix": False, "resnet18": True}


@pytest.mark.parametrize("name", list(RESNET_PATHS))
def test_one_update_and_predict_at_224(name):
    hparams = hparams_registry.default_hparams(name, "Debug224")
    hparams.update(RESNET18_FROM_SCRATCH)
    torch.manual_seed(0)
    algorithm = get_algorithm_class(name)(LARGE_SHAPE, NUM_CLASSES, NUM_DOMAINS, hparams)
    g = torch.Generator().manual_seed(0)
    minibatches = [(torch.randn(n, *LARGE_SHAPE, generator=g), torch.arange(n) % NUM_CLASSES)
                   for n in (2, 1, 2)]
    before = [p.detach().clone() for p in algorithm.parameters()]
    assert_finite_float_logs(algorithm.update(minibatches))
    assert any(not torch.equal(a, b) for a, b in zip(before, algorithm.parameters()))
    algorithm.eval()
    with torch.no_grad():
        logits = algorithm.predict(torch.randn(3, *LARGE_SHAPE, generator=g))
    assert logits.shape == (3, NUM_CLASSES) and torch.isfinite(logits).all()


def test_algorithms_are_upstreams_34_in_order_then_ours():
    names = algorithms.ALGORITHMS
    assert tuple(names[:34]) == UPSTREAM_ORDER
    assert len(UPSTREAM_ORDER) == 34 and "FGMix" in names[34:]


# ---------------------------------------------------------------------------------------
# Upstream's hparams, re-stated from upstream's registry: name -> (default, random draw)

SMALL = ("Debug28", "RotatedMNIST", "ColoredMNIST")
UNCONDITIONAL = {
    "data_augmentation": (True, lambda r: True), "resnet18": (False, lambda r: False),
    "resnet50_augmix": (True, lambda r: True), "dinov2": (False, lambda r: False),
    "vit": (False, lambda r: False), "vit_attn_tune": (False, lambda r: False),
    "freeze_bn": (False, lambda r: False), "lars": (False, lambda r: False),
    "linear_steps": (500, lambda r: 500),
    "resnet_dropout": (0.0, lambda r: r.choice([0.0, 0.1, 0.5])),
    "vit_dropout": (0.0, lambda r: r.choice([0.0, 0.1, 0.5])),
    "class_balanced": (False, lambda r: False),
    "nonlinear_classifier": (False, lambda r: bool(r.choice([False, False]))),
}


def upstream_specific(algorithm, dataset):
    small = dataset in SMALL
    ib = {"ib_lambda": (1e2, lambda r: 10**r.uniform(-1, 5)),
          "ib_penalty_anneal_iters": (500, lambda r: int(10**r.uniform(0, 4)))}
    irm = {"irm_lambda": (1e2, lambda r: 10**r.uniform(-1, 5)),
           "irm_penalty_anneal_iters": (500, lambda r: int(10**r.uniform(0, 4)))}
    cad = {"lmbda": (1e-1, lambda r: r.choice([1e-4, 1e-3, 1e-2, 1e-1, 1, 1e1, 1e2])),
           "temperature": (0.1, lambda r: r.choice([0.05, 0.1])),
           "is_normalized": (False, lambda r: False), "is_project": (False, lambda r: False),
           "is_flipped": (True, lambda r: True)}
    gamma = {"mmd_gamma": (1.0, lambda r: 10**r.uniform(-1, 1))}
    if dataset == "DomainNet":
        rdm = {"rdm_lambda": (0.5, lambda r: r.uniform(0.1, 1.0)),
               "rdm_penalty_anneal_iters": (2400, lambda r: int(r.uniform(1500, 3000)))}
    else:
        rdm = {"rdm_lambda": ((5.0, lambda r: r.uniform(1.0, 10.0)) if dataset in ("PACS", "TerraIncognita")
                              else (5.0, lambda r: r.uniform(0.1, 10.0))),
               "rdm_penalty_anneal_iters": (1500, lambda r: int(r.uniform(800, 2700)))}
    rdm["variance_weight"] = ((0.0, lambda r: r.choice([0.0]))
                              if dataset in ("TerraIncognita", "OfficeHome", "DomainNet")
                              else (0.004, lambda r: r.uniform(0.001, 0.007)))
    rdm["rdm_lr"] = (1.5e-5, lambda r: r.uniform(8e-6, 2e-5))
    return {
        "ERMPlusPlus": {"linear_lr": (5e-5, lambda r: 10**r.uniform(-5, -3.5))},
        "TRM": {"cos_lambda": (1e-4, lambda r: 10**r.uniform(-5, 0)),
                "iters": (200, lambda r: int(10**r.uniform(0, 4))),
                "groupdro_eta": (1e-2, lambda r: 10**r.uniform(-3, -1))},
        "IB_ERM": ib, "IB_IRM": {**irm, **ib}, "CAD": cad, "CondCAD": cad,
        "Transfer": {"t_lambda": (1.0, lambda r: 10**r.uniform(-2, 1)),
                     "delta": (2.0, lambda r: r.uniform(0.1, 3.0)),
                     "d_steps_per_g": (10, lambda r: int(r.choice([1, 2, 5]))),
                     "weight_decay_d": (0.0, lambda r: 10**r.uniform(-6, -2)),
                     "gda": (False, lambda r: True),
                     "beta1": (0.5, lambda r: r.choice([0.0, 0.5])),
                     "lr_d": (1e-3, lambda r: 10**r.uniform(-4.5, -2.5))},
        "CausIRL_CORAL": gamma, "CausIRL_MMD": gamma,
        "EQRM": {"eqrm_quantile": (0.75, lambda r: r.uniform(0.5, 0.99)),
                 "eqrm_burnin_iters": (2500, lambda r: 10**r.uniform(2.5, 3.5)),
                 "eqrm_lr": (1e-6, lambda r: 10**r.uniform(-7, -5))},
        "RDM": rdm,
        "ADRMX": {"cnt_lambda": (1.0, lambda r: r.choice([1.0])),
                  "dclf_lambda": (1.0, lambda r: r.choice([1.0])),
                  "disc_lambda": (0.75, lambda r: r.choice([0.75])),
                  "rmxd_lambda": (1.0, lambda r: r.choice([1.0])),
                  "d_steps_per_g_step": (2, lambda r: r.choice([2])),
                  "beta1": (0.5, lambda r: r.choice([0.5])),
                  "mlp_width": (256, lambda r: r.choice([256])),
                  "mlp_depth": (9, lambda r: int(r.choice([8, 9, 10]))),
                  "mlp_dropout": (0.0, lambda r: r.choice([0]))},
        "URM": {"urm": ("adversarial", lambda r: str(r.choice(["adversarial"]))),
                "urm_adv_lambda": (0.1, lambda r: float(r.uniform(0, 0.2))),
                "urm_discriminator_label_smoothing": (0, lambda r: float(r.uniform(0, 0))),
                "urm_discriminator_optimizer": ("adam", lambda r: str(r.choice(["adam"]))),
                "urm_discriminator_hidden_layers": (1, lambda r: int(r.choice([1, 2, 3]))),
                "urm_generator_output": ("tanh", lambda r: str(r.choice(["tanh", "relu"]))),
                "urm_discriminator_lr": ((1e-3, lambda r: 10**r.uniform(-5.5, -3.5)) if small
                                         else (5e-5, lambda r: 10**r.uniform(-6, -4.5)))},
    }[algorithm]


def upstream_trailing(algorithm, dataset):
    small = dataset in SMALL
    if small:
        lr = ((3e-3, lambda r: r.choice([5e-4, 1e-3, 2e-3, 3e-3])) if algorithm == "ADRMX"
              else (1e-3, lambda r: 10**r.uniform(-4.5, -2.5)))
        weight_decay = (0.0, lambda r: 0.0)
        batch_size = (64, lambda r: int(2**r.uniform(3, 9)))
    else:
        lr = ((3e-5, lambda r: r.choice([2e-5, 3e-5, 4e-5, 5e-5])) if algorithm == "ADRMX"
              else (5e-5, lambda r: 10**r.uniform(-5, -3.5)))
        weight_decay = (0.0, lambda r: 10**r.uniform(-6, -2))
        if algorithm == "RDM":
            batch_size = ((40, lambda r: int(r.uniform(30, 60)))
                          if dataset in ("DomainNet", "TerraIncognita")
                          else (88, lambda r: int(r.uniform(70, 100))))
        elif dataset == "DomainNet":
            batch_size = (32, lambda r: int(2**r.uniform(3, 5)))
        else:
            batch_size = (32, lambda r: int(2**r.uniform(3, 5.5)))
    return {"lr": lr, "weight_decay": weight_decay, "batch_size": batch_size}


def upstream_hparams(algorithm, dataset, seed):
    spec = {**UNCONDITIONAL, **upstream_specific(algorithm, dataset),
            **upstream_trailing(algorithm, dataset)}
    drawn = {name: fn(np.random.RandomState(seed_hash(seed, name))) for name, (_, fn) in spec.items()}
    return {name: default for name, (default, _) in spec.items()}, drawn


SECOND_BATCH = ["ERMPlusPlus", "TRM", "IB_ERM", "IB_IRM", "CAD", "CondCAD", "Transfer",
                "CausIRL_CORAL", "CausIRL_MMD", "EQRM", "RDM", "ADRMX", "URM"]
UPSTREAM_DATASETS = ["Debug28", "RotatedMNIST", "VLCS", "PACS", "OfficeHome", "TerraIncognita",
                     "DomainNet", "SpawriousO2O_easy", "SpawriousM2M_hard"]


@pytest.mark.parametrize("algorithm", SECOND_BATCH)
def test_hparams_equal_upstreams_value_for_value(algorithm):
    for dataset in UPSTREAM_DATASETS:
        expected_defaults, _ = upstream_hparams(algorithm, dataset, 0)
        defaults = hparams_registry.default_hparams(algorithm, dataset)
        # The only key of ours on upstream's datasets: `pretrained` (True = upstream).
        assert set(defaults) == set(expected_defaults) | {"pretrained"}, dataset
        assert defaults["pretrained"] is True
        for name, value in expected_defaults.items():
            assert defaults[name] == value and type(defaults[name]) is type(value), (dataset, name)
        for hp_seed in range(6):
            for trial in range(2):
                seed = seed_hash(hp_seed, trial)
                _, expected = upstream_hparams(algorithm, dataset, seed)
                drawn = hparams_registry.random_hparams(algorithm, dataset, seed)
                for name, value in expected.items():
                    assert drawn[name] == value, (dataset, seed, name)


def test_upstream_random_search_quirks_are_kept():
    seed = seed_hash(1, 0)
    assert hparams_registry.random_hparams("Transfer", "PACS", seed)["gda"] is True
    burnin = hparams_registry.random_hparams("EQRM", "PACS", seed)["eqrm_burnin_iters"]
    assert isinstance(burnin, float) and burnin != int(burnin)


# ---------------------------------------------------------------------------------------
# Behaviour of the second batch

def test_erm_plus_plus_probes_linearly_then_averages_the_weights():
    algorithm = make_algorithm("ERMPlusPlus", linear_steps=1)
    algorithm.sma_start_iter = 3
    featurizer = copy.deepcopy(algorithm.featurizer.state_dict())
    snapshots = []
    for step in range(4):
        algorithm.update(make_minibatches(step))
        snapshots.append(copy.deepcopy(algorithm.network.state_dict()))
        same = all(torch.equal(v, featurizer[k]) for k, v in algorithm.featurizer.state_dict().items())
        assert same == (step < 2), step  # updates 1 and 2 (linear_steps + 1) train the head only
    # SMA: the live weights up to update 2, then the mean of the snapshots from update 2 on.
    sma = algorithm.network_sma.state_dict()
    for key, value in sma.items():
        if "num_batches_tracked" not in key:
            mean = sum(s[key] for s in snapshots[1:]) / 3
            assert torch.allclose(value, mean, atol=1e-6), key
    x = torch.randn(5, *SHAPE)
    assert torch.equal(algorithm.predict(x), algorithm.network_sma(x))


def test_erm_plus_plus_set_lr_records_and_replays_a_schedule():
    algorithm = make_algorithm("ERMPlusPlus", linear_steps=0)
    algorithm.update(make_minibatches(0))
    loaders = [[make_minibatches(1)[0]]]
    # patience 1: a constant loss divides the lr by 10 at calls 3, 5 and 7; the third
    # change is the stop signal [0.0]
    for _ in range(7):
        schedule = algorithm.set_lr(eval_loaders_iid=loaders, device="cpu")
    lr = algorithm.hparams["lr"]
    assert schedule == [[lr]] * 2 + [[lr / 10]] * 2 + [[lr / 100]] * 2 + [[0.0]]
    assert algorithm.lr_schedule_changes == 3
    fresh = make_algorithm("ERMPlusPlus", linear_steps=0)
    fresh.update(make_minibatches(0))
    rest = fresh.set_lr(schedule=schedule)
    assert rest == schedule[1:]
    assert fresh.optimizer.param_groups[0]["lr"] == pytest.approx(schedule[0][0], rel=1e-7)


def test_trm_neumann_series_is_the_intended_sum():
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(3, 2)
    features, labels = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 0, 1, 1, 0])
    v = torch.randn(6, generator=g) * 0.1
    hessian = torch.autograd.functional.hessian(
        lambda w: F.cross_entropy(F.linear(features, w.view(2, 3), linear.bias), labels),
        linear.weight.detach().flatten())
    expected, term = v.clone(), v.clone()
    for _ in range(10):
        term = term - hessian @ term
        expected = expected + term
    assert torch.allclose(neumann_inverse_hvp(v, linear, features, labels), expected, atol=1e-6)


def test_trm_heads_and_alphas_are_state_and_the_featurizer_trains():
    algorithm = make_algorithm("TRM", iters=0)
    assert "domain_heads.0.weight" in algorithm.state_dict() and "alpha" in algorithm.state_dict()
    logs = algorithm.update(make_minibatches(0))
    assert logs["trm_loss"] != 0.0
    rows = algorithm.alpha / algorithm.alpha.sum(1, keepdim=True)
    assert torch.allclose(torch.diagonal(rows), torch.zeros(NUM_DOMAINS))


def test_ib_penalty_is_the_mean_feature_variance_and_nll_is_the_total():
    algorithm = make_algorithm("IB_ERM", ib_penalty_anneal_iters=0, ib_lambda=10.0)
    minibatches = make_minibatches(0)
    with torch.no_grad():
        expected = sum(algorithm.featurizer(x).var(0).mean() for x, _ in minibatches) / 3
    logs = algorithm.update(minibatches)
    assert logs["IB_penalty"] == pytest.approx(expected.item(), rel=1e-4)
    assert logs["nll"] == logs["loss"]  # upstream's in-place addition, kept


def test_ib_irm_resets_adam_at_both_anneal_steps():
    algorithm = make_algorithm("IB_IRM", ib_penalty_anneal_iters=1, irm_penalty_anneal_iters=2)
    optimizers = []
    for step in range(3):
        algorithm.update(make_minibatches(step))
        optimizers.append(algorithm.optimizer)
    assert len({id(o) for o in optimizers}) == 3


@pytest.mark.parametrize("name", ["CAD", "CondCAD"])
def test_cad_bottleneck_and_its_projection_head(name):
    algorithm = make_algorithm(name, is_project=True)  # upstream: NameError
    assert algorithm.project[2].out_features == 128
    logs = algorithm.update(make_minibatches(0))
    assert logs["bn_loss"] > 0
    # A domain without other-domain positives contributes no NaN gradient.
    z = torch.randn(5, algorithm.featurizer.n_outputs, requires_grad=True)
    loss = algorithm.bn_loss(z, torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_transfer_gda_trains_the_predictor_and_the_adversary_stays_in_the_ball():
    algorithm = make_algorithm("Transfer", gda=True, lr=0.05, delta=0.01, d_steps_per_g=3)
    before = copy.deepcopy(algorithm.classifier.state_dict())
    algorithm.update(make_minibatches(0))
    assert not torch.equal(algorithm.classifier.weight, before["weight"])
    distance = math.sqrt(sum(((algorithm.adv_classifier.state_dict()[k] - v) ** 2).sum().item()
                             for k, v in algorithm.classifier.state_dict().items()))
    assert distance <= 0.01 + 1e-6


def test_causirl_penalty_matches_the_two_sides_of_the_cut():
    algorithm = make_algorithm("CausIRL_CORAL")
    logs = algorithm.update(make_minibatches(0))
    assert logs["penalty"] >= 0.0


def test_eqrm_quantile_and_the_reset_after_a_float_burn_in():
    risks = torch.tensor([0.2, 0.5, 0.9, 1.4])
    q = kde_quantile(risks, torch.tensor(0.75, dtype=torch.float64))
    bandwidth = 1.06 * risks.std().double() * 4 ** (-0.2)
    cdf = (0.5 * (1 + torch.erf((q - risks.double()) / bandwidth / math.sqrt(2)))).mean()
    assert q.dtype == torch.float64 and cdf.item() == pytest.approx(0.75, abs=1e-6)
    assert kde_quantile(torch.ones(3), torch.tensor(0.5, dtype=torch.float64)).item() == 1.0

    algorithm = make_algorithm("EQRM", eqrm_burnin_iters=1.5, eqrm_lr=1e-7)
    first = algorithm.optimizer
    algorithm.update(make_minibatches(0))
    algorithm.update(make_minibatches(1))
    assert algorithm.optimizer is first  # step 1 < 1.5: still burning in
    algorithm.update(make_minibatches(2))
    assert algorithm.optimizer is not first and algorithm.optimizer.param_groups[0]["lr"] == 1e-7


def test_rdm_accepts_unequal_batches_and_resets_adam_with_rdm_lr():
    algorithm = make_algorithm("RDM", rdm_penalty_anneal_iters=1)
    logs = algorithm.update(make_minibatches(0, sizes=(3, 5, 4)))
    assert logs["update_count"] == 1.0 and logs["rdm_lambda"] == 5.0
    assert logs["total_loss"] == pytest.approx(logs["erm_loss"])  # penalties not yet weighted
    algorithm.update(make_minibatches(1, sizes=(3, 5, 4)))
    assert algorithm.optimizer.param_groups[0]["lr"] == algorithm.hparams["rdm_lr"]


def test_adrmx_turns_and_same_class_remix_pairs():
    algorithm = make_algorithm("ADRMX")
    keys = [sorted(algorithm.update(make_minibatches(s))) for s in range(3)]
    assert keys[0] == keys[2] == ["loss_disc"] and "loss_remixed" in keys[1]
    seen = []
    original = algorithm.classifier_label_1.forward
    algorithm.classifier_label_1.forward = lambda x: seen.append(x.detach()) or original(x)
    width = algorithm.featurizer_label.n_outputs
    content, domain = torch.randn(6, width), torch.randn(6, width)
    y = torch.tensor([1, 1, 1, 0, 0, 0])  # upstream used rows 0..2 for class 0 here
    algorithm._remix_loss(content, domain, y)
    for mixed, c in zip(seen, (0, 1)):
        rows = [i for i in range(6) if y[i] == c]
        pairs = [content[i] + domain[j] for i in rows for j in rows if i != j]
        assert any(torch.allclose(mixed.view(-1), p) for p in pairs), c


def test_domain_weighted_supcon_skips_anchors_without_positives():
    z = torch.randn(4, 3)
    y, d = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 0, 1])
    loss = domain_weighted_supcon(z, y, d)
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert domain_weighted_supcon(z, torch.arange(4), d).item() == 0.0


def test_urm_bounded_features_and_a_trained_discriminator():
    algorithm = make_algorithm("URM")
    before = copy.deepcopy(algorithm.discriminator.state_dict())
    algorithm.update(make_minibatches(0))
    assert not torch.equal(algorithm.discriminator.output.weight, before["output.weight"])
    with torch.no_grad():
        features = algorithm.featurizer(torch.randn(4, *SHAPE))
    assert features.abs().max() <= 1.0  # tanh
    with pytest.raises(ValueError, match="identity"):
        make_algorithm("URM", urm_generator_output="identity")
