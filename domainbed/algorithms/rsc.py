"""Representation Self-Challenging: RSC (Huang et al., ECCV 2020).

Mutes the features the true-class logit depends on most, so the network has to find
other evidence too; only the samples whose confidence drops most under this muting are
challenged, the others train on their full features.
"""
import torch
import torch.nn.functional as F

from domainbed.algorithms.erm import ERM, concat_minibatches
from domainbed.algorithms.registry import register_algorithm


def top_gradient_mask(all_g, keep_quantile):
    """Per row: 1 for the features whose gradient is below the row's `keep_quantile`
    quantile (linear interpolation, as np.percentile), 0 for the top ones (muted)."""
    thresholds = torch.quantile(all_g.detach(), keep_quantile, dim=1, keepdim=True)
    return all_g.lt(thresholds).float()


@register_algorithm
class RSC(ERM):
    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("rsc_f_drop_factor", 1 / 3, lambda r: r.uniform(0, 0.5))
        hparam("rsc_b_drop_factor", 1 / 3, lambda r: r.uniform(0, 0.5))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        # quantile levels in [0, 1] (upstream: percentiles (1 - factor) * 100)
        self.keep_f = 1 - hparams["rsc_f_drop_factor"]
        self.keep_b = 1 - hparams["rsc_b_drop_factor"]

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)
        all_o = F.one_hot(all_y, self.num_classes)
        all_f = self.featurizer(all_x)
        all_p = self.classifier(all_f)

        # Eq. (1): gradient of the true-class logit w.r.t. the representation
        all_g = torch.autograd.grad((all_p * all_o).sum(), all_f)[0]
        # Eqs. (2)-(4): per sample, mute the features with the top gradients
        mask_f = top_gradient_mask(all_g, self.keep_f)
        all_p_muted = self.classifier(all_f * mask_f)

        # Sec. 3.3: only challenge the samples whose true-class probability drops most
        changes = ((F.softmax(all_p, dim=1) * all_o).sum(1)
                   - (F.softmax(all_p_muted, dim=1) * all_o).sum(1))
        change_threshold = torch.quantile(changes.detach(), self.keep_b)
        mask_b = changes.lt(change_threshold).float().view(-1, 1)
        mask = torch.logical_or(mask_f, mask_b).float()

        # Eq. (5)
        loss = F.cross_entropy(self.classifier(all_f * mask), all_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}
