"""FGMix and its ablations (InterpMix, ExtrapMix, GMix): groups, weights, policy, updates."""
import copy

import pytest

torch = pytest.importorskip("torch")

from domainbed import hparams_registry  # noqa: E402
from domainbed.algorithms import fgmix, get_algorithm_class  # noqa: E402
from domainbed.algorithms import per_sample  # noqa: E402

VARIANTS = ["InterpMix", "ExtrapMix", "GMix", "FGMixV1", "AntiGMix", "ExtrapMix2", "GMix2",
            "FGMixV2", "ExtrapMix2M", "GMix3", "AntiGMix3", "ShuffleMix3", "FGMix3", "FGMix3LOO",
            "FGMix"]
VERSION2 = ["ExtrapMix2", "GMix2", "FGMixV2"]
VERSION3 = ["GMix3", "AntiGMix3", "ShuffleMix3", "FGMix3", "FGMix3LOO", "FGMix"]
LEARNED = ["FGMixV1", "FGMixV2", "FGMix3", "FGMix3LOO", "FGMix"]
RESNET_OVERRIDES = {"pretrained": False, "resnet50_augmix": False, "resnet18": True}


# -- groups -------------------------------------------------------------------------------
def _groups(y, domains, num_domains, num_classes, seed=0):
    uniform = torch.rand((len(y), num_domains), generator=torch.Generator().manual_seed(seed))
    return fgmix.build_groups(y, domains, num_domains, num_classes, uniform)


def test_groups_share_the_anchor_label_and_take_one_member_per_domain():
    g = torch.Generator().manual_seed(0)
    domains = torch.repeat_interleave(torch.arange(4), torch.tensor([9, 5, 12, 7]))
    y = torch.randint(0, 3, (len(domains),), generator=g)
    index, mask = _groups(y, domains, 4, 3)
    anchors = torch.arange(len(y))
    assert torch.equal(index[anchors, domains], anchors)  # the anchor sits in its own column
    members_label = y[index]
    assert torch.equal(members_label, y.unsqueeze(1).expand_as(index))  # never across labels
    member_domain = domains[index]
    columns = torch.arange(4).expand_as(index)
    assert torch.equal(member_domain[mask], columns[mask])  # column d comes from domain d


def test_label_missing_from_a_domain_is_left_out_and_singletons_dropped():
    # Domain 1 has no label 2; label 3 exists only in domain 0.
    y = torch.tensor([0, 2, 3, 0, 1, 0, 2, 1])
    domains = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    index, mask = _groups(y, domains, 3, 4)
    assert mask[1].tolist() == [True, False, True]   # label 2: no member from domain 1
    assert index[1, 1] == 1                           # absent column filled with the anchor
    assert mask[2].tolist() == [True, False, False]   # label 3: a group of size 1 ...
    algorithm = _algorithm("GMix", "Debug28", num_classes=4)
    mbs = [(torch.zeros(3, 3, 28, 28), y[:3]), (torch.zeros(2, 3, 28, 28), y[3:5]),
           (torch.zeros(3, 3, 28, 28), y[5:])]
    valid = algorithm._draw_groups(y, domains, 3, torch.float32).valid
    assert valid.tolist() == [1, 1, 0, 1, 1, 1, 1, 1]  # ... is dropped
    assert algorithm.update(mbs)["n_groups"] == 7.0


def test_group_draws_are_uniform_over_same_label_candidates():
    y = torch.tensor([0, 0, 0, 0, 1])
    domains = torch.tensor([0, 1, 1, 1, 1])
    uniform = torch.linspace(0, 0.999, 300).unsqueeze(1).expand(300, 2).contiguous()
    picks = []
    for u in uniform:
        index, _ = fgmix.build_groups(y, domains, 2, 2, u.expand(5, 2))
        picks.append(int(index[0, 1]))
    counts = torch.bincount(torch.tensor(picks), minlength=5)
    assert counts.tolist() == [0, 100, 100, 100, 0]


# -- weights ------------------------------------------------------------------------------
def _random_signature(n, n_features, n_classes, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, n_features, generator=g, dtype=torch.float64)
    logits = torch.randn(n, n_classes, generator=g, dtype=torch.float64)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return z, per_sample.head_residuals(logits, y), y


@pytest.mark.parametrize("kappa", [0.0, 0.3, 1.0])
def test_weights_sum_to_one_and_are_bounded_below(kappa):
    z, r, y = _random_signature(40, 6, 3, seed=1)
    domains = torch.arange(40) % 4
    index, mask = _groups(y, domains, 4, 3)
    cosine = per_sample.grouped_head_gradient_cosine(z, r, index)
    compatibility = fgmix.mean_compatibility(cosine, mask)
    gammas = torch.distributions.Gamma(0.5, 1.0).sample(mask.shape).double()
    for policy in [fgmix.compatibility_policy(compatibility, mask, 0.1),
                   fgmix.dirichlet_policy(gammas, mask)]:
        weights = fgmix.affine_weights(policy, mask, kappa)
        size = mask.sum(1, keepdim=True).double()
        torch.testing.assert_close(weights.sum(1), torch.ones(40, dtype=torch.float64))
        assert torch.all(weights[~mask] == 0)
        assert torch.all(weights >= -kappa / size - 1e-12)
        if kappa == 0:
            assert torch.all(weights >= 0)  # a convex combination
    assert (weights < 0).any() == (kappa > 0)  # Dirichlet draws make some member small


def test_conflicting_domain_gets_smallest_and_negative_weight():
    g = torch.Generator().manual_seed(4)
    n_features = 8
    base_z = torch.randn(n_features, generator=g, dtype=torch.float64)
    z = base_z + 0.1 * torch.randn(4, n_features, generator=g, dtype=torch.float64)
    agreeing = torch.tensor([-0.6, 0.4, 0.2], dtype=torch.float64)
    r = agreeing + 0.05 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    r[2] = -agreeing                                    # domain 2 pulls the head the other way
    y = torch.zeros(4, dtype=torch.long)
    domains = torch.arange(4)
    index, mask = _groups(y, domains, 4, 3)
    compatibility = fgmix.mean_compatibility(
        per_sample.grouped_head_gradient_cosine(z, r, index), mask)
    policy = fgmix.compatibility_policy(compatibility, mask, tau=0.2)
    for kappa in [0.0, 0.5]:
        weights = fgmix.affine_weights(policy, mask, kappa)
        assert torch.all(weights.argmin(1) == 2)
        assert (weights[:, 2] < 0).all() == (kappa > 0)


def test_antigmix_reverses_gmix_preference_for_the_conflicting_domain():
    g = torch.Generator().manual_seed(4)
    n_features = 8
    z = torch.randn(n_features, generator=g) + 0.1 * torch.randn(4, n_features, generator=g)
    agreeing = torch.tensor([-0.6, 0.4, 0.2])
    r = agreeing + 0.05 * torch.randn(4, 3, generator=g)
    r[2] = -agreeing                                    # domain 2 pulls the head the other way
    index, mask = _groups(torch.zeros(4, dtype=torch.long), torch.arange(4), 4, 3)
    groups = fgmix.Groups(index, mask, torch.ones(4), None)
    weights = {name: _algorithm(name, "Debug28", num_classes=3, num_domains=4)
               ._mixing(None, None, groups, (z, r)).weights for name in ("GMix", "AntiGMix")}
    assert torch.all(weights["GMix"].argmin(1) == 2)
    assert torch.all(weights["AntiGMix"].argmax(1) == 2)
    for w in weights.values():
        assert torch.allclose(w.sum(1), torch.ones(4))


def test_mean_compatibility_is_the_mean_over_the_other_members():
    z, r, y = _random_signature(30, 5, 2, seed=7)
    domains = torch.arange(30) % 5
    y[domains == 3] = 0
    y[domains == 4] = 1      # some groups miss domain 3 or 4
    index, mask = _groups(y, domains, 5, 2)
    cosine = per_sample.grouped_head_gradient_cosine(z, r, index)
    ours = fgmix.mean_compatibility(cosine, mask)
    reference = torch.zeros_like(ours)
    for g in range(len(y)):
        members = mask[g].nonzero().flatten().tolist()
        for k in members:
            others = [cosine[g, k, l] for l in members if l != k]
            reference[g, k] = sum(others) / len(others) if others else 0.0
    assert (~mask).any() and (reference != 0).any()
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def test_policy_is_the_softmax_over_members():
    g = torch.Generator().manual_seed(8)
    compatibility = torch.randn(50, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(50, 6, generator=g) > 0.3
    mask[:, 0] = True
    expected = torch.softmax((compatibility / 0.3).masked_fill(~mask, float("-inf")), dim=1)
    torch.testing.assert_close(fgmix.compatibility_policy(compatibility, mask, 0.3), expected,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nonlinear", [False, True])
def test_mixed_logits_equal_the_head_of_the_mixed_features(nonlinear):
    """A linear head mixes logits (weights sum to one); a non-linear one mixes features.
    Both are h(z̃) to float64 rounding, with the same gradients for the features, the
    policy's scores and the head."""
    from domainbed import networks

    g = torch.Generator().manual_seed(9)
    torch.manual_seed(9)
    head = networks.Classifier(6, 3, nonlinear).double()
    z = torch.randn(24, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (24,), generator=g)
    index, mask = _groups(y, torch.arange(24) % 3, 3, 3)
    # Weights from a learnable policy, as FGMix's: gradients are compared for its scores
    # (the raw λ of the two forms differ in gradient by the bias, a direction that keeps
    # Σλ = 1 fixed and so no policy can move along).
    scores = torch.randn(mask.shape, generator=g, dtype=torch.float64, requires_grad=True)
    weights = fgmix.affine_weights(fgmix.compatibility_policy(scores, mask, 0.5), mask, 0.5)
    affine = isinstance(head, torch.nn.Linear)
    assert affine == (not nonlinear)
    ours = fgmix.mixed_logits(head, z, index, weights, affine, logits=head(z) if affine else None)
    reference = head(torch.einsum("gk,gkf->gf", weights, z[index]))
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((ours * upstream).sum(), (z, scores, *head.parameters()),
                                retain_graph=True)
    expected = torch.autograd.grad((reference * upstream).sum(),
                                   (z, scores, *head.parameters()))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nonlinear", [False, True])
def test_call_head_is_functional_call(nonlinear):
    from domainbed import networks

    torch.manual_seed(10)
    head = networks.Classifier(6, 3, nonlinear)
    params = {name: p.detach() * 2 for name, p in head.named_parameters()}
    x = torch.randn(5, 6)
    torch.testing.assert_close(fgmix.call_head(head, params, x),
                               torch.func.functional_call(head, params, (x,)))


# -- the policy's meta-gradient -------------------------------------------------------------
@pytest.mark.parametrize("name", ["FGMixV1", "FGMix"])
def test_meta_gradient_matches_finite_differences(name):
    algorithm = _algorithm(name, "Debug28", num_classes=3,
                           overrides={"fgmix_inner_lr": 0.5, "fgmix_rho": 0.1, "fgmix_tau": 0.3})
    algorithm.double()
    if name == "FGMix":
        # The look-ahead holds Adam's second moment as a constant preconditioner; with a
        # large eps the real step's preconditioner is (nearly) constant too, so finite
        # differences of the step itself check the meta-gradient (lr / eps = 1).
        algorithm.optimizer.param_groups[0].update(eps=1e4, lr=1e4)
    n_features = algorithm.classifier.in_features
    g = torch.Generator().manual_seed(5)
    z = torch.randn(12, n_features, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0] * 3)
    domains = torch.arange(3).repeat_interleave(4)
    groups = algorithm._draw_groups(y, domains, 3, torch.float64)
    signature = fgmix.gradient_signature(algorithm.classifier, z, algorithm.classifier(z), y)
    with torch.no_grad():
        algorithm.policy_omega.copy_(torch.randn(n_features, generator=g, dtype=torch.float64))

    loss, epsilon = algorithm.policy_meta_loss(z, y, groups, signature, domains=domains)
    assert all(e.abs().max() > 0 for e in epsilon.values())  # the SAM perturbation is active

    def meta_loss():  # ε held at its value: SAM treats g as a constant (spec §5)
        return algorithm.policy_meta_loss(z, y, groups, signature, epsilon, domains)[0]

    (analytic,) = torch.autograd.grad(loss, [algorithm.policy_omega])
    assert analytic.abs().max() > 1e-6  # the meta-loss does depend on ω
    numeric = torch.zeros_like(analytic)
    step = 1e-6
    omega = algorithm.policy_omega.data  # nudged in place; the meta-loss needs autograd on
    for f in torch.argsort(analytic.abs(), descending=True)[:12]:  # the informative entries
        omega[f] += step
        up = meta_loss().item()
        omega[f] -= 2 * step
        down = meta_loss().item()
        omega[f] += step
        numeric[f] = (up - down) / (2 * step)
        tolerance = 1e-5 if name == "FGMixV1" else 1e-3
        torch.testing.assert_close(analytic[f], numeric[f], rtol=tolerance, atol=1e-10)


# -- updates on datasets -------------------------------------------------------------------
def _algorithm(name, dataset, num_classes=2, num_domains=3, overrides=None, input_shape=None):
    hparams = hparams_registry.default_hparams(name, dataset)
    if dataset == "Debug224":
        hparams.update(RESNET_OVERRIDES)
    hparams.update(overrides or {})
    shape = input_shape or ((3, 224, 224) if dataset == "Debug224" else (3, 28, 28))
    return get_algorithm_class(name)(shape, num_classes, num_domains, hparams)


def _debug_minibatches(shape, sizes, num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *shape, generator=g), torch.randint(0, num_classes, (n,), generator=g))
            for n in sizes]


def _run(name, dataset, minibatches, seed, steps, num_classes=2, overrides=None):
    algorithm = _build(name, dataset, minibatches, num_classes, seed, overrides)
    records = [algorithm.update(minibatches) for _ in range(steps)]
    return algorithm, records


def _build(name, dataset, minibatches, num_classes, seed, overrides=None):
    torch.manual_seed(seed)
    return _algorithm(name, dataset, num_classes, len(minibatches), overrides,
                      input_shape=tuple(minibatches[0][0].shape[1:]))


def _assert_deterministic_and_resumable(name, dataset, minibatches, num_classes, steps=2):
    """`steps` updates, a checkpoint, one more update; then a fresh run with the same seed
    must match every record and parameter, and a fresh algorithm (another seed) loaded
    from the checkpoint must reproduce the last update exactly."""
    first = _build(name, dataset, minibatches, num_classes, seed=0)
    records = [first.update(minibatches) for _ in range(steps)]
    saved = copy.deepcopy(first.state_dict())
    records.append(first.update(minibatches))

    again = _build(name, dataset, minibatches, num_classes, seed=0)
    assert [again.update(minibatches) for _ in range(steps + 1)] == records
    for p, q in zip(first.parameters(), again.parameters()):
        assert torch.equal(p, q)

    restored = _build(name, dataset, minibatches, num_classes, seed=123)
    restored.load_state_dict(saved)
    assert restored.update(minibatches) == records[-1]
    for p, q in zip(first.parameters(), restored.parameters()):
        assert torch.equal(p, q)

    expected_keys = set(MIXING_KEYS) | (set(POLICY_KEYS) if name in LEARNED else set()) \
        | (set(AMOUNT_KEYS) if name in VERSION3 else set()) \
        | (set(SURROGATE_KEYS) if name in VERSION2 + VERSION3 + ["FGMix", "ExtrapMix2M"]
           else set())
    assert set(records[-1]) == expected_keys
    assert all(isinstance(v, float) for v in records[-1].values())
    assert records[-1]["n_groups"] > 0


MIXING_KEYS = ["loss", "nll", "mixed_loss", "mixed_source_ratio", "mean_negative_weight",
               "frac_extrapolating", "n_groups", "min_weight", "negative_mass", "outside_norm",
               "outside_ratio", "policy_entropy", "negative_mass_std", "frac_interpolating",
               "domain_preference"]
POLICY_KEYS = ["meta_loss", "meta_nll_ratio", "policy_kl_fixed", "weight_shift_fixed",
               "metric_distance"]
AMOUNT_KEYS = ["amount_mean", "amount_std", "amount_domain_r2"]
SURROGATE_KEYS = ["surrogate_corr", "surrogate_ratio"]


@pytest.mark.parametrize("name", VARIANTS)
def test_update_on_debug28_is_deterministic_and_resumes_exactly(name):
    minibatches = _debug_minibatches((3, 28, 28), [6, 5, 7], 2, seed=0)
    _assert_deterministic_and_resumable(name, "Debug28", minibatches, 2)


def test_update_on_debug224_resnet18():
    # One image per domain (ResNet-18 on CPU is the slow part), all of label 1: one group each.
    minibatches = [(x, torch.ones_like(y)) for x, y in
                   _debug_minibatches((3, 224, 224), [1, 1, 2], 2, seed=1)]
    _assert_deterministic_and_resumable("FGMix", "Debug224", minibatches, 2, steps=0)


def test_update_on_rotated_mnist5k():
    from domainbed import datasets

    dataset_class = datasets.get_dataset_class("RotatedMNIST5k")  # shipped offline: no skip
    hparams = hparams_registry.default_hparams("FGMix", "RotatedMNIST5k")
    dataset = dataset_class("unused", [0], hparams)
    minibatches = []
    for env in list(dataset)[1:4]:
        xs, ys = zip(*[env[i] for i in range(8)])
        minibatches.append((torch.stack(xs), torch.as_tensor(ys)))
    _assert_deterministic_and_resumable("FGMix", "RotatedMNIST5k", minibatches,
                                        dataset.num_classes)


def test_single_domain_is_plain_erm():
    minibatches = _debug_minibatches((3, 28, 28), [8], 2, seed=2)
    _, (record,) = _run("FGMix", "Debug28", minibatches, 0, 1)
    assert record["n_groups"] == 0 and record["mixed_loss"] == 0
    assert record["loss"] == record["nll"]


def test_nonlinear_classifier_is_supported():
    minibatches = _debug_minibatches((3, 28, 28), [4, 4], 3, seed=3)
    algorithm, records = _run("FGMix", "Debug28", minibatches, 0, 2, num_classes=3,
                              overrides={"nonlinear_classifier": True})
    assert algorithm.policy_omega.shape == (algorithm.classifier[-1].in_features,)
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in records)


def test_fgmix_learns_its_metric_and_gmix_keeps_it_fixed():
    minibatches = _debug_minibatches((3, 28, 28), [6, 6, 6], 2, seed=4)
    algorithm, _ = _run("FGMix", "Debug28", minibatches, 0, 2)
    start = torch.full_like(algorithm.policy_omega, torch.log(torch.tensor(torch.e - 1)).item())
    assert not torch.allclose(algorithm.policy_omega, start)
    assert "policy_optimizer" in algorithm.get_extra_state()
    gmix, _ = _run("GMix", "Debug28", minibatches, 0, 1)
    assert not hasattr(gmix, "policy_omega")


# -- hparams ---------------------------------------------------------------------------------
EXPECTED_HPARAMS = {
    "InterpMix": {"fgmix_gamma", "fgmix_alpha"},
    "ExtrapMix": {"fgmix_gamma", "fgmix_alpha", "fgmix_kappa"},
    "GMix": {"fgmix_gamma", "fgmix_kappa", "fgmix_tau"},
    "AntiGMix": {"fgmix_gamma", "fgmix_kappa", "fgmix_tau"},
    "FGMixV1": {"fgmix_gamma", "fgmix_kappa", "fgmix_tau", "fgmix_policy_lr", "fgmix_inner_lr",
                "fgmix_rho"},
    "ExtrapMix2": {"fgmix_gamma", "fgmix_kappa", "fgmix_tau", "fgmix_space"},
    "GMix2": {"fgmix_gamma", "fgmix_kappa", "fgmix_tau", "fgmix_space"},
    "FGMixV2": {"fgmix_gamma", "fgmix_kappa", "fgmix_tau", "fgmix_space", "fgmix_policy_lr",
                "fgmix_rho"},
    "ExtrapMix2M": {"fgmix_gamma", "fgmix_kappa", "fgmix_tau", "fgmix_space"},
}
EXPECTED_HPARAMS.update({name: EXPECTED_HPARAMS["GMix2"] | {"fgmix_amount_tau", "fgmix_direction"}
                         for name in ["GMix3", "AntiGMix3", "ShuffleMix3"]})
EXPECTED_HPARAMS.update({name: EXPECTED_HPARAMS["GMix3"] | {"fgmix_policy_lr", "fgmix_rho"}
                         for name in ["FGMix3", "FGMix3LOO"]})
EXPECTED_HPARAMS["FGMix"] = EXPECTED_HPARAMS[get_algorithm_class("FGMix").__mro__[1].__name__]


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_declares_exactly_its_hparams_and_keeps_erm_draws(name):
    erm = hparams_registry.random_hparams("ERM", "RotatedMNIST", 3)
    ours = hparams_registry.random_hparams(name, "RotatedMNIST", 3)
    assert set(ours) - set(erm) == EXPECTED_HPARAMS[name]
    assert {k: ours[k] for k in erm} == erm
    defaults = hparams_registry.default_hparams(name, "RotatedMNIST")
    spec_defaults = {"fgmix_gamma": 1.0, "fgmix_alpha": 1.0, "fgmix_kappa": 0.5,
                     "fgmix_tau": 0.2, "fgmix_policy_lr": 1e-2, "fgmix_inner_lr": 0.1,
                     "fgmix_rho": 0.05}
    if name in VERSION2 + VERSION3 + ["FGMix", "ExtrapMix2M"]:   # docs/method.md
        version = get_algorithm_class(name).VERSION
        spec_defaults.update({"fgmix_gamma": 0.3, "fgmix_tau": 0.2, "fgmix_space": "inputs"})
        spec_defaults.update({"fgmix_kappa": 0.5} if version == 2 else
                             {"fgmix_kappa": 2.0, "fgmix_amount_tau": 1.0,
                              "fgmix_direction": "random"})
        spec_defaults.update(get_algorithm_class(name).DEFAULTS)
    assert {k: defaults[k] for k in EXPECTED_HPARAMS[name]} == \
        {k: spec_defaults[k] for k in EXPECTED_HPARAMS[name]}


def test_random_hparams_follow_the_spec_ranges():
    draws = [hparams_registry.random_hparams("FGMixV1", "PACS", seed) for seed in range(40)]
    assert all(0 <= d["fgmix_kappa"] <= 1 for d in draws)
    assert all(10**-1.5 <= d["fgmix_tau"] <= 1 for d in draws)
    assert all(0.1 <= d["fgmix_gamma"] <= 10**0.5 for d in draws)
    assert all(1e-3 <= d["fgmix_policy_lr"] <= 0.1 for d in draws)
    assert all(0.01 <= d["fgmix_inner_lr"] <= 1 for d in draws)
    assert {d["fgmix_rho"] for d in draws} <= {0.01, 0.02, 0.05, 0.1, 0.2}
    assert len({d["fgmix_rho"] for d in draws}) > 1
    alphas = [hparams_registry.random_hparams("InterpMix", "PACS", s)["fgmix_alpha"]
              for s in range(40)]
    assert all(0.1 <= a <= 10 for a in alphas) and len(set(alphas)) == 40


def test_version2_random_hparams_stay_in_their_ranges():
    draws = [hparams_registry.random_hparams("FGMixV2", "PACS", seed) for seed in range(40)]
    assert all(0.1 <= d["fgmix_kappa"] <= 1 for d in draws)
    assert all(0.1 <= d["fgmix_tau"] <= 1 for d in draws)
    assert {d["fgmix_space"] for d in draws} == {"inputs"}
    assert "fgmix_inner_lr" not in draws[0]


def test_version3_random_hparams_stay_in_their_ranges():
    draws = [hparams_registry.random_hparams("FGMix3", "PACS", seed) for seed in range(40)]
    kappas = [d["fgmix_kappa"] for d in draws]
    assert all(10**-0.5 <= k <= 10**0.6 for k in kappas) and max(kappas) > 2.5
    assert all(10**-0.5 <= d["fgmix_amount_tau"] <= 10**0.5 for d in draws)
    assert {d["fgmix_direction"] for d in draws} == {"random"}


def test_each_hparam_is_declared_once_per_version():
    """The variants name the hparams they use; the values come from one table per version."""
    import inspect

    source = inspect.getsource(fgmix)
    for name in ["fgmix_gamma", "fgmix_kappa", "fgmix_tau", "fgmix_rho"]:
        assert source.count(f'"{name}": (') <= 3, name   # version 1, 2 and 3 at most


# -- version 2: cross-domain compatibility, directed weights, the model's look-ahead --------
def _loop_cross_domain_compatibility(z, r, y, domains):
    """The definition: cosine of g_i with the sum of the other domains' unit gradients."""
    grads = [torch.cat([torch.outer(r[i], z[i]).flatten(), r[i]]) for i in range(len(y))]
    units = [g / g.norm() if g.norm() > 0 else g for g in grads]
    out = []
    for i in range(len(y)):
        others = [units[j] for j in range(len(y)) if y[j] == y[i] and domains[j] != domains[i]]
        total = sum(others) if others else torch.zeros_like(grads[i])
        if total.norm() == 0 or grads[i].norm() == 0:
            out.append(torch.tensor(0.0, dtype=z.dtype))
        else:
            out.append(units[i] @ total / total.norm())
    return torch.stack(out)


def test_cross_domain_compatibility_matches_its_definition():
    g = torch.Generator().manual_seed(11)
    y = torch.tensor([0, 1, 0, 1, 2, 0, 0, 1, 2])
    domains = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    z = torch.randn(9, 5, generator=g, dtype=torch.float64)
    logits = torch.randn(9, 3, generator=g, dtype=torch.float64)
    r = per_sample.head_residuals(logits, y)
    cosine = per_sample.head_gradient_cosine(z, r)
    ours = fgmix.cross_domain_compatibility(cosine, y, domains, 3, 3)
    torch.testing.assert_close(ours, _loop_cross_domain_compatibility(z, r, y, domains))
    # The cells a step forms once give the same scores.
    cells = fgmix.cross_domain_cells(y, domains, 3, 3, cosine.dtype)
    assert torch.equal(fgmix.cross_domain_compatibility(cosine, y, domains, 3, 3, cells), ours)
    # Label 2 exists in domains 1 and 2 only; a two-member comparison is not symmetric.
    assert ours[4] != 0 and ours[8] != 0


def test_standardized_scores_and_ties():
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 0.0], [0.3, -0.1, 0.3]])
    unit = fgmix.standardized(scores, mask)
    assert torch.allclose(unit[0], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4)
    assert torch.equal(unit[1], torch.zeros(3))             # a tie: no direction
    members = unit[2][mask[2]]
    assert abs(members.mean()) < 1e-6 and abs(members.pow(2).mean() - 1) < 1e-5


@pytest.mark.parametrize("kappa", [0.25, 1.0])
def test_directed_weights_extrapolate_toward_the_best_and_away_from_the_worst(kappa):
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    scores = torch.tensor([[0.10, 0.11, 0.0], [0.5, -0.2, 0.1], [1e-4, 2e-4, 3e-4]])
    policy, weights = fgmix.directed_weights(scores, mask, tau=0.5, kappa=kappa)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    assert (weights >= -kappa - 1e-6).all() and (weights[~mask] == 0).all()
    assert ((weights < 0) & mask).any(1).all()              # every group leaves the hull
    best, worst = scores.masked_fill(~mask, -9).argmax(1), scores.masked_fill(~mask, 9).argmin(1)
    rows = torch.arange(3)
    assert (weights[rows, best] > 1 / mask.sum(1)).all() and (weights[rows, worst] < 0).all()
    # The amount does not depend on the scores' scale: rows 2 and a scaled copy agree.
    _, scaled = fgmix.directed_weights(scores * 1000, mask, tau=0.5, kappa=kappa)
    torch.testing.assert_close(scaled[2], weights[2])
    torch.testing.assert_close(policy.sum(1), torch.ones(3))


def test_extrapolation_measures_on_a_known_group():
    values = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    index = torch.tensor([[0, 1], [2, 2]])
    weights = torch.tensor([[1.5, -0.5], [1.0, 0.0]])
    mass, outside, ratio = fgmix.extrapolation_measures(values, index, weights,
                                                        torch.tensor([1.0, 0.0]))
    # z̃ = 1.5·(0,0) − 0.5·(1,0) = (−0.5, 0): 0.5 outside the segment, whose radius is 0.5.
    torch.testing.assert_close(mass, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(outside, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(ratio, torch.tensor([1.0, 0.0]))


def test_adam_step_is_where_the_models_optimizer_takes_the_parameter():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for steps in range(3):  # from an empty state, then with moments
        loss = F.cross_entropy(head(x), y)
        grads = torch.autograd.grad(loss, list(head.parameters()))
        predicted = [fgmix.adam_step(optimizer, p, p.detach(), g)
                     for p, g in zip(head.parameters(), grads)]
        optimizer.zero_grad()
        F.cross_entropy(head(x), y).backward()
        optimizer.step()
        for p, q in zip(head.parameters(), predicted):
            torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-7)


F = torch.nn.functional


@pytest.mark.parametrize("arch", ["mlp", "mnist_cnn", "resnet50"])
def test_meta_loss_stays_near_the_source_loss_at_the_first_steps(arch):
    """The model's own look-ahead does not overshoot: meta_loss / nll within [0.5, 2]."""
    if arch == "mlp":
        # Upstream's MLP (its default sizes) on flattened MNIST-sized inputs.
        shape, classes, sizes = (784,), 10, [32, 32, 32]
        overrides = {"mlp_width": 256, "mlp_depth": 3, "mlp_dropout": 0.0}
        dataset = "RotatedMNIST"
    elif arch == "mnist_cnn":
        shape, classes, sizes, overrides = (2, 28, 28), 10, [32, 32, 32], {}
        dataset = "RotatedMNIST5k"
    else:  # ResNet-50 features at random init, a PACS-shaped batch (3 x 32, 7 classes);
        # 32-pixel images keep it cheap on CPU, the features are still ResNet-50's 2048.
        shape, classes, sizes = (3, 32, 32), 7, [32, 32, 32]
        overrides = {"pretrained": False, "resnet50_augmix": False, "resnet18": False,
                     "resnet_dropout": 0.0}
        dataset = "PACS"
    hparams = hparams_registry.default_hparams("FGMix", dataset)
    hparams.update(overrides)
    torch.manual_seed(0)
    if arch == "resnet50":
        from domainbed import networks
        algorithm_class = get_algorithm_class("FGMix")
        original = networks.Featurizer
        networks.Featurizer = lambda s, h: networks.ResNet((3, 224, 224), h)
        try:
            algorithm = algorithm_class(shape, classes, 3, hparams)
        finally:
            networks.Featurizer = original
    else:
        algorithm = get_algorithm_class("FGMix")(shape, classes, 3, hparams)
    minibatches = _debug_minibatches(shape, sizes, classes, seed=7)
    records = [algorithm.update(minibatches) for _ in range(2)]
    for record in records:
        assert 0.5 <= record["meta_nll_ratio"] <= 2, record
        assert record["frac_extrapolating"] >= 0.5


def test_version2_extrapolates_and_the_learned_policy_moves_away_from_the_fixed_one():
    from domainbed import datasets

    hparams = hparams_registry.default_hparams("FGMix", "RotatedMNIST5k")
    dataset = datasets.get_dataset_class("RotatedMNIST5k")("unused", [0], hparams)
    g = torch.Generator().manual_seed(0)
    minibatches = []
    for env in list(dataset)[1:]:
        picks = torch.randint(0, len(env), (32,), generator=g).tolist()
        xs, ys = zip(*[env[i] for i in picks])
        minibatches.append((torch.stack(xs), torch.as_tensor(ys)))
    for name in VERSION2:
        algorithm, records = _run(name, "RotatedMNIST5k", minibatches, 0, 6, num_classes=10)
        for record in records:
            assert record["frac_extrapolating"] >= 0.5, (name, record)
            assert record["min_weight"] < 0 and record["outside_norm"] > 0
            assert 0 < record["policy_entropy"] < 1
    assert records[-1]["policy_kl_fixed"] > 0 and records[-1]["weight_shift_fixed"] > 0


def test_input_space_mixes_the_images_with_the_same_weights():
    minibatches = _debug_minibatches((3, 28, 28), [6, 5, 7], 2, seed=9)
    algorithm = _build("GMix2", "Debug28", minibatches, 2, seed=0,
                       overrides={"fgmix_space": "inputs"})
    twin = copy.deepcopy(algorithm)
    record = algorithm.update(minibatches)
    # The same step by hand, on the twin (same weights, same generator state).
    x, y, domains = fgmix.concat_with_domains(minibatches)
    z = twin.featurizer(x)
    groups = twin._draw_groups(y, domains, 3, z.dtype)
    signature = fgmix.gradient_signature(twin.classifier, z, twin.classifier(z), y)
    weights = twin._mixing(y, domains, groups, signature).weights
    mixed_x = (weights.view(*weights.shape, 1, 1, 1) * x[groups.index]).sum(1)
    expected = fgmix.mixed_cross_entropy(twin.predict(mixed_x), y, groups)
    assert record["mixed_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_fgmix_space_accepts_only_its_two_values():
    from domainbed.lib import validation

    validation.check_hparam_value("fgmix_space", "inputs")
    with pytest.raises(validation.ValidationError, match="'features', 'inputs'"):
        validation.check_hparam_value("fgmix_space", "pixels")


# -- version 3: the policy decides how far (§3c) ---------------------------------------------
def _two_domain_batch(seed, n=8, classes=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 28, 28, generator=g), torch.arange(n) % classes) for _ in range(2)]


@pytest.mark.parametrize("name", ["FGMix3", "FGMix3LOO"])
def test_two_domains_the_policy_gets_a_finite_difference_checked_gradient(name):
    """Two source domains (ColoredMNIST's case): every group has two members. Version 3's
    metric gets a gradient that finite differences confirm; version 2's gets none."""
    algorithm = _algorithm(name, "Debug28", num_classes=3, num_domains=2,
                           overrides={"fgmix_rho": 0.1, "fgmix_space": "features"})
    algorithm.double()
    algorithm.optimizer.param_groups[0].update(eps=1e4, lr=1e4)   # see the test above
    n_features = algorithm.classifier.in_features
    g = torch.Generator().manual_seed(5)
    z = torch.randn(16, n_features, generator=g, dtype=torch.float64)
    y = torch.arange(16) % 3
    domains = torch.arange(2).repeat_interleave(8)
    groups = algorithm._draw_groups(y, domains, 2, torch.float64)
    assert groups.mask.sum(1).max() == 2
    signature = algorithm._step_signature(*fgmix.gradient_signature(
        algorithm.classifier, z, algorithm.classifier(z), y)[:2], y, domains, groups.mask)
    held_out = algorithm._held_out(domains, 2)
    assert (held_out is None) == (name == "FGMix3")

    def meta_loss(epsilon=None):
        return algorithm.policy_meta_loss(z, y, groups, signature, epsilon, domains,
                                          held_out=held_out)

    loss, epsilon = meta_loss()
    (analytic,) = torch.autograd.grad(loss, [algorithm.policy_omega])
    assert analytic.abs().max() > 1e-8
    omega = algorithm.policy_omega.data
    for f in torch.argsort(analytic.abs(), descending=True)[:6]:
        omega[f] += 1e-6
        up = meta_loss(epsilon)[0].item()
        omega[f] -= 2e-6
        down = meta_loss(epsilon)[0].item()
        omega[f] += 1e-6
        torch.testing.assert_close(analytic[f], torch.tensor((up - down) / 2e-6,
                                                             dtype=torch.float64),
                                   rtol=1e-3, atol=1e-12)

    version2 = _algorithm("FGMixV2", "Debug28", num_classes=3, num_domains=2,
                          overrides={"fgmix_space": "features"}).double()
    loss2, _ = version2.policy_meta_loss(z, y, groups, signature, domains=domains)
    (gradient2,) = torch.autograd.grad(loss2, [version2.policy_omega])
    assert gradient2.abs().max() < 1e-9   # standardising two scores gives ±1: no gradient


def test_two_domains_the_learned_metric_moves_and_changes_the_amounts():
    minibatches = _two_domain_batch(seed=2)
    algorithm, records = _run("FGMix3", "Debug28", minibatches, 0, 4, num_classes=3,
                              overrides={"fgmix_policy_lr": 0.1})
    assert records[-1]["metric_distance"] > 1e-3
    assert records[-1]["policy_kl_fixed"] > 0 and records[-1]["weight_shift_fixed"] > 0


def test_amounts_follow_the_groups_agreement_and_span_interpolation_to_extrapolation():
    agreement = torch.tensor([0.9, 0.1, -0.5, 0.3, 7.0])
    valid = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    amounts = fgmix.extrapolation_amounts(agreement, valid, -0.5, 2.0, tau=0.3)
    kept = amounts[:4]
    assert torch.equal(torch.argsort(kept), torch.argsort(agreement[:4]))  # more agreement, further
    assert kept.min() > -0.5 and kept.max() < 2.0 and kept.min() < 0 < kept.max()
    reversed_ = fgmix.extrapolation_amounts(agreement, valid, -0.5, 2.0, tau=0.3, sign=-1.0)
    assert torch.equal(torch.argsort(reversed_[:4]), torch.argsort(-agreement[:4]))
    # The weights: Σ λ = 1; no negative weight where κ_g < 0 (interpolation).
    direction = torch.tensor([[1.0, 0.0]] * 5)
    mask = torch.ones(5, 2, dtype=torch.bool)
    _, weights = fgmix.amount_weights(direction, mask, 0.05, amounts)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    assert torch.equal((weights < 0).any(1)[:4], kept > 0)


def test_shuffled_amounts_keep_the_amounts_and_cut_their_order():
    amounts = torch.arange(10, dtype=torch.float32)
    valid = torch.tensor([1.0] * 8 + [0.0] * 2)
    keys = torch.rand(10, generator=torch.Generator().manual_seed(1))
    shuffled = fgmix.shuffled_amounts(amounts, valid, keys)
    assert torch.equal(torch.sort(shuffled[:8]).values, amounts[:8])
    assert not torch.equal(shuffled[:8], amounts[:8])
    assert torch.equal(shuffled[8:], amounts[8:])   # groups not kept are left alone


def test_leave_one_domain_out_takes_the_domains_in_turn():
    minibatches = _debug_minibatches((3, 28, 28), [4, 4, 4], 2, seed=1)
    algorithm = _build("FGMix3LOO", "Debug28", minibatches, 2, seed=0)
    domains = fgmix.concat_with_domains(minibatches)[2]
    held = []
    for _ in range(4):
        held.append(int(domains[algorithm._held_out(domains, 3).bool()][0]))
        algorithm.update(minibatches)
    assert held == [0, 1, 2, 0]


def test_random_scores_leave_the_group_draws_as_the_other_variants_draw_them():
    minibatches = _debug_minibatches((3, 28, 28), [6, 5, 7], 2, seed=0)
    x, y, domains = fgmix.concat_with_domains(minibatches)
    draws = {}
    for name in ["GMix2", "ExtrapMix2", "ShuffleMix3"]:
        algorithm = _build(name, "Debug28", minibatches, 2, seed=3)
        draws[name] = [algorithm._draw_groups(y, domains, 3, torch.float32).index
                       for _ in range(3)]
    for name in ["ExtrapMix2", "ShuffleMix3"]:
        assert all(torch.equal(a, b) for a, b in zip(draws["GMix2"], draws[name]))


def test_one_algorithm_under_two_names_gives_identical_records():
    """What paired seeds rest on: the same seed, the same formulation, another name."""
    class Twin(get_algorithm_class("GMix3")):
        pass

    minibatches = _debug_minibatches((3, 28, 28), [6, 5, 7], 2, seed=0)
    torch.manual_seed(11)
    twin = Twin((3, 28, 28), 2, 3, hparams_registry.default_hparams("GMix3", "Debug28"))
    _, records = _run("GMix3", "Debug28", minibatches, 11, 3)
    assert [twin.update(minibatches) for _ in range(3)] == records


# -- diagnostics that can fail ----------------------------------------------------------------
def test_domain_preference_sees_a_policy_that_favours_one_domain():
    mask = torch.ones(200, 2, dtype=torch.bool)
    valid = torch.ones(200)
    always_first = torch.tensor([[0.9, 0.1]] * 200)
    assert fgmix.domain_preference(always_first, mask, valid) == pytest.approx(0.5)
    coin = torch.rand(200, generator=torch.Generator().manual_seed(0)).unsqueeze(1)
    blind = torch.cat([coin, 1 - coin], 1)
    assert fgmix.domain_preference(blind, mask, valid) < 0.1


def test_explained_by_domain_and_correlation_measure_what_they_say():
    domains = torch.arange(3).repeat(40)
    valid = torch.ones(120)
    assert fgmix.explained_by_domain(domains.float(), domains, valid, 3) == pytest.approx(1.0)
    noise = torch.randn(120, generator=torch.Generator().manual_seed(0))
    assert fgmix.explained_by_domain(noise, domains, valid, 3) < 0.1
    assert fgmix.masked_correlation(noise, 2 * noise + 1, valid) == pytest.approx(1.0)
    assert fgmix.masked_std(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 0.0])) \
        == pytest.approx(1.0)


@pytest.mark.parametrize("name, value", [("fgmix_gamma", -1.0), ("fgmix_gamma", 1e6),
                                         ("fgmix_kappa", -0.5), ("fgmix_kappa", 1e9),
                                         ("fgmix_tau", 0.0), ("fgmix_amount_tau", -1.0),
                                         ("fgmix_direction", "sideways")])
def test_the_family_s_hparams_refuse_values_outside_their_range(name, value):
    from domainbed.lib import validation

    with pytest.raises(validation.ValidationError, match=name):
        validation.check_hparam_value(name, value)


@pytest.mark.parametrize("name", ["FGMix", "GMix3"])
def test_costly_diagnostics_are_measured_every_tenth_step_and_held_between(name):
    # Against the same run measuring every step: training and the cheap diagnostics are
    # identical at every step (the costly ones feed nothing back), the costly ones equal on
    # measured steps (0 and 10) and, between, the value of the last measured step.
    # A small MLP on vectors keeps twelve steps of two runs fast.
    minibatches = _debug_minibatches((10,), [6, 5, 7], 2, seed=0)
    small = {"mlp_width": 16, "mlp_depth": 3, "mlp_dropout": 0.0}
    every = _build(name, "Debug28", minibatches, 2, seed=0, overrides=small)
    every.MEASURE_EVERY = 1
    strided = _build(name, "Debug28", minibatches, 2, seed=0, overrides=small)
    assert strided.MEASURE_EVERY == 10
    logs_every = [every.update(minibatches) for _ in range(12)]
    logs_strided = [strided.update(minibatches) for _ in range(12)]
    costly = [k for k in fgmix.GroupMixBase.COSTLY_MEASURES if k in logs_every[0]]
    assert set(costly) >= {"negative_mass", "outside_norm"}
    if name == "FGMix":
        assert {"policy_kl_fixed", "weight_shift_fixed"} <= set(costly)
    for step, (a, b) in enumerate(zip(logs_every, logs_strided)):
        assert {k: v for k, v in a.items() if k not in costly} == \
            {k: v for k, v in b.items() if k not in costly}
        measured = step - step % 10
        assert {k: b[k] for k in costly} == {k: logs_every[measured][k] for k in costly}
    # the held values do change when measured again (the check above is not vacuous)
    assert logs_every[10]["outside_norm"] != logs_every[0]["outside_norm"]
    assert logs_strided[9]["outside_norm"] == logs_every[0]["outside_norm"]
