"""Feature-distribution alignment across training domains.

- CORAL: Deep CORAL (Sun & Saenko, ECCV-W 2016), matching feature means and covariances.
- MMD: MMD-AAE-style maximum mean discrepancy (Li et al., CVPR 2018) with a sum of
  Gaussian kernels.

Both minimise the mean per-domain CE plus `mmd_gamma` times the mean distance over pairs
of domains' feature batches.
"""
import itertools

import torch
import torch.nn.functional as F

from domainbed.algorithms.erm import ERM
from domainbed.algorithms.registry import register_algorithm
from domainbed.algorithms.autocast import fp32_under_autocast

GAUSSIAN_GAMMAS = (0.001, 0.01, 0.1, 1, 10, 100, 1000)


@fp32_under_autocast   # bf16: |a|² + |b|² - 2a·b cancels to noise for close points
def squared_distances(x1, x2):
    """Pairwise squared Euclidean distances, clamped away from 0 (and from rounding < 0)."""
    x1_norm = x1.pow(2).sum(dim=-1, keepdim=True)
    x2_norm = x2.pow(2).sum(dim=-1, keepdim=True)
    distances = torch.addmm(x2_norm.transpose(-2, -1), x1, x2.transpose(-2, -1), alpha=-2)
    return (distances + x1_norm).clamp_min(1e-30)


def gaussian_kernel(x1, x2, gammas=GAUSSIAN_GAMMAS):
    """Sum over bandwidths of exp(-gamma * ||a - b||^2): robust to the feature scale."""
    distances = squared_distances(x1, x2)
    return sum(torch.exp(-gamma * distances) for gamma in gammas)


def mmd_distance(x, y):
    """Biased MMD^2 estimate between two feature batches."""
    return (gaussian_kernel(x, x).mean() + gaussian_kernel(y, y).mean()
            - 2 * gaussian_kernel(x, y).mean())


@fp32_under_autocast   # bf16 rounds the covariances' small entries, which CORAL matches
def coral_distance(x, y):
    """Mean squared difference of the means plus that of the (n-1)-normalised covariances."""
    mean_x = x.mean(0, keepdim=True)
    mean_y = y.mean(0, keepdim=True)
    cent_x = x - mean_x
    cent_y = y - mean_y
    # max(., 1): a one-sample batch has covariance 0 instead of 0/0 = NaN
    cova_x = cent_x.t() @ cent_x / max(len(x) - 1, 1)
    cova_y = cent_y.t() @ cent_y / max(len(y) - 1, 1)
    return (mean_x - mean_y).pow(2).mean() + (cova_x - cova_y).pow(2).mean()


class _DistanceAlignment(ERM):
    """Mean per-domain CE plus mmd_gamma * (mean pairwise feature distance)."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("mmd_gamma", 1.0, lambda r: 10**r.uniform(-1, 1))

    @staticmethod
    def distance(x, y):
        raise NotImplementedError

    def update(self, minibatches, unlabeled=None):
        n_domains = len(minibatches)
        # One featurizer pass per domain, as upstream (matters for BatchNorm statistics).
        features = [self.featurizer(x) for x, _ in minibatches]
        objective = sum(F.cross_entropy(self.classifier(f), y)
                        for f, (_, y) in zip(features, minibatches)) / n_domains
        penalty = 0.0
        for fi, fj in itertools.combinations(features, 2):
            penalty = penalty + self.distance(fi, fj)
        if n_domains > 1:
            penalty = penalty / (n_domains * (n_domains - 1) / 2)

        self.optimizer.zero_grad()
        (objective + self.hparams["mmd_gamma"] * penalty).backward()
        self.optimizer.step()
        penalty = penalty.item() if torch.is_tensor(penalty) else float(penalty)
        return {"loss": objective.item(), "penalty": penalty}


@register_algorithm
class CORAL(_DistanceAlignment):
    distance = staticmethod(coral_distance)


@register_algorithm
class MMD(_DistanceAlignment):
    distance = staticmethod(mmd_distance)


class _CausalIRL(_DistanceAlignment):
    """CausIRL (Chevalley, Bunne, Krause, Bauer, arXiv 2206.11646): match the distribution of
    the features before a random cut point of each domain's batch with that after it,
    pooled over domains (one distance, not one per pair of domains). Same hparam and
    distances as CORAL/MMD; only the pairs compared differ."""

    def update(self, minibatches, unlabeled=None):
        n_domains = len(minibatches)
        # One featurizer pass per domain, as upstream (matters for BatchNorm statistics).
        features = [self.featurizer(x) for x, _ in minibatches]
        objective = 0.0
        first, second = [], []
        for f, (_, y) in zip(features, minibatches):
            objective = objective + F.cross_entropy(self.classifier(f) + 1e-16, y)
            cut = int(self.numpy_rng.integers(0, len(f)))  # in [0, n - 1]: the prefix may be empty
            first.append(f[:cut])
            second.append(f[cut:])
        first = torch.cat(first)
        second = torch.cat(second)
        if len(first) > 1 and len(second) > 1:
            penalty = torch.nan_to_num(self.distance(first, second))
        else:
            penalty = objective.new_zeros(())
        objective = objective / n_domains

        self.optimizer.zero_grad()
        (objective + self.hparams["mmd_gamma"] * penalty).backward()
        self.optimizer.step()
        return {"loss": objective.item(), "penalty": penalty.item()}


@register_algorithm
class CausIRL_CORAL(_CausalIRL):
    distance = staticmethod(coral_distance)


@register_algorithm
class CausIRL_MMD(_CausalIRL):
    distance = staticmethod(mmd_distance)
