"""Group distributionally robust optimisation: GroupDRO (Sagawa et al., ICLR 2020).

Minimises a q-weighted sum of domain risks, where q follows exponentiated-gradient ascent on
the risks (online mirror ascent on the simplex), so the worst domains get the most weight.
"""
import torch
import torch.nn.functional as F

from domainbed.algorithms.erm import ERM
from domainbed.algorithms.registry import register_algorithm


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
