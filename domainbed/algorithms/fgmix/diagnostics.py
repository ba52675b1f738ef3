"""docs/method.md, Diagnostics: is each mechanism at work? Extrapolation measures, the
policy's entropy and its divergence from the fixed metric's, spreads, correlations and
how much a choice depends on the domain (the floats `update()` logs)."""
import torch
import torch.nn.functional as F

from domainbed.algorithms import per_sample

from .objective import masked_mean


def extrapolation_measures(values, index, weights, valid):
    """(negative mass, outside norm, outside ratio) per group, from features `values` [N, F].

    With s = Σ max(−λ_k, 0), the mixed point is z̃ = (1 + s)·a − s·b with a and b in the
    members' hull, so s·(a − b) is the part of z̃ outside the hull: its norm is how far the
    mixed point leaves it (an upper bound on the distance). The ratio divides by the group's
    radius (mean distance of the members to their centroid).
    """
    members = per_sample.gather_rows(values, index)                   # [N, D, F]
    positive, negative = weights.clamp(min=0), (-weights).clamp(min=0)
    mass = negative.sum(1)
    outside = (mass / (1 + mass)).unsqueeze(1) * (positive.unsqueeze(2) * members).sum(1) \
        - (negative.unsqueeze(2) * members).sum(1)
    outside_norm = outside.norm(dim=1)
    in_group = (weights != 0).to(values.dtype)
    size = in_group.sum(1, keepdim=True).clamp(min=1)
    centroid = (in_group.unsqueeze(2) * members).sum(1) / size
    radius = ((members - centroid.unsqueeze(1)).norm(dim=2) * in_group).sum(1) / size.squeeze(1)
    ratio = torch.where(radius > 0, outside_norm / radius.clamp(min=1e-12), 0.0)
    return mass, outside_norm, ratio * (valid > 0)


def normalized_entropy(policy, mask):
    """H(π) / log K per group (1 = uniform over the K members; 0 for groups of one)."""
    logs = torch.where(mask & (policy > 0), policy.clamp(min=1e-30).log(), 0.0)
    size = mask.sum(1).to(policy.dtype)
    return torch.where(size > 1, -(policy * logs).sum(1) / size.clamp(min=2).log(), 0.0)


def masked_std(values, valid, count=None):
    """Standard deviation of `values` over kept groups (how much a choice varies)."""
    mean = masked_mean(values, valid, count)
    return masked_mean((values - mean).square(), valid, count).sqrt()


def masked_correlation(a, b, valid):
    """Pearson correlation of `a` and `b` over kept groups (0 when either is constant)."""
    a, b = a - masked_mean(a, valid), b - masked_mean(b, valid)
    covariance = masked_mean(a * b, valid)
    scale = (masked_mean(a * a, valid) * masked_mean(b * b, valid)).sqrt()
    return torch.where(scale > 1e-12, covariance / scale.clamp(min=1e-12), 0.0)


def domain_preference(policy, mask, valid):
    """How much the policy's favoured member depends on its domain: the total-variation
    distance between the domains of the favoured members (argmax π; the columns of a
    group are domains) and what a choice blind to domains would give (each member of a
    group equally likely). 0: no preference; 1: always one domain where any could win."""
    favoured = F.one_hot(torch.where(mask, policy, -1.0).argmax(1), mask.shape[1])
    chance = mask.to(policy.dtype) / mask.sum(1, keepdim=True).clamp(min=1)
    count = valid.sum().clamp(min=1)
    observed = (favoured.to(policy.dtype) * valid.unsqueeze(1)).sum(0) / count
    expected = (chance * valid.unsqueeze(1)).sum(0) / count
    return 0.5 * (observed - expected).abs().sum()


def explained_by_domain(values, domains, valid, num_domains):
    """η²: the share of the variance of a per-group value (κ_g) over kept groups that the
    anchor's domain explains (0: the same across domains; 1: set by the domain alone)."""
    one_hot = F.one_hot(domains, num_domains).to(values.dtype) * valid.unsqueeze(1)
    sizes = one_hot.sum(0)
    overall = masked_mean(values, valid)
    domain_means = (one_hot * values.unsqueeze(1)).sum(0) / sizes.clamp(min=1)
    between = (sizes * (domain_means - overall).square()).sum()
    total = ((values - overall).square() * valid).sum()
    return torch.where(total > 1e-12, between / total.clamp(min=1e-12), 0.0)


def bernoulli_kl(p, q):
    """KL(Bern(p) ‖ Bern(q)) per element, for version 3's far-or-near choice."""
    p, q = p.clamp(1e-6, 1 - 1e-6), q.clamp(1e-6, 1 - 1e-6)
    return p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()


def policy_kl(policy, reference, mask):
    """KL(π ‖ π_ref) over each group's members."""
    log_ratio = policy.clamp(min=1e-30).log() - reference.clamp(min=1e-30).log()
    ratio = torch.where(mask & (policy > 0), log_ratio, 0.0)
    return (policy * ratio).sum(1)
