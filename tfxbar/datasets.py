"""MNIST, Fashion-MNIST and CIFAR-10 as NumPy arrays, loaded through tensorflow-datasets.

Online, tensorflow-datasets (tfds) downloads and prepares the data as usual. Offline, point the
`TFXBAR_DATA_DIR` environment variable (or the `data_dir` argument) at a folder laid out like this:

```
<data_dir>/
  mnist/           train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
                   t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
  fashion_mnist/   the same four file names, with the Fashion-MNIST files
  cifar10/         train/<class>/*.png  test/<class>/*.png   (one folder per class)
```

MNIST and Fashion-MNIST are read by tfds's own builders from that folder (its "manual
download directory"), so tfds still checks the published checksums. The prepared dataset is
cached in `cache_dir`, `TFXBAR_CACHE_DIR` or `~/.cache/tfxbar/tfds`, in that order of
preference; once prepared it is served from there and the raw files are no longer needed. tfds
prepares into a temporary folder and renames it when done, so an interrupted preparation never
leaves a half-written dataset behind. CIFAR-10 is read straight from the PNG files with
`tfds.ImageFolder` on every call (about 2 s for the test split, 18 s for the train split on 2 cores).

Example:

```python
from tfxbar import datasets

x_train, y_train = datasets.load("mnist", "train[:-5000]")
x_val, y_val = datasets.load("mnist", "train[-5000:]")
x_train = datasets.normalize(x_train)  # float32 in [0, 1], shape (55000, 28, 28, 1)
```
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, overload

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

__all__ = ["DATASETS", "DatasetNotFoundError", "DatasetSpec", "load", "normalize"]

DATA_DIR_ENV = "TFXBAR_DATA_DIR"
CACHE_DIR_ENV = "TFXBAR_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/tfxbar/tfds"

PathLike = str | os.PathLike[str]

# The original distribution file names, which tfds also registers for its two builders.
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What `load` returns for one dataset.

    Arguments:
        name: the dataset name accepted by `load`.
        image_shape: shape of one image, height, width, channels.
        class_names: class names, indexed by label.
        num_train: number of examples in the "train" split.
        num_test: number of examples in the "test" split.
    """

    name: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    num_train: int
    num_test: int

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def splits(self) -> dict[str, int]:
        """Number of examples per split."""
        return {"train": self.num_train, "test": self.num_test}


DATASETS: Mapping[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), tuple(str(d) for d in range(10)), 60000, 10000),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        (28, 28, 1),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        60000,
        10000,
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        (32, 32, 3),
        (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        50000,
        10000,
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither in the offline data folder nor downloadable.

    The message names the dataset, the folder it was looked for in and the files expected there.
    """


@overload
def load(
    name: str,
    split: str = "train",
    *,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    shuffle_seed: int | None = 0,
    as_numpy: Literal[True] = True,
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def load(
    name: str,
    split: str = "train",
    *,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    shuffle_seed: int | None = 0,
    as_numpy: Literal[False],
) -> tuple[tf.Tensor, tf.Tensor]: ...


def load(
    name: str,
    split: str = "train",
    *,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    shuffle_seed: int | None = 0,
    as_numpy: bool = True,
) -> tuple[np.ndarray, np.ndarray] | tuple[tf.Tensor, tf.Tensor]:
    """Load a whole split of a dataset into memory.

    Arguments:
        name: "mnist", "fashion_mnist" or "cifar10".
        split: "train" or "test", optionally sliced with the tfds split syntax, e.g.
            "train[:5000]", "train[-5000:]", "test[:10%]" or "train[:10%]+test[:10%]".
        data_dir: offline data folder (see the module docstring). Defaults to the
            `TFXBAR_DATA_DIR` environment variable; if neither is set, tfds downloads the data.
        cache_dir: where tfds keeps prepared MNIST / Fashion-MNIST (and downloaded CIFAR-10).
            Defaults to `TFXBAR_CACHE_DIR`, then `~/.cache/tfxbar/tfds`.
        shuffle_seed: CIFAR-10 only: seed of a random permutation applied to the returned
            examples, or None to keep the order tfds reads them in. (The offline PNG folders
            are grouped by class; `tfds.ImageFolder` already mixes them with one fixed
            permutation per split, this adds a seeded one on top.) Slices are taken before
            shuffling, so "train[:-5000]" and "train[-5000:]" are disjoint for any seeds.
            MNIST and Fashion-MNIST always come in tfds's own fixed order.
        as_numpy: return NumPy arrays (the default) or eager `tf.Tensor`s.

    Returns:
        `(images, labels)`: uint8 images of shape `(N, *DATASETS[name].image_shape)` and int64
        labels of shape `(N,)`, label `i` being `DATASETS[name].class_names[i]`.

    Raises:
        ValueError: unknown `name`, or a `split` that is not a (sliced) "train" / "test", or
            CIFAR-10 class folders that are not exactly the ten CIFAR-10 classes.
        DatasetNotFoundError: the offline data folder lacks the dataset's files or, without
            an offline folder, the download failed (tfds retries for about 3 minutes first).
            A file that is present but corrupt fails tfds's checksum test instead, with its own
            `NonMatchingChecksumError`.

    Example:

    ```python
    x_test, y_test = load("cifar10", "test", data_dir="/data")  # (10000, 32, 32, 3) uint8
    ```
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(map(repr, DATASETS))}.")
    spec = DATASETS[name]
    needed_splits = {s for s, _, _ in _absolute_split(split, spec.splits, name)}

    offline, origin = _resolve_data_dir(data_dir)
    cache = Path(cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()

    if name == "cifar10" and offline is not None:
        _check_image_folder(offline, origin, needed_splits)
        images, labels = _load_image_folder(offline / name, split)
    else:
        images, labels = _load_tfds_builder(name, split, offline, origin, cache)

    if name == "cifar10" and shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(int(tf.shape(labels)[0]))
        images, labels = tf.gather(images, order), tf.gather(labels, order)
    if as_numpy:
        return images.numpy(), labels.numpy()
    return images, labels


def normalize(images: np.ndarray) -> np.ndarray:
    """Scale uint8 images to float32 in [0, 1].

    Arguments:
        images: uint8 array (or eager tensor), as returned by `load`.

    Returns:
        `images / 255` as float32, same shape.

    Raises:
        TypeError: `images` is not uint8 (e.g. already normalized).

    Example:

    ```python
    x = normalize(load("mnist", "test")[0])
    ```
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"normalize() expects uint8 images, got {images.dtype}.")
    return images.astype(np.float32) / np.float32(255)


def _absolute_split(split: str, sizes: Mapping[str, int], name: str) -> list[tuple[str, int, int]]:
    """Resolve a tfds split spec to `(split_name, start, stop)` triples with tfds's own parser."""
    split_dict = tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in sizes.items()]
    )
    try:
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(split_dict)
    except (ValueError, NotImplementedError) as error:
        raise ValueError(
            f"Invalid split {split!r} for {name!r}: {error} Valid splits: "
            f"{' or '.join(map(repr, sizes))}, optionally sliced like 'train[:5000]', "
            "'train[-5000:]' or 'test[:10%]'."
        ) from None
    return [
        (str(i.splitname), i.from_ or 0, sizes[str(i.splitname)] if i.to is None else i.to)
        for i in instructions
    ]


def _resolve_data_dir(data_dir: PathLike | None) -> tuple[Path | None, str]:
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the `data_dir` argument"
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser(), f"${DATA_DIR_ENV}"
    return None, ""


def _expected_layout(name: str, folder: PathLike) -> str:
    """Describe the files `name` needs in its offline folder, `<data_dir>/<name>`."""
    if name != "cifar10":
        files = "".join(f"\n  {os.path.join(folder, f)}" for f in IDX_FILES)
        return f"the original {name} files in the folder {folder}:{files}"
    classes = ", ".join(DATASETS["cifar10"].class_names)
    return (
        f"one 32x32 RGB PNG per image in {folder}/{{train,test}}/<class>/*.png, i.e.\n"
        f"  {os.path.join(folder, 'train', '<class>', '*.png')}\n"
        f"  {os.path.join(folder, 'test', '<class>', '*.png')}\n"
        f"with one folder per class: {classes}."
    )


def _not_found(name: str, root: Path, origin: str, problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Dataset {name!r} not found in the offline data folder {root} (set by {origin}).\n"
        f"Expected {_expected_layout(name, root / name)}\n{problem}\n"
        f"Put the files there, or point {DATA_DIR_ENV} (or `data_dir=`) at a folder that has "
        f"them: `export {DATA_DIR_ENV}=/path/to/data` with /path/to/data/{name}/ laid out as "
        "above."
    )


def _check_idx_files(name: str, root: Path, origin: str) -> None:
    missing = [f for f in IDX_FILES if not (root / name / f).is_file()]
    if missing:
        raise _not_found(name, root, origin, "Missing: " + ", ".join(missing))


def _check_image_folder(root: Path, origin: str, splits: set[str]) -> None:
    def has_png(directory: Path) -> bool:
        return directory.is_dir() and any(p.suffix.lower() == ".png" for p in directory.iterdir())

    folder = root / "cifar10"
    classes = DATASETS["cifar10"].class_names
    missing: list[str] = []
    for split in sorted(splits):
        if (folder / split).is_dir():
            missing += [str(folder / split / c) for c in classes if not has_png(folder / split / c)]
        else:  # name the top-most missing folder only
            missing.append(str(folder / split if folder.is_dir() else folder))
    missing = list(dict.fromkeys(missing))
    if missing:
        problem = "Missing or without .png files: " + ", ".join(missing)
        raise _not_found("cifar10", root, origin, problem)


def _load_image_folder(folder: Path, split: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Read a `<split>/<class>/*.png` tree with tfds.ImageFolder.

    ImageFolder has no sub-split support, so slices are resolved with tfds's split parser and
    applied to its (fixed, already class-mixed) example order before any PNG is decoded.
    """
    spec = DATASETS["cifar10"]
    builder = tfds.ImageFolder(os.fspath(folder), shape=spec.image_shape, dtype=tf.uint8)
    found = tuple(builder.info.features["label"].names)
    if found != spec.class_names:
        raise ValueError(
            f"The class folders in {folder} give the labels {list(found)}, but CIFAR-10 needs "
            f"exactly {list(spec.class_names)} (label 0 to 9, alphabetical = standard order). "
            "Remove or rename the other folders."
        )
    sizes = {s: info.num_examples for s, info in builder.info.splits.items()}
    bounds = _absolute_split(split, sizes, "cifar10")
    parts = [
        builder.as_dataset(split=s, as_supervised=True).skip(start).take(stop - start)
        for s, start, stop in bounds
    ]
    count = sum(stop - start for _, start, stop in bounds)
    if count == 0:
        return tf.zeros((0, *spec.image_shape), tf.uint8), tf.zeros((0,), tf.int64)
    return functools.reduce(tf.data.Dataset.concatenate, parts).batch(count).get_single_element()


def _load_tfds_builder(
    name: str, split: str, offline: Path | None, origin: str, cache: Path
) -> tuple[tf.Tensor, tf.Tensor]:
    """Load a registered tfds dataset, preparing it into `cache` first if needed."""
    builder = tfds.builder(name, data_dir=os.fspath(cache))
    if not builder.is_prepared():
        if offline is not None:
            _prepare_offline(builder, name, offline, origin, cache)
        else:
            try:
                builder.download_and_prepare()
            except (tfds.download.DownloadError, OSError) as error:
                raise DatasetNotFoundError(
                    f"tensorflow-datasets could not download and prepare {name!r} into {cache} "
                    f"({type(error).__name__}: {error}).\nWithout internet access, put "
                    f"{_expected_layout(name, f'/path/to/data/{name}')}\nand set "
                    f"`export {DATA_DIR_ENV}=/path/to/data` (or pass `data_dir=`)."
                ) from error
    return builder.as_dataset(split=split, as_supervised=True, batch_size=-1)


def _prepare_offline(
    builder: tfds.core.DatasetBuilder, name: str, root: Path, origin: str, cache: Path
) -> None:
    _check_idx_files(name, root, origin)
    cache.mkdir(parents=True, exist_ok=True)
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(root / name), try_download_gcs=False)
    # tfds would keep ~50 MB of decompressed raw files under <cache>/downloads; use a scratch dir.
    with tempfile.TemporaryDirectory(prefix=".tfxbar-extract-", dir=cache) as scratch:
        builder.download_and_prepare(download_dir=scratch, download_config=config)
