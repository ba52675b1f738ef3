"""Algorithms that act on the training domains' gradients: Fish, Fishr, ANDMask, SANDMask, IGA.

- Fish (Shi et al., ICLR 2022): a first-order meta step that favours the direction on which
  sequential per-domain steps agree (inner-product gradient matching).
- Fishr (Rame et al., ICML 2022): match the domains' variances of per-sample gradients of
  the classifier.
- ANDMask (Parascandolo et al., ICLR 2021) / SANDMask (Shahtalebi et al., 2021): keep only
  the gradient components whose sign agrees across domains (hard / soft mask).
- IGA (Koyama & Yamaguchi, 2020): penalise the spread of the per-domain gradients.
"""
import copy

import torch
import torch.nn.functional as F

from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.erm import ERM, build_network, concat_minibatches, make_adam
from domainbed.algorithms.registry import register_algorithm
from domainbed.algorithms.param_utils import MovingAverage, ParamDict, l2_between_dicts
from domainbed.algorithms.per_sample import head_gradients


def per_domain_gradients(network, minibatches, create_graph=False):
    """(CE loss per domain, gradient tuple per domain) w.r.t. the network's parameters."""
    params = list(network.parameters())
    losses, gradients = [], []
    for x, y in minibatches:
        loss = F.cross_entropy(network(x), y)
        losses.append(loss)
        gradients.append(torch.autograd.grad(loss, params, create_graph=create_graph))
    return losses, gradients


def set_gradients(params, gradients):
    for param, gradient in zip(params, gradients):
        param.grad = gradient


# ---------------------------------------------------------------------------------------
# Fish

class WholeFish(torch.nn.Module):
    """Upstream's `networks.WholeFish` layout: `net` = Sequential(featurizer, classifier),
    so that Fish's state_dict keys are upstream's (`network.net.0.*`, `network.net.1.*`)."""

    def __init__(self, input_shape, num_classes, hparams):
        super().__init__()
        _, _, self.net = build_network(input_shape, num_classes, hparams)

    def forward(self, x):
        return self.net(x)


@register_algorithm
class Fish(Algorithm):
    """θ ← θ + meta_lr·(θ̃ − θ), θ̃ = θ after one Adam step per domain, domains in order.

    The inner Adam's state carries over from one update's clone to the next (and is saved
    with the model), as upstream's. Module layout as upstream's: `network` (a WholeFish)
    and `optimizer` (built over it and never stepped, as upstream); the clone is local to
    `update` (upstream keeps it as `network_inner`, which its model.pkl then carries).
    """

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("meta_lr", 0.5, lambda r: r.choice([0.05, 0.1, 0.5]))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.network = WholeFish(input_shape, num_classes, hparams)
        self.optimizer = make_adam(self.network.parameters(), hparams)
        self.optimizer_inner_state = None

    def update(self, minibatches, unlabeled=None):
        # A copy of the live network is upstream's fresh clone, without rebuilding it.
        inner_network = copy.deepcopy(self.network)
        inner_optimizer = make_adam(inner_network.parameters(), self.hparams)
        if self.optimizer_inner_state is not None:
            inner_optimizer.load_state_dict(self.optimizer_inner_state)
        for x, y in minibatches:
            loss = F.cross_entropy(inner_network(x), y)
            inner_optimizer.zero_grad()
            loss.backward()
            inner_optimizer.step()
        self.optimizer_inner_state = inner_optimizer.state_dict()

        # Over the full state dict (BatchNorm statistics too), as upstream.
        meta = ParamDict(self.network.state_dict())
        inner = ParamDict(inner_network.state_dict())
        self.network.load_state_dict(meta + self.hparams["meta_lr"] * (inner - meta))
        return {"loss": loss.item()}

    def predict(self, x):
        return self.network(x)

    def get_extra_state(self):
        state = super().get_extra_state()
        state["optimizer_inner_state"] = self.optimizer_inner_state
        return state

    def set_extra_state(self, state):
        state = dict(state)
        self.optimizer_inner_state = state.pop("optimizer_inner_state", None)
        super().set_extra_state(state)


# ---------------------------------------------------------------------------------------
# Fishr

def classifier_per_sample_gradients(features, logits, y):
    """Per-sample ∂CE/∂(weight, bias) of a linear classifier, flattened per sample.

    Closed form (domainbed.algorithms.per_sample), differentiable: the values upstream got from
    BackPACK's BatchGrad with create_graph.
    """
    grad_weight, grad_bias = head_gradients(features, logits, y)
    return {"weight": grad_weight.flatten(1), "bias": grad_bias}


@register_algorithm
class Fishr(ERM):
    """CE + λ·mean over domains of ‖Var_d − mean_d' Var_d'‖², Var_d = EMA of the variance of
    the domain's per-sample classifier gradients; λ = 0 until penalty_anneal_iters."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("lambda", 1000.0, lambda r: 10**r.uniform(1.0, 4.0))
        hparam("penalty_anneal_iters", 1500, lambda r: int(r.uniform(0.0, 5000.0)))
        hparam("ema", 0.95, lambda r: r.uniform(0.90, 0.99))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        if hparams["nonlinear_classifier"]:
            raise ValueError(
                "Fishr needs a linear classifier: set hparams nonlinear_classifier to false.")
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))
        self.ema_per_domain = [MovingAverage(hparams["ema"], oneminusema_correction=True)
                               for _ in range(num_domains)]

    def update(self, minibatches, unlabeled=None):
        if len(minibatches) != self.num_domains:
            raise ValueError(f"Fishr expects one minibatch per training domain "
                             f"({self.num_domains}), got {len(minibatches)}.")
        all_x, all_y = concat_minibatches(minibatches)
        features = self.featurizer(all_x)
        logits = self.classifier(features)
        penalty = self.penalty(features, logits, all_y, [len(x) for x, _ in minibatches])
        nll = F.cross_entropy(logits, all_y)

        step = int(self.update_count.item())
        anneal_iters = self.hparams["penalty_anneal_iters"]
        penalty_weight = 0.0
        if step >= anneal_iters:
            penalty_weight = self.hparams["lambda"]
            if step == anneal_iters != 0:
                # Reset Adam: its moments do not suit the jump in gradient scale.
                self.optimizer = make_adam(self.network.parameters(), self.hparams)
        self.update_count += 1

        objective = nll + penalty_weight * penalty
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return {"loss": objective.item(), "nll": nll.item(), "penalty": penalty.item()}

    def penalty(self, features, logits, y, sizes):
        """Mean over domains of the distance between a domain's smoothed gradient variance
        and the mean of all domains' (updates the EMAs)."""
        gradients = classifier_per_sample_gradients(features, logits, y)
        variances = self._smoothed_variances(gradients, sizes)
        mean_variance = {name: torch.stack([v[name] for v in variances]).mean(dim=0)
                         for name in variances[0]}
        return sum(l2_between_dicts(v, mean_variance) for v in variances) / len(variances)

    def _smoothed_variances(self, gradients, sizes):
        variances = [{} for _ in sizes]
        for name, per_sample in gradients.items():
            for domain, chunk in enumerate(per_sample.split(sizes)):
                centered = chunk - chunk.mean(dim=0, keepdim=True)
                variances[domain][name] = centered.pow(2).mean(dim=0)
        return [ema.update(v) for ema, v in zip(self.ema_per_domain, variances)]

    def get_extra_state(self):
        state = super().get_extra_state()
        state["ema_per_domain"] = [ema.state_dict() for ema in self.ema_per_domain]
        return state

    def set_extra_state(self, state):
        state = dict(state)
        for ema, ema_state in zip(self.ema_per_domain, state.pop("ema_per_domain", [])):
            ema.load_state_dict(ema_state)
        super().set_extra_state(state)


# ---------------------------------------------------------------------------------------
# ANDMask, SANDMask

def and_mask_gradient(domain_gradients, tau):
    """Mean gradient where |mean sign over domains| ≥ tau, zero elsewhere, rescaled by the
    inverse fraction of kept elements. `domain_gradients`: [num_domains, ...]."""
    agreement = torch.sign(domain_gradients).mean(dim=0).abs()
    mask = (agreement >= tau).to(domain_gradients.dtype)
    return _rescaled(mask, domain_gradients.mean(dim=0))


def sand_mask_gradient(domain_gradients, tau, k):
    """The soft mask max(0, tanh(k/Var_d(g)·(|mean sign| − tau))) times the mean gradient,
    rescaled like ANDMask's. NaN variances and NaN mask values become 1e-17 (upstream)."""
    agreement = torch.sign(domain_gradients).mean(dim=0).abs()
    variance = domain_gradients.var(dim=0) if len(domain_gradients) > 1 \
        else torch.full_like(domain_gradients[0], float("nan"))
    variance = torch.where(torch.isnan(variance), torch.full_like(variance, 1e-17), variance)
    mask = torch.clamp(torch.tanh(k * variance.pow(-1) * (agreement - tau)), min=0.0)
    mask = torch.where(torch.isnan(mask), torch.full_like(mask, 1e-17), mask)
    return _rescaled(mask, domain_gradients.mean(dim=0))


def _rescaled(mask, mean_gradient):
    kept_fraction = mask.sum() / mask.numel()
    return mask * mean_gradient * (1.0 / (1e-10 + kept_fraction))


@register_algorithm
class ANDMask(ERM):
    """Adam step on the per-domain mean gradient, masked where the domains' signs disagree."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("tau", 1, lambda r: r.uniform(0.5, 1.0))

    def update(self, minibatches, unlabeled=None):
        losses, gradients = per_domain_gradients(self.network, minibatches)
        masked = [self.mask(torch.stack(per_param)) for per_param in zip(*gradients)]
        self.optimizer.zero_grad()
        set_gradients(self.network.parameters(), masked)
        self.optimizer.step()
        return {"loss": sum(loss.item() for loss in losses) / len(losses)}

    def mask(self, domain_gradients):
        return and_mask_gradient(domain_gradients, self.hparams["tau"])


@register_algorithm
class SANDMask(ANDMask):
    """ANDMask with a smooth mask that also weighs the agreement by the inverse variance."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("tau", 1.0, lambda r: r.uniform(0.0, 1.0))
        hparam("k", 10.0, lambda r: 10**r.uniform(-3, 5))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        # Upstream counts updates (unused by the method); kept so checkpoints match in content.
        self.register_buffer("update_count", torch.tensor([0]))

    def update(self, minibatches, unlabeled=None):
        result = super().update(minibatches, unlabeled)
        self.update_count += 1
        return result

    def mask(self, domain_gradients):
        return sand_mask_gradient(domain_gradients, self.hparams["tau"], self.hparams["k"])


# ---------------------------------------------------------------------------------------
# IGA

@register_algorithm
class IGA(ERM):
    """mean_d CE_d + penalty·Σ_d ‖∇CE_d − ∇(mean CE)‖², the mean gradient held constant."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("penalty", 1000, lambda r: 10**r.uniform(1, 5))

    def update(self, minibatches, unlabeled=None):
        losses, gradients = per_domain_gradients(self.network, minibatches, create_graph=True)
        mean_loss = sum(losses) / len(losses)
        # ∇(mean CE) = mean of the domains' gradients; detached, as upstream's separate backward.
        mean_gradient = [torch.stack(per_param).mean(dim=0).detach()
                         for per_param in zip(*gradients)]
        penalty = sum((g - mean_g).pow(2).sum()
                      for domain_gradient in gradients
                      for g, mean_g in zip(domain_gradient, mean_gradient))
        objective = mean_loss + self.hparams["penalty"] * penalty
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return {"loss": mean_loss.item(), "penalty": penalty.item()}
