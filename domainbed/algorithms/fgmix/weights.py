"""§3, §3b and §3c of docs/method.md: the mixing weights, and the rules the variants choose.

§3 (version 1): a policy π over each group's members (Dirichlet draws, or a softmax of the
pairwise compatibilities) and the affine map λ = (1 + κ)·π − κ/K. §3b (version 2):
extrapolation by design, λ = (1 + κ)·p − κ·q over standardised scores. §3c (version 3): the
same with an amount κ_g per group from its members' agreement with the other domains.

A weight rule (`DirichletWeights`, `PairwiseWeights`, `DirectedWeights`, `AmountWeights`)
is what a registered variant picks (its `WEIGHTS`): it says what the step must draw and
compute for it, and turns the step's groups and compatibilities into a `Mixing`.
"""
import collections

import torch


def mean_compatibility(cosine, mask):
    """c_k = mean over the other members l of the group of S_kl; [G, K] (0 off-group)."""
    members = mask.to(cosine.dtype)
    with_self = (cosine * members.unsqueeze(1)).sum(2)
    total = (with_self - torch.diagonal(cosine, dim1=1, dim2=2)) * members
    n_others = (members.sum(1, keepdim=True) - 1).clamp(min=1)
    return total / n_others


def compatibility_policy(compatibility, mask, tau):
    """π = softmax(c / τ) over each group's members."""
    scores = torch.where(mask, compatibility / tau, float("-inf"))
    # The same softmax over the transposed layout: on CPU, softmax along a short last
    # dimension is about 6x slower (torch 2.14, measured for [640, 10]).
    return torch.softmax(scores.T, dim=0).T


def dirichlet_policy(draws, mask):
    """π ~ Dirichlet(α·1) over each group's members, from Gamma(α, 1) draws [N, D]."""
    draws = torch.where(mask, draws, 0.0)
    total = draws.sum(1, keepdim=True)
    uniform = mask.to(draws.dtype) / mask.sum(1, keepdim=True)
    # All draws underflowing to 0 (tiny α) is nearly impossible; then fall back to uniform.
    return torch.where(total > 0, draws / total.clamp(min=torch.finfo(draws.dtype).tiny), uniform)


def affine_weights(policy, mask, kappa):
    """λ_k = (1 + κ) π_k − κ / K on members (0 elsewhere): Σ λ = 1 and λ ≥ −κ/K."""
    size = mask.sum(1, keepdim=True).to(policy.dtype)
    weights = (1.0 + kappa) * policy - kappa / size
    return torch.where(mask, weights, 0.0)


def standardized(scores, mask):
    """(s − mean) / std over each group's members; 0 off-group and where all members tie."""
    members = mask.to(scores.dtype)
    count = members.sum(1, keepdim=True).clamp(min=1)
    centred = (scores - (scores * members).sum(1, keepdim=True) / count) * members
    variance = (centred * centred).sum(1, keepdim=True) / count
    spread = variance > 1e-12
    std = torch.sqrt(torch.where(spread, variance, 1.0))
    return torch.where(spread, centred / std, 0.0)


def directed_weights(scores, mask, tau, kappa):
    """(p, λ) with λ = (1 + κ)·p − κ·q, p = softmax(ŝ/τ), q = softmax(−ŝ/τ) over members,
    ŝ the standardized scores.

    The mixed point Σ λ_k z_k = z_p + κ·(z_p − z_q) starts where the policy points (z_p,
    inside the hull) and is pushed κ times further, away from the members it disfavours
    (z_q): every group with unequal scores extrapolates, by an amount set by κ (Σ λ = 1,
    λ ≥ −κ), whatever the scores' scale. The scores choose only the direction.
    """
    unit = standardized(scores, mask)
    toward = compatibility_policy(unit, mask, tau)
    away = compatibility_policy(-unit, mask, tau)
    weights = (1.0 + kappa) * toward - kappa * away
    return toward, torch.where(mask, weights, 0.0)


# -- §3c the policy decides how far (version 3) ----------------------------------------
def group_agreement(compatibility, mask):
    """a_g = mean over the group's members of their cross-domain compatibility [G]
    (`compatibility` [G, K], the members' c_k); 0 for an empty group."""
    members = mask.to(compatibility.dtype)
    return (compatibility * members).sum(1) / members.sum(1).clamp(min=1)


def standardized_over_groups(values, valid):
    """(v − mean) / std over the kept groups of the batch (valid > 0); 0 elsewhere and where
    every kept group ties. Across groups, not across a group's members: so it has a
    gradient whatever the group size (two members included), as long as groups differ."""
    count = valid.sum().clamp(min=1)
    centred = (values - (values * valid).sum() / count) * valid
    variance = (centred * centred).sum() / count
    spread = variance > 1e-12
    return torch.where(spread, centred / torch.sqrt(torch.where(spread, variance, 1.0)), 0.0)


def extrapolation_amounts(agreement, valid, low, high, tau, sign=1.0):
    """κ_g = low + (high − low) · σ(sign · â_g / τ), â the agreement standardised over the
    batch's kept groups: with sign +1 the groups whose members agree most with the other
    domains are pushed furthest (toward `high`), the most conflicting ones interpolate
    (toward `low` < 0); sign −1 reverses that (a control)."""
    unit = standardized_over_groups(agreement, valid)
    return low + (high - low) * torch.sigmoid(sign * unit / tau)


def shuffled_amounts(amounts, valid, keys):
    """The same amounts handed to the kept groups in a random order (`keys` [G], uniform
    draws): the amounts' distribution, and so the augmentation's strength, is kept, and
    their link to the groups' compatibilities is cut (the information control)."""
    kept = valid > 0
    inf = torch.full_like(keys, float("inf"))
    source = torch.argsort(torch.where(kept, keys, inf))          # kept groups, shuffled
    positions = torch.arange(len(keys), device=keys.device, dtype=keys.dtype)
    target = torch.argsort(torch.where(kept, positions, inf))     # kept groups, in order
    shuffled = amounts.clone()
    shuffled[target] = amounts[source]   # the first n_kept entries of both are kept groups
    return torch.where(kept, shuffled, amounts)


def amount_weights(direction, mask, tau, amounts):
    """(p, λ) with λ_g = (1 + κ_g)·p_g − κ_g·q_g: the directed weights of §3b with a κ per
    group. The mixed point z_p + κ_g (z_p − z_q) lies between the favoured and disfavoured
    members for −1 < κ_g < 0 (interpolation; −0.5 is their midpoint) and beyond the
    favoured one for κ_g > 0 (extrapolation). Σ λ = 1 for every κ_g."""
    unit = standardized(direction, mask)
    toward = compatibility_policy(unit, mask, tau)
    away = compatibility_policy(-unit, mask, tau)
    kappa = amounts.unsqueeze(1)
    weights = (1.0 + kappa) * toward - kappa * away
    return toward, torch.where(mask, weights, 0.0)


# -- the weight rules the variants choose ----------------------------------------------
Mixing = collections.namedtuple("Mixing", "policy weights amounts", defaults=(None,))
Mixing.__doc__ = """The policy π [N, D] (sum 1 over members), the mixing weights λ [N, D] and,
in version 3, each group's extrapolation amount κ_g [N] (None otherwise)."""


class RandomDirection:
    """§3b's scores drawn at random (standard normal per member, `Groups.draws`): the same
    rule in a direction that carries no information (ExtrapMix2)."""

    draws = "normal"
    reads_cross_domain = False

    def scores(self, groups, compatibilities):
        return groups.draws


class CompatibilityDirection:
    """§3b's scores: each member's cross-domain compatibility (§1b), times `sign` (−1
    favours the least compatible members)."""

    draws = None
    reads_cross_domain = True

    def __init__(self, sign):
        self.sign = sign

    def scores(self, groups, compatibilities):
        return self.sign * compatibilities.members


def direction_for(variant):
    """The direction a variant's SCORES name ("random" or "compatibility")."""
    if variant.SCORES == "random":
        return RandomDirection()
    return CompatibilityDirection(variant.COMPATIBILITY_SIGN)


class WeightRule:
    """How a variant turns a step's groups into a `Mixing`.

    What the step must prepare for it: `reads_gradients` (the head-gradient signature),
    `reads_cross_domain` (what every cross-domain compatibility shares), `draws` ("gamma":
    Gamma(α) draws, "normal": random scores, None) and `shuffles` (keys that shuffle
    amounts); `has_amounts`: its `Mixing` carries a κ_g per group."""

    reads_gradients = True
    reads_cross_domain = False
    draws = None
    shuffles = False
    has_amounts = False

    def mixing(self, groups, compatibilities):
        raise NotImplementedError


class DirichletWeights(WeightRule):
    """§3 with π ~ Dirichlet(α) (InterpMix, ExtrapMix): no gradients read."""

    reads_gradients = False
    draws = "gamma"

    def __init__(self, kappa):
        self.kappa = kappa

    @classmethod
    def for_variant(cls, variant):
        return cls(variant.kappa())

    def mixing(self, groups, compatibilities):
        policy = dirichlet_policy(groups.draws, groups.mask)
        return Mixing(policy, affine_weights(policy, groups.mask, self.kappa))


class PairwiseWeights(WeightRule):
    """§3 with π = softmax(sign · c / τ) of the pairwise compatibility (version 1's GMix,
    FGMixV1; AntiGMix with sign −1)."""

    def __init__(self, tau, kappa, sign):
        self.tau, self.kappa, self.sign = tau, kappa, sign

    @classmethod
    def for_variant(cls, variant):
        return cls(variant.hparams["fgmix_tau"], variant.kappa(), variant.COMPATIBILITY_SIGN)

    def mixing(self, groups, compatibilities):
        compatibility = self.sign * mean_compatibility(compatibilities.pairwise_cosine(),
                                                       groups.mask)
        policy = compatibility_policy(compatibility, groups.mask, self.tau)
        return Mixing(policy, affine_weights(policy, groups.mask, self.kappa))


class DirectedWeights(WeightRule):
    """§3b: extrapolation by design along a direction's scores (version 2)."""

    def __init__(self, tau, kappa, direction):
        self.tau, self.kappa, self.direction = tau, kappa, direction
        self.reads_cross_domain = direction.reads_cross_domain
        self.draws = direction.draws

    @classmethod
    def for_variant(cls, variant):
        return cls(variant.hparams["fgmix_tau"], variant.kappa(), direction_for(variant))

    def mixing(self, groups, compatibilities):
        scores = self.direction.scores(groups, compatibilities)
        return Mixing(*directed_weights(scores, groups.mask, self.tau, self.kappa))


class AmountWeights(WeightRule):
    """§3c: a direction as in §3b and an amount κ_g ∈ (low, high) per group from its
    members' agreement with their class in the other domains (version 3). `sign` −1
    pushes the least compatible groups furthest; `shuffle` hands the amounts to the groups
    in a random order (the controls)."""

    reads_cross_domain = True
    has_amounts = True

    def __init__(self, tau, low, high, amount_tau, sign, shuffle, direction):
        self.tau, self.low, self.high = tau, low, high
        self.amount_tau, self.sign, self.shuffles = amount_tau, sign, shuffle
        self.direction = direction
        self.draws = direction.draws

    @classmethod
    def for_variant(cls, variant):
        return cls(variant.hparams["fgmix_tau"], variant.INTERPOLATION_END, variant.kappa(),
                   variant.hparams["fgmix_amount_tau"], variant.AMOUNT_SIGN,
                   variant.SHUFFLE_AMOUNTS, direction_for(variant))

    def mixing(self, groups, compatibilities):
        amounts = extrapolation_amounts(
            group_agreement(compatibilities.members, groups.mask), groups.valid, self.low,
            self.high, self.amount_tau, self.sign)
        if self.shuffles:
            amounts = shuffled_amounts(amounts, groups.valid, groups.keys)
        direction = self.direction.scores(groups, compatibilities)
        policy, weights = amount_weights(direction, groups.mask, self.tau, amounts)
        return Mixing(policy, weights, amounts)

    def far_share(self, amounts):
        """(κ_g − low) / (high − low): how far toward the far end each group is pushed."""
        return (amounts - self.low) / (self.high - self.low)
