"""Empirical risk minimisation (Vapnik, 1998): the reference every method is compared to."""
import torch
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.registry import register_algorithm


def concat_minibatches(minibatches):
    """All domains' inputs and labels as two tensors, in domain order."""
    all_x = torch.cat([x for x, _ in minibatches])
    all_y = torch.cat([y for _, y in minibatches])
    return all_x, all_y


def build_network(input_shape, num_classes, hparams):
    """(featurizer, classifier, Sequential(featurizer, classifier)) as upstream builds them."""
    featurizer = networks.Featurizer(input_shape, hparams)
    classifier = networks.Classifier(
        featurizer.n_outputs, num_classes, hparams["nonlinear_classifier"])
    return featurizer, classifier, torch.nn.Sequential(featurizer, classifier)


def make_adam(params, hparams):
    return torch.optim.Adam(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"])


@register_algorithm
class ERM(Algorithm):
    """Cross-entropy on the union of the training domains."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer, self.classifier, self.network = build_network(
            input_shape, num_classes, hparams)
        self.optimizer = make_adam(self.network.parameters(), hparams)

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)
        loss = F.cross_entropy(self.predict(all_x), all_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.network(x)
