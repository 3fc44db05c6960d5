"""Weights: a manifest of published checkpoints, a local cache, and safe loading.

A model's weights are referred to by *tag* (``zoo.load("cnn_mnist", weights="digits")``), by a
local ``.weights.h5`` / ``.keras`` file, or by a directory: a preset (``zoo.presets``: what
``zoo-train`` writes to ``--output``), or any directory holding ``weights.weights.h5``. A tag
resolves through the manifest to a file name and its sha256. The file is looked for in the cache,
``$ZOO_HOME/weights/<model>/`` (default ``~/.cache/zoo``), and downloaded there only if the
manifest gives a URL and the network answers.

Released checkpoints of other frameworks are not redistributed: their manifest entries name the
source files (with their sha256) and the ``zoo-port`` command that converts them, once, into a
preset under ``$ZOO_HOME/presets/<model>/<tag>/``; the entry records the converted file's sha256
too. A tag whose preset is not there yet raises a :class:`WeightsError` that gives the command.

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
    "SourceFile",
]

WEIGHTS_FILENAME = "weights.weights.h5"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
DOWNLOAD_TIMEOUT_S = 30


class WeightsError(ValueError):
    """A weights file that cannot be used: missing, corrupt, truncated or of another architecture."""


@dataclass(frozen=True)
class SourceFile:
    """A released file a ported preset is converted from: its name and sha256 (None where the
    file could not be obtained to hash it)."""

    name: str
    sha256: str | None = None


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint of one model.

    Attributes:
        model: registered model name.
        tag: the name users pass as ``weights=``.
        filename: the file's name in the cache.
        sha256: hex digest the file must have (None only for a ported preset whose converted
            file has not been hashed yet; its own ``metadata.json`` is then what is checked).
        url: where to download it from, or None for files that are only distributed by hand.
        size: the file's size in bytes, if known (catches truncated files before hashing).
        description: what the checkpoint is (data, recipe, figures).
        preset: for a checkpoint ``zoo-port`` converts: the preset directory under
            ``$ZOO_HOME`` (``presets/<model>/<tag>``); the file is that preset's weights.
        sources: the released files the preset is converted from, with their sha256.
        source_url: where the released files are published.
        port: the ``zoo-port`` command that makes the preset, without ``--output``.
        content_sha256: :func:`zoo.presets.weights_digest` of the converted file: accepted when
            the file's bytes differ (another HDF5 library) but every array is the same.
        license: the weights' license.
        paper: the paper they reproduce.
    """

    model: str
    tag: str
    filename: str
    sha256: str | None
    url: str | None = None
    size: int | None = None
    description: str = ""
    preset: str | None = None
    sources: tuple[SourceFile, ...] = ()
    source_url: str | None = None
    port: str | None = None
    content_sha256: str | None = None
    license: str | None = None
    paper: str | None = None


_MANIFEST: dict[str, dict[str, WeightsEntry]] = {}


def _check_sha256(value: str | None, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    text = str(value).lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"sha256 for {what} must be 64 hex digits, got {value!r}")
    return text


def register_weights(
    model: str,
    tag: str,
    *,
    filename: str = WEIGHTS_FILENAME,
    sha256: str | None,
    url: str | None = None,
    size: int | None = None,
    description: str = "",
    preset: str | None = None,
    sources: tuple[SourceFile, ...] = (),
    source_url: str | None = None,
    port: str | None = None,
    content_sha256: str | None = None,
    license: str | None = None,
    paper: str | None = None,
) -> WeightsEntry:
    """Add a checkpoint to the manifest. Model families call this next to their builders;
    ported checkpoints (``preset=``, ``port=``) are registered at the end of this module."""
    sha256 = _check_sha256(sha256, f"{model}/{tag}", optional=preset is not None)
    content_sha256 = _check_sha256(content_sha256, f"{model}/{tag} content", optional=True)
    sources = tuple(
        SourceFile(s.name, _check_sha256(s.sha256, f"{model}/{tag} source {s.name}", optional=True))
        for s in sources
    )
    if not filename.endswith((".weights.h5", ".keras")):
        raise ValueError(f"weights file name must end in .weights.h5 or .keras, got {filename!r}")
    if preset is not None and filename != WEIGHTS_FILENAME:
        raise ValueError(f"a preset's weights file is {WEIGHTS_FILENAME}, got {filename!r}")
    entry = WeightsEntry(
        model.lower(), tag, filename, sha256, url, size, description, preset, sources,
        source_url, port, content_sha256, license, paper,
    )  # fmt: skip
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
    if entry is not None and entry.sha256 is not None:
        digest = sha256_of(path)
        if digest != entry.sha256 and entry.content_sha256 is not None:
            from zoo.presets import weights_digest

            if weights_digest(path) == entry.content_sha256:
                return  # the same arrays, written by another HDF5 library
        if digest != entry.sha256:
            again = (f"convert it again: {entry.port} --output {path.parent}" if entry.port
                     else "delete it and load again")  # fmt: skip
            raise WeightsError(
                f"sha256 mismatch for weights file {path}: expected {entry.sha256}, got {digest}. "
                f"The file is corrupt or not the published {entry.model}/{entry.tag}; {again}."
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
        if entry.preset is not None:
            path = cache_dir() / entry.preset / WEIGHTS_FILENAME
            if not path.exists():
                raise WeightsError(port_instructions(entry))
            _verify(path, entry)
            return path, entry
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


def port_instructions(entry: WeightsEntry) -> str:
    """The message for a ported tag whose preset is not under ``$ZOO_HOME`` yet: the one
    ``zoo-port`` command that makes it, and where its source files are published."""
    target = cache_dir() / entry.preset
    names = [s.name for s in entry.sources]
    files = (f"{names[0]} … {names[-1]}" if len(names) > 3 else ", ".join(names)) or "the file"
    where = f" ({entry.source_url})" if entry.source_url else ""
    return (
        f"weights {entry.model}/{entry.tag} are a released checkpoint that the zoo converts "
        f"rather than redistributes, and there is no converted preset at {target} yet. Convert "
        f"the released files ({files}{where}) once with:\n"
        f"    {entry.port} --output {target}\n"
        f"then load again (zoo-port needs torch to read them: pip install torch)."
    )


def load_weights(model, spec_name: str, weights: str | os.PathLike) -> Path:
    """Resolve ``weights`` for the registered model ``spec_name`` and load them into the built
    ``model`` (:func:`zoo.presets.load_into`: weights paired by structural path; a head of
    another class count is re-initialised, with a warning).

    Raises:
        WeightsError: naming the file, if it is missing, corrupt, truncated, or does not fit.
    """
    from zoo.presets import load_into

    path, _ = resolve(spec_name, weights)
    load_into(model, path)
    return path


# -- the manifest: released checkpoints, converted by zoo-port (never redistributed) -------------
_ABS_SOURCES = (
    SourceFile("ABS_0.net", "7e824714475516ff59ceec4b864fd8cd49a3346e12eba3b5bd51ef4dbc3777fc"),
    SourceFile("ABS_1.net", "84d13bf9f97194c26b68eefbd7cd4db14b8e7532e164c01a15cce7c4f5e015cb"),
    SourceFile("ABS_2.net", "206904c278bb4255bff6a249586627a29371232d086636abb6f897ae81ef733c"),
    SourceFile("ABS_3.net", "144cafe539b528de4c8108ba69506839bb29af1603f19e8a62ec64596df4202c"),
    SourceFile("ABS_4.net", "7e2c626b8b52f5459c384d2d1f266c03ccc5ea8b4450d8078bc819b6b488682f"),
    SourceFile("ABS_5.net", "41ed13bfc331965e057b4833cd644f9734a8177077e5dd419e490f7c4b5fb583"),
    SourceFile("ABS_6.net", "f8b8a6e440ee99e0f132b1ffc02794a02b49f19d27eca849e1bfca5206695b13"),
    SourceFile("ABS_7.net", "02135d7215afa1a1f4bce5f0407249da402674ba0a5559e132b47a28b7937737"),
    SourceFile("ABS_8.net", "cccd26a1d64ed713dc8812417db57a0e1eb32637a1fd653c59ab606b4aa622a6"),
    SourceFile("ABS_9.net", "bb45e988ba1e33cdcdf75a25763d15d1fe849f38a5098f5fca5b3741a599f784"),
)
_ABS_AUTHORS = dict(
    # zoo-port's output for the files above (Keras 3.15, h5py 3.14); the same in either oneDNN
    # mode and on every run. content_sha256 is zoo.presets.weights_digest of it.
    sha256="e14c4b52b7c6df3992ec458b36926122e83dafd6b013216be3e60a2734dcf41c",
    content_sha256="0649ecf7822e2a81378422eb6392a38c9a1ce7c824576c59907a5c807313617b",
    preset="presets/abs_mnist/authors",
    sources=_ABS_SOURCES,
    source_url="https://github.com/bethgelab/AnalysisBySynthesis (commit daa5a3d), "
    "exp/VAE_swarm_MSE/nets",
    port="zoo-port abs_mnist --from AnalysisBySynthesis/exp/VAE_swarm_MSE/nets",
    license="Apache-2.0",
    paper="002_7240b1e8d13f6586.txt",
)
register_weights(
    "abs_mnist",
    "authors",
    description="The authors' ten class VAEs (Schott et al. 2019), converted by zoo-port",
    **_ABS_AUTHORS,
)
# Binary ABS is the same ten VAEs (binarised input, per-class γ): the same preset.
register_weights(
    "binary_abs_mnist",
    "authors",
    description="The authors' ten class VAEs, as Binary ABS (their get_ABS() default)",
    **_ABS_AUTHORS,
)
register_weights(
    "irevnet301",
    "authors",
    description="The authors' ImageNet i-RevNet-301 (bijective, 74.018 % top-1 as they report), "
    "converted by zoo-port",
    # Not obtainable here (a 500 MB Google Drive file): neither its sha256 nor the converted
    # file's is recorded yet. zoo-port records the source's in the preset's metadata.json; put
    # both here once measured. Until then the preset's own sha256 is what loading checks.
    sha256=None,
    preset="presets/irevnet301/authors",
    sources=(SourceFile("i-revnet-301.pth.tar", None),),
    source_url="https://drive.google.com/uc?id=1eQtZIpmtVM0-JDv_2nx3xMuGKjA1beLF&export=download "
    "(linked from github.com/jhjacobsen/pytorch-i-revnet)",
    port="zoo-port irevnet301 --from i-revnet-301.pth.tar",
    license="MIT",
    paper="004_a2e2a3876a23345e.txt",
)
