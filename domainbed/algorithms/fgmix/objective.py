"""§4 of docs/method.md: the model's objective, source cross-entropy + γ · cross-entropy of
the mixed points (mixing features, or the images with the same weights)."""
import torch.nn.functional as F

from domainbed.algorithms import per_sample


def mix(values, index, weights):
    """z̃_g = Σ_k λ_gk z_index[g, k] (rows of `values` [N, F])."""
    return (weights.unsqueeze(2) * per_sample.gather_rows(values, index)).sum(1)


def mixed_logits(head, features, index, weights, affine, logits=None):
    """h(z̃_g) for every group; `head` is a module or a callable.

    An affine head commutes with weights that sum to one: h(Σ_k λ_k z_k) = Σ_k λ_k h(z_k).
    So with a linear classifier the instances' logits are mixed (C numbers per member
    instead of F, and the model's own `logits` are reused); the result is the same."""
    if affine:
        return mix(head(features) if logits is None else logits, index, weights)
    return head(mix(features, index, weights))


def masked_mean(values, valid, count=None):
    """Mean of `values` over kept groups; `count`: valid.sum().clamp(min=1) if formed."""
    return (values * valid).sum() / (valid.sum().clamp(min=1) if count is None else count)


def mixed_cross_entropy(mixed, labels, groups):
    """mean over kept groups of CE(h(z̃_G), y_G), from the mixed logits `mixed`."""
    return masked_mean(F.cross_entropy(mixed, labels, reduction="none"), groups.valid)
