"""Predictors that also look at the rest of the batch (its marginal distribution).

- MTL: marginal transfer learning (Blanchard et al., JMLR 2021). The classifier sees each
  sample's features next to a domain embedding, the mean feature of the batch (EMA-blended
  with a stored per-domain embedding during training).
- ARM: adaptive risk minimisation, context variant ARM-CML (Zhang et al., NeurIPS 2021).
  A small ContextNet summarises each group of samples into an extra input channel.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.erm import ERM, make_adam
from domainbed.algorithms.registry import register_algorithm


@register_algorithm
class MTL(Algorithm):
    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("mtl_ema", 0.99, lambda r: r.choice([0.5, 0.9, 0.99, 1.0]))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer = networks.Featurizer(input_shape, hparams)
        n_features = self.featurizer.n_outputs
        self.classifier = networks.Classifier(
            2 * n_features, num_classes, hparams["nonlinear_classifier"])
        self.optimizer = make_adam(
            list(self.featurizer.parameters()) + list(self.classifier.parameters()), hparams)
        self.register_buffer("embeddings", torch.zeros(num_domains, n_features))
        self.ema = hparams["mtl_ema"]

    def update(self, minibatches, unlabeled=None):
        # A sum over domains (not a mean), as upstream.
        loss = sum(F.cross_entropy(self.predict(x, env), y)
                   for env, (x, y) in enumerate(minibatches))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def domain_embedding(self, features, env=None):
        """The batch's mean feature; blended into (and stored as) domain `env`'s embedding."""
        embedding = features.mean(0)
        if env is not None:
            # `mtl_ema` weighs the current batch, (1 - mtl_ema) the stored embedding.
            embedding = self.ema * embedding + (1 - self.ema) * self.embeddings[env]
            self.embeddings[env] = embedding.detach().clone()
        return embedding.view(1, -1).expand(len(features), -1)

    def predict(self, x, env=None):
        features = self.featurizer(x)
        # Upstream overwrote the embedding with N(0, 1) noise here (`.normal_()`), which
        # discarded the marginal information the method is about; we keep the embedding.
        embedding = self.domain_embedding(features, env)
        return self.classifier(torch.cat((features, embedding), dim=1))


class ContextNet(nn.Module):
    """Three 5x5 convolutions (C -> 64 -> 64 -> 1) that keep the spatial size."""

    def __init__(self, input_shape):
        super().__init__()
        padding = 2  # (kernel 5 - 1) / 2: same spatial size
        self.context_net = nn.Sequential(
            nn.Conv2d(input_shape[0], 64, 5, padding=padding),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.Conv2d(64, 64, 5, padding=padding),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.Conv2d(64, 1, 5, padding=padding),
        )

    def forward(self, x):
        return self.context_net(x)


@register_algorithm
class ARM(ERM):
    """ERM on inputs with one more channel: the ContextNet map averaged over the sample's group.

    Groups are consecutive runs of `batch_size` samples (one domain each in training,
    since the training batch concatenates equal-sized domain batches); a batch whose size
    is not a multiple of `batch_size` is a single group.
    """

    @staticmethod
    def declare_hparams(hparam, dataset):
        if not dataset.small_images:   # upstream: groups of 8 on the large images
            hparam("batch_size", 8, lambda r: 8)

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        context_shape = (1 + input_shape[0],) + tuple(input_shape[1:])
        super().__init__(context_shape, num_classes, num_domains, hparams)
        self.context_net = ContextNet(input_shape)
        self.support_size = int(hparams["batch_size"])
        # Upstream's optimizer (made in ERM.__init__, before the ContextNet existed) never
        # trained the ContextNet; this one trains both.
        self.optimizer = make_adam(
            list(self.network.parameters()) + list(self.context_net.parameters()), hparams)

    def predict(self, x):
        batch_size, _, height, width = x.shape
        if batch_size % self.support_size == 0:
            n_groups, support_size = batch_size // self.support_size, self.support_size
        else:
            n_groups, support_size = 1, batch_size
        context = self.context_net(x).reshape(n_groups, support_size, 1, height, width).mean(dim=1)
        context = torch.repeat_interleave(context, repeats=support_size, dim=0)
        return self.network(torch.cat([x, context], dim=1))
