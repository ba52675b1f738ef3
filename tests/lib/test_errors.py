"""domainbed/errors.py: one base for every error a user sees, carrying its exit code; the
front ends (lib/cli.py) print it as one line and exit with that code. The codes are
those the commands have always exited with (tests/training/test_bad_input.py and others check
the commands themselves)."""
import pytest

from domainbed import errors, settings
from domainbed.lib import cli


def exit_codes():
    """{class: its exit code} of the package's DomainBedErrors, as docs/architecture.md's
    table gives them."""
    from domainbed import hparams_registry, model_files, networks
    from domainbed.datasets import base, decoded_cache, folder
    from domainbed.datasets.download import fetch, install
    from domainbed.launchers import command_launchers
    from domainbed.lib import jobdir, plots, registry, safe_write, validation
    from domainbed.training import tensorboard_logs
    from domainbed.scripts import sharpness
    from domainbed.studies import benchmark, precision_study, sweep_listing, train_runs
    from domainbed.sweeps.errors import SweepError
    from domainbed.training import errors as training_errors

    return {
        registry.PluginError: 1, command_launchers.LauncherError: 1,
        plots.MatplotlibMissing: 1, settings.SettingError: 1, fetch.DownloadError: 1,
        sweep_listing.SweepStopped: 1,
        errors.DomainBedError: 2, errors.BadInput: 2, validation.ValidationError: 2,
        hparams_registry.HparamError: 2, registry.UnknownNameError: 2,
        base.DatasetArgumentError: 2, folder.FolderDataError: 2, base.DatasetNotFoundError: 2,
        decoded_cache.CacheError: 2, decoded_cache.CacheDirError: 2,
        decoded_cache.CacheSpaceError: 2, model_files.ModelFileError: 2,
        networks.WeightsUnavailableError: 2, tensorboard_logs.TensorBoardUnavailable: 2,
        jobdir.JobRunningError: 2, jobdir.JobIdentityError: 2, install.UsageError: 2,
        benchmark.BenchmarkError: 2, train_runs.RunsError: 2, precision_study.StudyError: 2,
        SweepError: 2, safe_write.WriteRuleError: 2, fetch.ChecksumError: 2,
        fetch.BadArchiveError: 2, fetch.UnsafeArchiveError: 2, fetch.ChecksumStoreError: 2,
        install.DatasetProblem: 2, sharpness.NoJobs: 2,
        training_errors.WriteError: 4,
    }


def test_every_class_has_the_exit_code_it_always_had():
    wrong = {cls.__name__: cls.exit_code for cls, code in exit_codes().items()
             if not issubclass(cls, errors.DomainBedError) or cls.exit_code != code}
    assert not wrong


def test_older_except_clauses_still_catch_what_they_caught():
    from domainbed import hparams_registry, model_files, networks
    from domainbed.datasets import base, decoded_cache
    from domainbed.datasets.download import fetch, install
    from domainbed.lib import jobdir, plots, registry, safe_write, validation
    from domainbed.training import tensorboard_logs

    kinds = {ValueError: [validation.ValidationError, hparams_registry.HparamError,
                          base.DatasetArgumentError, model_files.ModelFileError,
                          install.UsageError, jobdir.JobIdentityError, settings.SettingError],
             OSError: [base.DatasetNotFoundError, decoded_cache.CacheError,
                       safe_write.WriteRuleError],
             ImportError: [registry.PluginError, plots.MatplotlibMissing,
                           tensorboard_logs.TensorBoardUnavailable],
             RuntimeError: [fetch.DownloadError, networks.WeightsUnavailableError,
                            jobdir.JobRunningError],
             KeyError: [registry.UnknownNameError],
             NotImplementedError: [registry.UnknownNameError]}
    assert all(issubclass(cls, kind) for kind, classes in kinds.items() for cls in classes)
    assert str(registry.UnknownNameError("unknown 'x'")) == "unknown 'x'"   # no KeyError quotes


def test_the_old_names_are_the_new_classes():
    import domainbed.training as training
    from domainbed.lib import threads
    from domainbed.training import errors as training_errors

    assert cli.CommandError is errors.DomainBedError
    assert training.JobError is training_errors.JobError is errors.DomainBedError
    assert training.BadInput is errors.BadInput
    assert threads.ThreadSettingError is settings.SettingError
    assert (training.EXIT_BAD_INPUT, training.EXIT_NON_FINITE, training.EXIT_IO_ERROR) == (2, 3, 4)


class Refused(errors.DomainBedError):
    exit_code = 7


class Stopped(errors.DomainBedError):
    exit_code = 1
    prefixed = False


def test_report_prints_one_line_and_returns_the_exit_code(capsys):
    assert cli.report("tool", Refused("two\n  lines")) == 7
    assert capsys.readouterr().err == "tool: error: two lines\n"
    assert cli.report("tool", Stopped("study: the sweep stopped; rerun")) == 1
    assert capsys.readouterr().err == "study: the sweep stopped; rerun\n"


@pytest.mark.parametrize("raised, code, line", [
    (Refused("no"), 7, "tool: error: no"),
    (errors.BadInput("bad"), 2, "tool: error: bad"),
    (KeyboardInterrupt(), 130, "tool: interrupted"),
    (ZeroDivisionError("boom"), 1, "tool: error: ZeroDivisionError: boom"),
], ids=["domainbed-error", "bad-input", "interrupt", "unforeseen"])
def test_one_line_errors(capsys, raised, code, line):
    def main(argv):
        raise raised

    assert cli.one_line_errors(main, [], "tool", "interrupted") == code
    assert capsys.readouterr().err == line + "\n"


def test_domainbed_errors_reports_ours_and_lets_others_through(capsys):
    def main(argv):
        if argv == "ours":
            raise Stopped("study: stopped")
        if argv == "theirs":
            raise ZeroDivisionError
        return 0

    assert cli.domainbed_errors(main, "ok", "tool") == 0
    assert cli.domainbed_errors(main, "ours", "tool") == 1
    assert capsys.readouterr().err == "study: stopped\n"
    with pytest.raises(ZeroDivisionError):
        cli.domainbed_errors(main, "theirs", "tool")


def test_a_stopped_sweep_is_raised_not_exited(tmp_path, monkeypatch):
    """iut_suite.launch (and reproduce's) raise SweepStopped; the script prints its line."""
    import argparse

    from domainbed.studies import iut_suite, sweep_listing

    monkeypatch.setattr(sweep_listing, "run_sweep", lambda *args, **kwargs: 2)
    monkeypatch.setattr(iut_suite, "sweep_specs", lambda args: [(["ERM"], "{}")])
    monkeypatch.setattr(iut_suite, "sweep_command", lambda *args: ["sweep"])
    args = argparse.Namespace(output_dir=str(tmp_path), iut_problems=["IUTExample2"])
    with pytest.raises(sweep_listing.SweepStopped) as caught:
        iut_suite.launch(args)
    assert caught.value.exit_code == 1 and not caught.value.prefixed
    assert str(caught.value) == ("iut suite: the sweep stopped with exit code 2; fix the error "
                                 "above and run the same command again (finished jobs are kept)")
