"""A DomainBed-compatible domain-generalization benchmark with FGMix.

Layering (no cycles): scripts -> algorithms -> networks/datasets -> lib.
"""
__version__ = "0.1.0"
