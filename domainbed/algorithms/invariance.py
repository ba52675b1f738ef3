"""Invariance penalties: IRM (Arjovsky et al. 2019) and V-REx (Krueger et al. 2021).

Both add a penalty that is small when one classifier is optimal for every training domain,
with a weight of 1.0 during a warm-up and the full weight after it. At the step where the
weight jumps, Adam is re-created: its moment estimates were tuned to gradients of another
scale. The new optimizer keeps the attribute name `optimizer`, so checkpoints save it.
"""
import torch
import torch.nn.functional as F

from domainbed.algorithms.erm import ERM, concat_minibatches, make_adam
from domainbed.algorithms.registry import register_algorithm
from domainbed.algorithms.autocast import fp32_under_autocast


def split_logits_by_domain(logits, minibatches):
    """The rows of `logits` (one forward pass over all domains) belonging to each domain."""
    return torch.split(logits, [len(x) for x, _ in minibatches])


def irm_penalty(logits, y):
    """IRMv1: product of the CE gradients w.r.t. a dummy scale on two halves of the batch.

    Using the even and odd samples gives an unbiased estimate of the squared gradient
    norm. A domain with fewer than two samples has no second half: its penalty is 0.
    The gradient w.r.t. the scale s at s = 1 is taken in closed form,
    d/ds CE(s·l, y) = mean_i (softmax(l_i) · l_i − l_iy), which is upstream's autograd
    value without two create_graph passes per domain (they dominated small models' steps).
    """
    if len(y) < 2:
        return logits.new_zeros(())
    return scale_gradient(logits[::2], y[::2]) * scale_gradient(logits[1::2], y[1::2])


def scale_gradient(logits, y):
    """d/ds of F.cross_entropy(s * logits, y) at s = 1, differentiable w.r.t. logits."""
    return scale_gradient_terms(logits, y).mean()


def scale_gradient_terms(logits, y):
    """Per instance: softmax(l_i) · l_i − l_iy (their mean is `scale_gradient`)."""
    expected = (torch.softmax(logits, dim=1) * logits).sum(1)
    return expected - logits.gather(1, y.unsqueeze(1)).squeeze(1)


class _AnnealedPenalty(ERM):
    """ERM plus `penalty_weight * penalty`, with warm-up and an Adam reset after it.

    Subclasses name their hparams (`LAMBDA`, `ANNEAL_ITERS`) and compute the losses.
    """

    LAMBDA = None
    ANNEAL_ITERS = None

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))

    def _penalty_weight(self, step):
        return self.hparams[self.LAMBDA] if step >= self.hparams[self.ANNEAL_ITERS] else 1.0

    def _step(self, loss, step):
        if step == self.hparams[self.ANNEAL_ITERS]:
            self.optimizer = make_adam(self.network.parameters(), self.hparams)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.update_count += 1


def irm_terms(all_logits, minibatches):
    """(mean over domains of the CE, mean over domains of the IRMv1 penalty).

    Domains of equal batch size (the training loaders' case) are computed as one [E, B]
    block, the same sums as the per-domain loop that other sizes take.
    """
    sizes = {len(y) for _, y in minibatches}
    if len(sizes) != 1 or min(sizes) < 2:
        nll = penalty = 0.0
        for logits, (_, y) in zip(split_logits_by_domain(all_logits, minibatches), minibatches):
            nll = nll + F.cross_entropy(logits, y)
            penalty = penalty + irm_penalty(logits, y)
        return nll / len(minibatches), penalty / len(minibatches)
    n_domains, batch = len(minibatches), sizes.pop()
    all_y = torch.cat([y for _, y in minibatches])
    nll = F.cross_entropy(all_logits, all_y, reduction="none").view(n_domains, batch).mean(1)
    per_instance = scale_gradient_terms(all_logits, all_y).view(n_domains, batch)
    penalty = per_instance[:, ::2].mean(1) * per_instance[:, 1::2].mean(1)
    return nll.mean(), penalty.mean()


@register_algorithm
class IRM(_AnnealedPenalty):
    """Invariant Risk Minimization, IRMv1 penalty."""

    LAMBDA = "irm_lambda"
    ANNEAL_ITERS = "irm_penalty_anneal_iters"

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("irm_lambda", 1e2, lambda r: 10**r.uniform(-1, 5))
        hparam("irm_penalty_anneal_iters", 500, lambda r: int(10**r.uniform(0, 4)))

    def update(self, minibatches, unlabeled=None):
        step = int(self.update_count.item())
        all_x, _ = concat_minibatches(minibatches)
        nll, penalty = irm_terms(self.network(all_x), minibatches)
        loss = nll + self._penalty_weight(step) * penalty
        self._step(loss, step)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item()}


@register_algorithm
class VREx(_AnnealedPenalty):
    """Variance Risk Extrapolation: mean risk plus the variance of the domain risks."""

    LAMBDA = "vrex_lambda"
    ANNEAL_ITERS = "vrex_penalty_anneal_iters"

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("vrex_lambda", 1e1, lambda r: 10**r.uniform(-1, 5))
        hparam("vrex_penalty_anneal_iters", 500, lambda r: int(10**r.uniform(0, 4)))

    def update(self, minibatches, unlabeled=None):
        step = int(self.update_count.item())
        all_x, _ = concat_minibatches(minibatches)
        all_logits = self.network(all_x)
        domain_logits = split_logits_by_domain(all_logits, minibatches)
        losses = torch.stack([F.cross_entropy(logits, y)
                              for logits, (_, y) in zip(domain_logits, minibatches)])
        mean = losses.mean()
        penalty = ((losses - mean) ** 2).mean()  # population variance, as upstream
        loss = mean + self._penalty_weight(step) * penalty
        self._step(loss, step)
        # upstream reports the last domain's CE as "nll"
        return {"loss": loss.item(), "nll": losses[-1].item(), "penalty": penalty.item()}


@fp32_under_autocast   # a variance (a covariance's diagonal): not in bf16
def feature_variance_penalty(features):
    """Information-bottleneck penalty: the per-dimension (N-1)-variance of one domain's
    features, averaged over dimensions. A domain with < 2 samples gives 0 (not NaN)."""
    if len(features) < 2:
        return features.new_zeros(())
    return features.var(dim=0).mean()


class _InformationBottleneck(ERM):
    """IB-ERM and IB-IRM (Ahuja et al., NeurIPS 2021): per-domain CE, optionally IRMv1, plus
    the feature-variance bottleneck. Penalty weights switch on at their anneal steps, and
    Adam is re-created at each of those steps (the new one takes that same step)."""

    WITH_IRM = False

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))

    def update(self, minibatches, unlabeled=None):
        step = int(self.update_count.item())
        hp = self.hparams
        ib_weight = hp["ib_lambda"] if step >= hp["ib_penalty_anneal_iters"] else 0.0
        all_x, _ = concat_minibatches(minibatches)
        all_features = self.featurizer(all_x)
        all_logits = self.classifier(all_features)
        sizes = [len(x) for x, _ in minibatches]
        nll = irm = ib = 0.0
        for features, logits, (_, y) in zip(torch.split(all_features, sizes),
                                            torch.split(all_logits, sizes), minibatches):
            nll = nll + F.cross_entropy(logits, y)
            if self.WITH_IRM:
                irm = irm + irm_penalty(logits, y)
            ib = ib + feature_variance_penalty(features)
        n = len(minibatches)
        nll, irm, ib = nll / n, irm / n, ib / n
        loss = nll
        resets = {hp["ib_penalty_anneal_iters"]}
        if self.WITH_IRM:
            irm_weight = hp["irm_lambda"] if step >= hp["irm_penalty_anneal_iters"] else 1.0
            loss = loss + irm_weight * irm
            resets.add(hp["irm_penalty_anneal_iters"])
        loss = loss + ib_weight * ib
        if step in resets:
            self.optimizer = make_adam(self.network.parameters(), hp)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.update_count += 1
        # upstream adds the penalties to `nll` in place, so its logged nll is the total loss
        logs = {"loss": loss.item(), "nll": loss.item()}
        if self.WITH_IRM:
            logs["IRM_penalty"] = irm.item()
        logs["IB_penalty"] = ib.item()
        return logs


def _declare_ib(hparam):
    hparam("ib_lambda", 1e2, lambda r: 10**r.uniform(-1, 5))
    hparam("ib_penalty_anneal_iters", 500, lambda r: int(10**r.uniform(0, 4)))


@register_algorithm
class IB_ERM(_InformationBottleneck):
    """ERM plus the information bottleneck on the features."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        _declare_ib(hparam)


@register_algorithm
class IB_IRM(_InformationBottleneck):
    """IRMv1 plus the information bottleneck on the features."""

    WITH_IRM = True

    @staticmethod
    def declare_hparams(hparam, dataset):
        IRM.declare_hparams(hparam, dataset)
        _declare_ib(hparam)
