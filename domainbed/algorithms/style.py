"""Style-agnostic networks: SagNet (Nam et al., CVPR 2021).

Features are split into "content" (the normalised feature vector) and "style" (its mean
and variance). A content classifier learns on features whose style was randomised; a style
classifier learns on features whose content was randomised, and the featurizer is trained
adversarially to make that style classifier uncertain.
"""
import torch
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.erm import concat_minibatches, make_adam
from domainbed.algorithms.registry import register_algorithm


@register_algorithm
class SagNet(Algorithm):
    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("sag_w_adv", 0.1, lambda r: 10**r.uniform(-2, 1))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.network_f = networks.Featurizer(input_shape, hparams)
        n_features = self.network_f.n_outputs
        nonlinear = hparams["nonlinear_classifier"]
        self.network_c = networks.Classifier(n_features, num_classes, nonlinear)
        self.network_s = networks.Classifier(n_features, num_classes, nonlinear)
        self.optimizer_f = make_adam(self.network_f.parameters(), hparams)
        self.optimizer_c = make_adam(self.network_c.parameters(), hparams)
        self.optimizer_s = make_adam(self.network_s.parameters(), hparams)
        self.weight_adv = hparams["sag_w_adv"]

    def randomize(self, x, what="style", eps=1e-5):
        """Swap style (mix mean/var with a permuted sample's) or content (take a permuted
        sample's normalised features, detached) across the batch."""
        sizes = x.size()
        alpha = torch.rand(sizes[0], 1, generator=self.generator).to(x.device)
        if len(sizes) == 4:  # feature maps: statistics over the spatial positions
            x = x.view(sizes[0], sizes[1], -1)
            alpha = alpha.unsqueeze(-1)
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True)
        x = (x - mean) / (var + eps).sqrt()
        idx_swap = torch.randperm(sizes[0], generator=self.generator).to(x.device)
        if what == "style":
            mean = alpha * mean + (1 - alpha) * mean[idx_swap]
            var = alpha * var + (1 - alpha) * var[idx_swap]
        else:
            x = x[idx_swap].detach()
        x = x * (var + eps).sqrt() + mean
        return x.view(*sizes)

    def forward_c(self, x):
        return self.network_c(self.randomize(self.network_f(x), "style"))

    def forward_s(self, x):
        return self.network_s(self.randomize(self.network_f(x), "content"))

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)

        # 1. content: featurizer + content classifier on style-randomised features
        self.optimizer_f.zero_grad()
        self.optimizer_c.zero_grad()
        loss_c = F.cross_entropy(self.forward_c(all_x), all_y)
        loss_c.backward()
        self.optimizer_f.step()
        self.optimizer_c.step()

        # 2. style: the style classifier on content-randomised features
        self.optimizer_s.zero_grad()
        loss_s = F.cross_entropy(self.forward_s(all_x), all_y)
        loss_s.backward()
        self.optimizer_s.step()

        # 3. adversary: the featurizer pushes the style classifier towards uniform outputs
        self.optimizer_f.zero_grad()
        loss_adv = -F.log_softmax(self.forward_s(all_x), dim=1).mean(1).mean() * self.weight_adv
        loss_adv.backward()
        self.optimizer_f.step()

        return {"loss_c": loss_c.item(), "loss_s": loss_s.item(), "loss_adv": loss_adv.item()}

    def predict(self, x):
        return self.network_c(self.network_f(x))
