"""model.pkl as upstream writes it (keys, module layouts, weights only), the model each
selection method picks, and `domainbed.load_model` on our files and upstream's."""
import copy
import json
import os
import signal

import numpy as np
import pytest
import torch

import domainbed
from domainbed import hparams_registry, model_selection, networks, training
from domainbed.algorithms import get_algorithm_class
from domainbed.lib import misc
from domainbed.training import checkpoint
from domainbed.lib.model_state import model_state_dict
from domainbed.lib.query import Q
from domainbed.model_files import ModelFileError
from domainbed.scripts import train

SHAPE, N_CLASSES, N_DOMAINS = (3, 28, 28), 2, 2
UPSTREAM_ARGS = ("algorithm", "checkpoint_freq", "data_dir", "dataset", "holdout_fraction",
                 "hparams", "hparams_seed", "output_dir", "save_model_every_checkpoint", "seed",
                 "skip_model_save", "steps", "task", "test_envs", "trial_seed",
                 "uda_holdout_fraction")

# ---------------------------------------------------------------------------------------
# Upstream's module layouts (the attributes upstream's classes register), written out here
# independently of our algorithm classes, from upstream's networks (ours share them).

ERM_LAYOUT = {"featurizer", "classifier", "network"}
COUNTED = ERM_LAYOUT | {"update_count"}
UPSTREAM_TOP_LEVEL = {
    "ERM": ERM_LAYOUT, "ERMPlusPlus": ERM_LAYOUT | {"network_sma"}, "Fish": {"network"},
    "IRM": COUNTED, "GroupDRO": ERM_LAYOUT | {"q"}, "Mixup": ERM_LAYOUT, "MLDG": ERM_LAYOUT,
    "CORAL": ERM_LAYOUT, "MMD": ERM_LAYOUT,
    "DANN": {"update_count", "featurizer", "classifier", "discriminator", "class_embeddings"},
    "CDANN": {"update_count", "featurizer", "classifier", "discriminator", "class_embeddings"},
    "MTL": {"featurizer", "classifier", "embeddings"},
    "SagNet": {"network_f", "network_c", "network_s"}, "ARM": ERM_LAYOUT | {"context_net"},
    "VREx": COUNTED, "RSC": ERM_LAYOUT, "SD": ERM_LAYOUT, "ANDMask": ERM_LAYOUT,
    "SANDMask": COUNTED, "IGA": ERM_LAYOUT, "SelfReg": ERM_LAYOUT | {"cdpl"}, "Fishr": COUNTED,
    "TRM": {"update_count", "featurizer", "classifier"}, "IB_ERM": COUNTED, "IB_IRM": COUNTED,
    "CAD": {"featurizer", "classifier"}, "CondCAD": {"featurizer", "classifier"},
    "Transfer": {"update_count", "featurizer", "classifier", "adv_classifier"},
    "CausIRL_CORAL": ERM_LAYOUT, "CausIRL_MMD": ERM_LAYOUT, "EQRM": COUNTED | {"alpha"},
    "RDM": COUNTED,
    "ADRMX": {"update_count", "featurizer_label", "featurizer_domain", "discriminator",
              "classifier_label_1", "classifier_label_2", "classifier_domain", "network"},
    "URM": ERM_LAYOUT | {"discriminator"},
}


def upstream_erm(hparams, module=None):
    module = module or torch.nn.Module()
    module.featurizer = networks.Featurizer(SHAPE, hparams)
    module.classifier = networks.Classifier(module.featurizer.n_outputs, N_CLASSES,
                                            hparams["nonlinear_classifier"])
    module.network = torch.nn.Sequential(module.featurizer, module.classifier)
    return module


def upstream_fish(hparams):
    whole_fish = torch.nn.Module()
    whole_fish.net = upstream_erm(hparams).network
    module = torch.nn.Module()
    module.network = whole_fish
    return module


def upstream_selfreg(hparams):
    module = upstream_erm(hparams)
    n = module.featurizer.n_outputs
    hidden = n if n == 2048 else 2 * n
    module.cdpl = torch.nn.Sequential(
        torch.nn.Linear(n, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, n), torch.nn.BatchNorm1d(n))
    return module


def upstream_groupdro(hparams):
    module = upstream_erm(hparams)
    module.register_buffer("q", torch.Tensor())   # filled at the first update upstream
    return module


def upstream_trm(hparams):
    module = torch.nn.Module()
    module.register_buffer("update_count", torch.tensor([0]))
    module.featurizer = networks.Featurizer(SHAPE, hparams)
    module.classifier = torch.nn.Linear(module.featurizer.n_outputs, N_CLASSES)
    return module


def upstream_sagnet(hparams):
    module = torch.nn.Module()
    module.network_f = networks.Featurizer(SHAPE, hparams)
    module.network_c = networks.Classifier(module.network_f.n_outputs, N_CLASSES)
    module.network_s = networks.Classifier(module.network_f.n_outputs, N_CLASSES)
    return module


UPSTREAM_MODULES = {"ERM": upstream_erm, "Fish": upstream_fish, "SelfReg": upstream_selfreg,
                    "GroupDRO": upstream_groupdro, "TRM": upstream_trm, "SagNet": upstream_sagnet}


def build(name, **overrides):
    hparams = hparams_registry.default_hparams(name, "Debug28")
    hparams.update(overrides)
    torch.manual_seed(0)
    return get_algorithm_class(name)(SHAPE, N_CLASSES, N_DOMAINS, hparams), hparams


def trained(name):
    algorithm, hparams = build(name)
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        algorithm.update([(torch.randn(4, *SHAPE, generator=generator),
                           torch.randint(0, N_CLASSES, (4,), generator=generator))
                          for _ in range(N_DOMAINS)])
    return algorithm, hparams


@pytest.mark.parametrize("name", sorted(UPSTREAM_TOP_LEVEL))
def test_model_dict_has_upstreams_module_layout(name):
    algorithm, _ = build(name)
    keys = model_state_dict(algorithm)
    assert {key.split(".")[0] for key in keys} == UPSTREAM_TOP_LEVEL[name]
    assert not any("_extra_state" in key for key in keys)


@pytest.mark.parametrize("name", sorted(UPSTREAM_MODULES))
def test_trained_model_dict_loads_strict_into_upstreams_layout(name):
    algorithm, hparams = trained(name)
    upstream = UPSTREAM_MODULES[name](hparams)
    upstream.load_state_dict(model_state_dict(algorithm), strict=True)
    for key, value in upstream.state_dict().items():
        if value.numel():
            assert torch.equal(value, model_state_dict(algorithm)[key]), key


def test_fish_keys_are_upstreams_and_its_behaviour_unchanged():
    fish, _ = build("Fish")
    assert sorted(model_state_dict(fish)) == sorted(
        f"network.net.{key}" for key in upstream_erm(fish.hparams).network.state_dict())


# ---------------------------------------------------------------------------------------
# model.pkl from train.py

def job_argv(output_dir, algorithm="ERM", steps=5, freq=2, hparams=None, dataset="Debug28"):
    return ["--dataset", dataset, "--algorithm", algorithm, "--steps", str(steps),
            "--checkpoint_freq", str(freq), "--hparams",
            json.dumps({"batch_size": 8, **(hparams or {})}), "--output_dir", str(output_dir)]


def tensor_bytes(state):
    storages = {}
    for value in state.values():
        storages[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(storages.values())


@pytest.fixture(scope="module")
def erm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("erm") / "job"
    assert train.main(job_argv(out)) == 0
    return out


def test_model_pkl_is_upstreams_dict_of_weights(erm_run):
    dump = torch.load(erm_run / "model.pkl", weights_only=True)   # no pickled objects
    assert set(dump) == {"args", "model_input_shape", "model_num_classes",
                         "model_num_domains", "model_hparams", "model_dict"}
    assert set(dump["args"]) == set(UPSTREAM_ARGS)
    state = dump["model_dict"]
    assert not any("_extra_state" in key for key in state)
    upstream_erm(dump["model_hparams"]).load_state_dict(state, strict=True)
    ours = get_algorithm_class("ERM")(SHAPE, 2, 2, dump["model_hparams"])
    ours.load_state_dict(state)   # strict: upstream's way of reloading works with ours too
    size = os.path.getsize(erm_run / "model.pkl")
    assert size < 1.1 * tensor_bytes(state) + 20000   # the weights, not the Adam moments


def restore_without(state, key):
    state = copy.deepcopy(state)
    del state["algorithm"][key]
    return state


def test_a_checkpoint_still_needs_its_training_state():
    """Loading a model_dict leaves the optimizers as built; a checkpoint without them is
    refused (resume would not be exact)."""
    algorithm, _ = trained("ERM")
    state = checkpoint.training_state(algorithm, [], 1, {})
    fresh, _ = build("ERM")
    with pytest.raises(checkpoint.CheckpointError, match="_extra_state"):
        checkpoint.restore_training_state(restore_without(state, "_extra_state"), fresh, [])
    checkpoint.restore_training_state(state, fresh, [])
    assert fresh.optimizer.state_dict()["state"]   # the Adam moments came back


# ---------------------------------------------------------------------------------------
# load_model

def accuracy_of(model, output_dir, env):
    dump = torch.load(output_dir / "model.pkl", weights_only=True)
    config = training.parse_command_line(
        ["--dataset", dump["args"]["dataset"], "--algorithm", dump["args"]["algorithm"],
         "--hparams", dump["args"]["hparams"], "--output_dir", str(output_dir / "rebuilt")])
    job = training.prepare(config)
    return misc.accuracy(model, dict(job.evals)[env], None, "cpu")


@pytest.mark.parametrize("algorithm", ["ERM+SWAD", "ARM+SWAD", "SelfReg+MA", "GroupDRO",
                                       "Fish", "TRM"])
def test_load_model_gives_the_model_of_the_last_record(algorithm, tmp_path):
    out = tmp_path / "job"
    hparams = {"ma_start": 2} if algorithm.endswith("+MA") else {}
    if algorithm == "TRM":
        hparams["iters"] = 2
    assert train.main(job_argv(out, algorithm, steps=4, freq=2, hparams=hparams)) == 0
    model = domainbed.load_model(out)
    base = algorithm.split("+")[0]
    assert type(model) is get_algorithm_class(base) and not model.training
    last = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    for env in ("env0_in", "env1_out"):
        assert accuracy_of(model, out, env) == last[f"{env}_acc"]
    state = torch.get_rng_state()
    same = domainbed.load_model(out / "model.pkl")
    assert torch.equal(torch.get_rng_state(), state)   # the caller's generator untouched
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                   same.state_dict().values())
               if isinstance(a, torch.Tensor))


def upstream_model_file(path, name, module, hparams):
    """A model.pkl as upstream's train.py writes it: NumPy scalars in the hparams (its
    r.choice draws), upstream's module layout, Fish's clone of its last update."""
    args = {key: None for key in UPSTREAM_ARGS}
    args.update(algorithm=name, dataset="Debug28", test_envs=[0], hparams_seed=1, seed=0,
                trial_seed=0, holdout_fraction=0.2, task="domain_generalization")
    upstream_hparams = {key: (np.float64(value) if isinstance(value, float) else
                              np.bool_(value) if isinstance(value, bool) else
                              np.int64(value) if isinstance(value, int) else value)
                        for key, value in hparams.items() if key != "pretrained"}
    state = module.state_dict()
    if name == "Fish":
        state.update({f"network_inner.{k[len('network.'):]}": v.clone()
                      for k, v in state.items()})
    if name == "GroupDRO":
        state["q"] = torch.tensor([0.3, 0.7])
    torch.save({"args": args, "model_input_shape": SHAPE, "model_num_classes": N_CLASSES,
                "model_num_domains": N_DOMAINS, "model_hparams": upstream_hparams,
                "model_dict": state}, path)


@pytest.mark.parametrize("name", ["ERM", "Fish", "GroupDRO", "SelfReg"])
def test_load_model_reads_upstreams_files(name, tmp_path):
    _, hparams = build(name)
    torch.manual_seed(11)
    module = UPSTREAM_MODULES[name](hparams)
    path = tmp_path / "model.pkl"
    upstream_model_file(path, name, module, hparams)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)   # NumPy scalars: torch's plain safe load fails
    model = domainbed.load_model(path)
    x = torch.randn(5, *SHAPE)
    network = module.network.net if name == "Fish" else module.network
    network.eval()
    assert torch.equal(model.predict(x), network(x))


def test_load_model_errors_are_one_line(tmp_path, erm_run):
    (tmp_path / "garbage.pkl").write_bytes(b"not a model")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    dump = torch.load(erm_run / "model.pkl", weights_only=True)
    torch.save(dict(dump, args=dict(dump["args"], algorithm="ERN")), tmp_path / "unknown.pkl")
    torch.save(dict(dump, args=dict(dump["args"], algorithm="SagNet")), tmp_path / "other_alg.pkl")
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "checkpoint.pt").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    os.mkfifo(tmp_path / "fifo")
    cases = [(tmp_path / "missing", "no such file"), (tmp_path / "empty", "has no model.pkl"),
             (tmp_path / "running", "has not finished"), (tmp_path / "fifo", "not a regular file"),
             (tmp_path / "garbage.pkl", "not a model file"), (tmp_path / "list.pt", "holds a list"),
             (tmp_path / "other.pt", "lacks args"), (tmp_path / "unknown.pkl", "Did you mean 'ERM'"),
             (tmp_path / "other_alg.pkl", "does not fit SagNet")]
    for path, message in cases:
        with pytest.raises(ModelFileError, match=message) as error:
            domainbed.load_model(path)
        assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------
# The models the selection methods pick

def iid_choice(output_dir):
    """The step training-domain validation selects in this run (upstream's argmax)."""
    records = Q([json.loads(line) for line in (output_dir / "results.jsonl").read_text()
                 .splitlines()])
    method = model_selection.IIDAccuracySelectionMethod
    return records.map(lambda r: {"step": r["step"], **method._step_acc(r)}).argmax("val_acc")


def test_selected_model_is_training_domain_validations_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINBED_SAVE_SELECTED", "1")
    reference = tmp_path / "reference"
    # A learning rate that makes the validation accuracy go up and down (on Debug28's
    # three-image out-splits it only takes two values).
    run = {"steps": 12, "freq": 1, "hparams": {"ma_start": 3, "lr": 0.2},
           "dataset": "RotatedMNIST5k"}
    argv = job_argv(reference, "ERM+MA", **run)
    assert train.main(argv) == 0
    chosen = iid_choice(reference)
    selected = torch.load(reference / "model_iid.pkl", weights_only=True)
    assert selected["step"] == chosen["step"] and selected["val_acc"] == chosen["val_acc"]
    assert 0 < chosen["step"] < 11, "the test needs a choice other than the last record"
    model = domainbed.load_model(reference / "model_iid.pkl")
    record = [json.loads(line) for line in (reference / "results.jsonl").read_text()
              .splitlines()][chosen["step"]]
    assert accuracy_of(model, reference, "env0_in") == record["env0_in_acc"]

    # Stopped after the choice and resumed: the same file.
    from domainbed.algorithms import weight_averaging

    original, calls = weight_averaging.AveragingWrapper.update, {"n": 0}

    def update(self, minibatches, unlabeled=None):
        values = original(self, minibatches, unlabeled)
        calls["n"] += 1
        if calls["n"] == chosen["step"] + 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return values

    resumed = tmp_path / "resumed"
    argv = job_argv(resumed, "ERM+MA", **run)
    with monkeypatch.context() as patch:
        patch.setattr(weight_averaging.AveragingWrapper, "update", update)
        assert train.main(argv) == 128 + signal.SIGUSR1
    assert train.main(argv) == 0
    again = torch.load(resumed / "model_iid.pkl", weights_only=True)
    assert again["step"] == selected["step"]
    assert all(torch.equal(again["model_dict"][k], v) for k, v in selected["model_dict"].items())


def test_no_selected_model_unless_asked(erm_run):
    assert not (erm_run / "model_iid.pkl").exists()
