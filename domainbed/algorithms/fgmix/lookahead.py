"""§5, §5b and §5c of docs/method.md: the policy's metric learned toward flatter minima.

A one-step look-ahead θ' of the head, scored by SAM's loss at θ' + ε. The virtual step is
what the variant picks (its `LOOKAHEAD`): `SGDLookahead` (version 1, §5) or
`OptimizerLookahead`, the model's own Adam step (§5b). §5c: the look-ahead may leave one
source domain out and be scored on it (`flatness_meta_loss`'s `held_out`).
"""
import torch
import torch.nn.functional as F

from domainbed.algorithms import rho_ball

from .objective import masked_mean, mixed_cross_entropy, mixed_logits


def call_head(head, params, inputs):
    """The head evaluated at `params` (a name -> tensor dict). A linear head is called as
    F.linear: functional_call's module swapping costs more than the product itself here."""
    if isinstance(head, torch.nn.Linear):
        return F.linear(inputs, params["weight"], params.get("bias"))
    return torch.func.functional_call(head, params, (inputs,))


def weighted_cross_entropy(logits, labels, instance_weights=None):
    """Mean cross-entropy, or its mean over the instances with weight 1 (a 0/1 mask [N])."""
    if instance_weights is None:
        return F.cross_entropy(logits, labels)
    return masked_mean(F.cross_entropy(logits, labels, reduction="none"), instance_weights)


def sharpness_perturbation(head, params, features, labels, rho, instance_weights=None):
    """SAM's first-order worst case ε = ρ g / ‖g‖, g = ∇ L_src at `params`, as a constant
    (L_src over the instances `instance_weights` marks, all by default)."""
    frozen = {name: p.detach().requires_grad_() for name, p in params.items()}
    loss = weighted_cross_entropy(call_head(head, frozen, features), labels, instance_weights)
    grads = torch.autograd.grad(loss, list(frozen.values()))
    return dict(zip(frozen, rho_ball.ascent(grads, rho)))


def sgd_lookahead(inner_lr):
    """Version 1's virtual step: θ' = θ − η ∇_θ L_mix(θ), a plain SGD step on the mixed loss."""
    def step(params, source_loss, mixed_loss):
        grads = torch.autograd.grad(mixed_loss, list(params.values()), create_graph=True)
        return {n: p - inner_lr * g for (n, p), g in zip(params.items(), grads)}
    return step


def optimizer_lookahead(optimizer, parameters, gamma, step_number=None):
    """The virtual step the model's own optimizer would take: θ' = Adam(θ, ∇(L_src + γ L_mix)).

    `parameters` maps the head's names to the model's Parameters, whose current Adam moments,
    step count, learning rate and weight decay are read, so that θ' is where the model's
    next step actually takes the head (to the rounding of float arithmetic). The gradient
    stays in the graph (the policy is learned through the first moment); the second moment
    is a constant preconditioner, as it is for one step of Adam. `step_number`: the step
    count the next step takes (see `adam_step`), None to read it from the optimizer.
    """
    def step(params, source_loss, mixed_loss):
        grads = torch.autograd.grad(source_loss + gamma * mixed_loss, list(params.values()),
                                    create_graph=True)
        return {n: adam_step(optimizer, parameters[n], params[n], g, step_number)
                for n, g in zip(params, grads)}
    return step


def adam_step(optimizer, parameter, value, grad, step_number=None):
    """torch.optim.Adam's update of `parameter` (its group and state) applied to `value`.

    `step_number` (the count after this step), if given, is a float64 0-d tensor: a CUDA
    graph replays the step with the count it holds then, where a Python number would be
    frozen at capture. (Its powers are formed in float64, as Python's are.)"""
    group = next(g for g in optimizer.param_groups if any(p is parameter for p in g["params"]))
    if group.get("amsgrad") or group.get("maximize") or group.get("decoupled_weight_decay"):
        raise NotImplementedError("the look-ahead mirrors plain Adam only")
    beta1, beta2 = group["betas"]
    state = optimizer.state.get(parameter, {})
    step = next_step_number(optimizer, parameter) if step_number is None else step_number
    if group["weight_decay"]:
        grad = grad + group["weight_decay"] * value.detach()
    first = (1 - beta1) * grad
    second = (1 - beta2) * grad.detach() ** 2
    if "exp_avg" in state:
        first = first + beta1 * state["exp_avg"]
        second = second + beta2 * state["exp_avg_sq"]
    denominator = (second / (1 - beta2 ** step)).sqrt() + group["eps"]
    return value - group["lr"] * (first / (1 - beta1 ** step)) / denominator


def next_step_number(optimizer, parameter):
    """The step count of `parameter`'s next optimizer step (1 before the first)."""
    state = optimizer.state.get(parameter, {})
    return float(state["step"]) + 1 if "step" in state else 1.0


def flatness_meta_loss(head, params, features, labels, groups, weights, virtual_step, rho,
                       epsilon=None, held_out=None):
    """(L_meta, ε): L_meta = L_src(θ' + ε), θ' = virtual_step(θ), differentiable w.r.t.
    `weights`; ε is a constant (SAM's convention), recomputed at θ' unless given.

    `params` are the head's parameters (leaves requiring grad), `features` the detached
    source features, `weights` the policy's λ for `groups`; `virtual_step(params, L_src,
    L_mix)` is `sgd_lookahead` (version 1) or `optimizer_lookahead`.
    `held_out` (§5c, a 0/1 mask [N] of one source domain's instances): the virtual step
    sees only the other domains' instances and the groups anchored there, and L_meta is
    scored on the held-out domain (leave one source domain out); None: the same batch.
    """
    def head_at(values):
        return lambda inputs: call_head(head, values, inputs)

    affine = isinstance(head, torch.nn.Linear)
    logits = head_at(params)(features)
    mixed = mixed_logits(head_at(params), features, groups.index, weights, affine, logits)
    seen = None if held_out is None else 1.0 - held_out
    if seen is not None:
        groups = groups._replace(valid=groups.valid * seen)
    mixed_loss = mixed_cross_entropy(mixed, labels, groups)
    virtual = virtual_step(params, weighted_cross_entropy(logits, labels, seen), mixed_loss)
    if epsilon is None:
        epsilon = sharpness_perturbation(head, virtual, features, labels, rho, held_out)
    perturbed = {n: virtual[n] + epsilon[n] for n in params}
    loss = weighted_cross_entropy(head_at(perturbed)(features), labels, held_out)
    return loss, epsilon


# -- the look-aheads the variants choose ------------------------------------------------
class SGDLookahead:
    """Version 1's virtual step (§5): an SGD step of size `fgmix_inner_lr` on L_mix."""

    reads_step_number = False

    def __init__(self, inner_lr):
        self.inner_lr = inner_lr

    @classmethod
    def for_variant(cls, variant):
        return cls(variant.hparams["fgmix_inner_lr"])

    def virtual_step(self, optimizer, head, step_number=None):
        return sgd_lookahead(self.inner_lr)


class OptimizerLookahead:
    """§5b's virtual step: the model's own Adam step on L_src + γ L_mix (it reads the
    optimizer's state, so a captured graph passes the step count, `reads_step_number`)."""

    reads_step_number = True

    def __init__(self, gamma):
        self.gamma = gamma

    @classmethod
    def for_variant(cls, variant):
        return cls(variant.hparams["fgmix_gamma"])

    def virtual_step(self, optimizer, head, step_number=None):
        return optimizer_lookahead(optimizer, dict(head.named_parameters()), self.gamma,
                                   step_number)
