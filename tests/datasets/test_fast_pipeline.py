"""`--pipeline fast`: the decoded uint8 cache, the batched augmentation (against
torchvision's reference pipeline on the CPU), the loaders (the default pipeline's indices,
exact resume) and `train` end to end. Offline: small generated JPEG trees."""
import contextlib
import math
import os
import signal

import numpy as np
import pytest
import torch

from domainbed.datasets import decoded_cache, device_augment, fast_pipeline, folder
from domainbed.datasets.image_folder import augment_transform, eval_transform
from domainbed.lib import misc
from domainbed.datasets.fast_data_loader import FastDataLoader, InfiniteDataLoader
from support import TRAIN_HPARAMS, make_jpeg_tree

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
# ResNet-18 from scratch (no ImageNet weights offline), tiny batches.
@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("DOMAINBED_CACHE", str(path))
    return path


def files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, _, names in os.walk(path) for f in names)


# ---------------------------------------------------------------------------------------
# The parameter sampler

def test_crop_boxes_follow_random_resized_crops_rule():
    from torchvision import transforms

    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[500, 375], [300, 400], [640, 480]] * 1000)
    boxes = device_augment.sample_crop_boxes(sizes, generator)
    top, left, h, w = boxes.unbind(1)
    width, height = sizes[:, 0].double(), sizes[:, 1].double()
    area = h * w / (width * height)
    assert area.min() >= 0.7 - 0.01 and area.max() <= 1.0
    assert (w / h).min() >= 3 / 4 - 0.01 and (w / h).max() <= 4 / 3 + 0.01
    assert top.min() >= 0 and left.min() >= 0
    assert (top + h <= height).all() and (left + w <= width).all()
    # The same distribution as torchvision's get_params (area and log-ratio means).
    torch.manual_seed(0)
    reference = torch.tensor([transforms.RandomResizedCrop.get_params(
        torch.empty(3, 375, 500), (0.7, 1.0), (3 / 4, 4 / 3)) for _ in range(2000)],
        dtype=torch.float64)
    ours = boxes[::3]
    for stat in (lambda b: b[:, 2] * b[:, 3] / (375 * 500), lambda b: torch.log(b[:, 3] / b[:, 2]),
                 lambda b: b[:, 0] / 375, lambda b: b[:, 1] / 500):
        assert abs(stat(ours).mean() - stat(reference).mean()) < 4 * stat(reference).std() / 20


def test_an_image_no_crop_fits_gets_the_central_fallback():
    generator = torch.Generator().manual_seed(0)
    boxes = device_augment.sample_crop_boxes(torch.tensor([[400, 50], [50, 400]]), generator)
    # 400x50: height kept, width = round(50 * 4/3), centred; 50x400 likewise, transposed.
    assert boxes.tolist() == [[0, (400 - 67) // 2, 50, 67], [(400 - 67) // 2, 0, 67, 50]]


def test_flip_grayscale_and_jitter_draws():
    n = 4000
    sizes = torch.tensor([[200, 150]] * n)
    params = device_augment.draw_params(sizes, torch.Generator().manual_seed(1))

    def near(share, p):  # a binomial share within 4 standard deviations
        return abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)

    assert near((params.theta[:, 0, 0] < 0).double().mean().item(), 0.5)
    assert near(params.gray.double().mean().item(), 0.1)
    assert (params.order.sort(1).values == torch.arange(4)).all()   # permutations
    for position in range(4):
        for adjustment in range(4):
            assert near((params.order[:, position] == adjustment).double().mean().item(), 0.25)
    ranges = {device_augment.BRIGHTNESS: (0.7, 1.3), device_augment.CONTRAST: (0.7, 1.3),
              device_augment.SATURATION: (0.7, 1.3), device_augment.HUE: (-0.3, 0.3)}
    for adjustment, (low, high) in ranges.items():
        factors = params.factors[:, adjustment].double()
        assert factors.min() >= low and factors.max() <= high
        counts = torch.histc(factors, bins=6, min=low, max=high)   # roughly uniform
        assert ((counts - n / 6).abs() < 4 * math.sqrt(n / 6)).all(), counts


# ---------------------------------------------------------------------------------------
# The augmented images against torchvision's reference pipeline

def output_statistics(images):
    """Per-channel statistics of normalised images [N, 3, H, W]: mean and std of all pixels,
    the spread of the per-image means (brightness jitter) and the mean within-image std
    (contrast); and the share of grayscale outputs (R == G == B once un-normalised)."""
    mean = torch.tensor(device_augment.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(device_augment.IMAGENET_STD).view(1, 3, 1, 1)
    unit = images * std + mean
    gray = ((unit[:, 0] - unit[:, 1]).abs().amax((1, 2)) < 2e-3) & (
        (unit[:, 1] - unit[:, 2]).abs().amax((1, 2)) < 2e-3)
    channels = torch.stack([images.mean((0, 2, 3)), images.std((0, 2, 3)),
                            images.mean((2, 3)).std(0), images.std((2, 3)).mean(0)])
    return channels, gray.double().mean().item()


@pytest.fixture(scope="module")
def augmentation_runs(tmp_path_factory):
    """(reference, ours, broken) statistics over the same 6 images, 300 samples each;
    'broken' is ours with the jitter twice as strong."""
    from PIL import Image

    with pytest.MonkeyPatch.context() as patch:
        tmp = tmp_path_factory.mktemp("statistics")
        patch.setenv("DOMAINBED_CACHE", str(tmp / "cache"))
        root = make_jpeg_tree(tmp / "tree", domains=("a", "b"), classes=("x",), per_class=3)
        samples = folder.scan_tree(root).samples[0] + folder.scan_tree(root).samples[1]
        decoded, _ = decoded_cache.load_or_build(samples)
    rows = np.arange(300) % len(samples)
    torch.manual_seed(0)
    reference_transform = augment_transform()
    originals = [Image.open(path).convert("RGB") for path, _ in samples]
    reference = torch.stack([reference_transform(originals[row]) for row in rows])
    images = torch.from_numpy(np.ascontiguousarray(decoded.images[rows]))
    params = device_augment.draw_params(torch.from_numpy(decoded.sizes[rows]),
                                        torch.Generator().manual_seed(0))
    ours = device_augment.augment_batch(images, params)
    strong = params.factors.clone()
    strong[:, :3] = 1 + 2 * (strong[:, :3] - 1)
    strong[:, 3] = 2 * strong[:, 3]
    broken = device_augment.augment_batch(images, params._replace(factors=strong))
    return output_statistics(reference), output_statistics(ours), output_statistics(broken)


# The tolerance on each per-channel statistic of the normalised pixels. Measured over
# seeds 0-4: the reference and ours differ by at most 0.04 (sampling over 300 draws, plus
# the resampling from the 224 cache and PIL's uint8 jitter); doubling the jitter strength
# moves the spread of the per-image means by 0.24 or more (and the within-image std by
# 0.1 or more); leaving out Normalize moves the means by 0.4 or more.
STAT_TOLERANCE = 0.08


def statistics_close(a, b):
    return bool((a[0] - b[0]).abs().max() < STAT_TOLERANCE)


def test_pixel_statistics_match_the_reference_pipeline(augmentation_runs):
    reference, ours, broken = augmentation_runs
    assert statistics_close(reference, ours), (reference, ours)
    assert not statistics_close(reference, broken), (reference, broken)   # the test can fail
    unnormalised = ours[0].clone()
    unnormalised[0] = (ours[0][0] * torch.tensor(device_augment.IMAGENET_STD)
                       + torch.tensor(device_augment.IMAGENET_MEAN))
    assert not statistics_close(reference, (unnormalised, ours[1]))


def test_grayscale_share_of_outputs(augmentation_runs):
    tolerance = 4 * math.sqrt(0.1 * 0.9 / 300)
    for _, gray_share in augmentation_runs[:2]:
        assert abs(gray_share - 0.1) < tolerance


def test_the_gpu_and_cpu_jitter_paths_give_the_same_images():
    """The GPU's select-from-all-four path (run here on CPU tensors) equals the CPU's
    gather-the-subsets path, sample by sample; a wrong order or factor would not."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand((24, 3, 16, 16), generator=g)
    order, factors = device_augment.sample_jitter(24, g)
    gathered = device_augment._color_jitter_gathering(x.clone(), order, factors)
    selected = device_augment._color_jitter_selecting(x.clone(), order, factors)
    assert torch.allclose(gathered, selected, atol=1e-6)
    swapped = device_augment._color_jitter_selecting(x.clone(), order.flip(1), factors)
    assert not torch.allclose(gathered, swapped, atol=1e-3)


def test_a_batch_is_a_function_of_its_seed_and_position():
    images = torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8)
    sizes = torch.tensor([[100, 80]] * 4)

    def batch(seed, index):
        generator = device_augment.batch_generator(seed, index)
        return device_augment.augment_batch(images, device_augment.draw_params(sizes, generator))

    assert torch.equal(batch(3, 7), batch(3, 7))
    assert not torch.equal(batch(3, 7), batch(3, 8))


# ---------------------------------------------------------------------------------------
# The cache

def test_cache_is_reused_and_rebuilt_when_an_image_changes(tmp_path, cache_in_tmp):
    from PIL import Image

    root = make_jpeg_tree(tmp_path / "tree")
    data_files = files_under(root)
    samples = folder.scan_tree(root).samples[0]
    first, built = decoded_cache.load_or_build(samples)
    assert built and len(first) == len(samples)
    assert files_under(root) == data_files, "nothing is written into the data directory"
    again, built = decoded_cache.load_or_build(samples)
    assert not built and again.path == first.path
    assert np.array_equal(again.images, first.images)
    for (path, label), size, row in zip(samples, again.sizes, again.images):
        with Image.open(path) as image:
            assert tuple(size) == image.size
    assert again.labels.tolist() == [label for _, label in samples]

    changed = samples[2][0]
    Image.new("RGB", (30, 20), (255, 0, 0)).save(changed)     # new size and mtime
    rebuilt, built = decoded_cache.load_or_build(samples)
    assert built and rebuilt.path != first.path
    assert tuple(rebuilt.sizes[2]) == (30, 20) and rebuilt.images[2, 0].min() > 240
    assert sorted(files_under(cache_in_tmp)) == sorted(
        os.path.basename(rebuilt.path[:-3]) + ext for ext in (".json", ".lock", ".u8")), \
        "the stale cache is removed, no temporaries are left"


@pytest.mark.parametrize("damage", ["flip_bytes", "truncate", "garbage_index"])
def test_a_corrupt_cache_is_rebuilt(tmp_path, damage):
    root = make_jpeg_tree(tmp_path / "tree", per_class=2)
    samples = folder.scan_tree(root).samples[1]
    decoded, _ = decoded_cache.load_or_build(samples)
    good = np.array(decoded.images)
    path = decoded.path
    del decoded
    if damage == "flip_bytes":
        with open(path, "r+b") as f:
            f.write(b"\xff" * 1000)
    elif damage == "truncate":
        os.truncate(path, os.path.getsize(path) - 1)
    else:
        with open(path[:-3] + ".json", "w") as f:
            f.write('{"version": 1, "count": ')
    rebuilt, built = decoded_cache.load_or_build(samples)
    assert built and np.array_equal(np.asarray(rebuilt.images), good)


def test_parallel_decoding_gives_the_same_cache(tmp_path, monkeypatch, cache_in_tmp):
    root = make_jpeg_tree(tmp_path / "tree", per_class=4)
    samples = folder.scan_tree(root).samples[0]
    monkeypatch.setattr(decoded_cache, "CHUNK", 3)
    parallel, _ = decoded_cache.load_or_build(samples, workers=2)
    monkeypatch.setenv("DOMAINBED_CACHE", str(tmp_path / "serial"))
    serial, _ = decoded_cache.load_or_build(samples, workers=1)
    assert np.array_equal(parallel.images, serial.images)
    assert np.array_equal(parallel.sizes, serial.sizes)


# ---------------------------------------------------------------------------------------
# The loaders against the default pipeline's

@pytest.fixture
def tree_dataset(tmp_path):
    """(Folder dataset with env 1 the test env and augmentation on, its FastPipeline)."""
    root = make_jpeg_tree(tmp_path / "tree", per_class=4)
    dataset = folder.Folder(root, [1], {"data_augmentation": True})
    return dataset, fast_pipeline.FastPipeline(dataset, [1], True, CPU, workers=1)


def test_evaluation_equals_torchvisions_eval_transform(tree_dataset):
    dataset, pipeline = tree_dataset
    out, in_ = misc.split_dataset(dataset[1], 3, misc.seed_hash(0, 1))
    for split in (out, in_):
        fast = list(pipeline.eval_loader(split, 4, seed=0))
        default = list(FastDataLoader(split, 4, num_workers=0))
        assert len(fast) == len(default) == len(pipeline.eval_loader(split, 4, seed=0))
        for (x_fast, y_fast), (x_default, y_default) in zip(fast, default):
            assert torch.equal(y_fast, y_default)
            assert (x_fast - x_default).abs().max() < 1.01 / 255 / min(eval_transform()
                                                                       .transforms[-1].std)


def test_augmented_evaluation_of_a_training_env_is_reproducible(tree_dataset):
    dataset, pipeline = tree_dataset
    split = misc.split_dataset(dataset[0], 3, misc.seed_hash(0, 0))[0]
    loader = pipeline.eval_loader(split, 2, seed=5)
    assert loader.augmented and not pipeline.eval_loader(
        misc.split_dataset(dataset[1], 3, 0)[0], 2, seed=5).augmented
    first, second = list(loader), list(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
    plain = [device_augment.evaluate_batch(torch.from_numpy(np.ascontiguousarray(
        pipeline.decoded[0].images[split.keys[i:i + 2]]))) for i in range(0, len(split), 2)]
    assert not all(torch.equal(a[0], b) for a, b in zip(first, plain))


@pytest.mark.parametrize("class_balanced", [False, True])
def test_streams_draw_the_default_pipelines_indices(tree_dataset, class_balanced):
    dataset, pipeline = tree_dataset
    uda, in_ = misc.split_dataset(dataset[1], 3, 7)   # test env: not augmented
    weights = misc.make_weights_for_balanced_classes(in_) if class_balanced else None
    fast = pipeline.stream(in_, weights, batch_size=5, seed=11)
    default = InfiniteDataLoader(in_, weights, batch_size=5, num_workers=0, seed=11)
    assert not fast.augmented
    for _ in range(4):
        (x_fast, y_fast), (x_default, y_default) = next(fast), next(default)
        assert torch.equal(y_fast, y_default)
        assert (x_fast - x_default).abs().max() < 0.02   # the same images, eval-transformed
    augmented = pipeline.stream(misc.split_dataset(dataset[0], 3, 7)[1], None, 5, seed=11)
    reference = InfiniteDataLoader(misc.split_dataset(dataset[0], 3, 7)[1], None, 5, 0, seed=11)
    assert augmented.augmented
    assert all(torch.equal(next(augmented)[1], next(reference)[1]) for _ in range(4))


def test_a_stream_resumes_bit_exactly(tree_dataset):
    dataset, pipeline = tree_dataset
    split = misc.split_dataset(dataset[2], 3, 7)[1]
    stream = pipeline.stream(split, None, batch_size=4, seed=3)
    for _ in range(3):
        next(stream)
    state = stream.state_dict()
    assert state == {"seed": 3, "batches_drawn": 3}
    expected = [next(stream) for _ in range(3)]
    resumed = pipeline.stream(split, None, batch_size=4, seed=3)
    resumed.load_state_dict(state)
    for (x, y), (x_expected, y_expected) in zip((next(resumed) for _ in range(3)), expected):
        assert torch.equal(x, x_expected) and torch.equal(y, y_expected)
    assert x.dtype == torch.float32 and tuple(x.shape) == (4, 3, 224, 224)
    stream.load_state_dict(state)      # rewinding a running stream works too
    assert torch.equal(next(stream)[0], expected[0][0])
    with pytest.raises(ValueError):
        resumed.load_state_dict({"seed": 4, "batches_drawn": 0})


def test_a_failing_gather_reaches_the_training_loop(tree_dataset, monkeypatch):
    dataset, pipeline = tree_dataset
    stream = pipeline.stream(dataset[0], None, batch_size=2, seed=0)
    monkeypatch.setattr(stream.gather, "rows", np.array([10**6]))
    with pytest.raises(IndexError):
        next(stream)


# ---------------------------------------------------------------------------------------
# train

def comparable(records):
    for record in records:
        record = dict(record, args=dict(record["args"]))
        for key in ("step_time", "mem_gb"):
            record.pop(key)
        record["args"].pop("output_dir")
        yield record


@pytest.fixture(scope="module")
def train_tree(tmp_path_factory):
    return make_jpeg_tree(tmp_path_factory.mktemp("train") / "tree", per_class=3)


def fast_train(data_dir, output_dir, pipeline="fast"):
    from domainbed import train

    return train(dataset="Folder", algorithm="ERM", test_envs=[0], data_dir=data_dir,
                 output_dir=output_dir, hparams=TRAIN_HPARAMS, steps=5, checkpoint_freq=2,
                 pipeline=pipeline)


def test_train_with_the_fast_pipeline_resumes_exactly(train_tree, tmp_path):
    from domainbed.training.errors import RunStopped

    with pytest.MonkeyPatch.context() as patch:   # no worker processes on a busy CPU
        patch.setattr(folder.Folder, "N_WORKERS", 0)
        default = fast_train(train_tree, tmp_path / "default", pipeline="default")
    reference = fast_train(train_tree, tmp_path / "fast")
    assert [set(r) for r in reference] == [set(r) for r in default]
    assert [r["step"] for r in reference] == [0, 2, 4]
    assert reference[0]["args"]["pipeline"] == "fast" and "pipeline" not in default[0]["args"]
    out_txt = (tmp_path / "fast" / "out.txt").read_text()
    assert "Pipeline: fast (decoded cache " in out_txt and "augmentation on cpu" in out_txt
    assert "Pipeline: default (torchvision transforms" in (tmp_path / "default" / "out.txt"
                                                           ).read_text()

    next_batch = fast_pipeline.FastInfiniteLoader.__next__

    def stop_in_step_3(self):  # SIGUSR1 in step 3, after the checkpoint of step 2
        batch = next_batch(self)
        if self.batches_drawn == 4:
            os.kill(os.getpid(), signal.SIGUSR1)
        return batch

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_pipeline.FastInfiniteLoader, "__next__", stop_in_step_3)
        with pytest.raises(RunStopped):
            fast_train(train_tree, tmp_path / "stopped")
    resumed = fast_train(train_tree, tmp_path / "stopped")
    assert "Resuming from checkpoint.pt at step 4" in (tmp_path / "stopped" / "out.txt").read_text()
    assert list(comparable(resumed)) == list(comparable(reference))


def test_fast_pipeline_refuses_a_dataset_without_images(tmp_path):
    from domainbed import train
    from domainbed.training.errors import BadInput

    with pytest.raises(BadInput) as caught:
        train(dataset="Debug28", algorithm="ERM", test_envs=[0], data_dir=None,
              output_dir=tmp_path / "out", steps=1, pipeline="fast")
    message = str(caught.value)
    assert message.startswith("--pipeline fast needs an image dataset (VLCS, PACS, OfficeHome, "
                              "TerraIncognita, DomainNet, SVIRO, Folder); Debug28")
    assert "\n" not in message and not (tmp_path / "out").exists()



def test_too_little_room_for_the_cache_is_refused_before_decoding(train_tree, tmp_path,
                                                                   monkeypatch, cache_in_tmp):
    """Every environment's bytes are checked at once; nothing is decoded or written."""
    from domainbed import train
    from domainbed.training.errors import BadInput

    real = decoded_cache.shutil.disk_usage

    def nearly_full(path):
        return real(path)._replace(free=5 * decoded_cache.IMAGE_BYTES)

    monkeypatch.setattr(decoded_cache.shutil, "disk_usage", nearly_full)
    with pytest.raises(BadInput) as caught:
        fast_train(train_tree, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith("the decoded cache of --pipeline fast needs 0.0 GB for 18 images "
                              "of 3 environments in ")
    assert "0.0 GB free: set DOMAINBED_CACHE" in message and "\n" not in message
    assert not (tmp_path / "out").exists() and files_under(cache_in_tmp) == []


@contextlib.contextmanager
def another_job_building(samples):
    """Holds the build lock of `samples`' cache, as a job decoding it would."""
    import fcntl

    directory = decoded_cache.cache_dir()
    os.makedirs(directory, exist_ok=True)
    stem, sources, _ = decoded_cache._cached(directory, samples)
    with open(stem + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield stem, sources
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def test_a_cache_another_job_is_building_is_waited_for_and_reused(tmp_path, monkeypatch,
                                                                  capsys):
    import threading

    samples = folder.scan_tree(make_jpeg_tree(tmp_path / "tree", per_class=2)).samples[0]
    decodes, result = [], []
    decode_all = decoded_cache._decode_all
    monkeypatch.setattr(decoded_cache, "_decode_all",
                        lambda *args: decodes.append(1) or decode_all(*args))
    with another_job_building(samples) as (stem, sources):
        waiting = threading.Thread(target=lambda: result.append(
            decoded_cache.load_or_build(samples, label="decoding env 0")))
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive(), "the second job waits for the lock"
        decoded_cache._build(stem, samples, sources, 1, "the other job")
    waiting.join(timeout=30)
    (images, built), = result
    assert not built and len(decodes) == 1, "decoded once, by the job that held the lock"
    assert "decoding env 0: another job is building this cache; waiting for it" in \
        capsys.readouterr().err


def test_the_room_check_leaves_out_a_cache_another_job_is_building(tmp_path, monkeypatch):
    root = make_jpeg_tree(tmp_path / "tree", per_class=2)       # 3 envs x 4 images
    dataset = folder.Folder(root, [0], {"data_augmentation": False})
    real = decoded_cache.shutil.disk_usage
    monkeypatch.setattr(decoded_cache.shutil, "disk_usage", lambda path: real(path)._replace(
        free=9 * decoded_cache.IMAGE_BYTES))                    # room for 2 envs, not 3
    with pytest.raises(decoded_cache.CacheSpaceError, match="12 images of 3 environments"):
        decoded_cache.load_environments(dataset, workers=1)
    needed = []
    monkeypatch.setattr(decoded_cache, "check_free_space",
                        lambda directory, n, what: needed.append(n))

    class BuiltElsewhere:   # what the stand-in build hands back
        path, nbytes = "built elsewhere", 0

        def __len__(self):
            return 4

    monkeypatch.setattr(decoded_cache, "_build_checked", lambda *args: (BuiltElsewhere(), False))
    with another_job_building(dataset.datasets[1].samples):
        decoded = decoded_cache.load_environments(dataset, workers=1)
    assert needed == [8 * decoded_cache.IMAGE_BYTES] and len(decoded) == 3


def test_a_disk_that_fills_while_decoding_leaves_no_temporary(tmp_path, monkeypatch,
                                                              cache_in_tmp):
    import errno

    samples = folder.scan_tree(make_jpeg_tree(tmp_path / "tree", per_class=2)).samples[0]

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decoded_cache, "_decode_all", full)
    with pytest.raises(decoded_cache.CacheSpaceError, match="set DOMAINBED_CACHE"):
        decoded_cache.load_or_build(samples)
    assert [f for f in files_under(cache_in_tmp) if not f.endswith(".lock")] == [], \
        "no partial cache is left (only the build lock's empty file)"
    monkeypatch.undo()
    monkeypatch.setenv("DOMAINBED_CACHE", str(cache_in_tmp))
    assert decoded_cache.load_or_build(samples)[1], "a later run builds the cache"
