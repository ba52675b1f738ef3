"""FGMix: gradient-based mixup with extrapolation toward flatter minima, and its ablations.

Peng & Pan, "Learning Gradient-based Mixup with Extrapolation toward Flatter Minima for
Domain Generalization" (arXiv 2209.14742). The paper's formulas were not available to this
project; the module implements the formulation written out in docs/method.md and reads in
that page's order:

  §1 per-instance gradient signatures of the linear head, compared in closed form;
  §2 mixing groups: an anchor plus one same-label instance from every other domain;
  §3 weights: compatibilities c_k, a policy π (sum 1) and the affine map
     λ = (1 + κ)·π − κ/K (sum 1, λ ≥ −κ/K);
  §4 the model's objective: source cross-entropy + γ · cross-entropy of mixed features;
  §5 the policy's feature metric, learned by a flatness-aware (SAM) meta-step on the head;
  §6 one implementation with switches, and the registered variants:

      InterpMix  π ~ Dirichlet(α)           κ = 0
      ExtrapMix  π ~ Dirichlet(α)           κ > 0
      GMix       π = softmax(compat / τ)    κ > 0, metric fixed to 1
      FGMix      π = softmax(compat / τ)    κ > 0, metric learned (§5)

  and one proposed after the invariance unit tests (docs/invariance.md):

      AntiGMix   π = softmax(−compat / τ)   κ > 0, metric fixed to 1

The backbone runs one forward and one backward pass per step, as in ERM; everything
added works on features, residuals and the head only.

Why this module imports so little: `patches/` turns it into a single-file plug-in for an
unmodified upstream DomainBed. That generator inlines `algorithms/base.py` and the
`lib/per_sample` functions used here, and keeps only `from domainbed import networks`
(which upstream also has). So the network and the optimizer are built here from
`networks` directly, the way upstream's ERM builds them, rather than through `erm.py`.
"""
import collections
import math

import torch
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.registry import register_algorithm
from domainbed.lib import per_sample


# -- §1 per-instance gradient signatures ----------------------------------------------
def head_input(classifier, features):
    """The input of the classifier's last linear layer: the `z` of the closed form."""
    if isinstance(classifier, torch.nn.Linear):
        return features
    return classifier[:-1](features)


def last_linear(classifier):
    return classifier if isinstance(classifier, torch.nn.Linear) else classifier[-1]


def gradient_signature(classifier, features, logits, y):
    """(head input z, residual r) per instance, detached: the policy reads gradients only.
    Instance i's head gradient is (r_i z_iᵀ, r_i); cosines come from per_sample."""
    with torch.no_grad():
        return head_input(classifier, features.detach()), \
            per_sample.head_residuals(logits.detach(), y)


# -- §2 mixing groups ------------------------------------------------------------------
Groups = collections.namedtuple("Groups", "index mask valid gamma_draws")
Groups.__doc__ = """One group per anchor instance.

index [N, D]: column d holds the member from domain d (the anchor sits in its own
domain's column and fills the columns of absent members); mask [N, D]: real members;
valid [N]: 1.0 for groups of two or more members (groups of one are masked out of the
loss); gamma_draws [N, D]: Gamma(α) draws for the Dirichlet variants, else None."""


def concat_with_domains(minibatches):
    """All inputs, labels, and the index of the domain each instance comes from."""
    x = torch.cat([xi for xi, _ in minibatches])
    y = torch.cat([yi for _, yi in minibatches])
    domains = torch.cat([torch.full_like(yi, d) for d, (_, yi) in enumerate(minibatches)])
    return x, y, domains


def build_groups(y, domains, num_domains, num_classes, uniform):
    """One group per anchor instance: itself, plus one instance of each other domain
    drawn uniformly among those with the anchor's label (`uniform` [N, D] in [0, 1)).

    Returns (index, mask) as in `Groups`. A domain without the label is left out. No
    Python loop over instances: instances are sorted by (domain, label) cell and each
    draw is an offset in a cell.
    """
    n = y.shape[0]
    cell_of_instance = domains * num_classes + y
    order = torch.argsort(cell_of_instance, stable=True)
    counts = torch.bincount(cell_of_instance, minlength=num_domains * num_classes)
    starts = torch.cumsum(counts, 0) - counts

    domain_ids = torch.arange(num_domains, device=y.device)
    cell = domain_ids.unsqueeze(0) * num_classes + y.unsqueeze(1)
    n_in_cell = counts.take(cell)
    # min() guards against float rounding of uniform · count up to count itself.
    offset = torch.minimum((uniform * n_in_cell).long(), (n_in_cell - 1).clamp(min=0))
    drawn = order.take((starts.take(cell) + offset).clamp(max=n - 1))

    mask = n_in_cell > 0
    own_domain = domains.unsqueeze(1) == domain_ids.unsqueeze(0)
    anchors = torch.arange(n, device=y.device).unsqueeze(1).expand(n, num_domains)
    index = torch.where(own_domain | ~mask, anchors, drawn)
    return index, mask


# -- §3 weights with bounded extrapolation ---------------------------------------------
def mean_compatibility(cosine, mask):
    """c_k = mean over the other members l of the group of S_kl; [G, K] (0 off-group)."""
    members = mask.to(cosine.dtype)
    with_self = (cosine * members.unsqueeze(1)).sum(2)
    total = (with_self - torch.diagonal(cosine, dim1=1, dim2=2)) * members
    n_others = (members.sum(1, keepdim=True) - 1).clamp(min=1)
    return total / n_others


def compatibility_policy(compatibility, mask, tau):
    """π = softmax(c / τ) over each group's members."""
    scores = (compatibility / tau).masked_fill(~mask, float("-inf"))
    # The same softmax over the transposed layout: on CPU, softmax along a short last
    # dimension is about 6x slower (torch 2.14, measured for [640, 10]).
    return torch.softmax(scores.T, dim=0).T


def dirichlet_policy(gamma_draws, mask):
    """π ~ Dirichlet(α·1) over each group's members, from Gamma(α, 1) draws [N, D]."""
    draws = torch.where(mask, gamma_draws, torch.zeros_like(gamma_draws))
    total = draws.sum(1, keepdim=True)
    uniform = mask.to(draws.dtype) / mask.sum(1, keepdim=True)
    # All draws underflowing to 0 (tiny α) is nearly impossible; then fall back to uniform.
    return torch.where(total > 0, draws / total.clamp(min=torch.finfo(draws.dtype).tiny), uniform)


def affine_weights(policy, mask, kappa):
    """λ_k = (1 + κ) π_k − κ / K on members (0 elsewhere): Σ λ = 1 and λ ≥ −κ/K."""
    size = mask.sum(1, keepdim=True).to(policy.dtype)
    weights = (1.0 + kappa) * policy - kappa / size
    return torch.where(mask, weights, torch.zeros_like(weights))


# -- §4 the model's objective ----------------------------------------------------------
def mix(values, index, weights):
    """z̃_g = Σ_k λ_gk z_index[g, k] (rows of `values` [N, F])."""
    return (weights.unsqueeze(2) * per_sample.gather_rows(values, index)).sum(1)


def mixed_logits(head, features, index, weights, affine, logits=None):
    """h(z̃_g) for every group; `head` is a module or a callable.

    An affine head commutes with weights that sum to one: h(Σ_k λ_k z_k) = Σ_k λ_k h(z_k).
    So with a linear classifier the instances' logits are mixed (C numbers per member
    instead of F, and the model's own `logits` are reused); the result is the same."""
    if affine:
        return mix(head(features) if logits is None else logits, index, weights)
    return head(mix(features, index, weights))


def masked_mean(values, valid):
    return (values * valid).sum() / valid.sum().clamp(min=1)


def mixed_cross_entropy(mixed, labels, groups):
    """mean over kept groups of CE(h(z̃_G), y_G), from the mixed logits `mixed`."""
    return masked_mean(F.cross_entropy(mixed, labels, reduction="none"), groups.valid)


# -- §5 learning the policy toward flatter minima --------------------------------------
def call_head(head, params, inputs):
    """The head evaluated at `params` (a name -> tensor dict). A linear head is called as
    F.linear: functional_call's module swapping costs more than the product itself here."""
    if isinstance(head, torch.nn.Linear):
        return F.linear(inputs, params["weight"], params.get("bias"))
    return torch.func.functional_call(head, params, (inputs,))


def sharpness_perturbation(head, params, features, labels, rho):
    """SAM's first-order worst case ε = ρ g / ‖g‖, g = ∇ L_src at `params`, as a constant."""
    frozen = {name: p.detach().requires_grad_() for name, p in params.items()}
    loss = F.cross_entropy(call_head(head, frozen, features), labels)
    grads = torch.autograd.grad(loss, list(frozen.values()))
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    scale = rho / norm.clamp(min=1e-12)
    return {name: g * scale for name, g in zip(frozen, grads)}


def flatness_meta_loss(head, params, features, labels, groups, weights, inner_lr, rho,
                       epsilon=None):
    """(L_meta, ε): L_meta = L_src(θ' + ε), θ' = θ − η ∇_θ L_mix(θ), differentiable w.r.t.
    `weights`; ε is a constant (SAM's convention), recomputed at θ' unless given.

    `params` are the head's parameters (leaves requiring grad), `features` the detached
    source features, `weights` the policy's λ for `groups`.
    """
    names = list(params)

    def head_at(values):
        return lambda inputs: call_head(head, values, inputs)

    affine = isinstance(head, torch.nn.Linear)
    mixed = mixed_logits(head_at(params), features, groups.index, weights, affine)
    mixed_loss = mixed_cross_entropy(mixed, labels, groups)
    grads = torch.autograd.grad(mixed_loss, [params[n] for n in names], create_graph=True)
    virtual = {n: params[n] - inner_lr * g for n, g in zip(names, grads)}
    if epsilon is None:
        epsilon = sharpness_perturbation(head, virtual, features, labels, rho)
    perturbed = {n: virtual[n] + epsilon[n] for n in names}
    loss = F.cross_entropy(head_at(perturbed)(features), labels)
    return loss, epsilon


# -- §6 one implementation with switches -----------------------------------------------
class GroupMixBase(Algorithm):
    """Feature-level mixup of same-label groups across domains (§2-§5).

    Switches set by the registered variants: WEIGHTS ("dirichlet" or "gradient"),
    EXTRAPOLATE (κ from hparams, else 0), LEARN_POLICY (§5 meta-step for the metric),
    COMPATIBILITY_SIGN (-1: favour the least compatible members, AntiGMix).
    """

    WEIGHTS = "dirichlet"
    EXTRAPOLATE = False
    LEARN_POLICY = False
    COMPATIBILITY_SIGN = 1.0

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer = networks.Featurizer(input_shape, hparams)
        self.classifier = networks.Classifier(
            self.featurizer.n_outputs, num_classes, hparams["nonlinear_classifier"])
        self.network = torch.nn.Sequential(self.featurizer, self.classifier)
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=hparams["lr"], weight_decay=hparams["weight_decay"])
        if self.LEARN_POLICY:
            # m = softplus(ω) = 1 at the start: the policy begins as GMix's.
            n_metric = last_linear(self.classifier).in_features
            self.policy_omega = torch.nn.Parameter(torch.full((n_metric,), math.log(math.e - 1)))
            self.policy_optimizer = torch.optim.Adam([self.policy_omega],
                                                     lr=hparams["fgmix_policy_lr"])

    def predict(self, x):
        return self.network(x)

    def _kappa(self):
        return self.hparams["fgmix_kappa"] if self.EXTRAPOLATE else 0.0

    def _metric(self):
        return F.softplus(self.policy_omega) if self.LEARN_POLICY else None

    # -- one training step ----------------------------------------------------------
    def update(self, minibatches, unlabeled=None):
        x, y, domains = concat_with_domains(minibatches)
        z = self.featurizer(x)
        logits = self.classifier(z)
        nll = F.cross_entropy(logits, y)
        zero = torch.zeros((), device=z.device)
        if len(minibatches) < 2:  # no other domain to mix with: plain ERM
            loss, mixed_loss, meta_loss = nll, zero, zero
            weights = groups = None
        else:
            groups = self._draw_groups(y, domains, len(minibatches), z.dtype)
            signature = gradient_signature(self.classifier, z, logits, y) \
                if self.WEIGHTS == "gradient" else None
            meta_loss = self._update_policy(z.detach(), y, groups, signature) \
                if self.LEARN_POLICY else zero
            with torch.no_grad():  # λ is a constant for the model (§4)
                weights = self._weights(groups, signature)
            mixed = mixed_logits(self.classifier, z, groups.index, weights,
                                 isinstance(self.classifier, torch.nn.Linear), logits)
            mixed_loss = mixed_cross_entropy(mixed, y, groups)
            loss = nll + self.hparams["fgmix_gamma"] * mixed_loss

        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return self._diagnostics(loss, nll, mixed_loss, meta_loss, weights, groups)

    def _draw_groups(self, y, domains, num_domains, dtype):
        """`Groups`, drawn from the algorithm's own generators (torch, then numpy)."""
        n = y.shape[0]
        uniform = torch.rand((n, num_domains), generator=self.generator)
        index, mask = build_groups(y, domains, num_domains, self.num_classes,
                                   uniform.to(device=y.device))
        valid = (mask.sum(1) >= 2).to(dtype)  # groups of size 1 are dropped
        gammas = None
        if self.WEIGHTS == "dirichlet":
            draws = self.numpy_rng.gamma(self.hparams["fgmix_alpha"], size=(n, num_domains))
            gammas = torch.from_numpy(draws).to(device=y.device, dtype=dtype)
        return Groups(index, mask, valid, gammas)

    def _weights(self, groups, signature):
        """λ for every group (§3), from the Dirichlet draws or the gradient signatures."""
        if self.WEIGHTS == "dirichlet":
            policy = dirichlet_policy(groups.gamma_draws, groups.mask)
        else:
            features, residuals = signature
            cosine = per_sample.grouped_head_gradient_cosine(features, residuals, groups.index,
                                                             self._metric())
            compatibility = self.COMPATIBILITY_SIGN * mean_compatibility(cosine, groups.mask)
            policy = compatibility_policy(compatibility, groups.mask, self.hparams["fgmix_tau"])
        return affine_weights(policy, groups.mask, self._kappa())

    # -- §5 the policy step (FGMix) ---------------------------------------------------
    def policy_meta_loss(self, z, y, groups, signature, epsilon=None):
        """(L_meta(ω), ε) of §5 on detached features and a functional copy of the head."""
        params = {name: p.detach().requires_grad_()
                  for name, p in self.classifier.named_parameters()}
        return flatness_meta_loss(self.classifier, params, z, y, groups,
                                  self._weights(groups, signature),
                                  self.hparams["fgmix_inner_lr"], self.hparams["fgmix_rho"],
                                  epsilon)

    def _update_policy(self, z, y, groups, signature):
        meta_loss, _ = self.policy_meta_loss(z, y, groups, signature)
        self.policy_optimizer.zero_grad()
        meta_loss.backward(inputs=[self.policy_omega])
        self.policy_optimizer.step()
        return meta_loss.detach()

    def _diagnostics(self, loss, nll, mixed_loss, meta_loss, weights, groups):
        """Logged floats, read from the device in one transfer."""
        if weights is None:
            n_groups = mean_negative = extrapolating = torch.zeros((), device=loss.device)
        else:
            negative = (weights < 0) & (groups.valid > 0).unsqueeze(1)
            n_groups = groups.valid.sum()
            mean_negative = torch.where(negative, weights, torch.zeros_like(weights)).sum() \
                / negative.sum().clamp(min=1)
            extrapolating = negative.any(1).sum() / n_groups.clamp(min=1)
        names = ["loss", "nll", "mixed_loss", "mean_negative_weight", "frac_extrapolating",
                 "n_groups"]
        values = [loss, nll, mixed_loss, mean_negative, extrapolating, n_groups]
        if self.LEARN_POLICY:
            names.append("meta_loss")
            values.append(meta_loss)
        numbers = torch.stack([v.detach().to(torch.float64) for v in values]).tolist()
        return dict(zip(names, numbers))


# -- §6 the registered variants (each declares only the hparams it uses) ---------------
@register_algorithm
class InterpMix(GroupMixBase):
    """Ablation: random convex weights π ~ Dirichlet(α) inside groups, no extrapolation."""

    WEIGHTS, EXTRAPOLATE, LEARN_POLICY = "dirichlet", False, False

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("fgmix_gamma", 1.0, lambda r: 10**r.uniform(-1, 0.5))
        hparam("fgmix_alpha", 1.0, lambda r: 10**r.uniform(-1, 1))


@register_algorithm
class ExtrapMix(GroupMixBase):
    """Ablation: random weights π ~ Dirichlet(α), extrapolated with strength κ."""

    WEIGHTS, EXTRAPOLATE, LEARN_POLICY = "dirichlet", True, False

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("fgmix_gamma", 1.0, lambda r: 10**r.uniform(-1, 0.5))
        hparam("fgmix_alpha", 1.0, lambda r: 10**r.uniform(-1, 1))
        hparam("fgmix_kappa", 0.5, lambda r: r.uniform(0, 1))


@register_algorithm
class GMix(GroupMixBase):
    """Ablation: weights from gradient compatibilities with a fixed metric m = 1."""

    WEIGHTS, EXTRAPOLATE, LEARN_POLICY = "gradient", True, False

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("fgmix_gamma", 1.0, lambda r: 10**r.uniform(-1, 0.5))
        hparam("fgmix_kappa", 0.5, lambda r: r.uniform(0, 1))
        hparam("fgmix_tau", 0.2, lambda r: 10**r.uniform(-1.5, 0))


@register_algorithm
class FGMix(GroupMixBase):
    """FGMix: gradient-compatibility weights whose metric is learned toward flat minima."""

    WEIGHTS, EXTRAPOLATE, LEARN_POLICY = "gradient", True, True

    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("fgmix_gamma", 1.0, lambda r: 10**r.uniform(-1, 0.5))
        hparam("fgmix_kappa", 0.5, lambda r: r.uniform(0, 1))
        hparam("fgmix_tau", 0.2, lambda r: 10**r.uniform(-1.5, 0))
        hparam("fgmix_policy_lr", 1e-2, lambda r: 10**r.uniform(-3, -1))
        hparam("fgmix_inner_lr", 0.1, lambda r: 10**r.uniform(-2, 0))
        hparam("fgmix_rho", 0.05, lambda r: r.choice([0.01, 0.02, 0.05, 0.1, 0.2]))


@register_algorithm
class AntiGMix(GroupMixBase):
    """Proposed variant (docs/invariance.md): GMix with the compatibility's sign reversed,
    π = softmax(−c / τ), so extrapolation moves toward the members whose head gradients
    disagree with their group's.

    Why: on the invariance unit tests, same-label head gradients agree when the instances'
    spurious blocks agree (that block is the strong one), so GMix's weights push the mixed
    points along the spurious direction; the least compatible members are the ones whose
    spurious block contradicts their label. Kept beside GMix, so the ablation stays.
    """

    WEIGHTS, EXTRAPOLATE, LEARN_POLICY = "gradient", True, False
    COMPATIBILITY_SIGN = -1.0

    @staticmethod
    def declare_hparams(hparam, dataset):
        GMix.declare_hparams(hparam, dataset)
