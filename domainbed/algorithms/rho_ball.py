"""The first-order worst case in a ρ-ball: ε = ρ g / ‖g‖, one norm over all the tensors of
a gradient together. One implementation for the three places that perturb weights this
way: SAM's step (algorithms/sam.py), FGMix's flatness look-ahead
(algorithms/fgmix/lookahead.py) and the sharpness measure (sharpness.py).

It imports only torch, because patches/ copies it verbatim beside the FGMix package that it
installs into an upstream DomainBed checkout.
"""
import torch


def ascent(gradients, rho):
    """[ρ g_i / ‖g‖] for the tensors g_i of one gradient. The norm is clamped at 1e-12, so a
    zero gradient gives ε = 0; above ‖g‖ ≈ 1.6e-5 (float32) this equals ρ g / (‖g‖ + 1e-12)
    to the last bit."""
    squares = [(g * g).sum() for g in gradients]
    norm = torch.sqrt(sum(squares[1:], squares[0]))   # not 0 + ...: one kernel fewer
    scale = rho / norm.clamp(min=1e-12)
    return [g * scale for g in gradients]
