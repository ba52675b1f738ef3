"""§1 and §1b of docs/method.md: per-instance gradient signatures of the linear head, and
the compatibilities the weight rules read from them.

§1: instance i's head gradient is r_i z_iᵀ (residual times head input), compared in closed
form (`algorithms/per_sample`) without forming it. §1b (versions 2 and 3): each instance against
the summed gradients of its class in the *other* domains, which still ranks the two members
of a two-domain group. `Compatibilities` is what a weight rule asks for them: the pairwise
mean within a group (version 1) or the cross-domain score (versions 2 and 3).
"""
import collections
import functools

import torch

from domainbed.algorithms import per_sample


def head_input(classifier, features):
    """The input of the classifier's last linear layer: the `z` of the closed form."""
    if isinstance(classifier, torch.nn.Linear):
        return features
    return classifier[:-1](features)


def last_linear(classifier):
    return classifier if isinstance(classifier, torch.nn.Linear) else classifier[-1]


Signature = collections.namedtuple("Signature", "features residuals residual_cosine cells",
                                   defaults=(None, None))
Signature.__doc__ = """Instance i's head gradient (r_i z_iᵀ, r_i) as its head input z [N, F] and
residual r [N, C], detached (the policy reads gradients only).

residual_cosine r̂ r̂ᵀ [N, N] and cells (`cross_domain_cells`) are what every cross-domain
compatibility of a step shares whatever the metric; FGMix compares under two metrics,
three times a step, so a step forms them once (None: formed where needed)."""


def gradient_signature(classifier, features, logits, y):
    """The batch's `Signature` (z, r); cosines come from per_sample."""
    with torch.no_grad():
        return Signature(head_input(classifier, features.detach()),
                         per_sample.head_residuals(logits.detach(), y))


def cross_domain_cells(y, domains, num_domains, num_classes, dtype):
    """(others [cells, N] of `dtype`, cell [N, 1]): others[c, j] = 1 where instance j has
    cell c's class and another domain (j ∈ A_c), for each (domain, class) cell c; `cell`
    holds each instance's own cell."""
    cells = torch.arange(num_domains * num_classes, device=y.device)
    others = ((y.unsqueeze(0) == (cells % num_classes).unsqueeze(1))
              & (domains.unsqueeze(0) != (cells // num_classes).unsqueeze(1))).to(dtype)
    return others, (domains * num_classes + y).unsqueeze(1)


def cross_domain_compatibility(cosine, y, domains, num_domains, num_classes, cells=None):
    """c_i = cos(g_i, Σ_{j∈A_i} ĝ_j) [N]: instance i's head gradient against the summed unit
    gradients of its class in the *other* domains (A_i: y_j = y_i, d_j ≠ d_i); 0 if A_i is empty.

    From the all-pairs cosines S [N, N]: the numerator is Σ_{j∈A_i} S_ij, and the norm
    ‖Σ_{j∈A} ĝ_j‖² = Σ_{j,l∈A} S_jl is formed once per (domain, class) cell. Unlike the
    mean over a group's other members, this is not symmetric in a pair, so it still ranks
    the two members of a two-domain group. `cells`: `cross_domain_cells(...)` if formed.
    """
    others, cell = cells if cells is not None else \
        cross_domain_cells(y, domains, num_domains, num_classes, cosine.dtype)
    against_cell = cosine @ others.T                      # [N, cells]: Σ_{j∈A_c} S_ij
    squared_norm = (others * against_cell.T).sum(1)       # [cells]: ‖Σ_{j∈A_c} ĝ_j‖²
    numerator = against_cell.gather(1, cell).squeeze(1)
    squared = squared_norm.gather(0, cell.squeeze(1))
    nonzero = squared > 1e-12
    # sqrt only of positive numbers: keeps the gradient to the metric finite.
    norm = torch.sqrt(torch.where(nonzero, squared, 1.0))
    return torch.where(nonzero, numerator / norm, 0.0)


class Compatibilities:
    """A step's compatibilities under one metric, formed when a weight rule asks for them.

    `signature`: the step's `Signature` (a (z, r) pair is enough for `pairwise_cosine`);
    `groups`: the step's `Groups`; `metric`: the policy's diagonal metric m, None for m = 1.
    The cross-domain scores are formed once however often a rule reads them (the amount
    and the direction of version 3 share them)."""

    def __init__(self, signature, y, domains, groups, num_classes, metric):
        self.signature = signature
        self.y, self.domains, self.groups = y, domains, groups
        self.num_classes = num_classes
        self.metric = metric

    def pairwise_cosine(self):
        """S [G, K, K]: the cosines between the head gradients of each group's members (§1)."""
        features, residuals = self.signature[:2]
        return per_sample.grouped_head_gradient_cosine(features, residuals, self.groups.index,
                                                       self.metric)

    @functools.cached_property
    def members(self):
        """c_k of every group's members [G, D] (§1b): `cross_domain_compatibility`."""
        signature = self.signature
        cosine = per_sample.head_gradient_cosine(signature.features, signature.residuals,
                                                 self.metric, signature.residual_cosine)
        compatibility = cross_domain_compatibility(cosine, self.y, self.domains,
                                                   self.groups.mask.shape[1], self.num_classes,
                                                   signature.cells)
        return compatibility.take(self.groups.index)
