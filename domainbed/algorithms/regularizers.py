"""ERM plus a regulariser on the outputs: SD and SelfReg.

- SD, spectral decoupling (Pezeshki et al., NeurIPS 2021): an L2 penalty on the logits,
  against gradient starvation.
- SelfReg (Kim et al., ICCV 2021): self-supervised contrastive regularisation that pulls
  together the logits and features of same-class samples, with a mixup of the positives.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from domainbed.algorithms.erm import ERM, concat_minibatches, make_adam
from domainbed.algorithms.registry import register_algorithm


@register_algorithm
class SD(ERM):
    """CE + sd_reg·mean(logits²)."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("sd_reg", 0.1, lambda r: 10**r.uniform(-5, -1))

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)
        logits = self.predict(all_x)
        loss = F.cross_entropy(logits, all_y)
        penalty = (logits**2).mean()
        objective = loss + self.hparams["sd_reg"] * penalty
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "penalty": penalty.item()}


def _projector(n_features):
    """SelfReg's class-discriminative projection layer: a 3-layer MLP with BatchNorm."""
    hidden = n_features if n_features == 2048 else 2 * n_features
    return nn.Sequential(
        nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, n_features), nn.BatchNorm1d(n_features))


def within_class_permutations(sorted_y, generator):
    """Two index permutations of a label-sorted batch that shuffle only within each class."""
    counts = torch.unique_consecutive(sorted_y.cpu(), return_counts=True)[1].tolist()
    first, second, start = [], [], 0
    for count in counts:
        first.append(torch.randperm(count, generator=generator) + start)
        second.append(torch.randperm(count, generator=generator) + start)
        start += count
    return torch.cat(first).to(sorted_y.device), torch.cat(second).to(sorted_y.device)


@register_algorithm
class SelfReg(ERM):
    """CE + min(CE, 1)·(λ·L_ind + (1−λ)·L_mix), λ ~ Beta(0.5, 0.5):
    L_ind = MSE(logits, same-class shuffled logits) + 0.3·MSE(features, shuffled projections);
    L_mix = the same against a λ-mix of two same-class shuffles."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        # Upstream's attribute name (state_dict keys `cdpl.*`).
        self.cdpl = _projector(self.featurizer.n_outputs)
        # Upstream built the optimizer before the projector, which then never learned.
        self.optimizer = make_adam(self.parameters(), hparams)

    @property
    def projector(self):
        return self.cdpl

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)
        lam = float(self.numpy_rng.beta(0.5, 0.5))
        order = torch.sort(all_y, stable=True).indices
        x, y = all_x[order], all_y[order]

        features = self.featurizer(x)
        projected = self.cdpl(features)
        logits = self.classifier(features)

        shuffle_1, shuffle_2 = within_class_permutations(y, self.generator)
        logits_mix = lam * logits[shuffle_1] + (1 - lam) * logits[shuffle_2]
        projected_mix = lam * projected[shuffle_1] + (1 - lam) * projected[shuffle_2]
        individual = (F.mse_loss(logits, logits[shuffle_1])
                      + 0.3 * F.mse_loss(features, projected[shuffle_1]))
        mixed = F.mse_loss(logits, logits_mix) + 0.3 * F.mse_loss(features, projected_mix)

        ce = F.cross_entropy(logits, y)
        # Regularise at most as strongly as the classification loss.
        scale = min(ce.item(), 1.0)
        loss = ce + scale * (lam * individual + (1 - lam) * mixed)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}
