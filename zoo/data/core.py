"""Dataset registry and input pipelines.

``load(name, split, batch_size, data_dir=None, ...)`` returns a ``tf.data.Dataset`` of
``(features, labels)``. Zoo datasets (procedural ones such as ``digits``, and ``mnist`` with its
file fallbacks) are registered here; any other name is passed through to ``tfds.load``.

Offline behaviour: nothing is downloaded when the data is already on disk; a download is tried
only when the network answers within a few seconds (TFDS' own retries otherwise block for minutes)
and ``$ZOO_OFFLINE`` is unset. A dataset that cannot be had raises
:class:`DatasetNotAvailableError`, naming ``--data-dir`` and the procedural alternative.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from zoo.data.errors import DatasetError, DatasetNotAvailableError, UnknownDatasetError

# TFDS fetches most datasets through this host; if it does not answer, neither will a download.
_PROBE_HOST = ("storage.googleapis.com", 443)
_PROBE_TIMEOUT_S = 3.0
_MAX_SHUFFLE_BUFFER = 60_000
_STREAM_SHUFFLE_BUFFER = 10_000

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class LazyExamples:
    """Examples generated on demand, for datasets too large to hold decoded (a factor grid).

    A source may return this instead of arrays. ``keys`` (numpy, one row per example: e.g. the
    factor-grid indices of images, or of pairs) are sliced, shuffled, repeated and batched like
    arrays; ``decode(keys) -> (features, labels)`` then runs on each batch (or on each example
    when unbatched), so only the batches in flight are ever decoded and nothing large is cached.
    ``decode`` is a TensorFlow function of a tensor of keys with any leading shape.
    """

    keys: np.ndarray
    decode: Callable

    def as_dataset(
        self,
        batch_size: int | None = None,
        *,
        shuffle: bool = False,
        seed: int = 0,
        repeat: bool = False,
        drop_remainder: bool = False,
    ) -> tf.data.Dataset:
        """The keys as a ``tf.data.Dataset``, shuffled (through a buffer of at most 2**20 keys),
        repeated and batched as asked, then decoded batch by batch."""
        ds = tf.data.Dataset.from_tensor_slices(self.keys)
        if shuffle:
            ds = ds.shuffle(min(len(self.keys), 1 << 20), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        if batch_size is not None:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class DatasetSpec:
    """A zoo dataset.

    Attributes:
        name: registered name.
        source: ``source(split, data_dir, num_examples, seed, download) -> (x, y)`` numpy arrays
            (x float32 in [0, 1], channels last; y int64), an unbatched ``tf.data.Dataset``, or
            :class:`LazyExamples` (keys decoded batch by batch).
        splits: the split names it has.
        description: one line for listings.
        procedural: generated in-process; needs no files and no network.
        alternative: the dataset to suggest when this one is not available offline.
        streamed: too large to hold in memory (ImageNet): never cached, shuffled through a small
            buffer (``_STREAM_SHUFFLE_BUFFER``), and the source is re-read every epoch (so
            random augmentation in it draws anew).
    """

    name: str
    source: Callable[..., Arrays | tf.data.Dataset]
    splits: tuple[str, ...]
    description: str = ""
    procedural: bool = False
    alternative: str | None = None
    streamed: bool = False


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    *,
    splits: tuple[str, ...],
    description: str = "",
    procedural: bool = False,
    alternative: str | None = None,
    streamed: bool = False,
):
    """Decorator registering a source function as the zoo dataset ``name``."""

    def decorator(source):
        _DATASETS[name.lower()] = DatasetSpec(
            name, source, tuple(splits), description, procedural, alternative, streamed
        )
        return source

    return decorator


def list_datasets() -> list[str]:
    """The zoo's own dataset names (any TFDS name is accepted by :func:`load` as well)."""
    return sorted(spec.name for spec in _DATASETS.values())


def get_dataset_spec(name: str) -> DatasetSpec | None:
    return _DATASETS.get(name.lower())


def _tfds_names() -> list[str]:
    import tensorflow_datasets as tfds

    return list(tfds.list_builders(with_community_datasets=False))


def check_dataset_name(name: str) -> None:
    """Raise :class:`UnknownDatasetError` (with close matches) for a name nobody knows."""
    if name.lower() in _DATASETS:
        return
    base = name.split("/")[0].split(":")[0]
    known = _tfds_names()
    if base in known:
        return
    zoo_names = list_datasets()
    close = difflib.get_close_matches(name.lower(), sorted({*zoo_names, *known}), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownDatasetError(
        f"Unknown dataset {name!r}.{hint} Zoo datasets: {', '.join(zoo_names)}; any TFDS "
        f"catalog name is accepted too."
    )


def network_available() -> bool:
    """True if downloads may be tried: ``$ZOO_OFFLINE`` unset and the download host answers."""
    if os.environ.get("ZOO_OFFLINE", "").lower() not in ("", "0", "false", "no"):
        return False
    try:
        with socket.create_connection(_PROBE_HOST, timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def not_available(name: str, why: str, alternative: str | None = None) -> DatasetNotAvailableError:
    alt = (
        f", or train on the procedural dataset that needs no files: --dataset {alternative}"
        if alternative
        else ""
    )
    return DatasetNotAvailableError(
        f"Dataset {name!r} is not available offline: {why}. Pass --data-dir DIR "
        f"(data_dir= in Python) pointing at a directory that holds it{alt}."
    )


def tfds_source(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None,
    download: bool,
    alternative: str | None = None,
    extra_hint: str = "",
    image_key: str | None = None,
) -> tf.data.Dataset:
    """Unbatched ``(image float32 in [0, 1], label)`` examples of a TFDS dataset.

    Reads prepared data without touching the network; downloads only if allowed and reachable.
    ``image_key``: for datasets without supervised keys (CelebA), the feature that is the image;
    the label is then 0.
    """
    import tensorflow_datasets as tfds

    data_dir = os.fspath(data_dir) if data_dir is not None else None
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UnknownDatasetError(f"Unknown dataset {name!r}: {e}") from e

    def read():
        try:
            if image_key is not None:
                ds = builder.as_dataset(split=split, shuffle_files=False)
                return ds.map(lambda f: (f[image_key], tf.constant(0, tf.int64)))
            return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        except (ValueError, KeyError) as e:
            raise DatasetError(
                f"Dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}"
            ) from e

    # Read first, and treat TFDS' "could not find data" (an AssertionError) as not prepared:
    # asking is_prepared() instead would bypass tfds.testing.mock_data, which patches reading.
    try:
        ds = read()
    except AssertionError:
        where = builder.data_dir
        if not download:
            raise not_available(
                name, f"no prepared TFDS data in {where}{extra_hint}", alternative
            ) from None
        if not network_available():
            raise not_available(
                name,
                f"no prepared TFDS data in {where}{extra_hint}, and the network is unreachable "
                f"(or $ZOO_OFFLINE is set)",
                alternative,
            ) from None
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        except Exception as e:  # network errors, checksum errors, manual-download datasets
            raise not_available(name, f"the TFDS download failed: {e}", alternative) from e
        ds = read()

    def to_float(x, y):
        if x.dtype == tf.uint8:
            x = tf.cast(x, tf.float32) / 255.0
        return x, y

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)


def load(
    name: str,
    split: str = "train",
    batch_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    shuffle: bool | None = None,
    seed: int = 0,
    num_examples: int | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    cache: bool = True,
    download: bool = True,
    data_seed: int = 0,
    class_balanced: bool = False,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(features, labels)`` for a zoo or TFDS dataset.

    Args:
        name: a zoo dataset (``list_datasets()``) or a TFDS catalog name.
        split: e.g. ``"train"`` or ``"test"``; TFDS datasets accept TFDS split syntax.
        batch_size: global batch size; None leaves the dataset unbatched.
        data_dir: where prepared data or user files live (TFDS ``data_dir``; for ``mnist`` also
            ``mnist.npz`` or the four IDX files).
        shuffle: shuffle with ``seed`` (reshuffled every epoch, deterministically); defaults to
            True for splits whose name starts with ``train``.
        num_examples: keep only the first ``num_examples`` examples (for quick runs).
        repeat: repeat forever (after shuffling, so every epoch has a new order).
        drop_remainder: drop a last partial batch (what multi-replica training wants).
        cache: cache decoded examples in memory.
        download: allow a download when the data is missing and the network answers.
        data_seed: which draw of a procedural dataset to generate (``seed`` only orders it), so
            the ``digits`` test set stays the same whatever the shuffle seed.
        class_balanced: batches with every class equally often, interleaved (labels
            ``0, 1, …, K−1, 0, 1, …``), each class drawn from its own shuffled, repeated stream;
            for models that train one network per class (ABS). Needs ``repeat=True`` and a
            ``batch_size`` that is a multiple of the number of classes; a contiguous slice of a
            batch whose size is a multiple of it (one replica's share) is balanced too.

    Raises:
        UnknownDatasetError: the name is neither a zoo nor a TFDS dataset.
        DatasetNotAvailableError: known, but not on disk and not downloadable now.
        DatasetError: a bad split, or a malformed file (the message names it).
    """
    if num_examples is not None and num_examples <= 0:
        raise DatasetError(f"num_examples must be positive, got {num_examples}")
    if batch_size is not None and batch_size <= 0:
        raise DatasetError(f"batch_size must be positive, got {batch_size}")
    spec = get_dataset_spec(name)
    if spec is not None:
        if split not in spec.splits:
            raise DatasetError(
                f"Dataset {spec.name!r} has no split {split!r}; it has {list(spec.splits)}"
            )
        data = spec.source(
            split=split,
            data_dir=Path(data_dir) if data_dir is not None else None,
            num_examples=num_examples,
            seed=data_seed,
            download=download,
        )
    else:
        check_dataset_name(name)
        data = tfds_source(name, split, data_dir, download)
    lazy = data if isinstance(data, LazyExamples) else None
    if lazy is not None and class_balanced:
        raise DatasetError(f"class_balanced batches are not available for {name!r}")
    if class_balanced:
        return _class_balanced(data, num_examples, batch_size, repeat, seed)
    if lazy is not None:
        keys = lazy.keys if num_examples is None else lazy.keys[:num_examples]
        size = len(keys)
        ds = tf.data.Dataset.from_tensor_slices(keys)
    elif isinstance(data, tuple):
        x, y = data
        if num_examples is not None:
            x, y = x[:num_examples], y[:num_examples]
        size = len(x)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
    else:
        ds = data.take(num_examples) if num_examples is not None else data
        size = None
    streamed = spec is not None and spec.streamed
    if cache and size is None and not streamed:  # in-memory arrays are cached already
        ds = ds.cache()
    if shuffle is None:
        shuffle = split.startswith("train")
    if shuffle:
        cap = _STREAM_SHUFFLE_BUFFER if streamed else _MAX_SHUFFLE_BUFFER
        buffer = min(size or cap, cap)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if lazy is not None:
        ds = ds.map(lazy.decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _class_balanced(data, num_examples, batch_size, repeat, seed) -> tf.data.Dataset:
    if batch_size is None or not repeat:
        raise DatasetError("class_balanced batches need a batch_size and repeat=True")
    if isinstance(data, tuple):
        x, y = data
        if num_examples is not None:
            x, y = x[:num_examples], y[:num_examples]
    else:  # a TFDS dataset: read it into memory once (the per-class streams index into it)
        ds = data.take(num_examples) if num_examples is not None else data
        pairs = list(ds.as_numpy_iterator())
        x = np.stack([p[0] for p in pairs])
        y = np.array([p[1] for p in pairs])
    classes = np.unique(y)
    if batch_size % len(classes):
        raise DatasetError(
            f"class_balanced batches hold every one of the {len(classes)} classes equally often: "
            f"the batch size must be a multiple of {len(classes)}, got {batch_size}"
        )
    streams = []
    for i, c in enumerate(classes):
        xc, yc = x[y == c], y[y == c]
        stream = tf.data.Dataset.from_tensor_slices((xc, yc))
        streams.append(
            stream.shuffle(len(xc), seed=seed + i, reshuffle_each_iteration=True).repeat()
        )

    def interleave(xs, ys):  # (n, K, ...) → (n·K, ...), labels 0..K−1 repeating
        return tf.reshape(xs, [-1, *xs.shape[2:]]), tf.reshape(ys, [-1])

    ds = tf.data.Dataset.zip(tuple(streams)).map(
        lambda *pairs: (tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs]))
    )
    ds = ds.batch(batch_size // len(classes), drop_remainder=True).map(interleave)
    return ds.prefetch(tf.data.AUTOTUNE)


def num_examples_of(name: str, split: str, data_dir=None, num_examples: int | None = None) -> int:
    """How many examples ``load(name, split, ...)`` yields (before batching)."""
    ds = load(name, split, data_dir=data_dir, num_examples=num_examples, shuffle=False)
    n = int(ds.cardinality())
    if n < 0:  # unknown (e.g. after filtering): count
        n = int(ds.reduce(np.int64(0), lambda c, _: c + 1))
    return n
