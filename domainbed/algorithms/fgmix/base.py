"""§6 of docs/method.md: one implementation with switches, `GroupMixBase`.

A training step draws the groups (§2), reads the head-gradient signature (§1), lets a
learning variant take its policy step (§5), forms the weights with the variant's weight
rule (§3), and trains the model on source + mixed cross-entropy (§4), logging the
diagnostics. The registered variants (variants.py) choose the rules.

Why the network and the optimizer are built here from `networks` directly, the way
upstream's ERM builds them, rather than through `erm.py`: `patches/` installs this package
in an unmodified upstream DomainBed, where only `from domainbed import networks` (which
upstream also has) is kept.
"""
import math

import torch
import torch.nn.functional as F

from domainbed import networks
from domainbed.algorithms.base import Algorithm
from domainbed.algorithms import per_sample

from .captured import CapturedRegion
from .diagnostics import (bernoulli_kl, domain_preference, explained_by_domain,
                          extrapolation_measures, masked_correlation, masked_std,
                          normalized_entropy, policy_kl)
from .groups import Groups, build_groups, concat_with_domains
from .lookahead import SGDLookahead, flatness_meta_loss, next_step_number
from .objective import masked_mean, mixed_cross_entropy, mixed_logits, mix
from .signatures import (Compatibilities, Signature, cross_domain_cells, gradient_signature,
                         last_linear)
from .weights import DirichletWeights, Mixing

# XORed into the algorithm's seed for a variant's own stream (random scores, shuffles).
VARIANT_STREAM = 0x2545F4914F6CDD1D


class GroupMixBase(Algorithm):
    """Same-label groups across domains, mixed with weights from a policy (§2-§5).

    Switches set by the registered variants:
      WEIGHTS: the weight rule (weights.py), built with `for_variant(self)`:
        `DirichletWeights` (π ~ Dir(α), affine map of §3), `PairwiseWeights` (π =
        softmax(c/τ) of the pairwise compatibility, affine map: version 1),
        `DirectedWeights` (extrapolation by design, version 2) or `AmountWeights` (a
        direction as in version 2 and an amount κ_g per group: version 3, §3c);
      SCORES (directed, amount): the direction's scores, "compatibility"
        (`cross_domain_compatibility`) or "random" (standard normal scores);
      EXTRAPOLATE: κ from hparams, else 0; LEARN_POLICY: the §5 meta-step for the metric;
      LOOKAHEAD (lookahead.py): `SGDLookahead` (version 1's virtual step) or
        `OptimizerLookahead` (the model's own Adam step);
      META (§5c): "same_batch" (SAM on the batch) or "leave_one_domain_out";
      COMPATIBILITY_SIGN: −1 favours the least compatible members (AntiGMix);
      AMOUNT_SIGN (amount): +1 pushes the most compatible groups furthest, −1 the least;
      SHUFFLE_AMOUNTS (amount): the amounts handed to groups in a random order (a control).
    Version 2 and 3 variants also read `fgmix_space`: "features" mixes z (one backbone pass),
    "inputs" mixes the images with the same weights (a second backbone pass, as upstream's
    Mixup).
    """

    WEIGHTS = DirichletWeights
    SCORES = None
    EXTRAPOLATE = False
    LEARN_POLICY = False
    LOOKAHEAD = SGDLookahead
    META = "same_batch"
    COMPATIBILITY_SIGN = 1.0
    AMOUNT_SIGN = 1.0
    SHUFFLE_AMOUNTS = False
    # κ_g's near end in version 3: the midpoint of the favoured and the disfavoured members.
    INTERPOLATION_END = -0.5
    # The diagnostics that cost a pass of their own (the [N, D, F] hull measures, and a
    # second mixing under the fixed metric for FGMix) are measured every MEASURE_EVERY-th
    # step and held in between; the others every step (docs/method.md, Diagnostics).
    MEASURE_EVERY = 10
    COSTLY_MEASURES = ("negative_mass", "outside_norm", "outside_ratio", "negative_mass_std",
                       "policy_kl_fixed", "weight_shift_fixed")

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.weight_rule = self.WEIGHTS.for_variant(self)
        self.featurizer = networks.Featurizer(input_shape, hparams)
        self.classifier = networks.Classifier(
            self.featurizer.n_outputs, num_classes, hparams["nonlinear_classifier"])
        self.network = torch.nn.Sequential(self.featurizer, self.classifier)
        self._captured = CapturedRegion()   # on CUDA: the step's small kernels as one graph
        self._held_measures = None          # the costly diagnostics' last values
        self._measure_costly = True
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=hparams["lr"], weight_decay=hparams["weight_decay"])
        if self._needs_own_draws():
            # A variant's extra randomness (random scores, shuffles) from a stream of its own,
            # derived from the algorithm's seed: its groups are then drawn exactly as the
            # other variants' are under the same --seed (paired comparisons).
            self.variant_generator = torch.Generator().manual_seed(
                self.generator.initial_seed() ^ VARIANT_STREAM)
        if self.LEARN_POLICY:
            self.lookahead = self.LOOKAHEAD.for_variant(self)
            # m = softplus(ω) = 1 at the start: the policy begins as GMix's.
            n_metric = last_linear(self.classifier).in_features
            self.policy_omega = torch.nn.Parameter(torch.full((n_metric,), math.log(math.e - 1)))
            self.policy_optimizer = torch.optim.Adam([self.policy_omega],
                                                     lr=hparams["fgmix_policy_lr"])

    def predict(self, x):
        return self.network(x)

    def _needs_own_draws(self):
        return self.weight_rule.draws == "normal" or self.weight_rule.shuffles

    def kappa(self):
        """κ: the extrapolation strength the weight rule applies (0 for InterpMix)."""
        return self.hparams["fgmix_kappa"] if self.EXTRAPOLATE else 0.0

    def _metric(self):
        return F.softplus(self.policy_omega) if self.LEARN_POLICY else None

    def _in_input_space(self):
        return self.hparams.get("fgmix_space", "features") == "inputs"

    # -- one training step ----------------------------------------------------------
    def update(self, minibatches, unlabeled=None):
        x, y, domains = concat_with_domains(minibatches)
        # The groups need only labels: drawn before the forward pass, their host-to-device
        # copies are done before the GPU is busy (a copy from pageable memory may wait for it).
        groups = self._draw_groups(y, domains, len(minibatches),
                                   torch.promote_types(x.dtype, torch.float32)) \
            if len(minibatches) >= 2 else None
        z = self.featurizer(x)
        logits = self.classifier(z)
        nll = F.cross_entropy(logits, y)
        if groups is None:  # no other domain to mix with: plain ERM
            loss, mixed_loss = nll, torch.zeros((), device=z.device)
            measures = torch.zeros(len(self.measure_names()), device=z.device)
        else:
            signature = gradient_signature(self.classifier, z, logits, y) \
                if self.weight_rule.reads_gradients else None
            mixing, measures = self._policy_and_mixing(z.detach(), y, domains, groups,
                                                       signature, nll.detach())
            mixed = self._mixed_logits(x, z, logits, groups, mixing)
            mixed_loss = mixed_cross_entropy(mixed, y, groups)
            loss = nll + self.hparams["fgmix_gamma"] * mixed_loss
            if self._in_input_space():
                measures = torch.cat([measures, self._surrogate_measures(
                    z, logits, mixed, y, groups, mixing)])

        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        # One transfer from the device for all the logged floats (few kernels: on a GPU the
        # host's launches, not the arithmetic, are what a step of small tensors costs).
        losses = torch.stack([loss.detach(), nll.detach(), mixed_loss.detach(),
                              mixed_loss.detach() / nll.detach().clamp(min=1e-12)])
        numbers = torch.cat([losses.double(), measures.double()]).tolist()
        return dict(zip(("loss", "nll", "mixed_loss", "mixed_source_ratio")
                        + self.measure_names(), numbers))

    def _policy_and_mixing(self, z, y, domains, groups, signature, nll):
        """(Mixing, the diagnostics [M] in `measure_names()` order): FGMix's policy step,
        then the weights λ (a constant for the model, §4) and what the diagnostics measure:
        everything of a step that does not backpropagate into the model. In float32 with
        autocast off: the cosines and the look-ahead need the precision, and a captured
        graph must not read autocast's cached casts. On CUDA it runs as one captured graph
        (`CapturedRegion`)."""
        self._captured.prepare(self, z)
        features, residuals = signature[:2] if signature is not None else (None, None)
        step_number = None
        if self.LEARN_POLICY and self.lookahead.reads_step_number and self._captured.active(z):
            count = next_step_number(self.optimizer, last_linear(self.classifier).weight)
            step_number = torch.full((), count, dtype=torch.float64, device=z.device)
        self._measure_costly = self._costly_step(z)
        policy, weights, amounts, measures = self._captured(
            self._policy_and_mixing_tensors, z, y, domains, groups.index, groups.mask,
            groups.valid, groups.draws, groups.keys, features, residuals, nll, step_number,
            self._held_out(domains, groups.mask.shape[1]))
        measures = self._hold_costly_measures(measures)
        return Mixing(policy, weights, amounts if self.weight_rule.has_amounts else None), measures

    def _costly_step(self, z):
        """Whether this step measures the costly diagnostics: every MEASURE_EVERY-th step of
        the model's optimizer (its count is saved with the model, so a resumed run measures
        on the same steps), and every step of a captured region (on a GPU they add no
        launches there, and a graph cannot branch)."""
        if self._captured.active(z) or self._held_measures is None:
            return True
        step = next_step_number(self.optimizer, last_linear(self.classifier).weight) - 1
        return int(step) % self.MEASURE_EVERY == 0

    def _costly_positions(self, device):
        """Where the costly measures sit in the step's measures: formed once per device,
        not every step (on a GPU, a host-to-device copy each time)."""
        cache = self.__dict__.setdefault("_costly_position_cache", {})
        if device not in cache:
            names = self._tensor_measure_names()
            cache[device] = torch.tensor(
                [names.index(n) for n in self.COSTLY_MEASURES if n in names], device=device)
        return cache[device]

    def _hold_costly_measures(self, measures):
        """The step's measures with the costly ones measured now (and kept) or held."""
        positions = self._costly_positions(measures.device)
        if self._measure_costly:
            self._held_measures = measures.index_select(0, positions)
            return measures
        return measures.index_copy(0, positions, self._held_measures.to(measures.device))

    def get_extra_state(self):
        state = super().get_extra_state()
        if self._held_measures is not None:   # a resumed run holds what it would have held
            state["held_measures"] = self._held_measures.detach().cpu()
        return state

    def set_extra_state(self, state):
        state = dict(state)
        self._held_measures = state.pop("held_measures", None)
        super().set_extra_state(state)

    def _held_out(self, domains, num_domains):
        """§5c: the 0/1 mask of the source domain the look-ahead leaves out at this step (the
        domains in turn), or None (the same-batch meta-objective)."""
        if not (self.LEARN_POLICY and self.META == "leave_one_domain_out"):
            return None
        step = int(next_step_number(self.policy_optimizer, self.policy_omega)) - 1
        return (domains == step % num_domains).float()

    def _policy_and_mixing_tensors(self, z, y, domains, index, mask, valid, draws, keys,
                                   features, residuals, nll, step_number, held_out):
        """`_policy_and_mixing` on tensors only (the captured function): (π, λ, κ_g or an
        empty tensor, measures)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            groups = Groups(index, mask, valid.float(), None if draws is None else draws.float(),
                            None if keys is None else keys.float())
            signature = None if features is None else \
                self._step_signature(features.float(), residuals.float(), y, domains, mask)
            z, nll = z.float(), nll.float()
            meta_loss = self._update_policy(z, y, domains, groups, signature, step_number,
                                            held_out) if self.LEARN_POLICY else None
            with torch.no_grad():
                mixing = self._mixing(y, domains, groups, signature)
                costly = self._measure_costly
                measures = self._mixing_measures(z, domains, groups, mixing, costly)
                if self.LEARN_POLICY:
                    measures["meta_loss"] = meta_loss
                    measures["meta_nll_ratio"] = meta_loss / nll.clamp(min=1e-12)
                    measures["policy_kl_fixed"], measures["weight_shift_fixed"] = \
                        self._shift_from_fixed_metric(y, domains, groups, signature, mixing) \
                        if costly else (z.new_zeros(()), z.new_zeros(()))
                    measures["metric_distance"] = \
                        (self._metric() - 1.0).square().mean().sqrt()
            amounts = mixing.amounts if mixing.amounts is not None else z.new_zeros(0)
            return mixing.policy, mixing.weights, amounts, torch.stack(
                [measures[name] for name in self._tensor_measure_names()])

    def _step_signature(self, features, residuals, y, domains, mask):
        """The step's `Signature`, with what its cross-domain compatibilities share."""
        if not self.weight_rule.reads_cross_domain:
            return Signature(features, residuals)
        return Signature(features, residuals, per_sample.residual_cosine(residuals),
                         cross_domain_cells(y, domains, mask.shape[1], self.num_classes,
                                            features.dtype))

    def _mixed_logits(self, x, z, logits, groups, mixing):
        if self._in_input_space():  # the same weights on the images; one more backbone pass
            mixed_x = mix(x.flatten(1), groups.index, mixing.weights).view_as(x)
            return self.classifier(self.featurizer(mixed_x))
        return mixed_logits(self.classifier, z, groups.index, mixing.weights,
                            isinstance(self.classifier, torch.nn.Linear), logits)

    def _draw_groups(self, y, domains, num_domains, dtype):
        """`Groups`, drawn from the algorithm's own generators (torch, then numpy; a
        variant's extra draws from its own stream)."""
        # Drawn on the CPU (the generators are the algorithm's, saved with it) and copied
        # without blocking (the host need not wait for the GPU's queued work).
        n = y.shape[0]
        uniform = torch.rand((n, num_domains), generator=self.generator)
        index, mask = build_groups(y, domains, num_domains, self.num_classes,
                                   uniform.to(device=y.device, non_blocking=True))
        valid = (mask.sum(1) >= 2).to(dtype)  # groups of size 1 are dropped
        draws = keys = None
        if self.weight_rule.draws == "gamma":
            gammas = self.numpy_rng.gamma(self.hparams["fgmix_alpha"], size=(n, num_domains))
            draws = torch.from_numpy(gammas).to(device=y.device, dtype=dtype, non_blocking=True)
        elif self.weight_rule.draws == "normal":
            draws = torch.randn((n, num_domains), generator=self.variant_generator).to(
                device=y.device, dtype=dtype, non_blocking=True)
        if self.weight_rule.shuffles:
            keys = torch.rand((n,), generator=self.variant_generator).to(
                device=y.device, dtype=dtype, non_blocking=True)
        return Groups(index, mask, valid, draws, keys)

    def _mixing(self, y, domains, groups, signature, metric="learned"):
        """`Mixing` for every group (§3), by the variant's weight rule. metric="learned" uses
        the policy's metric (FGMix), None the fixed m = 1 (GMix's weights on the same batch)."""
        metric = self._metric() if metric == "learned" else metric
        return self.weight_rule.mixing(groups, Compatibilities(signature, y, domains, groups,
                                                               self.num_classes, metric))

    # -- §5 the policy step (FGMix) ---------------------------------------------------
    def policy_meta_loss(self, z, y, groups, signature, epsilon=None, domains=None,
                         step_number=None, held_out=None):
        """(L_meta(ω), ε) of §5 on detached features and a functional copy of the head."""
        params = {name: p.detach().requires_grad_()
                  for name, p in self.classifier.named_parameters()}
        weights = self._mixing(y, domains, groups, signature).weights
        return flatness_meta_loss(self.classifier, params, z, y, groups, weights,
                                  self.lookahead.virtual_step(self.optimizer, self.classifier,
                                                              step_number),
                                  self.hparams["fgmix_rho"],
                                  epsilon, held_out)

    def _update_policy(self, z, y, domains, groups, signature, step_number=None, held_out=None):
        meta_loss, _ = self.policy_meta_loss(z, y, groups, signature, domains=domains,
                                             step_number=step_number, held_out=held_out)
        self.policy_optimizer.zero_grad()
        meta_loss.backward(inputs=[self.policy_omega])
        self.policy_optimizer.step()
        return meta_loss.detach()

    # -- what each step reports --------------------------------------------------------
    MIXING_MEASURES = ("mean_negative_weight", "frac_extrapolating", "n_groups", "min_weight",
                       "negative_mass", "outside_norm", "outside_ratio", "policy_entropy",
                       "negative_mass_std", "frac_interpolating", "domain_preference")
    AMOUNT_MEASURES = ("amount_mean", "amount_std", "amount_domain_r2")
    POLICY_MEASURES = ("meta_loss", "meta_nll_ratio", "policy_kl_fixed", "weight_shift_fixed",
                       "metric_distance")
    SURROGATE_MEASURES = ("surrogate_corr", "surrogate_ratio")

    def measure_names(self):
        """The diagnostics each step logs besides loss, nll, mixed_loss and
        mixed_source_ratio (docs/method.md, Diagnostics), in the order `update` logs them."""
        return self._tensor_measure_names() + (
            self.SURROGATE_MEASURES if self._in_input_space() else ())

    def _tensor_measure_names(self):
        """Those `_policy_and_mixing_tensors` returns, in its order."""
        return (self.MIXING_MEASURES
                + (self.AMOUNT_MEASURES if self.weight_rule.has_amounts else ())
                + (self.POLICY_MEASURES if self.LEARN_POLICY else ()))

    def _mixing_measures(self, z, domains, groups, mixing, costly=True):
        """The mixing's diagnostics; the costly ones (COSTLY_MEASURES) are zeros unless
        `costly` (`_hold_costly_measures` puts the held values there)."""
        weights, kept = mixing.weights, groups.valid > 0
        n_groups = groups.valid.sum()
        count = n_groups.clamp(min=1)
        negative = (weights < 0) & kept.unsqueeze(1)
        with torch.no_grad():
            mass, outside, ratio = extrapolation_measures(
                z, groups.index, weights, groups.valid) if costly else (groups.valid * 0,) * 3
            entropy = normalized_entropy(mixing.policy, groups.mask)
        lowest = torch.where(kept.unsqueeze(1) & groups.mask, weights, float("inf")).min()
        extrapolating = negative.any(1).sum() / count
        measures = {
            "mean_negative_weight": torch.where(negative, weights, 0.0)
            .sum() / negative.sum().clamp(min=1),
            "frac_extrapolating": extrapolating,
            "n_groups": n_groups,
            "min_weight": torch.where(torch.isfinite(lowest), lowest, 0.0),
            "negative_mass": masked_mean(mass, groups.valid, count),
            "outside_norm": masked_mean(outside, groups.valid, count),
            "outside_ratio": masked_mean(ratio, groups.valid, count),
            "policy_entropy": masked_mean(entropy, groups.valid, count),
            "negative_mass_std": masked_std(mass, groups.valid, count),
            "frac_interpolating": torch.where(n_groups > 0, 1.0 - extrapolating, 0.0),
            "domain_preference": domain_preference(mixing.policy, groups.mask, groups.valid),
        }
        if mixing.amounts is not None:
            measures["amount_mean"] = masked_mean(mixing.amounts, groups.valid, count)
            measures["amount_std"] = masked_std(mixing.amounts, groups.valid, count)
            measures["amount_domain_r2"] = explained_by_domain(
                mixing.amounts, domains, groups.valid, groups.mask.shape[1])
        return measures

    def _surrogate_measures(self, z, logits, mixed, y, groups, mixing):
        """How well the feature-space mixing (what the look-ahead and the diagnostics see)
        stands for the image mixing the model trains on: the correlation over kept groups of
        the two per-group mixed losses, and the ratio of their means."""
        with torch.no_grad():
            surrogate = mixed_logits(self.classifier, z.detach(), groups.index, mixing.weights,
                                     isinstance(self.classifier, torch.nn.Linear),
                                     logits.detach())
            feature_loss = F.cross_entropy(surrogate.float(), y, reduction="none")
            image_loss = F.cross_entropy(mixed.detach().float(), y, reduction="none")
            return torch.stack([
                masked_correlation(feature_loss, image_loss, groups.valid),
                masked_mean(feature_loss, groups.valid)
                / masked_mean(image_loss, groups.valid).clamp(min=1e-12)])

    def _shift_from_fixed_metric(self, y, domains, groups, signature, mixing):
        """What the learned metric changes: KL(π ‖ π_fixed) and Σ|λ − λ_fixed|, both averaged
        over kept groups, against the weights the fixed metric m = 1 gives on this batch."""
        with torch.no_grad():
            fixed = self._mixing(y, domains, groups, signature, metric=None)
            kl = policy_kl(mixing.policy, fixed.policy, groups.mask)
            shift = (mixing.weights - fixed.weights).abs().sum(1)
            if mixing.amounts is not None:   # version 3: how far is the policy's choice
                far_share = self.weight_rule.far_share
                kl = kl + bernoulli_kl(far_share(mixing.amounts), far_share(fixed.amounts))
        count = groups.valid.sum().clamp(min=1)
        return masked_mean(kl, groups.valid, count), masked_mean(shift, groups.valid, count)
