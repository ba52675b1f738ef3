"""Train's speed flags through `sweep launch`: in a job's args (hash, command) only when set."""
import argparse

from domainbed.sweeps.commands import speed_options
from domainbed.sweeps.job_list import make_args_list
from domainbed.sweeps.jobs import Job
from domainbed.training import parse_command_line

COMMON = dict(n_trials=1, dataset_names=["Debug28"], algorithms=["ERM"], n_hparams_from=0,
              n_hparams=1, steps=None, data_dir="data", task="domain_generalization",
              holdout_fraction=0.2, single_test_envs=True, hparams=None)


def test_default_jobs_keep_their_args_and_hashes(tmp_path):
    plain = make_args_list(**COMMON)
    defaults = make_args_list(**COMMON, speed_options=speed_options(argparse.Namespace(
        pipeline="default", precision="fp32", memory_format="contiguous")))
    assert plain == defaults and all("precision" not in job for job in plain)
    assert [Job(a, str(tmp_path)).output_dir for a in plain] == \
        [Job(a, str(tmp_path)).output_dir for a in defaults]


def test_a_speed_flag_is_in_the_args_hash_and_command_of_its_jobs(tmp_path):
    options = speed_options(argparse.Namespace(pipeline="default", precision="bf16",
                                               memory_format="channels_last"))
    assert options == {"precision": "bf16", "memory_format": "channels_last"}
    plain, fast = make_args_list(**COMMON), make_args_list(**COMMON, speed_options=options)
    assert fast == [dict(job, **options) for job in plain]
    job = Job(fast[0], str(tmp_path))
    assert job.output_dir != Job(plain[0], str(tmp_path)).output_dir
    assert "--memory_format channels_last" in job.command_str
    assert "--precision bf16" in job.command_str
    # The command parses back to the same job, and an explicit default is no flag at all.
    config = parse_command_line(job.command_str.split()[3:])
    assert (config.precision, config.memory_format) == ("bf16", "channels_last")
    explicit = parse_command_line(["--dataset", "Debug28", "--precision", "fp32"])
    assert explicit == parse_command_line(["--dataset", "Debug28"])
    assert "precision" not in explicit.record_args()


def test_sweep_refuses_the_fast_pipeline_for_a_dataset_without_images(tmp_path, capsys):
    """One line, exit 2, no job directory (train.py refuses it too, but only once launched)."""
    import pytest

    from domainbed.scripts import sweep

    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_:
        sweep.main(["launch", "--datasets", "Debug28", "--algorithms", "ERM", "--data_dir",
                    str(tmp_path), "--output_dir", str(out), "--command_launcher", "dummy",
                    "--n_hparams", "1", "--n_trials", "1", "--pipeline", "fast",
                    "--skip_confirmation"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pipeline fast needs an image dataset (VLCS, PACS" in err[0]
    assert "Debug28 is not one" in err[0] and not out.exists()
