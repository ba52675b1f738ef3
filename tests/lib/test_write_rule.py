"""Issue 31: nothing outside what we own is ever written. Symbolic links are never written
through, markers prove ownership by their content (never by a name), output paths are
never overwritten without a flag; each case failed before the write rule
(`lib/safe_write.py`)."""
import json
import os

import pytest

from domainbed import training
from domainbed.lib import jobdir, safe_write
from domainbed.scripts import train
from domainbed.studies import reproduce


def snapshot(path):
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() and not p.is_symlink()
                                       else os.readlink(p) if p.is_symlink() else None)
            for p in sorted(path.rglob("*"))}


def train_argv(out, *extra):
    return ["--dataset", "Debug28", "--data_dir", str(out.parent / "data"), "--steps", "1",
            "--output_dir", str(out), *extra]


def one_line_refusal(capsys, code, expected=training.EXIT_BAD_INPUT):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected and len(err) == 1, (code, err)
    return err[0]


# ---------------------------------------------------------------------------------------
# train: the lock and the job directory's files

def test_a_lock_link_to_a_user_file_is_refused_and_the_file_unchanged(tmp_path, capsys):
    users = tmp_path / "users_file.txt"
    users.write_text("the user's own text\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").symlink_to(users)
    before = snapshot(tmp_path)
    line = one_line_refusal(capsys, train.main(train_argv(out)))
    assert ".lock is a symbolic link" in line
    assert snapshot(tmp_path) == before


def test_a_dangling_lock_link_creates_nothing_outside(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere" / "created.txt"
    target.parent.mkdir()
    (out / ".lock").symlink_to(target)
    line = one_line_refusal(capsys, train.main(train_argv(out)))
    assert "symbolic link" in line
    assert not os.path.lexists(target)


def test_a_users_own_lock_file_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text("my notes about locks\n")
    line = one_line_refusal(capsys, train.main(train_argv(out)))
    assert "was not written by train.py" in line and "move it away" in line
    assert (out / ".lock").read_text() == "my notes about locks\n"


def test_our_empty_or_holder_lock_is_taken(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "h"}))
    assert train.main(train_argv(out)) == 0


@pytest.mark.parametrize("name", ["results.jsonl", "out.txt", "model.pkl", "job.json",
                                  "heartbeat.json", "done"])
def test_a_link_in_place_of_a_file_train_writes_is_refused(name, tmp_path, capsys):
    users = tmp_path / "users_file"
    users.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(users)
    before = snapshot(tmp_path)
    line = one_line_refusal(capsys, train.main(train_argv(out)))
    assert "symbolic link" in line and name in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("marker", [
    {"version": "0.2.0", "configurations": [{"type": "python"}]},   # VS Code's launch.json
    {"launcher": 3}, [1, 2], "launcher"])
def test_a_launch_json_that_is_not_sweeps_makes_nothing_ours(marker, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "launch.json").write_text(json.dumps(marker))
    (out / "model.pkl").write_text("the user's model")
    (out / "out.txt").write_text("the user's log")
    before = snapshot(tmp_path)
    line = one_line_refusal(capsys, train.main(train_argv(out)))
    assert "was not written by train.py" in line
    assert snapshot(tmp_path) == before


def test_a_job_json_without_args_makes_nothing_ours(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "job.json").write_text(json.dumps({"name": "my job"}))
    (out / "model.pkl").write_text("the user's model")
    assert jobdir.foreign_files(out) == ["job.json", "model.pkl"]


# ---------------------------------------------------------------------------------------
# The rule's own functions

def test_atomic_write_and_open_file_never_follow_links(tmp_path):
    users = tmp_path / "users_file"
    users.write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(users)
    with pytest.raises(safe_write.WriteRuleError, match="symbolic link"):
        safe_write.atomic_write(str(link), lambda f: f.write(b"x"))
    for mode in ("w", "a", "wb"):
        with pytest.raises(safe_write.WriteRuleError, match="symbolic link"):
            safe_write.open_file(str(link), mode)
    # a link planted where the temporary goes is not followed either
    (tmp_path / f"file.tmp.{os.getpid()}").symlink_to(users)
    safe_write.atomic_write(str(tmp_path / "file"), lambda f: f.write(b"new"))
    assert (tmp_path / "file").read_bytes() == b"new" and users.read_text() == "precious"


def test_check_new_output_refuses_what_exists_unless_asked(tmp_path):
    path = tmp_path / "rows.jsonl"
    safe_write.check_new_output(str(path), "--output")
    path.write_text("mine")
    with pytest.raises(safe_write.WriteRuleError, match="already exists.*--overwrite"):
        safe_write.check_new_output(str(path), "--output")
    safe_write.check_new_output(str(path), "--output", overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(safe_write.WriteRuleError, match="symbolic link"):
        safe_write.check_new_output(str(link), "--output", overwrite=True)


def test_a_claim_is_proved_by_content_only(tmp_path):
    (tmp_path / safe_write.OWNER_MARKER).write_text("{}")
    assert not safe_write.is_claimed(tmp_path, "reproduce")
    with pytest.raises(safe_write.WriteRuleError, match="was not written by reproduce"):
        safe_write.claim_directory(tmp_path, "reproduce")
    (tmp_path / safe_write.OWNER_MARKER).unlink()
    safe_write.claim_directory(tmp_path, "reproduce")
    assert safe_write.is_claimed(tmp_path, "reproduce")
    assert not safe_write.is_claimed(tmp_path, "benchmark")


# ---------------------------------------------------------------------------------------
# reproduce

def test_reproduce_an_empty_sweep_folder_does_not_make_a_folder_ours(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "sweep").mkdir(parents=True)
    (out / "collect_results.txt").write_text("my results")
    (out / "ablation.json").write_text("my ablation")
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as caught:
        reproduce.main(["--output_dir", str(out), "--report_only"])
    line = one_line_refusal(capsys, caught.value.code)
    assert "was not written by reproduce" in line
    assert snapshot(tmp_path) == before


def test_reproduce_report_only_before_any_run_is_one_line(tmp_path, capsys):
    out = tmp_path / "new"
    for suite in ("all", "digits", "iut"):
        with pytest.raises(SystemExit) as caught:
            reproduce.main(["--output_dir", str(out), "--report_only", "--suite", suite])
        line = one_line_refusal(capsys, caught.value.code)
        assert "nothing has run yet" in line and "without --report_only" in line
    assert not out.exists()


def test_reproduce_a_link_in_place_of_its_output_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    safe_write.claim_directory(out, "reproduce")
    users = tmp_path / "users_file"
    users.write_text("precious")
    (out / "ablation.json").symlink_to(users)
    with pytest.raises(SystemExit) as caught:
        reproduce.parse_args(["--output_dir", str(out)])
    assert "symbolic link" in one_line_refusal(capsys, caught.value.code)


# ---------------------------------------------------------------------------------------
# benchmark: its work tree, its arguments

def test_benchmark_run_cost_never_writes_into_a_users_tree(tmp_path, capsys):
    from domainbed.studies import benchmark

    home = tmp_path / "H"
    image = home / "data" / "PACS" / "art_painting" / "dog" / "0.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"the user's photo")
    before = snapshot(tmp_path)
    code = benchmark.main(["--run_cost", "--dataset", "PACS", "--variants", "default",
                           "--work_dir", str(home)])
    line = one_line_refusal(capsys, code)
    assert "not empty and was not made by benchmark" in line
    assert snapshot(tmp_path) == before


def test_benchmark_work_dir_of_an_earlier_benchmark_is_taken(tmp_path):
    from domainbed.studies import train_runs

    train_runs.claim_work_dir(str(tmp_path / "new"))
    (tmp_path / "new" / "data").mkdir()
    train_runs.claim_work_dir(str(tmp_path / "new"))   # ours by its marker


BENCHMARK_BAD = [
    ["--threads", "-2"], ["--threads", "0"], ["--batch_size", "0"], ["--device", "bogus"],
    ["--hparams", "[1]"], ["--arch", "vector", "--input_dim", "-5"], ["--num_domains", "1"],
    ["--seed_batching", "0"], ["--hparams", '{"fgmix_space": "pixels"}'],
    ["--hparams", '{"lr": -1}'], ["--hparams", '{"fgmix_spac": "inputs"}'],
    ["--steps", "nan"], ["--seed", "-1"], ["--dataset", "PAC"], ["--channels", "0"]]


@pytest.mark.parametrize("argv", BENCHMARK_BAD, ids=" ".join)
def test_benchmark_bad_arguments_are_one_line_exit_2(argv, tmp_path, capsys, monkeypatch):
    from domainbed.studies import benchmark

    monkeypatch.chdir(tmp_path)
    line = one_line_refusal(capsys, benchmark.main(argv), 2)
    assert line.startswith("benchmark: error: ") and "usage" not in line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# The decoded cache: content verified, DOMAINBED_CACHE named

def _same_size_other_image(tmp_path, path):
    """A different JPEG of exactly `path`'s byte size (padded with a JPEG comment)."""
    from PIL import Image

    other = tmp_path / "other.jpg"
    Image.new("RGB", (40, 40), (0, 0, 255)).save(other, quality=95)
    data = other.read_bytes()
    size = os.path.getsize(path)
    assert len(data) < size
    padded = data[:-2] + b"\x00" * (size - len(data)) + data[-2:]   # zeros before EOI
    other.write_bytes(padded)
    return other


def test_the_decoded_cache_never_serves_an_image_changed_with_its_old_mtime(
        tmp_path, monkeypatch):
    import shutil

    from domainbed.datasets import decoded_cache, folder
    from support import make_jpeg_tree

    monkeypatch.setenv("DOMAINBED_CACHE", str(tmp_path / "cache"))
    root = make_jpeg_tree(tmp_path / "tree", per_class=2)
    samples = folder.scan_tree(root).samples[0]
    first, built = decoded_cache.load_or_build(samples)
    assert built
    changed = samples[1][0]
    stat = os.stat(changed)
    other = _same_size_other_image(tmp_path, changed)
    shutil.copyfile(other, changed)                       # cp -p: the same size ...
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))   # ... and the old mtime
    assert os.path.getsize(changed) == stat.st_size
    again, built = decoded_cache.load_or_build(samples)
    assert built, "a changed image with its old size and mtime must be decoded again"
    pixels = again.images[1]
    assert pixels[2].mean() > 200 and pixels[0].mean() < 50   # the new, blue image
    assert np_equal(again.images[0], first.images[0])


def np_equal(a, b):
    import numpy as np

    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kind", ["file", "dangling link", "read-only"])
def test_an_unusable_domainbed_cache_is_named(kind, tmp_path, monkeypatch):
    from domainbed import train
    from domainbed.training.errors import BadInput
    from support import TRAIN_HPARAMS, make_jpeg_tree

    cache = tmp_path / "cache"
    if kind == "file":
        cache.write_text("not a directory")
    elif kind == "dangling link":
        cache.symlink_to(tmp_path / "nowhere" / "cache")
    else:
        from domainbed.datasets import decoded_cache

        cache.mkdir()
        cache.chmod(0o500)
        if os.geteuid() == 0:   # root writes anyway: what a read-only mount says
            monkeypatch.setattr(decoded_cache.os, "access", lambda path, mode: False)
    monkeypatch.setenv("DOMAINBED_CACHE", str(cache))
    root = make_jpeg_tree(tmp_path / "tree", per_class=3)
    with pytest.raises(BadInput) as caught:
        train(dataset="Folder", algorithm="ERM", test_envs=[0], data_dir=root,
              output_dir=tmp_path / "out", hparams=TRAIN_HPARAMS, steps=1, pipeline="fast")
    message = str(caught.value)
    assert f"DOMAINBED_CACHE={cache}" in message and "\n" not in message, message
    assert not (tmp_path / "out").exists() and not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------------------------------
# sharpness: one bad job never stops the others; reproducible; sorted rows; --output

def _debug_job(sweep, name, *extra):
    out = sweep / name
    assert train.main(["--dataset", "Debug28", "--data_dir", str(sweep.parent / "data"),
                       "--steps", "1", "--output_dir", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def debug_sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sharpness") / "sweep"
    # names in an order unlike the rows' (hash order): trials 1, 0, then Mixup
    _debug_job(sweep, "c1", "--trial_seed", "1")
    _debug_job(sweep, "b0", "--trial_seed", "0")
    _debug_job(sweep, "a0", "--algorithm", "Mixup")
    _debug_job(sweep, "nomodel", "--trial_seed", "2", "--skip_model_save")
    truncated = _debug_job(sweep, "truncated", "--trial_seed", "3")
    data = (truncated / "model.pkl").read_bytes()
    (truncated / "model.pkl").write_bytes(data[:len(data) // 2])
    garbage = _debug_job(sweep, "garbage", "--trial_seed", "4")
    (garbage / "job.json").unlink()   # as upstream's train.py leaves it
    records = (garbage / "results.jsonl").read_bytes()
    (garbage / "results.jsonl").write_bytes(b"\xff not json\n" + records)
    return sweep


SHARP = ["--n_batches", "1", "--batch_size", "4", "--iterations", "2"]


@pytest.mark.parametrize("draw", [[], ["--hparams_seed", "0"]], ids=["all", "hparams_seed"])
def test_sharpness_skips_bad_jobs_with_a_note_and_goes_on(debug_sweep, draw, capsys):
    from domainbed.scripts import sharpness as sharpness_cli

    assert sharpness_cli.main([str(debug_sweep), *SHARP, *draw]) == 1
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("sharpness: skipped")]
    assert len(notes) == 2, captured.err
    assert str(debug_sweep / "nomodel") in notes[0] and str(debug_sweep / "truncated") in notes[1]
    assert "2 of 6 jobs skipped" in captured.err
    rows = [line.split("\t") for line in captured.out.splitlines()[1:5]]
    assert [(row[0], row[2]) for row in rows] == [("ERM", "0"), ("ERM", "1"), ("ERM", "4"),
                                                  ("Mixup", "0")]


def test_sharpness_on_a_debug_dataset_is_reproducible(debug_sweep):
    import torch

    from domainbed import sharpness

    job = str(debug_sweep / "b0")
    first = sharpness.measure_job(job, n_batches=1, batch_size=4, iterations=2)
    torch.manual_seed(12345)   # another global state: the Debug data must not follow it
    state = torch.get_rng_state()
    again = sharpness.measure_job(job, n_batches=1, batch_size=4, iterations=2)
    assert first == again
    assert torch.equal(torch.get_rng_state(), state), "the caller's RNG is left as it was"


def test_sharpness_output_is_never_overwritten_without_a_flag(debug_sweep, tmp_path, capsys):
    from domainbed.scripts import sharpness as sharpness_cli

    output = tmp_path / "mine.jsonl"
    output.write_text("the user's file\n")
    with pytest.raises(SystemExit) as caught:
        sharpness_cli.main([str(debug_sweep / "b0"), *SHARP, "--output", str(output)])
    line = one_line_refusal(capsys, caught.value.code)
    assert "already exists" in line and "--overwrite" in line
    assert output.read_text() == "the user's file\n"
    assert sharpness_cli.main([str(debug_sweep / "b0"), *SHARP, "--output", str(output),
                               "--overwrite"]) == 0
    assert json.loads(output.read_text())["algorithm"] == "ERM"


# ---------------------------------------------------------------------------------------
# Messages that say what is wrong and where; the hparam-range hook

def test_a_non_finite_fgmix_loss_names_the_fgmix_hparams(tmp_path, capsys):
    out = tmp_path / "out"
    code = train.main(["--dataset", "Debug28", "--algorithm", "FGMix", "--data_dir",
                       str(tmp_path / "data"), "--steps", "3", "--output_dir", str(out),
                       "--hparams", '{"fgmix_kappa": 50, "fgmix_gamma": 50, "lr": 1e30}'])
    assert code == training.EXIT_NON_FINITE   # (larger κ and γ are refused: their ranges)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "smaller learning rate" in line
    assert "fgmix_kappa=50" in line and "fgmix_gamma=50" in line and "fgmix_tau=" in line


def test_a_non_finite_loss_without_fgmix_names_only_the_learning_rate():
    from domainbed.training.errors import non_finite_advice

    assert "fgmix" not in non_finite_advice({"lr": 1.0})
    assert "fgmix_tau=1e-30" in non_finite_advice({"fgmix_tau": 1e-30})


@pytest.mark.parametrize("value", [None, 3, ["out"]])
def test_train_without_an_output_dir_path_is_one_line(value, tmp_path, monkeypatch):
    from domainbed import train as train_api
    from domainbed.training.errors import BadInput

    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="train\\(\\) needs output_dir as a path"):
        train_api(dataset="Debug28", algorithm="ERM", test_envs=[0], output_dir=value,
                  data_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_the_hparam_range_hook_refuses_values_outside(monkeypatch):
    from domainbed import hparams_registry
    from domainbed.lib import validation

    monkeypatch.setattr(validation, "_RULES", dict(validation._RULES))
    validation.declare_hparam_range("fgmix_gamma", 0, 100)
    validation.declare_hparam_range("fgmix_gamma", 0, 100)   # the same again: fine
    with pytest.raises(ValueError):
        validation.declare_hparam_range("fgmix_gamma", 1, 100)
    defaults = hparams_registry.default_hparams("FGMix", "Debug28")
    with pytest.raises(hparams_registry.HparamError, match="fgmix_gamma.*\\[0, 100\\]"):
        hparams_registry.apply_overrides(defaults, {"fgmix_gamma": -1})
    assert hparams_registry.apply_overrides(defaults, {"fgmix_gamma": 2})["fgmix_gamma"] == 2
