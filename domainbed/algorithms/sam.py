"""Sharpness-Aware Minimization (Foret, Kleiner, Mobahi & Neyshabur, ICLR 2021).

Not in upstream DomainBed. ERM's network; each step minimises the loss at the worst point
of an L2 ball of radius ρ around the weights, to first order: with g = ∇L(w),
e = ρ·g/‖g‖ (one norm over all parameters), the gradient ∇L(w + e) drives an Adam step
taken from w.
"""
import torch
import torch.nn.functional as F

from domainbed.algorithms.erm import ERM, concat_minibatches
from domainbed.algorithms.registry import register_algorithm
from domainbed.algorithms import rho_ball


@register_algorithm
class SAM(ERM):
    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("sam_rho", 0.05, lambda r: r.choice([0.01, 0.02, 0.05, 0.1, 0.2]))

    def update(self, minibatches, unlabeled=None):
        all_x, all_y = concat_minibatches(minibatches)
        params = [p for p in self.network.parameters() if p.requires_grad]
        loss = F.cross_entropy(self.predict(all_x), all_y)
        gradients = torch.autograd.grad(loss, params, allow_unused=True)
        gradients = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gradients)]

        # Keep exact copies: subtracting e again would not restore w bit for bit.
        originals = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, rho_ball.ascent(gradients, self.hparams["sam_rho"])):
                p.add_(e)
        perturbed_loss = F.cross_entropy(self.predict(all_x), all_y)
        self.optimizer.zero_grad()
        perturbed_loss.backward()
        with torch.no_grad():
            for p, original in zip(params, originals):
                p.copy_(original)
        self.optimizer.step()
        return {"loss": loss.item()}
