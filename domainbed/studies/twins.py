"""Twins: algorithms registered under a second name, for measuring a design's noise floor.

Load it as a plug-in (`DOMAINBED_PLUGINS=domainbed.studies.twins`): it registers `ERMTwin`
and `GMix3Twin`, the same code as ERM and GMix3 under other names. Under upstream's seeds a
run's seed includes the algorithm's name, so `ERMTwin - ERM` measures seed noise alone;
under `sweep launch --paired_seeds` the twins must give identical records
(docs/studies.md, "The paired design"; tests/sweeps/test_paired_seeds.py).
"""
from domainbed.algorithms import get_algorithm_class
from domainbed.algorithms.registry import register_algorithm


@register_algorithm
class ERMTwin(get_algorithm_class("ERM")):
    """ERM under another name."""


@register_algorithm
class GMix3Twin(get_algorithm_class("GMix3")):
    """GMix3 under another name (its own hparams: GMix3's, declared by the class)."""
