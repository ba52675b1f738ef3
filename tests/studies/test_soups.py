"""Weight soups of a finished sweep (domainbed/soups.py, scripts/soup.py), on a real tiny
sweep: ColoredMNIST5k, ERM, 3 hparam draws x 3 test environments, 5 steps a job, in this
process. BatchNorm: a small module by hand, and (opt-in, slow) ResNet-18 on Debug224."""
import json
import os
import shutil

import pytest

torch = pytest.importorskip("torch")

from domainbed import model_files, soups  # noqa: E402
from domainbed.scripts import collect_results, soup, sweep  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sweep_and_soups(tmp_path_factory, in_process_launcher):
    base = tmp_path_factory.mktemp("soups")
    sweep_dir, soups_dir = base / "sweep", base / "soups"
    assert sweep.main(["launch", "--datasets", "ColoredMNIST5k", "--algorithms", "ERM",
                       "--data_dir", "offline", "--steps", "5", "--n_hparams", "3",
                       "--n_trials", "1", "--single_test_envs", "--skip_confirmation",
                       "--output_dir", str(sweep_dir), "--command_launcher",
                       in_process_launcher]) in (0, None)
    assert soup.main(["--input_dir", str(sweep_dir), "--output_dir", str(soups_dir)]) == 0
    return sweep_dir, soups_dir


def soup_dirs(soups_dir, kind=None):
    return sorted(soups_dir / name for name in os.listdir(soups_dir)
                  if (soups_dir / name).is_dir() and (kind is None or soups.KINDS[kind] in name))


def record_of(soup_dir):
    lines = (soup_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def tree(path):
    """{relative path: bytes} of every file under `path` (what a refusal must not change)."""
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = f.read()
    return found


# ---------------------------------------------------------------------------------------
# The soups

def test_every_group_gets_both_soups_as_run_directories(sweep_and_soups):
    _, soups_dir = sweep_and_soups
    for kind in ("uniform", "greedy"):
        dirs = soup_dirs(soups_dir, kind)
        assert [d.name for d in dirs] == [f"ColoredMNIST5k_ERM+{soups.KINDS[kind]}_env{t}_trial0"
                                          for t in range(3)]
        for d in dirs:
            assert (d / "done").read_text() == "done"
            record = record_of(d)
            assert record["args"]["algorithm"] == f"ERM+{soups.KINDS[kind]}"
            assert record["args"]["hparams_seed"] == 0
            assert record["soup"]["kind"] == kind
            assert record["soup"]["model_file"] == "model.pkl"
            assert len(record["soup"]["candidates"]) == 3
            assert all(f"env{e}_{s}_acc" in record for e in range(3) for s in ("in", "out"))


def test_the_uniform_soup_is_the_hand_average_of_the_members(sweep_and_soups):
    sweep_dir, soups_dir = sweep_and_soups
    for soup_dir in soup_dirs(soups_dir, "uniform"):
        record = record_of(soup_dir)
        members = record["soup"]["members"]
        assert sorted(members) == sorted(record["soup"]["candidates"])   # all of them
        dicts = [model_files.read_model_file(sweep_dir / m / "model.pkl")["model_dict"]
                 for m in members]
        soup_dict = model_files.read_model_file(soup_dir / "model.pkl")["model_dict"]
        assert record["soup"]["batchnorm_layers_recomputed"] == 0   # GroupNorm, an MLP
        assert set(soup_dict) == set(dicts[0])
        for key, value in soup_dict.items():
            if value.is_floating_point():
                hand = torch.stack([d[key].double() for d in dicts]).mean(0).float()
                torch.testing.assert_close(value, hand, rtol=0, atol=1e-7)
            else:
                assert torch.equal(value, dicts[0][key])
        assert any(not torch.equal(soup_dict[key], dicts[0][key]) for key in soup_dict)


def test_the_greedy_soup_follows_its_rule(sweep_and_soups):
    _, soups_dir = sweep_and_soups
    for soup_dir in soup_dirs(soups_dir, "greedy"):
        info = record_of(soup_dir)["soup"]
        vals = info["candidate_val_accs"]
        assert vals == sorted(vals, reverse=True)               # best first
        trace = info["greedy_trace"]
        assert [name for name, _, _ in trace] == info["candidates"]
        best = trace[0][1]
        kept = [trace[0][0]]
        for name, value, was_kept in trace[1:]:
            assert was_kept == (value >= best)
            if was_kept:
                kept.append(name)
                best = value
        assert kept == info["members"] and info["val_acc"] == best


def test_greedy_adds_a_member_only_when_validation_does_not_drop():
    scores = {("a",): 0.50, ("a", "b"): 0.49, ("a", "c"): 0.50, ("a", "c", "d"): 0.60,
              ("a", "c", "d", "e"): 0.59}
    calls = []

    def score(members):
        calls.append(tuple(members))
        return scores[tuple(members)]

    chosen, best, trace = soups.greedy_select(["a", "b", "c", "d", "e"], score)
    assert chosen == ["a", "c", "d"] and best == 0.60   # b drops, c ties (kept), e drops
    assert calls == [("a",), ("a", "b"), ("a", "c"), ("a", "c", "d"), ("a", "c", "d", "e")]
    assert [kept for _, _, kept in trace] == [True, False, True, True, False]


def test_a_soup_of_one_run_is_that_run(sweep_and_soups):
    """The evaluation is the run's: same splits, same loaders, same accuracies."""
    sweep_dir, _ = sweep_and_soups
    groups, _ = soups.find_groups(str(sweep_dir))
    for members in groups.values():
        member = members[0]
        with soups.Evaluator(member) as evaluator:
            model_dict = model_files.read_model_file(member.model_path)["model_dict"]
            evaluator.load(soups.uniform_soup([model_dict]), member.name)
            accs = evaluator.accuracies()
            assert evaluator.val_acc() == pytest.approx(member.val_acc, abs=1e-12)
        assert accs == {key: value for key, value in member.last.items()
                        if key.endswith("_acc") and key.startswith("env")}


def test_the_soups_model_file_loads_and_predicts(sweep_and_soups):
    from domainbed.algorithms import get_algorithm_class

    _, soups_dir = sweep_and_soups
    for soup_dir in soup_dirs(soups_dir):
        dump = model_files.read_model_file(soup_dir / "model.pkl")
        assert set(model_files.MODEL_KEYS) <= set(dump)
        assert dump["args"]["algorithm"] == "ERM"   # upstream's class loads it
        model = model_files.load_model(soup_dir)
        x = torch.randn(4, *dump["model_input_shape"])
        with torch.no_grad():
            logits = model.predict(x)
        assert logits.shape == (4, dump["model_num_classes"])
        fresh = get_algorithm_class("ERM")(tuple(dump["model_input_shape"]),
                                           dump["model_num_classes"],
                                           dump["model_num_domains"], dump["model_hparams"])
        fresh.load_state_dict(dump["model_dict"], strict=True)   # upstream's way
        fresh.eval()
        with torch.no_grad():
            assert torch.equal(fresh.predict(x), logits)


def test_collect_results_reads_the_soups(sweep_and_soups, capsys):
    _, soups_dir = sweep_and_soups
    capsys.readouterr()
    assert collect_results.main(["--input_dir", str(soups_dir)]) in (0, None)
    out, err = capsys.readouterr()
    iid = out.split("model selection method: training-domain validation set")[1]
    rows = {line.split()[0]: line.split()[1:] for line in iid.splitlines()[2:4]}
    assert set(rows) == {"ERM+UniformSoup", "ERM+GreedySoup"}
    assert all("X" not in cells for cells in rows.values())
    assert "skipped" not in err and "corrupt" not in err


def test_a_rerun_skips_the_soups_made_and_redoes_an_interrupted_one(sweep_and_soups, tmp_path,
                                                                    capsys):
    sweep_dir, soups_dir = sweep_and_soups
    copy = tmp_path / "soups"
    shutil.copytree(soups_dir, copy)
    before = tree(copy)
    capsys.readouterr()
    assert soup.main(["--input_dir", str(sweep_dir), "--output_dir", str(copy)]) == 0
    assert "6 soups already made" in capsys.readouterr().out
    assert tree(copy) == before
    # An interrupted soup: its directory is still `.partial-<name>`; the rerun makes it.
    name = soup_dirs(copy, "greedy")[1].name
    os.rename(copy / name, copy / (soups.PARTIAL_PREFIX + name))
    assert soup.main(["--input_dir", str(sweep_dir), "--output_dir", str(copy),
                      "--kind", "greedy"]) == 0
    out = capsys.readouterr().out
    assert out.count("soup: ERM+GreedySoup") == 1 and "2 soups already made" in out
    assert not (copy / (soups.PARTIAL_PREFIX + name)).exists()
    assert record_of(copy / name)["soup"]["members"] == \
        json.loads(before[f"{name}/results.jsonl"])["soup"]["members"]


def test_a_group_of_two_architectures_is_skipped_with_a_note(sweep_and_soups, tmp_path, capsys):
    sweep_dir, _ = sweep_and_soups
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    groups, _ = soups.find_groups(str(copy))
    member = list(groups.values())[1][0]            # test env 1
    dump = model_files.read_model_file(member.model_path)
    key = next(k for k, v in dump["model_dict"].items() if v.dim() == 2)
    dump["model_dict"][key] = torch.zeros(dump["model_dict"][key].shape[0] + 1,
                                          dump["model_dict"][key].shape[1])
    torch.save(dump, member.model_path)
    capsys.readouterr()
    assert soup.main(["--input_dir", str(copy), "--output_dir", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    notes = err.strip().splitlines()
    assert len(notes) == 1
    assert "skipped ColoredMNIST5k ERM test env 1 trial 0" in notes[0]
    assert "different architectures" in notes[0] and key in notes[0]
    assert out.count("soup: ") == 4                 # test envs 0 and 2, both kinds
    assert not any("env1" in d.name for d in soup_dirs(tmp_path / "out"))


def test_a_run_without_its_model_file_is_left_out_with_a_note(sweep_and_soups, tmp_path,
                                                               capsys):
    sweep_dir, _ = sweep_and_soups
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    groups, _ = soups.find_groups(str(copy))
    missing = list(groups.values())[0][0]          # test env 0
    os.remove(missing.model_path)
    capsys.readouterr()
    assert soup.main(["--input_dir", str(copy), "--output_dir", str(tmp_path / "out"),
                      "--kind", "uniform"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"soup: {missing.name} has no model.pkl: left out of its group"]
    record = record_of(soup_dirs(tmp_path / "out")[0])
    assert record["args"]["test_envs"] == [0]
    assert sorted(record["soup"]["candidates"]) == sorted(m.name for m in groups[missing.key]
                                                          if m is not missing)


# ---------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written

def run_cli(argv, capsys):
    capsys.readouterr()
    try:
        code = soup.cli(argv)
    except SystemExit as exit_info:   # a usage error (argparse)
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def test_bad_inputs_are_one_line_and_exit_2(sweep_and_soups, tmp_path, capsys):
    sweep_dir, _ = sweep_and_soups
    empty = tmp_path / "empty"
    empty.mkdir()
    no_models = tmp_path / "no_models"
    shutil.copytree(sweep_dir, no_models)
    for model in no_models.glob("*/model.pkl"):
        model.unlink()                               # as --skip_model_save leaves a sweep
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    out = str(tmp_path / "out")
    cases = [
        (["--input_dir", str(tmp_path / "nowhere"), "--output_dir", out], "is not a directory"),
        (["--input_dir", str(empty), "--output_dir", out], "holds no finished run"),
        (["--input_dir", str(no_models), "--output_dir", out], "--skip_model_save"),
        (["--input_dir", str(sweep_dir), "--output_dir", out, "--model", "selected"],
         "DOMAINBED_SAVE_SELECTED=1"),
        (["--input_dir", str(sweep_dir), "--output_dir", str(a_file)], "is not a directory"),
        (["--input_dir", str(sweep_dir), "--output_dir", str(foreign)], "not written by soup"),
        (["--input_dir", str(sweep_dir), "--output_dir", str(sweep_dir)], "is --input_dir"),
        (["--input_dir", str(sweep_dir), "--output_dir", out, "--bn_batches", "0"],
         "--bn_batches must be >= 1"),
        (["--input_dir", str(sweep_dir), "--output_dir", out, "--kind", "soupy"],
         "invalid choice"),
    ]
    before = tree(tmp_path), tree(sweep_dir)
    for argv, message in cases:
        code, stdout, err = run_cli(argv, capsys)
        assert code == 2, (argv, err)
        assert len(err) == 1 and message in err[0], (argv, err)
        assert stdout == ""
    assert (tree(tmp_path), tree(sweep_dir)) == before
    assert not os.path.exists(out)


def test_a_directory_in_the_way_of_a_soup_is_never_touched(sweep_and_soups, tmp_path, capsys):
    sweep_dir, soups_dir = sweep_and_soups
    copy = tmp_path / "soups"
    shutil.copytree(soups_dir, copy)
    name = soup_dirs(copy, "uniform")[0].name
    shutil.rmtree(copy / name)
    (copy / name).mkdir()
    (copy / name / "mine.txt").write_text("mine")       # not a soup of ours
    before = tree(copy)
    code, _, err = run_cli(["--input_dir", str(sweep_dir), "--output_dir", str(copy)], capsys)
    assert code == 2 and len(err) == 1 and "is in the way" in err[0]
    assert tree(copy) == before


def test_the_help_says_what_it_does(capsys):
    with pytest.raises(SystemExit) as exit_info:
        soup.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Weight soups of a finished sweep" in text and "--kind" in text


# ---------------------------------------------------------------------------------------
# BatchNorm statistics

class _BNModel(torch.nn.Module):
    """A featurizer with BatchNorm and a `predict`, as algorithms have."""

    def __init__(self):
        super().__init__()
        self.network = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                                           torch.nn.ReLU(), torch.nn.Linear(4, 2))

    def predict(self, x):
        return self.network(x)


def _bn_evaluator(model, envs, bn_batches):
    """A soups.Evaluator around `model` whose evaluation splits are `envs` (each a list of
    (x, y) batches); environment 0 is the test environment."""
    evaluator = soups.Evaluator.__new__(soups.Evaluator)
    evaluator.model, evaluator.device, evaluator.test_envs = model, torch.device("cpu"), [0]
    evaluator.evals = [(f"env{i}_in", batches) for i, batches in enumerate(envs)]
    evaluator.bn_batches, evaluator.bn_layers, evaluator.name = bn_batches, 1, "ERM"
    return evaluator


def test_batchnorm_statistics_are_recomputed_on_the_training_environments():
    g = torch.Generator().manual_seed(0)
    members = []
    for shift in (0.0, 3.0):
        model = _BNModel()
        model.network[1].running_mean.copy_(torch.randn(4, generator=g) + shift)
        model.network[1].running_var.copy_(torch.rand(4, generator=g) + 0.5)
        members.append({k: v.clone() for k, v in model.state_dict().items()})
    average = soups.uniform_soup(members)
    envs = [[(torch.randn(5, 3, generator=g) * 9 + 50, torch.zeros(5)) for _ in range(4)]]
    envs += [[(torch.randn(5, 3, generator=g) + i, torch.zeros(5)) for _ in range(4)]
             for i in (1, 2)]
    model = _BNModel()
    _bn_evaluator(model, envs, bn_batches=3).load(average, "soup")
    bn = model.network[1]
    # By hand: train-mode batch statistics of the soup's first layer over 3 steps, each the
    # training environments' (1 and 2) batches concatenated; the test environment unused.
    reference = _BNModel()
    reference.load_state_dict(average)
    with torch.no_grad():
        features = [reference.network[0](torch.cat([envs[1][s][0], envs[2][s][0]]))
                    for s in range(3)]
    hand_mean = torch.stack([f.mean(0) for f in features]).mean(0)
    hand_var = torch.stack([f.var(0, unbiased=True) for f in features]).mean(0)
    torch.testing.assert_close(bn.running_mean, hand_mean)
    torch.testing.assert_close(bn.running_var, hand_var)
    assert not torch.allclose(bn.running_mean, average["network.1.running_mean"])
    # The weights themselves are the average, untouched by the pass.
    torch.testing.assert_close(model.network[0].weight, average["network.0.weight"])
    assert soups.count_batchnorm(model) == 1


@pytest.mark.slow
def test_resnet18_soups_recompute_batchnorm(tmp_path):
    """ResNet-18 on Debug224 (two 1-step runs): the soup's BatchNorm statistics are the
    recomputed ones, not the members' average."""
    import domainbed

    hparams = {"resnet18": True, "resnet50_augmix": False, "pretrained": False, "batch_size": 4}
    for draw in (0, 1):
        domainbed.train(dataset="Debug224", algorithm="ERM", test_envs=[0], data_dir=None,
                        output_dir=str(tmp_path / "sweep" / f"run{draw}"), steps=1,
                        hparams_seed=draw, hparams=hparams)
    summary = soups.make_soups(str(tmp_path / "sweep"), str(tmp_path / "soups"), ["uniform"],
                               bn_batches=2)
    assert summary == {"made": 1, "already_done": 0, "skipped": 0}
    soup_dir = soup_dirs(tmp_path / "soups")[0]
    info = record_of(soup_dir)["soup"]
    assert info["batchnorm_layers_recomputed"] == 20 and info["bn_batches"] == 2
    dicts = [model_files.read_model_file(tmp_path / "sweep" / m / "model.pkl")["model_dict"]
             for m in info["members"]]
    soup_dict = model_files.read_model_file(soup_dir / "model.pkl")["model_dict"]
    means = [k for k in soup_dict if k.endswith("running_mean")]
    assert len(means) == 40   # 20 layers, under featurizer.* and network.0.* (ERM)
    for key in means:
        assert not torch.allclose(soup_dict[key], (dicts[0][key] + dicts[1][key]) / 2)
    weight = "network.0.network.conv1.weight"
    torch.testing.assert_close(soup_dict[weight], (dicts[0][weight] + dicts[1][weight]) / 2)
    model_files.load_model(soup_dir)
