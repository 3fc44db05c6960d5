"""MNIST from files a user already has: ``mnist.npz`` (``keras.datasets`` layout) or the IDX files.

Both readers validate what they read and raise :class:`zoo.data.errors.DatasetError` naming the
file. ``np.load`` runs with ``allow_pickle=False``: nothing is unpickled.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from zoo.data.errors import DatasetError

NPZ_NAME = "mnist.npz"
# (images, labels) per split; each may be gzipped and TFDS/Kaggle mirrors spell the dot differently.
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_MAGIC = {0x00000803: 3, 0x00000801: 1}  # unsigned byte data, 3-D images or 1-D labels


def _idx_candidates(directory: Path, stem: str) -> list[Path]:
    dotted = stem.replace("-idx", ".idx")
    return [directory / f"{s}{ext}" for s in (stem, dotted) for ext in (".gz", "")]


def find_idx_files(directory: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files for ``split`` in ``directory``, or None if absent."""
    found = []
    for stem in IDX_NAMES[split]:
        match = next((p for p in _idx_candidates(directory, stem) if p.is_file()), None)
        if match is None:
            return None
        found.append(match)
    return found[0], found[1]


def has_mnist_files(directory: str | Path | None) -> bool:
    if directory is None:
        return False
    directory = Path(directory)
    return (directory / NPZ_NAME).is_file() or any(
        find_idx_files(directory, split) is not None for split in IDX_NAMES
    )


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) of unsigned bytes."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"IDX file {path} cannot be read ({e}); is it truncated?") from e
    if len(data) < 8:
        raise DatasetError(f"IDX file {path} is too short to hold a header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in _IDX_MAGIC:
        raise DatasetError(
            f"IDX file {path} has magic number {magic:#010x}; expected 0x00000803 (images) or "
            f"0x00000801 (labels) of unsigned bytes"
        )
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DatasetError(
            f"IDX file {path} declares shape {dims} ({expected} bytes) but holds "
            f"{len(data) - header} bytes of data (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _check(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{source}: images must be uint8 of shape (n, 28, 28); got {images.dtype} "
            f"{images.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{source}: labels must be integers; got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(f"{source}: {images.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(
            f"{source}: labels must lie in 0..9; found {labels.min()}..{labels.max()}"
        )


def load_mnist_arrays(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(n, 28, 28)`` and int64 labels ``(n,)`` from ``directory``.

    Looks for ``mnist.npz`` first, then the four IDX files.
    """
    directory = Path(directory)
    if split not in IDX_NAMES:
        raise DatasetError(f"mnist files hold the splits 'train' and 'test'; got split {split!r}")
    npz = directory / NPZ_NAME
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as archive:
                keys = set(archive.files)
                wanted = {f"x_{split}", f"y_{split}"}
                if not wanted <= keys:
                    raise DatasetError(
                        f"{npz} lacks {sorted(wanted - keys)}; the keras.datasets layout has "
                        f"x_train, y_train, x_test, y_test"
                    )
                images, labels = archive[f"x_{split}"], archive[f"y_{split}"]
        except DatasetError:
            raise
        except Exception as e:  # zipfile.BadZipFile, ValueError (pickled arrays), OSError
            raise DatasetError(f"{npz} is not a readable .npz archive: {e}") from e
        _check(images, labels, str(npz))
        return images, labels.astype(np.int64)
    files = find_idx_files(directory, split)
    if files is None:
        raise DatasetError(
            f"no {NPZ_NAME} and no IDX files for split {split!r} in {directory} "
            f"(expected {IDX_NAMES[split][0]}[.gz] and {IDX_NAMES[split][1]}[.gz])"
        )
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetError(
            f"{files[0]} must hold 3-D images and {files[1]} 1-D labels; got {images.ndim}-D "
            f"and {labels.ndim}-D (are the two swapped?)"
        )
    _check(images, labels, f"{files[0]} / {files[1]}")
    return images, labels.astype(np.int64)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8, 1-D or 3-D) as an IDX file, gzipped if ``path`` ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {3: 0x00000803, 1: 0x00000801}[array.ndim]
    payload = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)
