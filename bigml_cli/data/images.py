"""Image datasets: MNIST, Fashion-MNIST, CIFAR-10/100 (official layouts), sklearn digits, image folders."""

import gzip
import pickle
import tarfile
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np

from bigml_cli.data.base import (DATASETS, Dataset, class_folders, files_in, make_image_dataset, names_by_split, read_many,
                                 split, sub_folders, toy_images)
from bigml_cli.data.download import fetch
from bigml_cli.errors import UserError

KERAS_DATA = "https://storage.googleapis.com/tensorflow/tf-keras-datasets"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_SIDE = 256  # image folders: the longest side of the default input size (data.image_size sets any size)


def corrupt(path: Union[str, Path], err: Any) -> UserError:
    return UserError(f"{path} is corrupt or truncated ({type(err).__name__}); delete it and download "
                     "or copy it again")


def tiny_mnist(root: Path) -> None:
    """A few learnable 28x28 images in mnist.npz's layout (x_train, y_train, x_test, y_test)."""
    x_train, y_train = toy_images(60, (28, 28), 10)
    x_test, y_test = toy_images(20, (28, 28), 10, seed=1)
    np.savez(root / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


@DATASETS.register(layout="mnist.npz", tiny_copy=tiny_mnist)
def mnist(cfg: Any, root: Union[str, Path]) -> Dataset:
    """MNIST handwritten digits, 28x28 grayscale, 10 classes (Keras layout: mnist.npz)."""
    path = root / "mnist.npz"
    if not path.exists():
        fetch(f"{KERAS_DATA}/mnist.npz", path,
              "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1", "sha256", "mnist.npz",
              f"put mnist.npz (Keras layout: x_train, y_train, x_test, y_test) in {root} or pass --data-dir")
    try:
        with np.load(path) as d:
            x_train, y_train, x_test, y_test = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    except Exception as e:  # zipfile.BadZipFile, EOFError, KeyError, ValueError...
        raise corrupt(path, e) from None
    return make_image_dataset("mnist", [str(i) for i in range(10)], x_train[..., None], y_train,
                              x_test[..., None], y_test, cfg, augment="none")


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """An IDX file (the MNIST family's format), gzip-compressed."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        ndim = raw[3]
        dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except Exception as e:
        raise corrupt(path, e) from None


FASHION_FILES = {  # md5s published in github.com/zalandoresearch/fashion-mnist
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def tiny_fashion_mnist(root: Path) -> None:
    """A few images in fashion-mnist/'s four gzipped IDX files."""
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = toy_images(60, (28, 28), 10)
    xt, yt = toy_images(20, (28, 28), 10, seed=3)
    for name, arr in zip(FASHION_FILES, (x, y, xt, yt)):
        write_idx(folder / name, arr)


def write_idx(path: Path, arr: np.ndarray) -> None:
    """`arr` as a gzipped IDX file of unsigned bytes, as read_idx reads them."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@DATASETS.register(layout="fashion-mnist/t10k-labels-idx1-ubyte.gz", tiny_copy=tiny_fashion_mnist)
def fashion_mnist(cfg: Any, root: Union[str, Path]) -> Dataset:
    """Fashion-MNIST clothing images, 28x28 grayscale, 10 classes (fashion-mnist/*-ubyte.gz)."""
    folder = root / "fashion-mnist"
    for name, md5 in FASHION_FILES.items():
        if not (folder / name).exists():
            fetch(f"{KERAS_DATA}/fashion-mnist/{name}", folder / name, md5, "md5", f"fashion-mnist/{name}",
                  f"put the four official files ({', '.join(FASHION_FILES)}) in {folder}")
    x_train, y_train, x_test, y_test = (read_idx(folder / n) for n in FASHION_FILES)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]
    return make_image_dataset("fashion_mnist", names, x_train[..., None], y_train, x_test[..., None],
                              y_test, cfg, augment="none")


class _ArraysOnly(pickle.Unpickler):
    """CIFAR batches are pickled dicts of bytes, lists and NumPy arrays: allow only what rebuilds those."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle(path: Union[str, Path]) -> Any:
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="bytes").load()
    except Exception as e:
        raise corrupt(path, e) from None


def cifar_arrays(batch: Any, path: Union[str, Path], label_key: str) -> tuple:
    try:
        data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(data), np.asarray(batch[label_key], np.int64)
    except Exception as e:
        raise corrupt(path, e) from None


def fetch_cifar(root: Union[str, Path], folder: Union[str, Path], archive: Union[str, Path], md5: str, files: list) -> None:
    """Download and unpack an official CIFAR tarball when its folder is missing."""
    if all((root / folder / f).exists() for f in files):
        return
    tar_path = fetch(f"https://www.cs.toronto.edu/~kriz/{archive}", root / archive, md5, "md5",
                     f"{folder}/", f"put the official {folder}/ ({', '.join(files)}) in {root}, "
                     f"or pass --data-dir")
    with tarfile.open(tar_path) as t:
        t.extractall(root, filter="data")
    tar_path.unlink()


def write_cifar_batch(path: Path, x: np.ndarray, labels: dict) -> None:
    """A pickled CIFAR batch: rows of R, then G, then B planes, and the label lists given."""
    data = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"data": data, **labels}, f, protocol=3)


def write_tiny_cifar(folder: Path, files: list, label_key: bytes, meta: tuple, classes: int, per_file: int) -> None:
    """A few images in a CIFAR folder: each of `files` a pickled batch with labels under `label_key`, and the
    meta file `meta` = (its name, the key of its class names)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(files):
        x, y = toy_images(per_file, (32, 32, 3), classes, seed=i)
        write_cifar_batch(folder / name, x, {label_key: [int(v) for v in y]})
    with open(folder / meta[0], "wb") as f:
        pickle.dump({meta[1]: [f"class{i}".encode() for i in range(classes)]}, f, protocol=3)


def tiny_cifar10(root: Path) -> None:
    """A few images in cifar-10-batches-py/'s pickled batches."""
    write_tiny_cifar(root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                     b"labels", ("batches.meta", b"label_names"), 10, 20)


@DATASETS.register(layout="cifar-10-batches-py/test_batch", tiny_copy=tiny_cifar10)
def cifar10(cfg: Any, root: Union[str, Path]) -> Dataset:
    """CIFAR-10, 32x32 colour images, 10 classes (official cifar-10-batches-py/)."""
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    fetch_cifar(root, "cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                files)
    folder = root / "cifar-10-batches-py"
    parts = [cifar_arrays(read_pickle(folder / f), folder / f, b"labels") for f in files[:5]]
    x_test, y_test = cifar_arrays(read_pickle(folder / "test_batch"), folder / "test_batch", b"labels")
    names = [n.decode() for n in read_pickle(folder / "batches.meta")[b"label_names"]]
    return make_image_dataset("cifar10", names, np.concatenate([p[0] for p in parts]),
                              np.concatenate([p[1] for p in parts]), x_test, y_test, cfg, augment="crop_flip")


def tiny_cifar100(root: Path) -> None:
    """A few images in cifar-100-python/'s pickled train, test and meta files."""
    write_tiny_cifar(root / "cifar-100-python", ["train", "test"], b"fine_labels", ("meta", b"fine_label_names"),
                     100, 200)


@DATASETS.register(layout="cifar-100-python/test", tiny_copy=tiny_cifar100)
def cifar100(cfg: Any, root: Union[str, Path]) -> Dataset:
    """CIFAR-100, 32x32 colour images, 100 classes (official cifar-100-python/)."""
    files = ["train", "test", "meta"]
    fetch_cifar(root, "cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", files)
    folder = root / "cifar-100-python"
    x_train, y_train = cifar_arrays(read_pickle(folder / "train"), folder / "train", b"fine_labels")
    x_test, y_test = cifar_arrays(read_pickle(folder / "test"), folder / "test", b"fine_labels")
    names = [n.decode() for n in read_pickle(folder / "meta")[b"fine_label_names"]]
    return make_image_dataset("cifar100", names, x_train, y_train, x_test, y_test, cfg, augment="crop_flip")


@DATASETS.register(layout=None, ships_with="scikit-learn", tiny_copy=None)
def digits(cfg: Any, root: Union[str, Path]) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, ships with the package: no download)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]  # 0..16 -> 0..255
    x_train, y_train, x_test, y_test = split(x, d.target, cfg.test_fraction, seed=0)
    return make_image_dataset("digits", [str(i) for i in range(10)], x_train, y_train, x_test, y_test, cfg,
                              augment="none")


class UnreadableImage(UserError):
    def __init__(self, path, reason):
        self.path, self.reason = path, reason
        super().__init__(f"{path} is not a readable image ({reason}); give a PNG or JPEG file")


def read_image(path: Union[str, Path], size: Any = None, channels: Any = None) -> np.ndarray:
    """An image file as uint8 (H, W, C), resized to `size` (H, W) and converted to `channels` (1: grayscale,
    3: RGB, dropping any alpha) when given, as a folder of mixed images or a user's own photo needs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else
                                  "L" if img.mode in ("1", "I", "I;16", "F") else "RGB")
            if channels is not None and len(img.getbands()) != channels:
                img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(img, np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(path, type(e).__name__) from None
    return arr[..., None] if arr.ndim == 2 else arr


class ImageFolder(NamedTuple):
    classes: list  # the sub-folder names
    images: list  # uint8 (H, W, C) arrays
    labels: list  # class indices
    files: list  # the path of each image
    unreadable: list  # 'PATH (Reason)' of each file left out


def read_folder(folder: Union[str, Path], size: Any, channels: Any) -> ImageFolder:
    """The images of a folder with one sub-folder per class. A file that is not a readable image is left out
    and listed in `unreadable`: scraped and downloaded photo collections often hold a few (Kaggle's
    cats-vs-dogs has two), and one should not stop a run."""
    classes = sub_folders(folder)
    labelled = [(f, label) for label, name in enumerate(classes) for f in files_in(folder / name, IMAGE_SUFFIXES)]

    def read(f):
        try:
            return read_image(f, size, channels)
        except UnreadableImage as e:
            return e

    xs, ys, files, unreadable = [], [], [], []
    for (f, label), img in zip(labelled, read_many(read, [f for f, _ in labelled], f"images in {folder}")):
        if isinstance(img, UnreadableImage):
            unreadable.append(f"{img.path} ({img.reason})")
        else:
            xs.append(img)
            ys.append(label)
            files.append(str(f))
    return ImageFolder(classes, xs, ys, files, unreadable)


def unreadable_listing(unreadable: list) -> str:
    return ", ".join(unreadable[:3]) + (f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else "")


def unreadable_notes(unreadable: list) -> list:
    """[the line that says which files a folder's loading left out], or [] when it left none out."""
    if not unreadable:
        return []
    return [f"note: left out {len(unreadable)} file(s) that are not readable images: "
            f"{unreadable_listing(unreadable)}; delete or replace them to silence this"]


def _header(f):
    """((height, width), grayscale) from an image file's header, or None when it does not open."""
    from PIL import Image

    try:
        with Image.open(f) as img:
            return (img.height, img.width), img.mode in ("L", "1", "I", "I;16", "F")
    except Exception:
        return None  # read_folder lists it


def _common_size_and_channels(files):
    """The most common (height, width) among the readable images (headers only), and 1 or 3 channels;
    None when no file is a readable image."""
    from collections import Counter

    headers = [h for h in read_many(_header, files, "image sizes") if h]
    if not headers:
        return None, None
    size = Counter(s for s, _ in headers).most_common(1)[0][0]
    return size, 1 if sum(gray for _, gray in headers) > len(headers) / 2 else 3


def fit_within(size: Any, side: int) -> tuple:
    """(height, width) scaled down, aspect kept, so that neither exceeds `side`: phone photos (4032 x 3024)
    would otherwise become the model's input size."""
    h, w = size
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def load_image_folder(path: Path, cfg: Any) -> Dataset:
    """An image folder: one sub-folder per class, optionally split into train/ and test/."""
    train_dir, test_dir, classes = class_folders(path, "image")
    files = [f for c in classes for f in files_in(train_dir / c, IMAGE_SUFFIXES)]
    if not files:
        raise UserError(f"image folder {train_dir} holds no .png/.jpg images in its class sub-folders")
    size, channels = _common_size_and_channels(files)
    if size is None:  # not one readable image: say why the first is not
        why = ""
        try:
            read_image(files[0])
        except UnreadableImage as e:
            why = f" (the first, {e.path}: {e.reason})"
        raise UserError(f"image folder {train_dir} holds no readable images: none of its {len(files)} image "
                        f"files opens{why}; give PNG or JPEG files")
    size = tuple(cfg.image_size) if cfg.image_size else fit_within(size, MAX_SIDE)
    _, xs, ys, files, unreadable = read_folder(train_dir, size, channels)
    if not xs:
        raise UserError(f"image folder {train_dir} holds no readable images ({unreadable_listing(unreadable)}); "
                        "give PNG or JPEG files")
    x, y = np.stack(xs), np.asarray(ys)
    if test_dir:
        test_classes, xt, yt, test_files, more = read_folder(test_dir, size, channels)
        if test_classes != classes:
            raise UserError(f"{test_dir} has classes {test_classes} but {train_dir} has {classes}; make them match")
        if not xt:
            raise UserError(f"{test_dir} holds no readable .png/.jpg images in its class sub-folders")
        x_train, y_train, x_test, y_test = x, y, np.stack(xt), np.asarray(yt)
        unreadable += more
    else:
        x_train, y_train, x_test, y_test = split(x, y, cfg.test_fraction, seed=0)
    ds = make_image_dataset(str(path), classes, x_train, y_train, x_test, y_test, cfg, augment="none")
    ds.notes = unreadable_notes(unreadable)
    ds.names = names_by_split(files, cfg, test_files if test_dir else None)
    return ds
