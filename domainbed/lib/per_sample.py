"""Per-instance gradients of cross-entropy with respect to a linear head, in closed form.

For a head h(z) = W z + b and loss CE(h(z_i), y_i), the gradient of instance i is
(r_i z_iᵀ, r_i) with the residual r_i = softmax(h(z_i)) − onehot(y_i). Gram matrices of
these gradients need only two small products, never the N·C·F gradient tensor. Shared
by FGMix (compatibilities) and Fishr (gradient variances); no BackPACK needed.
"""
import torch
import torch.nn.functional as F


def head_residuals(logits, y):
    """r = softmax(logits) − onehot(y), shape [N, C]."""
    return torch.softmax(logits, dim=1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)


def head_gradients(features, logits, y):
    """Per-instance (∂CE_i/∂W [N, C, F], ∂CE_i/∂b [N, C]); differentiable (create_graph-safe)."""
    r = head_residuals(logits, y)
    return r.unsqueeze(2) * features.unsqueeze(1), r


def head_gradient_gram(features, residuals, metric=None):
    """K_ij = (r_i · r_j) (Σ_f m_f z_if z_jf + 1): inner products of per-instance head
    gradients under a diagonal feature metric m (m = 1 when None)."""
    weighted = features if metric is None else features * metric
    return (residuals @ residuals.T) * (weighted @ features.T + 1.0)


def cosine_from_gram(gram, eps=0.0):
    """S_ij = K_ij / sqrt(K_ii K_jj), with S_ij = 0 where either norm is 0."""
    norms = torch.sqrt(torch.clamp(torch.diagonal(gram), min=0.0))
    denom = norms.unsqueeze(0) * norms.unsqueeze(1)
    safe = denom > eps
    return torch.where(safe, gram / torch.where(safe, denom, torch.ones_like(denom)),
                       torch.zeros_like(gram))


def grouped_head_gradient_cosine(features, residuals, index, metric=None):
    """Cosines between the head gradients of the members of each group.

    `index` [G, K] lists each group's instances; the result S [G, K, K] holds
    S[g, k, l] = K_ab / sqrt(K_aa K_bb) for a = index[g, k], b = index[g, l], with K the
    metric Gram of `head_gradient_gram`, and S = 0 where either gradient is zero. Costs
    O(G·K²·(C + F)): only the pairs inside groups are formed, never the N×N Gram. Its
    gradient is finite everywhere (a zero residual, e.g. from a saturated softmax, does
    not produce NaNs), so a learnable `metric` can be trained through it.
    """
    z = features[index]
    r = residuals[index]
    weighted = z if metric is None else z * metric
    gram = (r @ r.transpose(1, 2)) * (weighted @ z.transpose(1, 2) + 1.0)
    squared_norms = torch.diagonal(gram, dim1=-2, dim2=-1)
    nonzero = squared_norms > 0
    # sqrt only of positive numbers: sqrt'(0) = inf would turn the masked branch into NaN.
    norms = torch.sqrt(torch.where(nonzero, squared_norms, torch.ones_like(squared_norms)))
    both = nonzero.unsqueeze(2) & nonzero.unsqueeze(1)
    cosine = gram / (norms.unsqueeze(2) * norms.unsqueeze(1))
    return torch.where(both, cosine, torch.zeros_like(cosine))
