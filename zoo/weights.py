"""Weights: a manifest of published checkpoints, a local cache, and safe loading.

A model's weights are referred to by *tag* (``zoo.load("cnn_mnist", weights="digits")``), by a
local ``.weights.h5`` / ``.keras`` file, or by a directory holding ``weights.weights.h5`` (what
``zoo-train`` writes to ``--output``). A tag resolves through the manifest to a file name and its
sha256. The file is looked for in the cache, ``$ZOO_HOME/weights/<model>/`` (default
``~/.cache/zoo``), and downloaded there only if the manifest gives a URL and the network answers.

Every file is checked before Keras reads it: size (a truncated download), sha256 when the manifest
knows it, the HDF5 signature, and finally that each variable fits the architecture. Each failure
raises :class:`WeightsError` naming the file. Only HDF5 weights and ``.keras`` archives are read;
nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "WeightsEntry",
    "WeightsError",
    "register_weights",
    "available",
    "cache_dir",
    "resolve",
    "load_weights",
    "sha256_of",
]

WEIGHTS_FILENAME = "weights.weights.h5"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
DOWNLOAD_TIMEOUT_S = 30


class WeightsError(ValueError):
    """A weights file that cannot be used: missing, corrupt, truncated or of another architecture."""


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint of one model.

    Attributes:
        model: registered model name.
        tag: the name users pass as ``weights=``.
        filename: the file's name in the cache.
        sha256: hex digest the file must have.
        url: where to download it from, or None for files that are only distributed by hand.
        size: the file's size in bytes, if known (catches truncated files before hashing).
        description: what the checkpoint is (data, recipe, figures).
    """

    model: str
    tag: str
    filename: str
    sha256: str
    url: str | None = None
    size: int | None = None
    description: str = ""


_MANIFEST: dict[str, dict[str, WeightsEntry]] = {}


def register_weights(
    model: str,
    tag: str,
    *,
    filename: str,
    sha256: str,
    url: str | None = None,
    size: int | None = None,
    description: str = "",
) -> WeightsEntry:
    """Add a checkpoint to the manifest. Model families call this next to their builders."""
    sha256 = sha256.lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"sha256 for {model}/{tag} must be 64 hex digits, got {sha256!r}")
    if not filename.endswith((".weights.h5", ".keras")):
        raise ValueError(f"weights file name must end in .weights.h5 or .keras, got {filename!r}")
    entry = WeightsEntry(model.lower(), tag, filename, sha256, url, size, description)
    _MANIFEST.setdefault(model.lower(), {})[tag] = entry
    return entry


def available(model: str) -> dict[str, WeightsEntry]:
    """The manifest's tags for ``model``."""
    return dict(_MANIFEST.get(model.lower(), {}))


def cache_dir() -> Path:
    """``$ZOO_HOME`` (default ``~/.cache/zoo``)."""
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".cache" / "zoo")


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, entry: WeightsEntry | None) -> None:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    size = path.stat().st_size
    if entry is not None and entry.size is not None and size != entry.size:
        raise WeightsError(
            f"weights file {path} has {size} bytes but the manifest says {entry.size} "
            f"(truncated or incomplete download?). Delete it and load again."
        )
    with open(path, "rb") as f:
        head = f.read(8)
    if path.name.endswith(".keras"):
        if head[:4] != _ZIP_SIGNATURE:
            raise WeightsError(
                f"weights file {path} is not a .keras archive (corrupt or truncated)"
            )
    elif head != _HDF5_SIGNATURE:
        raise WeightsError(
            f"weights file {path} is not an HDF5 file (corrupt, truncated or of another format); "
            f"the zoo reads .weights.h5 and .keras files only"
        )
    if entry is not None:
        digest = sha256_of(path)
        if digest != entry.sha256:
            raise WeightsError(
                f"sha256 mismatch for weights file {path}: expected {entry.sha256}, got {digest}. "
                f"The file is corrupt or not the published {entry.model}/{entry.tag}; delete it and "
                f"load again."
            )


def _download(entry: WeightsEntry, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-", suffix=f"-{target.name}")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(entry.url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            shutil.copyfileobj(response, out)
        try:
            _verify(Path(tmp), entry)
        except WeightsError as e:
            raise WeightsError(
                f"the download of {entry.model}/{entry.tag} from {entry.url} is unusable and was "
                f"discarded (nothing was written to {target}): {e}"
            ) from e
        os.replace(tmp, target)  # atomic: a reader never sees a half-written file
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsError(
            f"could not download weights {entry.model}/{entry.tag} from {entry.url}: {e}. "
            f"Offline, place the file at {target} (sha256 {entry.sha256}) or pass a local path "
            f"as weights=."
        ) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resolve(model: str, weights: str | os.PathLike) -> tuple[Path, WeightsEntry | None]:
    """Turn ``weights`` (a tag, a file or a directory) into a verified local file."""
    model = model.lower()
    tags = available(model)
    text = os.fspath(weights)
    if text in tags:
        entry = tags[text]
        path = cache_dir() / "weights" / model / entry.filename
        if not path.exists():
            if entry.url is None:
                raise WeightsError(
                    f"weights {model}/{text} are not in the cache and have no download URL. "
                    f"Place the file at {path} (sha256 {entry.sha256}) or pass a local path."
                )
            _download(entry, path)
        _verify(path, entry)
        return path, entry
    path = Path(text).expanduser()
    if path.is_dir():
        candidate = path / WEIGHTS_FILENAME
        if not candidate.is_file():
            raise WeightsError(
                f"weights directory {path} holds no {WEIGHTS_FILENAME} (expected a zoo-train "
                f"--output directory or a folder with that file)"
            )
        path = candidate
    elif not path.exists():
        known = ", ".join(sorted(tags)) or "none"
        raise WeightsError(
            f"weights {text!r} for {model} are neither a manifest tag (known tags: {known}) "
            f"nor an existing file or directory"
        )
    if not path.name.endswith((".weights.h5", ".keras")):
        raise WeightsError(
            f"weights file {path}: the zoo loads .weights.h5 and .keras files only "
            f"(nothing is unpickled)"
        )
    _verify(path, None)
    return path, None


def load_weights(model, spec_name: str, weights: str | os.PathLike) -> Path:
    """Resolve ``weights`` for the registered model ``spec_name`` and load them into ``model``.

    Raises:
        WeightsError: naming the file, if it is missing, corrupt, truncated, or does not fit.
    """
    path, _ = resolve(spec_name, weights)
    try:
        model.load_weights(path)
    except OSError as e:  # h5py: the HDF5 structure itself is damaged
        raise WeightsError(f"weights file {path} is truncated or corrupt: {e}") from e
    except Exception as e:  # Keras raises ValueError/KeyError depending on the mismatch
        raise WeightsError(
            f"weights file {path} does not fit {spec_name} as configured: {e}"
        ) from e
    return path
