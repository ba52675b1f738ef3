"""Inter-domain Mixup (Xu et al. 2020; Yan et al. 2020; Wang et al. 2020), upstream's version.

Pairs of domains from a random cyclic permutation are mixed in input space with
λ ~ Beta(α, α). Draws come from the algorithm's own generators (exact resume); upstream
used the global RNGs, which changes which numbers are drawn, not their distribution.
"""
import torch.nn.functional as F

from domainbed.algorithms.erm import ERM
from domainbed.algorithms.registry import register_algorithm
from domainbed.lib.misc import random_pairs_of_minibatches


@register_algorithm
class Mixup(ERM):
    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("mixup_alpha", 0.2, lambda r: 10**r.uniform(-1, 1))

    def update(self, minibatches, unlabeled=None):
        objective = 0
        for (xi, yi), (xj, yj) in random_pairs_of_minibatches(minibatches, self.generator):
            lam = float(self.numpy_rng.beta(self.hparams["mixup_alpha"], self.hparams["mixup_alpha"]))
            x = lam * xi + (1 - lam) * xj
            predictions = self.predict(x)
            objective += lam * F.cross_entropy(predictions, yi)
            objective += (1 - lam) * F.cross_entropy(predictions, yj)
        objective /= len(minibatches)

        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return {"loss": objective.item()}
