"""Contrastive domain bottlenecks: CAD and CondCAD (Ruan, Dubois, Maddison, "Optimal
Representations for Covariate Shift", ICLR 2022).

Both add `lmbda` times a contrastive bottleneck loss to the cross-entropy. With the default
`is_flipped`, the loss is minus the log of the softmax mass each anchor puts on samples of
*other* domains: minimising it makes the domain unpredictable from the representation,
I(D; Z) for CAD, I(D; Z | Y) for CondCAD (the softmax is then over same-label samples).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.adversarial import domain_labels
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.erm import concat_minibatches
from domainbed.algorithms.registry import register_algorithm
from domainbed.algorithms.autocast import fp32_under_autocast

BASE_TEMPERATURE = 0.07


def _masked_logsumexp(logits, mask):
    """logsumexp over the entries where `mask` is True (= logits + log(mask), as upstream)."""
    return torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=1)


def _finite_mean(losses):
    losses = losses[torch.isfinite(losses)]
    return losses.mean() if len(losses) else None


class _AbstractCAD(Algorithm):
    CONDITIONAL = False

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("lmbda", 1e-1, lambda r: r.choice([1e-4, 1e-3, 1e-2, 1e-1, 1, 1e1, 1e2]))
        hparam("temperature", 0.1, lambda r: r.choice([0.05, 0.1]))
        hparam("is_normalized", False, lambda r: False)
        hparam("is_project", False, lambda r: False)
        hparam("is_flipped", True, lambda r: True)

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer = networks.Featurizer(input_shape, hparams)
        n_features = self.featurizer.n_outputs
        self.classifier = networks.Classifier(
            n_features, num_classes, hparams["nonlinear_classifier"])
        self.temperature = hparams["temperature"]
        self.is_project = hparams["is_project"]
        self.is_normalized = hparams["is_normalized"]
        self.is_flipped = hparams["is_flipped"]
        parameters = list(self.featurizer.parameters()) + list(self.classifier.parameters())
        if self.is_project:
            # upstream referred to an undefined width here (NameError); it is the features'
            self.project = nn.Sequential(
                nn.Linear(n_features, n_features), nn.ReLU(inplace=True),
                nn.Linear(n_features, 128))
            parameters += list(self.project.parameters())
        self.optimizer = torch.optim.Adam(
            parameters, lr=hparams["lr"], weight_decay=hparams["weight_decay"])

    @fp32_under_autocast   # cosines over a small temperature: bf16 rounding is amplified
    def bn_loss(self, z, y, d):
        """The bottleneck loss of features `z` with labels `y` and domains `d` (a 0-d tensor;
        constant 0 when no anchor has a finite loss)."""
        n = len(z)
        not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
        same_y = (y.view(-1, 1) == y.view(1, -1)) & not_self
        same_d = d.view(-1, 1) == d.view(1, -1)  # the diagonal included
        same_y_d = same_y & same_d
        same_y_other_d = same_y & ~same_d

        if self.is_project:
            z = self.project(z)
        if self.is_normalized:
            z = F.normalize(z, dim=1)
        logits = (z @ z.t()) / self.temperature
        logits = logits * not_self.to(logits.dtype)  # the diagonal becomes 0, not -inf
        # Rows that would give -inf (no sample to put mass on) are dropped before the
        # logsumexps: upstream drops their non-finite losses too, and their 0 * NaN
        # gradients would poison the rest.
        if not self.CONDITIONAL:
            target = ~same_d if self.is_flipped else same_d
            rows = same_y.any(dim=1) & target.any(dim=1)
            logits, not_self, target = logits[rows], not_self[rows], target[rows]
            logits = logits - logits.max(dim=1, keepdim=True).values.detach()
            log_prob = logits - _masked_logsumexp(logits, not_self).unsqueeze(1)
        else:
            target = same_y_other_d if self.is_flipped else same_y_d
            rows = target.any(dim=1)
            logits, same_y, target = logits[rows], same_y[rows], target[rows]
            logits = logits - logits.max(dim=1, keepdim=True).values.detach()
            log_prob = logits - _masked_logsumexp(logits, same_y).unsqueeze(1)
        mass = _masked_logsumexp(log_prob, target)
        scale = self.temperature / BASE_TEMPERATURE
        losses = -scale * mass if self.is_flipped else scale * mass
        loss = _finite_mean(losses)
        return z.new_zeros(()) if loss is None else loss

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)
        all_z = self.featurizer(all_x)
        domains = domain_labels(minibatches, all_x.device)
        bn_loss = self.bn_loss(all_z, all_y, domains)
        clf_loss = F.cross_entropy(self.classifier(all_z), all_y)
        total_loss = clf_loss + self.hparams["lmbda"] * bn_loss
        self.optimizer.zero_grad()
        total_loss.backward()
        self.optimizer.step()
        return {"clf_loss": clf_loss.item(), "bn_loss": bn_loss.item(),
                "total_loss": total_loss.item()}

    def predict(self, x):
        return self.classifier(self.featurizer(x))


@register_algorithm
class CAD(_AbstractCAD):
    """Unconditional bottleneck, I(D; Z)."""


@register_algorithm
class CondCAD(_AbstractCAD):
    """Conditional bottleneck, I(D; Z | Y)."""

    CONDITIONAL = True
