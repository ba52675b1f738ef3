"""Meta-learning for domain generalisation: MLDG (Li et al., AAAI 2018), first-order.

Each step simulates a domain shift: a copy of the network takes one Adam step on a
meta-train domain, and is then evaluated on a held-out meta-test domain. The main network
moves along the meta-train gradient plus `mldg_beta` times the meta-test gradient taken at
the copy's updated weights (the first-order approximation of MAML's second-order term).
"""
import copy

import torch
import torch.nn.functional as F

from domainbed.algorithms.erm import ERM, make_adam
from domainbed.algorithms.registry import register_algorithm
from domainbed.lib.misc import split_meta_train_test


@register_algorithm
class MLDG(ERM):
    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("mldg_beta", 1.0, lambda r: 10**r.uniform(-1, 1))
        # int(): upstream's numpy int crashed json.dumps (DomainBed issue #115)
        hparam("n_meta_test", 2, lambda r: int(r.choice([1, 2])))

    def _meta_pairs(self, minibatches):
        n_meta_test = int(self.hparams["n_meta_test"])
        if n_meta_test >= len(minibatches):
            return []  # no domain left to meta-train on: a step with zero gradients
        return split_meta_train_test(minibatches, n_meta_test, self.generator)

    def update(self, minibatches, unlabeled=None):
        num_mb = len(minibatches)
        beta = self.hparams["mldg_beta"]
        params = list(self.network.parameters())
        self.optimizer.zero_grad()
        for p in params:
            p.grad = torch.zeros_like(p)

        objective = 0.0
        for (xi, yi), (xj, yj) in self._meta_pairs(minibatches):
            inner_net = copy.deepcopy(self.network)
            inner_opt = make_adam(inner_net.parameters(), self.hparams)
            inner_obj = F.cross_entropy(inner_net(xi), yi)
            inner_opt.zero_grad()
            inner_obj.backward()
            inner_opt.step()
            # Meta-train gradient, taken at the current weights.
            for p_main, p_inner in zip(params, inner_net.parameters()):
                if p_inner.grad is not None:
                    p_main.grad.add_(p_inner.grad / num_mb)
            # Meta-test gradient, taken at the inner step's weights (first order).
            loss_j = F.cross_entropy(inner_net(xj), yj)
            grads_j = torch.autograd.grad(loss_j, list(inner_net.parameters()), allow_unused=True)
            for p_main, g_j in zip(params, grads_j):
                if g_j is not None:
                    p_main.grad.add_(beta * g_j / num_mb)
            objective += inner_obj.item() + beta * loss_j.item()

        self.optimizer.step()
        return {"loss": objective / num_mb}
