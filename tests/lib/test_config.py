"""domainbed/config.py: a run's one RunConfig. The same config whichever way a run is asked
for (command line, keywords, a sweep's job), upstream's args in records, every field checked
when the config is made, and nothing able to change it afterwards."""
import dataclasses
import pathlib

import pytest

from domainbed.config import NON_IDENTIFYING_ARGS, SPEED_OPTIONS, RunConfig
from domainbed.errors import BadInput
from domainbed.lib.validation import ValidationError
from domainbed.sweeps.job_list import make_args_list
from domainbed.sweeps.jobs import Job
from domainbed.training.arguments import build_parser, parse_command_line


def test_a_default_config_records_upstreams_args_in_upstreams_order():
    upstream = vars(build_parser().parse_args([]))   # our options are absent by default
    assert list(RunConfig().record_args().items()) == list(upstream.items())


def test_the_speed_options_are_recorded_only_when_asked_for_in_the_sweeps_order():
    config = RunConfig(precision="bf16", memory_format="channels_last", metrics="all")
    added = list(config.record_args())[len(RunConfig().record_args()):]
    assert added == ["memory_format", "metrics", "precision"]   # sorted, as sweep commands
    assert set(RunConfig(precision="fp32").record_args()) == set(RunConfig().record_args())
    assert set(added) <= set(SPEED_OPTIONS)


def test_command_line_keywords_and_a_sweep_job_make_the_same_config(tmp_path):
    train_args = make_args_list(
        n_trials=1, dataset_names=["Debug28"], algorithms=["ERM"], n_hparams_from=0,
        n_hparams=2, steps=5, data_dir="data", task="domain_generalization",
        holdout_fraction=0.2, single_test_envs=True, hparams=None,
        speed_options={"precision": "bf16"})[-1]
    job = Job(train_args, str(tmp_path))
    from_sweep = RunConfig.from_args(job.train_args)
    from_command = parse_command_line(job.command_str.split()[3:])
    from_keywords = RunConfig(**{**job.train_args, "test_envs": list(job.train_args["test_envs"])})
    assert from_sweep == from_command == from_keywords
    assert from_command.record_args() == {**vars(build_parser().parse_args(
        job.command_str.split()[3:]))}


def test_a_config_cannot_be_changed_once_made():
    config = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1
    changed = config.replace(seed=1)
    assert (config.seed, changed.seed) == (0, 1)
    with pytest.raises(ValidationError, match="--seed"):
        config.replace(seed=-1)   # a copy is checked as well


def test_fields_are_normalised_once():
    config = RunConfig(test_envs=[2, 1], output_dir=pathlib.Path("out"), data_dir=pathlib.Path("d"))
    assert config.test_envs == (2, 1) and config.record_args()["test_envs"] == [2, 1]
    assert (config.output_dir, config.data_dir) == ("out", "d")
    hash(config)   # hashable: a config can key a cache


@pytest.mark.parametrize("fields, message", [
    ({"seed": 2**32}, "--seed must be an integer in [0, 2**32)"),
    ({"hparams_seed": True}, "--hparams_seed must be an integer"),
    ({"holdout_fraction": 1.0}, "--holdout_fraction must be in [0, 1)"),
    ({"uda_holdout_fraction": float("nan")}, "--uda_holdout_fraction must be in [0, 1)"),
    ({"steps": -1}, "--steps must be >= 0"),
    ({"checkpoint_freq": 2.5}, "--checkpoint_freq must be >= 0"),
    ({"task": "transfer"}, "--task must be one of"),
    ({"task": "domain_adaptation"}, "needs unlabeled test-env data"),
    ({"test_envs": []}, "--test_envs must be one or more integers"),
    ({"test_envs": ["0"]}, "--test_envs must be one or more integers, got ['0']"),
    ({"precision": "fp16"}, "--precision must be one of fp32, bf16, got 'fp16'"),
    ({"pipeline": None}, "--pipeline must be one of default, fast"),
])
def test_every_field_is_checked_when_the_config_is_made(fields, message):
    with pytest.raises(ValidationError) as refused:
        RunConfig(**fields)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_unknown_argument_is_one_line_naming_it():
    with pytest.raises(BadInput, match="unknown argument 'lr'; the arguments are train.py's"):
        RunConfig.from_args({"dataset": "Debug28", "lr": 0.1})


def test_the_identity_leaves_out_what_does_not_change_a_job():
    config = RunConfig(output_dir="a", data_dir="b", skip_model_save=True, tensorboard=True,
                       precision="bf16")
    identity = config.identity()
    assert not set(identity) & set(NON_IDENTIFYING_ARGS) and "tensorboard" not in identity
    assert identity["precision"] == "bf16" and list(identity) == sorted(identity)
    assert identity == RunConfig(output_dir="c", precision="bf16").identity()
