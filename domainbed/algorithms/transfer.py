"""Representations whose predictors transfer across domains.

- TRM, Transfer Risk Minimization (Xu & Jaakkola, arXiv 2110.09940, 2021): one linear head
  per domain is fitted on detached features; the featurizer is trained so that the head of
  domain Q also does well on the other domains (weighted by GroupDRO-style alphas), with a
  second-order term aligning the heads' gradients through an inverse-Hessian estimate.
- Transfer (Zhang, Zhao, Yu, Poupart, NeurIPS 2021, Algorithm 1): ERM plus the gap between
  the best and worst domain losses of an adversarial head kept within `delta` of the
  classifier, which is trained by ascent on that gap.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.erm import concat_minibatches, make_adam
from domainbed.algorithms.registry import register_algorithm
from domainbed.algorithms.autocast import fp32_under_autocast
from domainbed.lib.model_state import weights_and_buffers


@fp32_under_autocast   # bf16 dot products of gradients would round the series' terms
def neumann_inverse_hvp(v, linear, features, labels, terms=10, bound=10.0):
    """Truncated Neumann series sum_k (I - H)^k v ~ H^{-1} v, with H the Hessian of
    CE(linear(features), labels) w.r.t. `linear.weight` (flattened); stops early once an
    entry of the partial sum exceeds `bound` (that term included), as upstream.

    Upstream's running sum started as the same tensor as v and was changed by the in-place
    update of v, giving 2 v_1 + v_2 + ... + v_m instead of v_0 + v_1 + ... + v_m; this is the
    series as intended.
    """
    v = v.detach()
    total = v.clone()
    loss = F.cross_entropy(linear(features.detach()), labels)
    grad = torch.autograd.grad(loss, linear.weight, create_graph=True)[0].flatten()
    for _ in range(terms):
        hvp = torch.autograd.grad(grad @ v, linear.weight, retain_graph=True)[0].flatten()
        v = (v - hvp).detach()
        total = (total + v).detach()
        if total.abs().max() > bound:
            break
    return total


@fp32_under_autocast   # the inner product of two gradients, not rounded to bf16
def gradient_dot(a, b):
    return a @ b


@register_algorithm
class TRM(Algorithm):
    """ERM for `iters` updates, then ERM plus the transfer risk."""

    INNER_STEPS = 30
    INNER_LR = 0.1

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("cos_lambda", 1e-4, lambda r: 10 ** r.uniform(-5, 0))
        hparam("iters", 200, lambda r: int(10 ** r.uniform(0, 4)))
        hparam("groupdro_eta", 1e-2, lambda r: 10 ** r.uniform(-3, -1))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))
        self.featurizer = networks.Featurizer(input_shape, hparams)
        n_features = self.featurizer.n_outputs
        # always linear (nonlinear_classifier is ignored, as upstream)
        self.classifier = nn.Linear(n_features, num_classes)
        # One head per domain (+1 unused, as upstream), registered: saved and moved to the
        # device with the model. One SGD over all of them equals upstream's one per head.
        self.domain_heads = nn.ModuleList(
            [nn.Linear(n_features, num_classes) for _ in range(num_domains + 1)])
        self.heads_optimizer = torch.optim.SGD(self.domain_heads.parameters(), lr=self.INNER_LR)
        self.optimizer_f = make_adam(self.featurizer.parameters(), hparams)
        self.optimizer_c = make_adam(self.classifier.parameters(), hparams)
        self.register_buffer("alpha", torch.ones(num_domains, num_domains) - torch.eye(num_domains))

    def model_state_dict(self):
        """model.pkl's weights, as upstream's TRM state_dict: its per-domain heads and
        `alpha` are not registered upstream (training state here, in checkpoint.pt)."""
        return weights_and_buffers(self, exclude_prefixes=("domain_heads.", "alpha"))

    def _step(self, loss):
        self.optimizer_f.zero_grad()
        self.optimizer_c.zero_grad()
        loss.backward()
        self.optimizer_f.step()
        self.optimizer_c.step()

    def update(self, minibatches, unlabeled=None):
        if int(self.update_count.item()) < self.hparams["iters"]:
            return self._erm_update(minibatches)
        return self._trm_update(minibatches)

    def _erm_update(self, minibatches):
        all_x, all_y = concat_minibatches(minibatches)
        loss = F.cross_entropy(self.classifier(self.featurizer(all_x)), all_y)
        self._step(loss)
        self.update_count += 1
        return {"nll": loss.item(), "trm_loss": 0.0}

    def _fit_domain_heads(self, features, labels):
        for _ in range(self.INNER_STEPS):
            inner = sum(F.cross_entropy(self.domain_heads[j](f.detach()), y)
                        for j, (f, y) in enumerate(zip(features, labels)))
            self.heads_optimizer.zero_grad()
            inner.backward()
            self.heads_optimizer.step()

    def _trm_update(self, minibatches):
        hp = self.hparams
        n_domains = len(minibatches)
        if hp["class_balanced"]:
            with torch.no_grad():
                for head in self.domain_heads:
                    head.weight.copy_(self.classifier.weight)  # weights only, as upstream
        with torch.no_grad():
            self.alpha.div_(self.alpha.sum(dim=1, keepdim=True))

        all_x, all_y = concat_minibatches(minibatches)
        all_features = self.featurizer(all_x)
        loss = F.cross_entropy(self.classifier(all_features), all_y)
        features = torch.split(all_features, [len(x) for x, _ in minibatches])
        labels = [y for _, y in minibatches]
        self._fit_domain_heads(features, labels)

        swap_loss = 0.0
        for q in range(n_domains):
            head = self.domain_heads[q]
            own_loss = F.cross_entropy(head(features[q]), labels[q])
            own_grad = torch.autograd.grad(own_loss, head.weight, create_graph=True)[0].flatten()
            others = [i for i in range(n_domains) if i != q]
            weighted = [F.cross_entropy(head(features[i]), labels[i]) * self.alpha[q, i].item()
                        for i in others]
            transfer_loss = sum(weighted) if weighted else all_features.new_zeros(())
            if weighted:
                transfer_grad = torch.autograd.grad(
                    transfer_loss, head.weight, retain_graph=True)[0].flatten().detach()
            else:
                transfer_grad = torch.zeros_like(own_grad).detach()
            inverse_hvp = neumann_inverse_hvp(transfer_grad, head, features[q], labels[q])
            alignment = gradient_dot(inverse_hvp, own_grad)
            swap_loss = swap_loss + transfer_loss - hp["cos_lambda"] * alignment
            with torch.no_grad():
                for i, term in zip(others, weighted):
                    self.alpha[q, i] *= torch.exp(hp["groupdro_eta"] * term.detach())
        swap_loss = swap_loss / n_domains

        total = loss + swap_loss
        nll = loss.item()
        self._step(total)
        self.update_count += 1
        return {"nll": nll, "trm_loss": total.item() - nll}

    def predict(self, x):
        return self.classifier(self.featurizer(x))


@register_algorithm
class Transfer(Algorithm):
    """Algorithm 1 of Zhang et al.: ERM step, gap step, then `d_steps_per_g` ascent steps of
    the adversarial head, projected onto the `delta`-ball around the classifier."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("t_lambda", 1.0, lambda r: 10 ** r.uniform(-2, 1))
        hparam("delta", 2.0, lambda r: r.uniform(0.1, 3.0))
        hparam("d_steps_per_g", 10, lambda r: int(r.choice([1, 2, 5])))
        hparam("weight_decay_d", 0.0, lambda r: 10 ** r.uniform(-6, -2))  # unused, as upstream
        hparam("gda", False, lambda r: True)  # upstream: every random draw is True
        hparam("beta1", 0.5, lambda r: r.choice([0.0, 0.5]))  # unused, as upstream
        hparam("lr_d", 1e-3, lambda r: 10 ** r.uniform(-4.5, -2.5))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))  # used by upstream's unused update_second
        self.d_steps_per_g = int(hparams["d_steps_per_g"])
        self.featurizer = networks.Featurizer(input_shape, hparams)
        n_features = self.featurizer.n_outputs
        nonlinear = hparams["nonlinear_classifier"]
        self.classifier = networks.Classifier(n_features, num_classes, nonlinear)
        self.adv_classifier = networks.Classifier(n_features, num_classes, nonlinear)
        self.adv_classifier.load_state_dict(self.classifier.state_dict())
        main_parameters = list(self.featurizer.parameters()) + list(self.classifier.parameters())
        if hparams["gda"]:
            # Gradient descent-ascent: plain SGD for the featurizer and classifier. Upstream
            # gave this optimizer the adversarial head instead, so nothing ever trained the
            # predictor (and random search always draws gda=True).
            self.optimizer = torch.optim.SGD(main_parameters, lr=hparams["lr"])
        else:
            self.optimizer = torch.optim.Adam(
                main_parameters, lr=hparams["lr"], weight_decay=hparams["weight_decay"])
        self.adv_opt = torch.optim.SGD(self.adv_classifier.parameters(), lr=hparams["lr_d"])

    def loss_gap(self, minibatches):
        """max_e CE_e - min_e CE_e of the adversarial head (one featurizer pass per domain;
        strict comparisons, so ties keep the earlier domain)."""
        worst = best = None
        for x, y in minibatches:
            loss = F.cross_entropy(self.adv_classifier(self.featurizer(x)), y)
            if worst is None or loss > worst:
                worst = loss
            if best is None or loss < best:
                best = loss
        return worst - best

    @torch.no_grad()
    def _project_adversary(self):
        reference = self.classifier.state_dict()
        adversary = self.adv_classifier.state_dict()
        distance = torch.sqrt(sum(torch.sum((adversary[k] - reference[k]) ** 2) for k in reference))
        delta = self.hparams["delta"]
        if distance > delta:
            for name, parameter in self.adv_classifier.named_parameters():
                base = reference[name]
                parameter.data = base + (delta / distance) * (parameter.data - base)

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)
        loss = F.cross_entropy(self.classifier(self.featurizer(all_x)), all_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

        gap = self.hparams["t_lambda"] * self.loss_gap(minibatches)
        self.optimizer.zero_grad()
        gap.backward()
        self.optimizer.step()

        self.adv_classifier.load_state_dict(self.classifier.state_dict())
        for _ in range(self.d_steps_per_g):
            self.adv_opt.zero_grad()
            gap = -self.hparams["t_lambda"] * self.loss_gap(minibatches)
            gap.backward()
            self.adv_opt.step()
            self._project_adversary()
        return {"loss": loss.item(), "gap": -gap.item()}

    def predict(self, x):
        return self.classifier(self.featurizer(x))
