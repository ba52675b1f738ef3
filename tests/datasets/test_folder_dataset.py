"""`--dataset Folder`: your own images as a tree or a manifest, through train, sweep and
collect_results (offline: a few tiny generated PNGs; ResNet-18 without ImageNet weights)."""
import csv
import json
import os
import random

import pytest

from domainbed import datasets
from domainbed.datasets import folder
from domainbed.datasets.base import DatasetArgumentError, DatasetNotFoundError
from domainbed.scripts import collect_results, sweep, train
from domainbed.sweeps.job_list import default_datasets

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # steadier on a busy CPU
DOMAINS = ["sketch", "art", "photo"]       # environments: art, photo, sketch (sorted)
CLASSES = ["dog", "cat"]
# The 224x224 path, made cheap: ResNet-18 from scratch (no ImageNet weights offline), one
# image per training domain and step.
HPARAMS = json.dumps({"resnet18": True, "resnet50_augmix": False, "pretrained": False,
                      "batch_size": 1})
AUGMENTED = ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "RandomGrayscale",
             "ToTensor", "Normalize"]


def make_tree(root, domains=DOMAINS, classes=CLASSES, per_class=(3, 2)):
    """root/<domain>/<class>/<k>.png: tiny PNGs; 5 images per domain by default (so that
    holdout 0.2 leaves a non-empty out-split)."""
    from PIL import Image

    for d, domain in enumerate(domains):
        for c, cls in enumerate(classes):
            os.makedirs(os.path.join(root, domain, cls), exist_ok=True)
            for k in range(per_class[c % len(per_class)]):
                Image.new("RGB", (6, 5), (60 * d, 120 * c, 30 * k)).save(
                    os.path.join(root, domain, cls, f"{k}.png"))
    return str(root)


def error_of(data_dir):
    with pytest.raises((DatasetArgumentError, DatasetNotFoundError)) as caught:
        folder.Folder(str(data_dir), [0], {"data_augmentation": True})
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------
# The dataset

def test_tree_is_read_as_torchvision_reads_it(tmp_path):
    from torchvision.datasets import ImageFolder

    root = make_tree(tmp_path / "tree")
    os.makedirs(os.path.join(root, ".ipynb_checkpoints"))          # ignored: hidden
    open(os.path.join(root, "art", "dog", "notes.txt"), "w").close()  # ignored: no image
    dataset = folder.Folder(root, [1], {"data_augmentation": True})
    assert dataset.environment_folders == ["art", "photo", "sketch"]
    assert dataset.num_classes == 2 and dataset.input_shape == (3, 224, 224)
    for env, domain in zip(dataset, dataset.environment_folders):
        reference = ImageFolder(os.path.join(root, domain))
        assert env.samples == reference.samples and env.classes == reference.classes
    # Upstream's transforms: augmentation on the training envs, none on the test env.
    names = [[type(t).__name__ for t in env.transform.transforms] for env in dataset]
    assert names[0] == names[2] == AUGMENTED
    assert names[1] == ["Resize", "ToTensor", "Normalize"]
    x, y = dataset[1][4]
    assert tuple(x.shape) == (3, 224, 224) and y == 1
    assert datasets.environment_names("Folder", None, root) == ["art", "photo", "sketch"]
    assert datasets.num_environments("Folder", data_dir=root) == 3


def test_a_manifest_gives_the_dataset_of_the_tree_it_lists(tmp_path):
    root = make_tree(tmp_path / "tree")
    tree = folder.Folder(root, [0], {"data_augmentation": False})
    rows = [(os.path.relpath(path, tmp_path), domain, tree.layout.classes[label])
            for domain, env in zip(tree.environment_folders, tree) for path, label in env.samples]
    random.Random(0).shuffle(rows)   # the manifest's order does not matter
    with open(tmp_path / "images.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "path", "domain", "comment"])   # any column order, extras
        writer.writerows((label, path, domain, "") for path, domain, label in rows)
    with open(tmp_path / "images.json", "w") as f:
        json.dump([{"path": p, "domain": d, "label": c} for p, d, c in rows], f)
    for manifest in ("images.csv", "images.json"):
        read = folder.Folder(str(tmp_path / manifest), [0], {"data_augmentation": False})
        assert read.environment_folders == tree.environment_folders
        assert [env.samples for env in read] == [env.samples for env in tree], manifest
    # Integer labels: classes in numeric order (label 10 after 9), so index = the label.
    items = [{"path": rows[i][0], "domain": rows[i][1], "label": 10 if "dog" in rows[i][2] else 9}
             for i in range(len(rows))]
    with open(tmp_path / "numbers.json", "w") as f:
        json.dump(items, f)
    assert folder.load_layout(str(tmp_path / "numbers.json")).classes == ["9", "10"]


def test_bad_trees_and_manifests_are_one_line_errors(tmp_path):
    assert "does not exist" in error_of(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    assert "at least 2 domains" in error_of(tmp_path / "empty")
    one = make_tree(tmp_path / "one", domains=["only"])
    assert "at least 2 domains" in error_of(one) and "'only'" in error_of(one)
    no_images = make_tree(tmp_path / "no_images", per_class=(0,))
    assert "has no images" in error_of(no_images)
    missing = make_tree(tmp_path / "missing")
    for name in os.listdir(os.path.join(missing, "photo", "cat")):
        os.remove(os.path.join(missing, "photo", "cat", name))
    message = error_of(missing)
    assert "domain 'photo' has no images of class 'cat'" in message
    assert os.path.join(missing, "photo", "cat") in message
    unreadable = make_tree(tmp_path / "unreadable")
    with open(os.path.join(unreadable, "art", "dog", "1.png"), "wb") as f:
        f.write(b"not a png")
    message = error_of(unreadable)
    assert "cannot read image" in message and os.path.join("art", "dog", "1.png") in message
    (tmp_path / "list.txt").write_text("path,domain,label\n")
    assert "not a .csv or .json manifest" in error_of(tmp_path / "list.txt")
    (tmp_path / "cols.csv").write_text("file,domain,label\na.png,x,y\n")
    assert "lacks the column(s) path" in error_of(tmp_path / "cols.csv")
    (tmp_path / "gone.csv").write_text("path,domain,label\nnope.png,x,y\n")
    assert "line 2: image" in error_of(tmp_path / "gone.csv")
    (tmp_path / "bad.json").write_text('{"path": "a.png"}')
    assert "must be a JSON list" in error_of(tmp_path / "bad.json")


def test_train_and_sweep_refuse_a_bad_tree_before_writing(tmp_path, capsys):
    missing = make_tree(tmp_path / "missing")
    for name in os.listdir(os.path.join(missing, "art", "dog")):
        os.remove(os.path.join(missing, "art", "dog", name))
    out = tmp_path / "run"
    assert train.main(["--dataset", "Folder", "--data_dir", missing, "--output_dir",
                       str(out), "--hparams", HPARAMS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "domain 'art' has no images of class 'dog'" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as caught:
        sweep.main(["launch", "--datasets", "Folder", "--algorithms", "ERM", "--data_dir",
                    missing, "--output_dir", str(tmp_path / "sweep"), "--command_launcher",
                    "dummy", "--skip_confirmation"])
    assert caught.value.code == 2
    assert "class 'dog'" in capsys.readouterr().err and not (tmp_path / "sweep").exists()


def test_default_sweep_datasets_leave_folder_out():
    from domainbed.scripts import download

    assert "Folder" in datasets.DATASETS and "Folder" not in default_datasets()
    assert datasets.get_dataset_class("Folder").environment_names() is None
    with pytest.raises(DatasetArgumentError, match="reads its environments from --data_dir"):
        datasets.num_environments("Folder")
    with pytest.raises(download.UsageError, match="nothing to download"):
        download.resolve_recipes(["Folder"])


def test_sweep_status_reads_the_tree_without_torch(fresh_python, tmp_path):
    root = make_tree(tmp_path / "tree")
    code = ("import sys; from domainbed.scripts import sweep; "
            f"sweep.main(['status', '--output_dir', {str(tmp_path / 'sweep')!r}, '--data_dir', "
            f"{root!r}, '--datasets', 'Folder', '--algorithms', 'ERM', '--n_trials', '1', "
            "'--n_hparams', '1']); print('torch' in sys.modules)")
    result = fresh_python(code)
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "False" and "6 jobs:" in result.stdout   # 3 single + 3 pairs


# ---------------------------------------------------------------------------------------
# A sweep over the tree: train runs, the domains as test environments, the tables

@pytest.fixture(scope="module")
def folder_sweep(tmp_path_factory, in_process_launcher):
    """3 jobs (each domain held out), 2 steps each, on 6 images (one per domain and class;
    holdout 0.5: one in the in-split, one in the out-split): ResNet-18 sees 24 images a job."""
    base = tmp_path_factory.mktemp("folder_sweep")
    root = make_tree(base / "my_images", per_class=(1,))
    out = base / "sweep"
    flags = ["--datasets", "Folder", "--algorithms", "ERM", "--data_dir", root, "--output_dir",
             str(out), "--n_hparams", "1", "--n_trials", "1", "--steps", "2", "--hparams",
             HPARAMS, "--holdout_fraction", "0.5", "--skip_confirmation"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(folder.Folder, "N_WORKERS", 0)   # no loader processes for 6 images
        sweep.main(["launch", *flags, "--single_test_envs", "--command_launcher",
                    in_process_launcher])
    return root, out, flags


def test_sweep_runs_one_job_per_domain_with_upstream_records(folder_sweep, capsys):
    root, out, flags = folder_sweep
    sweep.main(["status", *flags])
    listed = capsys.readouterr().out
    # Without --single_test_envs: every domain and pair of domains, the singles done.
    assert "6 jobs: 3 done," in listed and "3 not launched." in listed
    for test_envs in ([0], [1], [2], [0, 1], [0, 2], [1, 2]):
        assert f"('Folder', 'ERM', {test_envs}, 0)" in listed
    job_dirs = sorted(os.listdir(out))
    records = [json.loads(line) for job in job_dirs
               for line in open(out / job / "results.jsonl")]
    assert len(job_dirs) == 3 and [r["step"] for r in records] == [0, 1] * 3
    record = records[0]
    assert len(record["args"]) == 16 and record["args"]["dataset"] == "Folder"
    assert {f"env{i}_{split}_acc" for i in range(3) for split in ("in", "out")} <= set(record)
    assert all(os.path.exists(out / job / "done") for job in job_dirs)


def test_collect_results_names_the_domains(folder_sweep, tmp_path, capsys):
    root, out, _ = folder_sweep
    assert collect_results.main(["--input_dir", str(out)]) is None
    text = capsys.readouterr().out
    assert "Total records: 6" in text
    assert "-------- Dataset: Folder, model selection method: training-domain validation set" in text
    header = next(line for line in text.splitlines() if line.startswith("Algorithm "))
    assert header.split() == ["Algorithm", "art", "photo", "sketch", "Avg"]
    # Collected where the images are not (moved): columns by index, and a note saying why.
    moved = str(tmp_path / "elsewhere")
    os.rename(root, moved)
    try:
        collect_results.main(["--input_dir", str(out)])
    finally:
        os.rename(moved, root)
    captured = capsys.readouterr()
    header = next(line for line in captured.out.splitlines() if line.startswith("Algorithm "))
    assert header.split() == ["Algorithm", "env0", "env1", "env2", "Avg"]
    assert "env0..env2" in captured.err and "does not exist" in captured.err


# ---------------------------------------------------------------------------------------
# The README's example with upstream's default network (timm's resnet50.ram_in1k)

def _jpeg_tree(root):
    """2 domains x 2 classes x 3 JPEGs."""
    from PIL import Image

    for d in ("a", "b"):
        for c, cls in enumerate(("cat", "dog")):
            os.makedirs(os.path.join(root, d, cls))
            for k in range(3):
                Image.new("RGB", (8, 8), (40 * k, 90 * c, 0)).save(
                    os.path.join(root, d, cls, f"{k}.jpg"))
    return str(root)


def _readme_train(tmp_path, *extra):
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               TORCH_HOME=str(tmp_path / "torch"), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "domainbed.scripts.train", "--dataset", "Folder",
               "--data_dir", _jpeg_tree(tmp_path / "images"), "--test_envs", "0",
               "--output_dir", str(tmp_path / "my_run"), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_readme_example_reaches_the_weights_of_upstreams_default_network(tmp_path):
    done = _readme_train(tmp_path)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: cannot load timm's ImageNet weights "
                           "resnet50.ram_in1k")
    assert "models--timm--resnet50.ram_in1k" in last and '"pretrained": false' in last
    assert "Traceback" not in done.stderr and "Retry" not in done.stderr
    assert not (tmp_path / "my_run").exists()


def test_readme_example_trains_upstreams_default_network_without_weights(tmp_path):
    done = _readme_train(tmp_path, "--steps", "1", "--checkpoint_freq", "1", "--hparams",
                         json.dumps({"pretrained": False, "batch_size": 2}))
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "my_run" / "results.jsonl") as f:
        record = json.loads(f.readline())
    assert record["hparams"]["resnet50_augmix"] is True and record["step"] == 0
    assert (tmp_path / "my_run" / "done").exists()
