"""FGMix: gradient-based mixup with extrapolation toward flatter minima, and its ablations.

Peng & Pan, "Learning Gradient-based Mixup with Extrapolation toward Flatter Minima for
Domain Generalization" (arXiv 2209.14742). The paper's formulas were not available to this
project; the package implements the formulation written out in docs/method.md, one module
per part, in that page's order:

  signatures.py   §1 per-instance gradient signatures of the linear head, compared in closed
                  form; §1b (version 2) each instance against its class's other domains;
  groups.py       §2 mixing groups: an anchor plus one same-label instance per other domain;
  weights.py      §3 compatibilities, a policy π and the affine map λ = (1 + κ)·π − κ/K;
                  §3b (version 2) extrapolation by design; §3c (version 3) an amount per
                  group; the weight rules the variants choose;
  objective.py    §4 source cross-entropy + γ · cross-entropy of the mixed points;
  lookahead.py    §5 the policy's metric learned by a flatness-aware (SAM) meta-step, whose
                  look-ahead is an SGD step (version 1) or the model's own Adam step (§5b),
                  on the batch or leaving one source domain out (§5c);
  diagnostics.py  what the logged diagnostics measure;
  captured.py     on a GPU, the step's small kernels as one CUDA graph;
  base.py         §6 one implementation with switches (`GroupMixBase`);
  variants.py     §6 the registered variants and their hparam tables:

      InterpMix   π ~ Dirichlet(α)           κ = 0                                version 1
      ExtrapMix   π ~ Dirichlet(α)           κ > 0
      GMix        π = softmax(compat / τ)    κ > 0, metric fixed to 1
      FGMixV1     π = softmax(compat / τ)    κ > 0, metric learned (§5, SGD look-ahead)
      AntiGMix    π = softmax(−compat / τ)   κ > 0, metric fixed (docs/invariance.md)
      ExtrapMix2  directed, random scores    by design                            version 2
      GMix2       directed, compatibilities  by design, metric fixed to 1
      FGMixV2     directed, compatibilities  by design, metric learned (§5b look-ahead)
      GMix3       an amount per group        from its compatibility, metric fixed version 3
      FGMix3      an amount per group        metric learned (§5b; FGMix3LOO: §5c)
      FGMix       the pre-registered choice (docs/method.md)

Mixing features, the backbone runs one forward and one backward pass per step, as in ERM,
and everything added works on features, residuals and the head only; mixing images adds a
second backbone pass over the N mixed images.

Why the modules import so little: `patches/` installs this package in an unmodified
upstream DomainBed, translating only the base class, the registry decorator, `algorithms/per_sample` and
`algorithms/rho_ball`, and keeping `from domainbed import networks` (which upstream also has).
"""
from .base import VARIANT_STREAM, GroupMixBase  # noqa: F401
from .captured import CapturedRegion  # noqa: F401
from .diagnostics import (  # noqa: F401
    bernoulli_kl,
    domain_preference,
    explained_by_domain,
    extrapolation_measures,
    masked_correlation,
    masked_std,
    normalized_entropy,
    policy_kl,
)
from .groups import Groups, build_groups, concat_with_domains  # noqa: F401
from .lookahead import (  # noqa: F401
    OptimizerLookahead,
    SGDLookahead,
    adam_step,
    call_head,
    flatness_meta_loss,
    next_step_number,
    optimizer_lookahead,
    sgd_lookahead,
    sharpness_perturbation,
    weighted_cross_entropy,
)
from .objective import masked_mean, mix, mixed_cross_entropy, mixed_logits  # noqa: F401
from .signatures import (  # noqa: F401
    Compatibilities,
    Signature,
    cross_domain_cells,
    cross_domain_compatibility,
    gradient_signature,
    head_input,
    last_linear,
)
from .variants import (  # noqa: F401
    HPARAM_TABLES,
    AntiGMix,
    AntiGMix3,
    ExtrapMix,
    ExtrapMix2,
    ExtrapMix2M,
    FGMix,
    FGMix3,
    FGMix3LOO,
    FGMixV1,
    FGMixV2,
    GMix,
    GMix2,
    GMix3,
    InterpMix,
    ShuffleMix3,
    Variant,
)
from .weights import (  # noqa: F401
    AmountWeights,
    DirectedWeights,
    DirichletWeights,
    Mixing,
    PairwiseWeights,
    affine_weights,
    amount_weights,
    compatibility_policy,
    directed_weights,
    dirichlet_policy,
    extrapolation_amounts,
    group_agreement,
    mean_compatibility,
    shuffled_amounts,
    standardized,
    standardized_over_groups,
)
