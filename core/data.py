"""Datasets as numpy arrays: images NHWC float32 in [0, 1], labels int64.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (or any directory with the four
idx files); CIFAR-10/100 from a user path in the standard python-pickle layout; ``synthetic``
is a small deterministic set for unit tests.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UsageError

FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "synthetic")


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])


def load_dataset(name: str, path: str | os.PathLike | None = None) -> Dataset:
    if name == "fashion-mnist":
        return _fashion_mnist(Path(path) if path else FASHION_MNIST_DEFAULT)
    if name in ("cifar10", "cifar100"):
        if not path:
            raise UsageError(f"{name} needs a path: pass --data-path DIR (the extracted cifar-10-batches-py or cifar-100-python folder)")
        return _cifar(name, Path(path))
    if name == "synthetic":
        return synthetic()
    raise UsageError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def synthetic(n_train: int = 512, n_test: int = 256, shape=(28, 28, 1), num_classes: int = 10, seed: int = 0) -> Dataset:
    """Class-dependent blobs: learnable in a few steps, so tests can check that training helps."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((num_classes, *shape), dtype=np.float32)

    def draw(n):
        labels = rng.integers(0, num_classes, n)
        noise = rng.normal(0, 0.15, (n, *shape)).astype(np.float32)
        return np.clip(prototypes[labels] + noise, 0, 1).astype(np.float32), labels.astype(np.int64)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return Dataset("synthetic", x_train, y_train, x_test, y_test, num_classes)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"Fashion-MNIST not found at {directory} (missing {stem}[.gz]); "
        "install it with 'sudo apt-get install dataset-fashion-mnist' or pass --data-path DIR"
    )


def _fashion_mnist(directory: Path) -> Dataset:
    files = {stem: _find(directory, stem) for stem in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    try:
        x_train = _read_idx(files["train-images-idx3-ubyte"])
        y_train = _read_idx(files["train-labels-idx1-ubyte"])
        x_test = _read_idx(files["t10k-images-idx3-ubyte"])
        y_test = _read_idx(files["t10k-labels-idx1-ubyte"])
    except (OSError, EOFError, ValueError) as exc:
        raise UsageError(f"Fashion-MNIST files in {directory} are damaged ({exc}); reinstall dataset-fashion-mnist") from None
    scale = np.float32(1 / 255)
    return Dataset("fashion-mnist", (x_train[..., None] * scale), y_train.astype(np.int64),
                   (x_test[..., None] * scale), y_test.astype(np.int64), 10)


def _cifar(name: str, directory: Path) -> Dataset:
    if name == "cifar10":
        train_files, test_files, label_key, classes = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10
    else:
        train_files, test_files, label_key, classes = ["train"], ["test"], b"fine_labels", 100
    missing = [f for f in train_files + test_files if not (directory / f).is_file()]
    if missing:
        raise UsageError(
            f"{name}: {directory} lacks {missing[0]}; point --data-path at the extracted "
            f"{'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'} folder"
        )

    def read(files):
        xs, ys = [], []
        for filename in files:
            with open(directory / filename, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    return Dataset(name, x_train, y_train, x_test, y_test, classes)
