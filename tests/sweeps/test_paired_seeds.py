"""The paired design (`sweep launch --paired_seeds`): common random numbers across algorithms."""
import pytest

from domainbed.lib.misc import seed_hash
from domainbed.sweeps import job_list

ALGORITHMS = ["ERM", "ERMTwin", "GMix3"]


def _jobs(paired):
    return job_list.make_args_list(
        n_trials=2, dataset_names=["ColoredMNIST5k"], algorithms=ALGORITHMS, n_hparams_from=0,
        n_hparams=2, steps=None, data_dir="offline", task="domain_generalization",
        holdout_fraction=0.2, single_test_envs=True, hparams=None, paired_seeds=paired)


def _seeds_by_cell(jobs):
    cells = {}
    for job in jobs:
        cell = (tuple(job["test_envs"]), job["hparams_seed"], job["trial_seed"])
        cells.setdefault(cell, {})[job["algorithm"]] = job["seed"]
    return cells


def test_paired_seeds_are_shared_by_the_algorithms_of_a_cell_and_differ_across_cells():
    cells = _seeds_by_cell(_jobs(paired=True))
    assert len(cells) == 3 * 2 * 2
    assert all(len(set(seeds.values())) == 1 for seeds in cells.values())
    assert len({next(iter(seeds.values())) for seeds in cells.values()}) == len(cells)


def test_upstream_seeds_are_kept_unless_asked():
    for job in _jobs(paired=False):
        assert job["seed"] == seed_hash(job["dataset"], job["algorithm"], job["test_envs"],
                                        job["hparams_seed"], job["trial_seed"])
    cells = _seeds_by_cell(_jobs(paired=False))
    assert all(len(set(seeds.values())) == len(ALGORITHMS) for seeds in cells.values())


def test_paired_seeds_only_change_the_seed():
    paired, upstream = _jobs(True), _jobs(False)
    for a, b in zip(paired, upstream):
        assert {k: v for k, v in a.items() if k != "seed"} == \
            {k: v for k, v in b.items() if k != "seed"}


def test_one_algorithm_under_two_names_trains_identically_under_paired_seeds(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import domainbed

    monkeypatch.setenv("DOMAINBED_PLUGINS", "domainbed.studies.twins")
    seed = job_list.run_seed("ColoredMNIST5k", "ERM", [0], 0, 0, paired=True)
    assert seed == job_list.run_seed("ColoredMNIST5k", "ERMTwin", [0], 0, 0, paired=True)

    def records(algorithm, seed):
        rs = domainbed.train(dataset="ColoredMNIST5k", algorithm=algorithm, test_envs=[0],
                             output_dir=tmp_path / f"{algorithm}{seed}", data_dir=None,
                             seed=seed, steps=6, checkpoint_freq=3)
        return [{k: v for k, v in r.items()
                 if k not in ("args", "step_time", "mem_gb")} for r in rs]

    assert records("ERM", seed) == records("ERMTwin", seed)
    unpaired = job_list.run_seed("ColoredMNIST5k", "ERMTwin", [0], 0, 0)
    assert records("ERMTwin", unpaired) != records("ERM", seed)
