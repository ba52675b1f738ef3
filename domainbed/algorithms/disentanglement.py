"""ADRMX (Demirel, Aptoula, Ozkan, "Additive Disentanglement of Domain Features with Remix
Loss", arXiv 2308.06624, 2023).

Two backbones: a label featurizer F_l and a domain featurizer F_d. Their difference
F_c = F_l - F_d is meant to be domain-free: a discriminator tries to recover the domain from
it (adversarially, alternating turns as in DANN), classifiers are trained on F_l and F_c, a
domain classifier on F_d, domain-weighted supervised contrastive losses on F_l and F_c, and
a "remix" loss classifies F_c of one sample plus F_d of another sample of the same class.
"""
import torch
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.adversarial import domain_labels
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.erm import concat_minibatches
from domainbed.algorithms.registry import register_algorithm
from domainbed.algorithms.autocast import fp32_under_autocast


@fp32_under_autocast   # cosines over temperature 0.07: bf16 rounding is amplified
def domain_weighted_supcon(features, y, d, weight=0.5, temperature=0.07):
    """Supervised contrastive loss whose terms weigh same-domain pairs by `weight` and
    other-domain pairs by 1 - `weight` (ADRMX's SCL, upstream's formula).

    For each anchor i with positives P (same label, j != i) and negatives N (other label):
    L_i = mean_{j in P} log(a_ij / den_i + 1e-5), a_ij = w_ij exp(s_ji),
    den_i = sum_{j in N} w_ij exp(s_ji) + sum_{j in P} a_ij + 1e-5, s = cos / temperature.
    Anchors without positives are skipped; the loss is -sum_i L_i / (kept + 1) (upstream's +1).
    """
    n = len(features)
    normalized = F.normalize(features, dim=1)
    similarity_t = (normalized @ normalized.t() / temperature).t()  # [i, j] = s_ji
    not_self = ~torch.eye(n, dtype=torch.bool, device=features.device)
    same_y = y.view(-1, 1) == y.view(1, -1)
    same_d = d.view(-1, 1) == d.view(1, -1)
    positives = same_y & not_self
    negatives = ~same_y
    weights = torch.where(same_d, torch.full_like(similarity_t, weight),
                          torch.full_like(similarity_t, 1.0 - weight))
    terms = weights * torch.exp(similarity_t)
    zero = torch.zeros_like(terms)
    negative_mass = torch.where(negatives, terms, zero).sum(dim=1)
    positive_terms = torch.where(positives, terms, zero)
    denominator = negative_mass + positive_terms.sum(dim=1) + 1e-5
    n_positives = positives.sum(dim=1)
    kept = n_positives > 0
    if not kept.any():
        return features.new_zeros(())
    log_terms = torch.log(positive_terms[kept] / denominator[kept].unsqueeze(1) + 1e-5)
    per_anchor = torch.where(positives[kept], log_terms, torch.zeros_like(log_terms)).sum(dim=1)
    per_anchor = per_anchor / n_positives[kept]
    return -per_anchor.sum() / (int(kept.sum()) + 1)


@register_algorithm
class ADRMX(Algorithm):
    MIX_NUM = 1

    @staticmethod
    def declare_hparams(hparam, dataset):
        if dataset.small_images:   # upstream's ADRMX lr grids
            hparam("lr", 3e-3, lambda r: r.choice([5e-4, 1e-3, 2e-3, 3e-3]))
        else:
            hparam("lr", 3e-5, lambda r: r.choice([2e-5, 3e-5, 4e-5, 5e-5]))
        hparam("cnt_lambda", 1.0, lambda r: r.choice([1.0]))
        hparam("dclf_lambda", 1.0, lambda r: r.choice([1.0]))
        hparam("disc_lambda", 0.75, lambda r: r.choice([0.75]))
        hparam("rmxd_lambda", 1.0, lambda r: r.choice([1.0]))
        hparam("d_steps_per_g_step", 2, lambda r: r.choice([2]))
        hparam("beta1", 0.5, lambda r: r.choice([0.5]))
        hparam("mlp_width", 256, lambda r: r.choice([256]))
        hparam("mlp_depth", 9, lambda r: int(r.choice([8, 9, 10])))
        hparam("mlp_dropout", 0.0, lambda r: r.choice([0]))

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("update_count", torch.tensor([0]))
        # Construction order as upstream (it fixes the random initialisation).
        self.featurizer_label = networks.Featurizer(input_shape, hparams)
        self.featurizer_domain = networks.Featurizer(input_shape, hparams)
        n_features = self.featurizer_label.n_outputs
        self.discriminator = networks.MLP(n_features, num_domains, hparams)
        self.classifier_label_1 = networks.Classifier(n_features, num_classes, is_nonlinear=True)
        self.classifier_label_2 = networks.Classifier(n_features, num_classes, is_nonlinear=True)
        self.classifier_domain = networks.Classifier(n_features, num_domains, is_nonlinear=True)
        self.network = torch.nn.Sequential(self.featurizer_label, self.classifier_label_1)
        betas = (hparams["beta1"], 0.9)
        # no weight decay, as upstream
        self.disc_opt = torch.optim.Adam(self.discriminator.parameters(), lr=hparams["lr"], betas=betas)
        self.opt = torch.optim.Adam(
            list(self.featurizer_label.parameters()) + list(self.featurizer_domain.parameters())
            + list(self.classifier_label_1.parameters()) + list(self.classifier_label_2.parameters())
            + list(self.classifier_domain.parameters()),
            lr=hparams["lr"], betas=betas)

    def _remix_loss(self, content, domain_features, all_y):
        """Classify content of one sample + domain features of another of the same class.

        Upstream drew the pair's positions within the class but used them as batch rows
        (mostly rows of the first domain, of any class); here they index the class's rows.
        """
        total = 0.0
        for c in range(self.num_classes):
            rows = torch.nonzero(all_y == c).flatten()
            order = torch.randperm(len(rows), generator=self.generator)
            if len(rows) < 2:
                continue
            i1, i2 = int(rows[int(order[0])]), int(rows[int(order[1])])
            mixed = (content[i1] + domain_features[i2]).view(1, -1)
            total = total + F.cross_entropy(self.classifier_label_1(mixed), all_y[i1].view(1))
        if not torch.is_tensor(total):  # no class with two samples (upstream crashed)
            total = content.new_zeros(())
        return total / (self.num_classes * self.MIX_NUM)

    def update(self, minibatches, unlabeled=None):
        hp = self.hparams
        self.update_count += 1
        count = int(self.update_count.item())
        all_x, all_y = concat_minibatches(minibatches)
        domains = domain_labels(minibatches, all_x.device)
        d_steps = int(hp["d_steps_per_g_step"])
        discriminator_turn = count % (1 + d_steps) < d_steps

        if discriminator_turn:
            # Both backbones run in train mode as upstream; their gradients are not needed.
            with torch.no_grad():
                content = self.featurizer_label(all_x) - self.featurizer_domain(all_x)
            disc_loss = F.cross_entropy(self.discriminator(content), domains)
            self.disc_opt.zero_grad()
            disc_loss.backward()
            self.disc_opt.step()
            return {"loss_disc": disc_loss.item()}

        label_features = self.featurizer_label(all_x)
        domain_features = self.featurizer_domain(all_x)
        content = label_features - domain_features
        disc_loss = F.cross_entropy(self.discriminator(content), domains)
        loss_dmn = F.cross_entropy(self.classifier_domain(domain_features), domains)
        loss_clf_int = F.cross_entropy(self.classifier_label_1(label_features), all_y)
        loss_cnt_int = domain_weighted_supcon(label_features, all_y, domains)
        loss_clf_fin = F.cross_entropy(self.classifier_label_2(content), all_y)
        loss_cnt_final = domain_weighted_supcon(content, all_y, domains)
        loss_remixed = self._remix_loss(content, domain_features, all_y)
        loss_total = (loss_clf_int + loss_clf_fin + hp["dclf_lambda"] * loss_dmn
                      + hp["rmxd_lambda"] * loss_remixed
                      + hp["cnt_lambda"] * (loss_cnt_int + loss_cnt_final)
                      - hp["disc_lambda"] * disc_loss)
        self.disc_opt.zero_grad()
        self.opt.zero_grad()
        loss_total.backward()
        self.opt.step()
        return {
            "loss_total": loss_total.item(),
            "loss_cnt_int": loss_cnt_int.item(),
            "loss_cnt_final": loss_cnt_final.item(),
            "loss_clf_int": loss_clf_int.item(),
            "loss_clf_fin": loss_clf_fin.item(),
            "loss_dmn": loss_dmn.item(),
            "loss_disc": disc_loss.item(),
            "loss_remixed": loss_remixed.item(),
        }

    def predict(self, x):
        return self.classifier_label_1(self.featurizer_label(x))
