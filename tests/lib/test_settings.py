"""domainbed/settings.py: every DOMAINBED_* variable, read when used, checked, documented.

README.md's "Environment variables" table and docs/architecture.md list exactly the
variables `settings.SETTINGS` declares; a value that cannot be used is one line naming the
variable and what to set (a SettingError, exit 1); the readers see the environment as it
is when they are called."""
import pathlib
import re

import pytest

from domainbed import settings
from domainbed.errors import DomainBedError
import support

ROOT = support.REPO_ROOT
ROW = re.compile(r"^\|\s*`(DOMAINBED_[A-Z0-9_]+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|$")


def readme_table():
    """{name: (default, what it does)} of the rows of README.md's "Environment variables"
    section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines() if line.startswith("| `")]
    assert all(rows), "every row: | `NAME` | default | what it does |"
    return {row.group(1): (row.group(2), row.group(3)) for row in rows}


@pytest.fixture
def environment(monkeypatch):
    """No DOMAINBED_* variable set; `environment(NAME=value)` sets some."""
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)

    def set_variables(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return set_variables


def test_the_readme_lists_exactly_the_variables_of_the_settings_module():
    table = readme_table()
    assert sorted(table) == sorted(settings.SETTINGS)
    assert list(table) == list(settings.SETTINGS)   # in the same order
    assert all(default and meaning for default, meaning in table.values())


def test_architecture_md_says_which_module_uses_each_variable():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    for name in settings.SETTINGS:
        if name.startswith("DOMAINBED_SLURM_"):   # one row for the eight, naming each
            assert "| `DOMAINBED_SLURM_*` |" in section
            assert f"`{name[len('DOMAINBED_SLURM'):]}`" in section, name
        else:
            assert f"| `{name}` |" in section, name


def test_every_setting_is_a_domainbed_variable_with_a_default_and_a_meaning():
    assert len(settings.SETTINGS) == 19
    for name, setting in settings.SETTINGS.items():
        assert name == setting.name and re.fullmatch(r"DOMAINBED_[A-Z0-9_]+", name)
        assert setting.default and setting.meaning
    assert set(settings.SLURM.values()) == {s for n, s in settings.SETTINGS.items()
                                            if n.startswith("DOMAINBED_SLURM_")}


def test_defaults_when_unset_or_empty(environment):
    assert settings.device() is None
    assert settings.threads() is None and settings.loader_workers() is None
    assert settings.local_jobs() == 1 and settings.jobs_per_gpu() == 1
    assert settings.pool_workers() is None
    assert settings.slurm_options() == {} and settings.plugins() == []
    assert settings.cache_dir() is None
    assert not settings.tensorboard() and not settings.save_selected()
    assert settings.cuda_graphs()
    environment(DOMAINBED_DEVICE="", DOMAINBED_THREADS=" ", DOMAINBED_LOCAL_JOBS="",
                DOMAINBED_POOL_WORKERS="", DOMAINBED_CACHE="", DOMAINBED_SLURM_MEM_GB="",
                DOMAINBED_TENSORBOARD=" ", DOMAINBED_PLUGINS=" , ")
    assert settings.device() is None and settings.threads() is None
    assert settings.local_jobs() == 1 and settings.pool_workers() is None
    assert settings.cache_dir() is None and settings.slurm_options() == {}
    assert not settings.tensorboard() and settings.plugins() == []


def test_values_are_read_when_called(environment):
    environment(DOMAINBED_DEVICE="cpu", DOMAINBED_THREADS="3", DOMAINBED_LOADER_WORKERS="0",
                DOMAINBED_LOCAL_JOBS="4", DOMAINBED_POOL_WORKERS="0", DOMAINBED_JOBS_PER_GPU="2",
                DOMAINBED_SLURM_PARTITION="gpu", DOMAINBED_SLURM_TIME_MIN="60",
                DOMAINBED_PLUGINS="a.b, c ,", DOMAINBED_CACHE="/tmp/cache",
                DOMAINBED_TENSORBOARD="yes", DOMAINBED_SAVE_SELECTED="1",
                DOMAINBED_CUDA_GRAPHS="0")
    assert settings.device() == "cpu"
    assert settings.threads() == 3 and settings.loader_workers() == 0
    assert settings.local_jobs() == 4 and settings.pool_workers() == 0
    assert settings.jobs_per_gpu() == 2
    assert settings.slurm_options() == {"partition": "gpu", "time_min": "60"}
    assert settings.plugins() == ["a.b", "c"]
    assert settings.cache_dir() == "/tmp/cache"
    assert settings.tensorboard() and settings.save_selected() and not settings.cuda_graphs()
    environment(DOMAINBED_TENSORBOARD="0", DOMAINBED_SAVE_SELECTED=" 0 ",
                DOMAINBED_CUDA_GRAPHS=" 0")
    assert not settings.tensorboard() and not settings.save_selected()
    assert settings.cuda_graphs()   # only exactly "0" turns the graph off, as before


def test_threads_reads_a_given_environment():
    assert settings.threads({"DOMAINBED_THREADS": "5"}) == 5
    assert settings.threads({}) is None
    assert settings.whole_number("OMP_NUM_THREADS", 1, {"OMP_NUM_THREADS": " 2 "}) == 2


# (reader, variable, a bad value, what it must be, the value the message suggests)
BAD_VALUES = [
    (settings.threads, "DOMAINBED_THREADS", "0", "a whole number >= 1", 1),
    (settings.threads, "DOMAINBED_THREADS", "two", "a whole number >= 1", 1),
    (settings.loader_workers, "DOMAINBED_LOADER_WORKERS", "-1", "a whole number >= 0", 1),
    (settings.local_jobs, "DOMAINBED_LOCAL_JOBS", "many", "an integer", 2),
    (settings.pool_workers, "DOMAINBED_POOL_WORKERS", "2.5", "an integer", 4),
    (settings.jobs_per_gpu, "DOMAINBED_JOBS_PER_GPU", "x", "an integer", 2),
]


@pytest.mark.parametrize("read, name, value, rule, example", BAD_VALUES,
                         ids=[f"{name}={value}" for _, name, value, _, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_variable(environment, read, name, value, rule,
                                                     example):
    environment(**{name: value})
    with pytest.raises(settings.SettingError) as caught:
        read()
    error = caught.value
    assert str(error) == f"{name}={value!r} is not {rule}; unset it or set e.g. {name}={example}"
    assert isinstance(error, DomainBedError) and isinstance(error, ValueError)
    assert error.exit_code == 1


def test_a_bad_thread_count_reads_as_it_always_did(environment):
    environment(DOMAINBED_THREADS=" 0 ")
    with pytest.raises(settings.SettingError, match="^DOMAINBED_THREADS='0' is not a whole "
                       "number >= 1; unset it or set e.g. DOMAINBED_THREADS=1$"):
        settings.threads()


def test_a_bad_value_stops_a_sweep_with_one_line_and_exit_1(environment, tmp_path, capsys):
    from domainbed.scripts import sweep

    environment(DOMAINBED_LOCAL_JOBS="many", DOMAINBED_THREADS="1")
    code = sweep.cli(["launch", "--datasets", "Debug28", "--algorithms", "ERM", "--data_dir",
                      str(tmp_path / "data"), "--output_dir", str(tmp_path / "sweep"),
                      "--n_hparams", "1", "--n_trials", "1", "--steps", "1",
                      "--single_test_envs", "--command_launcher", "local",
                      "--skip_confirmation"])
    assert code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sweep: error: DOMAINBED_LOCAL_JOBS='many' is not an integer; unset it or set e.g. "
        "DOMAINBED_LOCAL_JOBS=2")


def test_the_readers_use_the_settings(environment, tmp_path):
    from domainbed import model_files
    from domainbed.datasets import decoded_cache
    from domainbed.launchers import command_launchers
    from domainbed.lib import registry, threads
    from domainbed.training import tensorboard_logs

    environment(DOMAINBED_SAVE_SELECTED="1", DOMAINBED_CACHE=str(tmp_path),
                DOMAINBED_SLURM_MEM_GB="7", DOMAINBED_PLUGINS="x.y",
                DOMAINBED_LOADER_WORKERS="3")
    assert model_files.save_selected_enabled()
    assert decoded_cache.cache_dir() == str(tmp_path)
    assert command_launchers.slurm_options()["mem_gb"] == 7
    assert registry.plugin_modules() == ["x.y"]
    assert threads.loader_workers(8) == 3
    assert not tensorboard_logs.requested()
    assert command_launchers.SLURM_ENV["mem_gb"] == "DOMAINBED_SLURM_MEM_GB"
    assert threads.ThreadSettingError is settings.SettingError
