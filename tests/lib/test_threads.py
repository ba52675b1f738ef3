"""Issue 36, items 1 and 5: the thread policy of every way a job runs, and the loader
workers of image datasets (lib/threads.py)."""
import os

import pytest

from domainbed.launchers import command_launchers, pool
from domainbed.lib import threads


@pytest.fixture
def four_cores(monkeypatch):
    """A process allowed on 4 cores, with no thread settings in its environment."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for variable in ("DOMAINBED_THREADS", "DOMAINBED_LOADER_WORKERS", "OMP_NUM_THREADS",
                     "OMP_WAIT_POLICY"):
        monkeypatch.delenv(variable, raising=False)


def test_threads_are_the_usable_cores_shared_by_the_jobs_at_once(four_cores):
    assert threads.usable_cores() == 4
    assert [threads.threads_per_job(n) for n in (1, 2, 3, 8)] == [4, 2, 1, 1]


def test_domainbed_threads_overrides_and_a_bad_value_is_one_clear_error(four_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # the user's own choice is kept
    assert threads.threads_per_job(2) == 1 and threads.job_env()["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("DOMAINBED_THREADS", "3")
    assert threads.threads_per_job(2) == 3
    monkeypatch.setenv("DOMAINBED_THREADS", "two")
    with pytest.raises(threads.ThreadSettingError, match="DOMAINBED_THREADS='two'"):
        threads.threads_per_job(1)


def test_job_env_sets_threads_and_the_passive_wait_but_keeps_a_chosen_policy(four_cores):
    env = threads.job_env({"PATH": "/bin"}, jobs_at_once=2)
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["OMP_WAIT_POLICY"]) == \
        ("2", "2", "PASSIVE")
    assert threads.job_env({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"


def test_sequential_local_launcher_passes_the_policy_and_prints_progress(tmp_path, four_cores,
                                                                         capsys):
    commands = [f"echo $OMP_NUM_THREADS $OMP_WAIT_POLICY > {tmp_path}/job{i}" for i in range(2)]
    command_launchers.local_launcher(commands + ["exit 3"])
    assert (tmp_path / "job0").read_text().split() == ["4", "PASSIVE"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[local] 1/3 jobs finished; elapsed ")
    assert "ETA" in out[0] and out[2].startswith("[local] 3/3 jobs finished, 1 failed")


def test_parallel_local_and_pool_share_the_usable_cores(tmp_path, four_cores):
    commands = [f"echo $OMP_NUM_THREADS $OMP_WAIT_POLICY > {tmp_path}/job{i}" for i in range(2)]
    command_launchers.local_launcher(commands, jobs=2)
    assert (tmp_path / "job1").read_text().split() == ["2", "PASSIVE"]
    assert pool.threads_per_worker(2) == 2


def test_slurm_jobs_get_the_policy_of_their_allocation(tmp_path, four_cores):
    command_launchers.ShellJob(f"echo $OMP_NUM_THREADS $OMP_WAIT_POLICY > {tmp_path}/job")()
    assert (tmp_path / "job").read_text().split() == ["4", "PASSIVE"]


def test_train_prints_its_threads_in_out_txt_and_nowhere_else(tmp_path, monkeypatch):
    import torch

    import domainbed

    monkeypatch.setenv("DOMAINBED_THREADS", "1")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)   # this process's stay
    records = domainbed.train(dataset="Debug28", algorithm="ERM", test_envs=[0],
                              output_dir=str(tmp_path / "job"), data_dir=None, steps=2)
    lines = (tmp_path / "job" / "out.txt").read_text().splitlines()
    threads_lines = [line for line in lines if line.startswith("Threads:")]
    assert threads_lines and "(DOMAINBED_THREADS;" in threads_lines[0]
    assert not any("thread" in key.lower() for key in records[-1])
    assert not any("thread" in key.lower() for key in records[-1]["args"])


def test_a_bad_thread_count_refuses_the_job_before_writing(tmp_path, monkeypatch):
    import domainbed
    from domainbed.training import BadInput

    monkeypatch.setenv("DOMAINBED_THREADS", "0")
    with pytest.raises(BadInput, match="DOMAINBED_THREADS='0'"):
        domainbed.train(dataset="Debug28", algorithm="ERM", test_envs=[0],
                        output_dir=str(tmp_path / "job"), data_dir=None, steps=2)
    assert not (tmp_path / "job").exists()


def test_loader_workers_upstreams_eight_capped_at_the_cores_and_overridable(four_cores,
                                                                           monkeypatch):
    assert threads.loader_workers(8) == 4 and threads.loader_workers(0) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert threads.loader_workers(8) == 8
    monkeypatch.setenv("DOMAINBED_LOADER_WORKERS", "1")
    assert threads.loader_workers(8) == 1 and threads.loader_workers(0) == 0


def test_folder_jobs_describe_the_capped_workers(four_cores, monkeypatch):
    from domainbed.datasets.image_folder import ImageFolderDataset
    from domainbed.training import build
    from domainbed.training.errors import BadInput

    dataset = ImageFolderDataset.__new__(ImageFolderDataset)
    args = type("Args", (), {"pipeline": "default"})()
    assert "4 loader workers" in build.describe_pipeline(dataset, args)
    monkeypatch.setenv("DOMAINBED_LOADER_WORKERS", "-1")
    with pytest.raises(BadInput, match="DOMAINBED_LOADER_WORKERS"):
        build.loader_workers(dataset)
