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
