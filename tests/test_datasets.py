"""Tests for tfxbar.datasets.

MNIST and real CIFAR-10 tests need the offline data folder in TFXBAR_DATA_DIR and are skipped
without it. Everything else uses tiny folders built here, and no test touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfxbar import datasets
from tfxbar.datasets import DATASETS, DatasetNotFoundError, load, normalize

SHARED_DATA_DIR = os.environ.get("TFXBAR_DATA_DIR")
CIFAR_CLASSES = DATASETS["cifar10"].class_names
FAKE_PER_CLASS = {"train": 4, "test": 2}
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tfds-cache")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    # Tests pass the data folder explicitly, and never write to ~/.cache.
    monkeypatch.delenv("TFXBAR_DATA_DIR", raising=False)
    monkeypatch.setenv("TFXBAR_CACHE_DIR", str(cache_dir))


def _shared(name: str, marker: str) -> Path:
    if not SHARED_DATA_DIR or not (Path(SHARED_DATA_DIR) / name / marker).exists():
        pytest.skip(f"TFXBAR_DATA_DIR is unset or has no {name}/")
    return Path(SHARED_DATA_DIR)


@pytest.fixture
def mnist_root() -> Path:
    return _shared("mnist", "t10k-labels-idx1-ubyte.gz")


def _write_cifar_tree(root: Path, classes: tuple[str, ...] = CIFAR_CLASSES) -> Path:
    """Build root/cifar10/<split>/<class>/NNNN.png; each image encodes its class and a unique id:
    red = 20 * class index, green = id (unique across both splits)."""
    uid = 0
    for split, per_class in FAKE_PER_CLASS.items():
        for label, cls in enumerate(classes):
            folder = root / "cifar10" / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                image = np.zeros((32, 32, 3), np.uint8)
                image[..., 0] = 20 * label
                image[..., 1] = uid
                uid += 1
                (folder / f"{i:04d}.png").write_bytes(tf.io.encode_png(image).numpy())
    return root


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_cifar_tree(tmp_path_factory.mktemp("fake-data"))


def _ids(x: np.ndarray) -> list[int]:
    return x[:, 0, 0, 1].astype(int).tolist()


# --- MNIST through the tfds builder and its manual_dir ------------------------------------------


def test_mnist_test_split(mnist_root: Path, cache_dir: Path) -> None:
    x, y = load("mnist", "test", data_dir=mnist_root, cache_dir=cache_dir)
    assert x.shape == (10000, *DATASETS["mnist"].image_shape) == (10000, 28, 28, 1)
    assert x.dtype == np.uint8 and y.dtype == np.int64 and y.shape == (10000,)
    assert x.min() == 0 and x.max() == 255
    assert np.bincount(y).tolist() == MNIST_TEST_CLASS_COUNTS


def test_second_load_is_served_from_cache(mnist_root: Path, cache_dir: Path, tmp_path: Path):
    x1, y1 = load("mnist", "test", data_dir=mnist_root, cache_dir=cache_dir)
    prepared = cache_dir / "mnist" / "3.0.1"
    info = prepared / "dataset_info.json"
    assert info.is_file()
    before = sorted(p.name for p in prepared.iterdir()), info.stat().st_mtime_ns

    # No raw files anywhere (and the cache comes from $TFXBAR_CACHE_DIR): only the cache can
    # serve this, and it must not be rewritten.
    x2, y2 = load("mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert (sorted(p.name for p in prepared.iterdir()), info.stat().st_mtime_ns) == before
    # Nothing half-prepared or scratch left behind next to it.
    leftovers = [p.name for p in cache_dir.rglob("*") if "incomplete" in p.name]
    leftovers += [p.name for p in cache_dir.iterdir() if p.name.startswith(".tfxbar-extract")]
    assert leftovers == []
    assert not (cache_dir / "downloads").exists()


def test_mnist_slicing(mnist_root: Path, cache_dir: Path) -> None:
    x, y = load("mnist", "test", data_dir=mnist_root, cache_dir=cache_dir)
    head_x, head_y = load("mnist", "test[:1000]", data_dir=mnist_root, cache_dir=cache_dir)
    assert head_x.shape == (1000, 28, 28, 1)
    np.testing.assert_array_equal(head_y, y[:1000])
    tail_x, _ = load("mnist", "test[-500:]", data_dir=mnist_root, cache_dir=cache_dir)
    np.testing.assert_array_equal(tail_x, x[-500:])
    assert len(load("mnist", "test[:10%]", data_dir=mnist_root, cache_dir=cache_dir)[1]) == 1000


# --- missing data -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_dataset_names_folder_and_files(name: str, tmp_path: Path) -> None:
    empty, cache = tmp_path / "data", tmp_path / "cache"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as raised:
        load(name, "test", data_dir=empty, cache_dir=cache)
    assert isinstance(raised.value, FileNotFoundError)
    message = str(raised.value)
    assert repr(name) in message and str(empty / name) in message
    assert "TFXBAR_DATA_DIR" in message
    expected = CIFAR_CLASSES if name == "cifar10" else datasets.IDX_FILES
    for item in expected:
        assert item in message
    if name == "cifar10":
        assert "train" in message and "*.png" in message
    assert not (cache / name).exists()


def test_partial_mnist_folder_lists_missing_file(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    for filename in datasets.IDX_FILES[:3]:
        (tmp_path / "mnist" / filename).touch()
    with pytest.raises(DatasetNotFoundError, match=r"Missing: t10k-labels-idx1-ubyte\.gz\n"):
        load("mnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_cifar_folder_without_pngs_is_named(tmp_path: Path) -> None:
    root = _write_cifar_tree(tmp_path)
    for png in (root / "cifar10" / "test" / "cat").iterdir():
        png.unlink()
    with pytest.raises(DatasetNotFoundError) as raised:
        load("cifar10", "test", data_dir=root)
    problem = str(raised.value).splitlines()[-2]
    assert problem == f"Missing or without .png files: {root / 'cifar10' / 'test' / 'cat'}"
    assert len(load("cifar10", "train", data_dir=root)[1]) == 40  # only the split asked for counts


def test_data_dir_argument_overrides_env(
    fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFXBAR_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"\$TFXBAR_DATA_DIR"):
        load("cifar10", "test")
    assert len(load("cifar10", "test", data_dir=fake_root)[1]) == 20
    monkeypatch.setenv("TFXBAR_DATA_DIR", str(fake_root))
    assert len(load("cifar10", "test")[1]) == 20
    with pytest.raises(DatasetNotFoundError, match="`data_dir` argument"):
        load("cifar10", "test", data_dir=tmp_path)


@pytest.mark.parametrize("failure", [tfds.download.DownloadError("no route"), ConnectionError("no network")])
def test_download_failure_without_data_dir(
    failure: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(tfds.builder_cls("mnist"), "download_and_prepare", offline)
    with pytest.raises(DatasetNotFoundError, match="export TFXBAR_DATA_DIR=") as raised:
        load("mnist", "test", cache_dir=tmp_path)
    assert raised.value.__cause__ is failure
    for filename in datasets.IDX_FILES:
        assert f"mnist/{filename}" in str(raised.value)


# --- CIFAR-10 through tfds.ImageFolder ----------------------------------------------------------


def test_cifar_image_folder_labels_follow_standard_order(fake_root: Path) -> None:
    x, y = load("cifar10", "train", data_dir=fake_root)
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0, 0, 0] // 20, y)  # the folder's class == its label
    assert np.bincount(y).tolist() == [4] * 10


def test_cifar_is_shuffled_deterministically(fake_root: Path) -> None:
    x0, y0 = load("cifar10", "train", data_dir=fake_root)
    x0_again, _ = load("cifar10", "train", data_dir=fake_root, shuffle_seed=0)
    x1, _ = load("cifar10", "train", data_dir=fake_root, shuffle_seed=1)
    assert _ids(x0) == _ids(x0_again)
    assert _ids(x0) != _ids(x1) and sorted(_ids(x0)) == sorted(_ids(x1))
    assert np.count_nonzero(np.diff(y0)) > 20  # grouped by class would give 9 changes


def test_cifar_slices_are_taken_before_shuffling(fake_root: Path) -> None:
    x_fit, _ = load("cifar10", "train[:30]", data_dir=fake_root, shuffle_seed=0)
    x_val, _ = load("cifar10", "train[-10:]", data_dir=fake_root, shuffle_seed=1)
    x_all, _ = load("cifar10", "train", data_dir=fake_root)
    assert len(x_fit) == 30 and len(x_val) == 10
    assert sorted(_ids(x_fit) + _ids(x_val)) == sorted(_ids(x_all))
    assert len(load("cifar10", "train[:50%]", data_dir=fake_root)[1]) == 20
    assert len(load("cifar10", "train+test", data_dir=fake_root)[1]) == 60
    with pytest.raises(ValueError, match="40 examples"):
        load("cifar10", "train[:100]", data_dir=fake_root)


def test_cifar_as_tensors(fake_root: Path) -> None:
    x, y = load("cifar10", "test", data_dir=fake_root, as_numpy=False)
    assert isinstance(x, tf.Tensor) and isinstance(y, tf.Tensor)
    assert x.shape == (20, 32, 32, 3) and y.dtype == tf.int64


def test_cifar_extra_class_folder_is_rejected(tmp_path: Path) -> None:
    root = _write_cifar_tree(tmp_path, (*CIFAR_CLASSES, "zebra"))
    with pytest.raises(ValueError, match="zebra"):
        load("cifar10", "test", data_dir=root)


def test_real_cifar10_test_split() -> None:
    root = _shared("cifar10", "test/truck")
    x, y = load("cifar10", "test", data_dir=root)
    assert x.shape == (10000, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    # Per-channel means published in the data folder's README.
    np.testing.assert_allclose(x.reshape(-1, 3).mean(0), [126.02, 123.71, 114.85], atol=0.01)


# --- arguments and helpers ----------------------------------------------------------------------


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="'mnist', 'fashion_mnist', 'cifar10'"):
        load("svhn")


@pytest.mark.parametrize("split", ["validation", "train[:abc]", "test[:20000]", "all[:5]"])
def test_bad_split_lists_choices(split: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'train' or 'test'.*'train\[-5000:\]'"):
        load("mnist", split, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_normalize() -> None:
    x = normalize(np.array([[0, 51, 255]], np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[0.0, 0.2, 1.0]])
    with pytest.raises(TypeError, match="uint8"):
        normalize(x)


def test_dataset_specs() -> None:
    assert {name: spec.num_classes for name, spec in DATASETS.items()} == dict.fromkeys(
        ("mnist", "fashion_mnist", "cifar10"), 10
    )
    assert CIFAR_CLASSES[0] == "airplane" and CIFAR_CLASSES[-1] == "truck"
    assert DATASETS["cifar10"].splits == {"train": 50000, "test": 10000}
