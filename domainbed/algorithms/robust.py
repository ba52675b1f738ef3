"""Robust risk objectives over the training domains.

- GroupDRO (Sagawa et al., ICLR 2020): a q-weighted sum of domain risks, where q follows
  exponentiated-gradient ascent on the risks (online mirror ascent on the simplex), so the
  worst domains get the most weight.
- EQRM (Eastwood et al., NeurIPS 2022): a quantile of the distribution of domain risks.
- RDM (Nguyen et al., WACV 2024): the worst domain's loss distribution matched to everyone's.
"""
import math

import torch
import torch.nn.functional as F

from domainbed.algorithms.alignment import gaussian_kernel
from domainbed.algorithms.erm import ERM
from domainbed.algorithms.registry import register_algorithm
from domainbed.lib.model_state import weights_and_buffers


@register_algorithm
class GroupDRO(ERM):
    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("groupdro_eta", 1e-2, lambda r: 10**r.uniform(-3, -1))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        # Upstream starts from an empty buffer and fills it with ones at the first update;
        # starting with ones(num_domains) is the same q and keeps the state_dict shape fixed.
        self.register_buffer("q", torch.ones(num_domains))

    def model_state_dict(self):
        """model.pkl's weights: `q` (training state, in checkpoint.pt) as upstream's
        constructor leaves it, empty, so that the dict loads strict into upstream's
        GroupDRO (upstream's own model.pkl, with q filled, does not)."""
        state = weights_and_buffers(self)
        state["q"] = self.q.new_empty(0)
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "q"
        if key in state_dict and state_dict[key].numel() == 0:
            state_dict[key] = self.q.detach().clone()   # a model.pkl's empty q: keep this one
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def update(self, minibatches, unlabeled=None):
        if len(minibatches) != len(self.q):
            raise ValueError(
                f"GroupDRO was built for {len(self.q)} training domains but got "
                f"{len(minibatches)} minibatches; pass one minibatch per training domain.")
        # One forward pass per domain, as upstream (matters for BatchNorm statistics).
        losses = torch.stack([F.cross_entropy(self.predict(x), y) for x, y in minibatches])
        with torch.no_grad():
            self.q.mul_(torch.exp(self.hparams["groupdro_eta"] * losses))
            self.q.div_(self.q.sum())
        loss = torch.dot(losses, self.q)

        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}


# ---------------------------------------------------------------------------------------
# EQRM: Eastwood et al., "Probable Domain Generalization via Quantile Risk Minimization",
# NeurIPS 2022 (Algorithm 1: the alpha-quantile of a Gaussian KDE of the domain risks).

def kde_quantile(risks, alpha, max_iters=32):
    """The `alpha`-quantile (float64 0-d tensor) of a Gaussian KDE of `risks`, by bisection.

    Bandwidth 1.06 * std * n^(-1/5) (Gauss-optimal). The result is (1 - t) lo + t hi for a
    dyadic t fixed by the comparisons, so its gradient reaches the smallest and largest
    risks directly and every risk through the bandwidth, as upstream.
    """
    sorted_risks = torch.sort(risks).values
    n = len(sorted_risks)
    bandwidth = 1.06 * sorted_risks.std() * n ** (-0.2)  # float32, as upstream
    alpha = alpha.to(torch.float64)
    if not torch.isfinite(bandwidth) or bandwidth.item() <= 0:
        # One domain, or all risks equal: the KDE is undefined (upstream raises); the
        # empirical quantile is the limit of a vanishing bandwidth.
        return torch.quantile(risks.to(torch.float64), alpha)
    bandwidth = bandwidth.to(torch.float64)
    data = sorted_risks.to(torch.float64)
    normal_ppf = math.sqrt(2.0) * torch.erfinv(2 * alpha - 1)
    lo = data[0] + bandwidth * normal_ppf
    hi = data[-1] + bandwidth * normal_ppf
    k = (lo + hi) / 2
    for _ in range(max_iters):
        with torch.no_grad():
            z = (k - data) / bandwidth
            cdf = (0.5 * (1 + torch.erf(z / math.sqrt(2.0)))).mean()
        if cdf.item() > alpha.item():
            hi = k
        else:
            lo = k
        k_next = (lo + hi) / 2
        if k_next.item() == k.item():
            break
        k = k_next
    return k


@register_algorithm
class EQRM(ERM):
    """Mean risk during burn-in, then the alpha-quantile of the risk distribution; Adam is
    re-created with lr `eqrm_lr` at the first quantile step."""

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("eqrm_quantile", 0.75, lambda r: r.uniform(0.5, 0.99))
        # upstream's random burn-in is a non-integer float
        hparam("eqrm_burnin_iters", 2500, lambda r: 10 ** r.uniform(2.5, 3.5))
        hparam("eqrm_lr", 1e-6, lambda r: 10 ** r.uniform(-7, -5))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))
        self.register_buffer("alpha", torch.tensor(hparams["eqrm_quantile"], dtype=torch.float64))

    def update(self, minibatches, unlabeled=None):
        step = int(self.update_count.item())
        burnin = self.hparams["eqrm_burnin_iters"]
        # One forward pass per domain, as upstream.
        risks = torch.stack([F.cross_entropy(self.network(x), y) for x, y in minibatches])
        if step < burnin:
            loss = risks.mean()
        else:
            loss = kde_quantile(risks, self.alpha)
        # The first quantile step (upstream compared step == burnin, never true for the
        # float burn-in of random search, so Adam was never reset and eqrm_lr unused).
        if step == math.ceil(burnin):
            self.optimizer = torch.optim.Adam(
                self.network.parameters(), lr=self.hparams["eqrm_lr"],
                weight_decay=self.hparams["weight_decay"])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.update_count += 1
        return {"loss": loss.item()}


# ---------------------------------------------------------------------------------------
# RDM: Nguyen, Do, Duong, Nguyen, "Domain Generalisation via Risk Distribution Matching",
# WACV 2024. Matches the distribution of per-sample losses of the worst domain with that of
# all domains (MMD with 8 Gaussian bandwidths), plus their variances.

RDM_GAMMAS = (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000)


def _unbiased_variance(values):
    return values.var() if len(values) > 1 else values.new_zeros(())


@register_algorithm
class RDM(ERM):
    @staticmethod
    def declare_hparams(hparam, dataset):
        if not dataset.small_images:   # upstream's RDM batch sizes on the large images
            if dataset in ("DomainNet", "TerraIncognita"):
                hparam("batch_size", 40, lambda r: int(r.uniform(30, 60)))
            else:
                hparam("batch_size", 88, lambda r: int(r.uniform(70, 100)))
        if dataset == "DomainNet":
            hparam("rdm_lambda", 0.5, lambda r: r.uniform(0.1, 1.0))
        elif dataset in ("PACS", "TerraIncognita"):
            hparam("rdm_lambda", 5.0, lambda r: r.uniform(1.0, 10.0))
        else:
            hparam("rdm_lambda", 5.0, lambda r: r.uniform(0.1, 10.0))
        if dataset == "DomainNet":
            hparam("rdm_penalty_anneal_iters", 2400, lambda r: int(r.uniform(1500, 3000)))
        else:
            hparam("rdm_penalty_anneal_iters", 1500, lambda r: int(r.uniform(800, 2700)))
        if dataset in ("TerraIncognita", "OfficeHome", "DomainNet"):
            hparam("variance_weight", 0.0, lambda r: r.choice([0.0]))
        else:
            hparam("variance_weight", 0.004, lambda r: r.uniform(0.001, 0.007))
        hparam("rdm_lr", 1.5e-5, lambda r: r.uniform(8e-6, 2e-5))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))

    def update(self, minibatches, unlabeled=None, held_out_minibatches=None):
        hp = self.hparams
        step = int(self.update_count.item())
        active = step >= hp["rdm_penalty_anneal_iters"]
        matching_weight = hp["rdm_lambda"] if active else 0.0
        variance_weight = hp["variance_weight"] if active else 0.0

        all_x = torch.cat([x for x, _ in minibatches])
        all_logits = self.network(all_x)
        domain_logits = torch.split(all_logits, [len(x) for x, _ in minibatches])
        risks = torch.stack([F.cross_entropy(z, y) for z, (_, y) in zip(domain_logits, minibatches)])
        losses = [F.cross_entropy(z, y, reduction="none")
                  for z, (_, y) in zip(domain_logits, minibatches)]
        erm_loss = risks.mean()
        worst = losses[int(torch.argmax(risks.detach()).item())]
        everyone = torch.cat(losses)
        a, b = worst.view(-1, 1), everyone.view(-1, 1)
        matching = (gaussian_kernel(a, a, RDM_GAMMAS).mean() + gaussian_kernel(b, b, RDM_GAMMAS).mean()
                    - 2 * gaussian_kernel(a, b, RDM_GAMMAS).mean())
        variance = _unbiased_variance(everyone) + _unbiased_variance(worst)
        total = erm_loss + matching_weight * matching + variance_weight * variance

        if step == hp["rdm_penalty_anneal_iters"]:
            self.optimizer = torch.optim.Adam(
                self.network.parameters(), lr=hp["rdm_lr"], weight_decay=hp["weight_decay"])
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        self.update_count += 1
        return {
            "update_count": float(self.update_count.item()),
            "total_loss": total.item(),
            "erm_loss": erm_loss.item(),
            "matching_penalty": matching.item(),
            "variance_penalty": variance.item(),
            "rdm_lambda": float(hp["rdm_lambda"]),  # the hparam, not the effective weight
        }
