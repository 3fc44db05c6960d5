"""Presets: a model's config, weights and provenance in one directory (KerasHub's layout).

```
DIR/
  config.json          {"model": NAME, "config": {...the resolved config...}, ...}
  weights.weights.h5   the Keras weights
  metadata.json        {"sha256", "source", "metrics", "license", "paper", ...}
```

A ``zoo-train --output`` directory is a preset (its ``config.json`` is the run record, which holds
``model`` and ``config``); ``zoo.save_preset(model, DIR)`` writes one; ``zoo-port`` converts a
released checkpoint of another framework into one. ``zoo.load(DIR)``, ``zoo.load(NAME,
weights=DIR)``, ``zoo-export --weights DIR`` and ``zoo-train --init-from DIR`` all read presets
here (:func:`read_preset`, :func:`locate`) and load weights here (:func:`load_into`).

**The preset's config is the model's.** ``zoo.load(DIR, **overrides)`` rebuilds the model with the
preset's config; explicit overrides win. An override that changes the architecture (the set or the
shapes of the weights) is refused with :class:`~zoo.registry.InvalidConfigError` naming the key
and the first weight it changes; any other key (``learning_rate``, the search settings of ABS,
the calibration ``alpha``/``eta``) is accepted. The head is the exception, as in timm: another
class count keeps every weight but the head's and says so (a ``UserWarning`` naming the head).

**Weights are paired by structural path,** the path Keras' own weights file gives a layer: the
chain of attributes from the model, list members named by their class
(``blocks/container_3/conv2d``), plus the index of the variable in that layer. Unlike layer and
variable names, which Keras numbers per process (``conv2d_7``), it is the same in every instance of
the same model, so a model built after another one in the same process still pairs up. A model
declares its head (:meth:`zoo.models.base.ZooModel.head_layers`); a head weight whose shape differs
from the file's is left as initialised and reported. Every other weight must fit exactly, except
that ``--init-from`` (``partial=True``) also lets the model have weights the file lacks (an iCE
model started from a CE run: the nuisance classifier starts fresh). Entries of the file that no
weight of the model takes (an optimizer's state, a training-only network) are left alone and
listed in the report, as Keras' own loading ignores them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.weights import WEIGHTS_FILENAME, WeightsEntry, WeightsError, resolve, sha256_of

__all__ = [
    "CONFIG_FILENAME",
    "METADATA_FILENAME",
    "Preset",
    "WeightsSource",
    "LoadReport",
    "is_preset",
    "read_preset",
    "save_preset",
    "write_metadata",
    "locate",
    "load",
    "load_preset",
    "load_into",
    "weights_digest",
]

CONFIG_FILENAME = "config.json"
METADATA_FILENAME = "metadata.json"
PRESET_FORMAT = "zoo-preset/1"
# Keras' weights file keeps the optimizer's state under this top-level name; it is not a weight.
_OPTIMIZER_PATH = "optimizer"


# -- reading and writing presets -----------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A preset directory, read and checked.

    Attributes:
        path: the directory.
        model: the registered model name (``config.json``'s ``model``).
        config: the model's resolved config (``config.json``'s ``config``).
        record: ``config.json`` whole (a training run's record has the dataset, epochs, ...).
        metadata: ``metadata.json`` (empty for a run written before the zoo wrote it).
    """

    path: Path
    model: str
    config: dict[str, Any]
    record: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILENAME

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` (a training run's final figures), else ``metadata.json``'s."""
        f = self.path / "metrics.json"
        if f.is_file():
            return _read_json(f)
        return dict(self.metadata.get("metrics") or {})


def is_preset(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory with a ``config.json`` (complete or not)."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / CONFIG_FILENAME).is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"preset file {path} is not readable JSON: {e}") from e


def read_preset(path: str | os.PathLike, *, verify: bool = True) -> Preset:
    """Read the preset at ``path``; with ``verify``, check the weights against the sha256 that
    ``metadata.json`` records.

    Raises:
        WeightsError: naming the file that is missing, unreadable or does not match.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise WeightsError(f"preset {p} does not exist (expected a directory with "
                           f"{CONFIG_FILENAME} and {WEIGHTS_FILENAME})")  # fmt: skip
    config_file = p / CONFIG_FILENAME
    if not config_file.is_file():
        raise WeightsError(
            f"{p} is not a preset: it has no {CONFIG_FILENAME} (a zoo-train --output directory, "
            f"a zoo.save_preset or a zoo-port directory has one)"
        )
    record = _read_json(config_file)
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        raise WeightsError(f'preset file {config_file} names no model (a "model" string)')
    config = record.get("config", {})
    if not isinstance(config, dict):
        raise WeightsError(f'preset file {config_file}: "config" must be an object')
    if not (p / WEIGHTS_FILENAME).is_file():
        raise WeightsError(
            f"preset {p} has no {WEIGHTS_FILENAME} (a training run that has not finished, or "
            f"an incomplete copy)"
        )
    meta_file = p / METADATA_FILENAME
    metadata = _read_json(meta_file) if meta_file.is_file() else {}
    if not isinstance(metadata, dict):
        raise WeightsError(f"preset file {meta_file} must hold a JSON object")
    expected = metadata.get("sha256")
    if verify and expected:
        digest = sha256_of(p / WEIGHTS_FILENAME)
        if digest != expected:
            raise WeightsError(
                f"sha256 mismatch for weights file {p / WEIGHTS_FILENAME}: {meta_file} records "
                f"{expected}, the file has {digest}. The weights were replaced or damaged after "
                f"the preset was written."
            )
    return Preset(p, record["model"], config, record, metadata)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _write_json_atomically(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=_json_default))
    os.replace(tmp, path)


def write_metadata(
    directory: str | os.PathLike,
    *,
    model: str,
    source: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    license: str | None = None,
    paper: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``DIR/metadata.json`` for the weights already in ``DIR``: their sha256 and size,
    where they come from (``source``), figures measured with them, license and paper."""
    import keras

    import zoo

    directory = Path(directory)
    weights = directory / WEIGHTS_FILENAME
    metadata = {
        "format": PRESET_FORMAT,
        "model": model,
        "weights": WEIGHTS_FILENAME,
        "sha256": sha256_of(weights),
        "size": weights.stat().st_size,
        "source": dict(source),
        "metrics": dict(metrics or {}),
        "license": license,
        "paper": paper,
        **extra,
        "zoo_version": zoo.__version__,
        "keras_version": keras.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json_atomically(directory / METADATA_FILENAME, metadata)
    return metadata


def save_preset(
    model,
    directory: str | os.PathLike,
    *,
    metrics: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    license: str | None = None,
    paper: str | None = None,
    **metadata: Any,
) -> Path:
    """Write ``model`` as a preset: ``config.json`` (its registered name and config),
    ``weights.weights.h5`` and ``metadata.json``. ``zoo.load(directory)`` rebuilds it.

    ``paper`` defaults to the model's registration; ``source`` to ``{"kind": "zoo.save_preset"}``.
    Existing files of the same names are replaced (each file atomically).
    """
    from zoo.models.base import ZooModel
    from zoo.registry import get_spec

    if not isinstance(model, ZooModel):
        raise TypeError(f"save_preset takes a zoo model (zoo.load/zoo.build), got {type(model)}")
    spec = get_spec(model.zoo_name)  # refuses a model that is not registered
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{os.getpid()}.weights.h5"
    try:
        model.save_weights(str(tmp))
        os.replace(tmp, directory / WEIGHTS_FILENAME)
    finally:
        if tmp.exists():
            tmp.unlink()
    record = {"model": spec.name, "family": spec.family, "config": _jsonable(model.zoo_config)}
    _write_json_atomically(directory / CONFIG_FILENAME, record)
    write_metadata(
        directory,
        model=spec.name,
        source=source or {"kind": "zoo.save_preset"},
        metrics=metrics,
        license=license,
        paper=paper if paper is not None else spec.paper,
        **metadata,
    )
    return directory


# -- where weights come from -----------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsSource:
    """What ``weights=`` names, resolved: a weights file and, for a preset, the preset."""

    weights: Path
    preset: Preset | None = None
    entry: WeightsEntry | None = None

    @property
    def model(self) -> str | None:
        return self.preset.model if self.preset else None

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.preset.config) if self.preset else {}


def locate(model: str, weights: str | os.PathLike) -> WeightsSource:
    """Resolve ``weights`` for the registered model ``model``: a manifest tag (a published file,
    or a converted preset under ``$ZOO_HOME``), a preset directory, a directory holding
    ``weights.weights.h5``, or a ``.weights.h5``/``.keras`` file. Verified before use."""
    if is_preset(weights):
        preset = read_preset(weights)
        return WeightsSource(preset.weights, preset)
    path, entry = resolve(model, weights)
    if entry is not None and is_preset(path.parent):
        # A tag whose file is a preset's (zoo-port's output): its config comes with it. Where
        # the manifest knows the file's sha256 it has verified it; else the preset's own is.
        return WeightsSource(path, read_preset(path.parent, verify=entry.sha256 is None), entry)
    return WeightsSource(path, None, entry)


def _registered(name: str) -> bool:
    from zoo.registry import UnknownModelError, get_spec

    try:
        get_spec(name)
    except UnknownModelError:
        return False
    return True


def names_a_preset(name: Any) -> bool:
    """Whether ``zoo.load``'s first argument is a preset directory rather than a model name."""
    if isinstance(name, os.PathLike):
        return True
    if not isinstance(name, str) or _registered(name):
        return False
    return Path(name).expanduser().is_dir() or any(c in name for c in ("/", os.sep, "~"))


def load(name: Any, weights: str | os.PathLike | None = None, **overrides: Any):
    """:func:`zoo.load`; see there."""
    from zoo.registry import get_spec

    if names_a_preset(name):
        if weights is not None:
            raise TypeError(
                f"zoo.load({os.fspath(name)!r}) loads the preset's own weights; weights= is for "
                f"zoo.load(NAME, weights=...)"
            )
        return load_preset(read_preset(name), overrides=overrides)
    spec = get_spec(name)
    if weights is None:
        return _build(spec, spec.config(**overrides))
    source = locate(spec.name, weights)
    if source.preset is not None:
        return load_preset(source.preset, spec.name, overrides)
    model = _build(spec, spec.config(**overrides))
    report = _plan(model, source.weights, partial=False)
    if report.problems:
        raise WeightsError(
            f"weights file {source.weights} does not fit {spec.name} as configured: "
            f"{report.describe_problems()}"
        )
    report.apply()
    return model


def _build(spec, config):
    from zoo import build

    return build(spec.name, **config)


def _normalized(value: Any) -> Any:
    return _jsonable(value)


def load_preset(
    preset: Preset, name: str | None = None, overrides: Mapping[str, Any] | None = None
):
    """Build the model of ``preset`` (or the registered ``name``) with the preset's config and
    ``overrides``, and load the preset's weights; see the module docstring for which overrides
    are accepted."""
    from zoo.registry import InvalidConfigError, get_spec

    overrides = dict(overrides or {})
    spec = get_spec(name if name is not None else preset.model)
    # Another model's preset (Binary ABS from ABS's weights) lends its weights, not its config.
    same = _registered(preset.model) and get_spec(preset.model).name == spec.name
    base = dict(preset.config) if same else {}
    config = spec.config(**{**base, **overrides})
    changed = {k: v for k, v in overrides.items() if k in base and _normalized(v) != _normalized(base[k])}  # fmt: skip
    model = _build(spec, config)
    report = _plan(model, preset.weights, partial=False)
    if report.problems:
        if changed:
            keys = ", ".join(f"{k}={v!r}" for k, v in changed.items())
            was = ", ".join(f"{k}={base[k]!r}" for k in changed)
            raise InvalidConfigError(
                f"{keys} changes the architecture of the preset {preset.path} ({was}): its "
                f"weights no longer fit ({report.describe_problems(limit=2)}). A preset fixes "
                f"the keys that shape the weights; keys that do not (learning_rate, optimizer, "
                f"...) may be overridden, and another class count re-initialises the head. To "
                f"train another architecture from these weights use "
                f"zoo-train --init-from {preset.path}."
            )
        raise WeightsError(
            f"weights file {preset.weights} does not fit {spec.name} as configured: "
            f"{report.describe_problems()}"
        )
    report.apply()
    return model


# -- structural pairing ----------------------------------------------------------------------------
def _store_classes():
    try:
        from keras.src.saving import saving_lib
    except ImportError as e:  # pragma: no cover - Keras 3 has it
        raise RuntimeError(f"zoo.presets needs Keras 3's saving library: {e}") from e
    return saving_lib


def _recorder():
    """A weights store that keeps, per structural path, what each layer's
    ``save_own_variables`` writes into it (its variables, by index) instead of writing a file.
    Keras' own walk (``_save_state``) fills it, so the paths are exactly the file's."""
    lib = _store_classes()

    class Recorder(lib.NpzIOStore):
        def __init__(self):  # nothing to open: it only records
            self.mode, self.archive, self.contents = "w", None, {}

    return Recorder()


def _recorded(model) -> dict[str, dict[str, Any]]:
    lib = _store_classes()
    if not model.built:
        raise ValueError(f"{model.name} is not built: call it on a batch (or zoo.build it) first")
    recorder = _recorder()
    lib._save_state(model, weights_store=recorder, assets_store=None, inner_path="",
                    visited_saveables=set())  # fmt: skip
    return {("" if p == "__root__" else p): e for p, e in recorder.contents.items()}


def model_structure(model, recorded=None) -> dict[str, dict[int, Any]]:
    """``{structural path: {index: variable}}`` for every layer that owns weights of ``model``
    (the state of its optimizer, metrics and random generators left out)."""
    own = {id(v) for v in model.weights}
    out: dict[str, dict[int, Any]] = {}
    for path, entries in (recorded if recorded is not None else _recorded(model)).items():
        picked = {int(k): v for k, v in entries.items() if id(v) in own}
        if picked:
            out[path] = picked
    return out


class _WeightsFile:
    """A Keras weights file (``.weights.h5``, or the weights inside a ``.keras`` archive) read as
    ``{structural path: {index: h5py dataset}}``."""

    def __init__(self, path: Path):
        import h5py

        self.path = Path(path)
        self._archive = None
        try:
            if self.path.name.endswith(".keras"):
                self._archive = zipfile.ZipFile(self.path)
                self._io = self._archive.open("model.weights.h5")
                self.h5 = h5py.File(self._io, "r")
            else:
                self.h5 = h5py.File(self.path, "r")
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            self.close()
            raise WeightsError(f"weights file {self.path} is truncated or corrupt: {e}") from e
        self.entries: dict[str, dict[int, Any]] = {}
        try:
            self.h5.visititems(self._collect)
        except (OSError, RuntimeError) as e:
            self.close()
            raise WeightsError(f"weights file {self.path} is truncated or corrupt: {e}") from e

    def _collect(self, name: str, obj) -> None:
        import h5py

        parent, _, leaf = name.rpartition("/")
        if not isinstance(obj, h5py.Dataset) or not parent.endswith("vars"):
            return
        layer = parent[: -len("vars")].rstrip("/")
        if layer == _OPTIMIZER_PATH or layer.startswith(_OPTIMIZER_PATH + "/"):
            return
        if leaf.isdigit():
            self.entries.setdefault(layer, {})[int(leaf)] = obj

    def close(self) -> None:
        for handle in ("h5", "_io", "_archive"):
            obj = getattr(self, handle, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing a damaged file may fail again
                    pass


def _display(v, model) -> str:
    """A variable's path without the model's own name (``head/kernel``, as ``config.json``
    lists re-initialised weights)."""
    prefix = f"{model.name}/"
    return v.path[len(prefix) :] if v.path.startswith(prefix) else v.path


def _nested_prefixes(model) -> list[str]:
    """Structural paths of zoo models held by ``model`` (a training objective's classifier)."""
    from zoo.models.base import ZooModel

    out = []
    for attr in dir(model):
        if attr.startswith("_"):
            continue
        try:
            obj = getattr(model, attr)
        except Exception:  # noqa: BLE001 - properties that need a built state
            continue
        if isinstance(obj, ZooModel) and obj is not model:
            out.append(attr)
    return out


@dataclass
class LoadReport:
    """What loading a weights file into a model does (or would do).

    ``copied``, ``head``, ``missing`` list the model's weights by path (``head/kernel``):
    loaded from the file, head weights left as initialised because the file's are for another
    class count, and weights the file does not have (``partial`` loading only). ``unused``
    lists the file's entries no weight of the model took; ``problems`` what makes the file not
    fit. ``head_layers`` names the model's declared head."""

    path: Path
    model_name: str
    copied: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    head_layers: list[str] = field(default_factory=list)
    _head_detail: list[str] = field(default_factory=list, repr=False)
    _pairs: list[tuple[Any, Any]] = field(default_factory=list, repr=False)
    _file: Any = field(default=None, repr=False)

    @property
    def reinitialized(self) -> list[str]:
        """Weights that keep their fresh initialisation: the head's and the missing ones."""
        return [*self.head, *self.missing]

    def describe_problems(self, limit: int = 5) -> str:
        more = len(self.problems) - limit
        text = "; ".join(self.problems[:limit])
        return text + (f"; and {more} more" if more > 0 else "")

    def apply(self) -> LoadReport:
        """Assign the paired arrays (bit for bit) and warn about a re-initialised head."""
        try:
            for variable, dataset in self._pairs:
                try:
                    value = np.asarray(dataset[()])
                except (OSError, RuntimeError) as e:
                    raise WeightsError(
                        f"weights file {self.path} is truncated or corrupt: {e}"
                    ) from e
                variable.assign(value.astype(variable.dtype, copy=False))
        finally:
            self.close()
        if self.head:
            warnings.warn(
                f"{self.model_name}: the head ({', '.join(self.head_layers)}) keeps its fresh "
                f"initialisation: the weights in {self.path} are for another number of classes "
                f"({'; '.join(self._head_detail)}). Every other weight ({len(self.copied)} of "
                f"{len(self.copied) + len(self.reinitialized)}) is loaded from the file.",
                UserWarning,
                stacklevel=3,
            )
        return self

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _plan(model, path: str | os.PathLike, *, partial: bool) -> LoadReport:
    """Pair ``model``'s weights with the file's (see the module docstring) without assigning."""
    path = Path(path)
    name = getattr(model, "zoo_name", model.name)
    recorded = _recorded(model)
    target = model_structure(model, recorded)
    # Where the model keeps state that is not a weight (metrics, random generators): not
    # reported as unused. The file's other extra entries (an optimizer's state, the weights of
    # a training-only network) are listed in `unused` and left alone, as Keras does.
    state_only = set(recorded) - set(target)
    file = _WeightsFile(path)
    report = LoadReport(path, name, _file=file)
    head_vars = {id(v) for layer in model.head_layers() for v in layer.weights}
    report.head_layers = [layer.name for layer in model.head_layers()]

    def mapping(kind: str, prefix: str):
        def to_file(p: str) -> str:
            if kind == "strip":  # the model holds the file's model under `prefix`
                return p[len(prefix) + 1 :] if p.startswith(prefix + "/") else (
                    "" if p == prefix else None)  # fmt: skip
            if kind == "add":  # the file holds the model's under `prefix`
                return f"{prefix}/{p}" if p else prefix
            return p

        return to_file

    candidates = [mapping("same", "")]
    if partial:
        candidates += [mapping("strip", p) for p in _nested_prefixes(model)]
        tops = {p.split("/", 1)[0] for p in file.entries if p}
        candidates += [mapping("add", t) for t in sorted(tops)]

    def matched(to_file) -> int:
        return sum(1 for p in target if to_file(p) in file.entries)

    to_file = max(candidates, key=matched)  # the first (identity) wins ties
    used = set()
    for p, variables in target.items():
        fp = to_file(p)
        stored = file.entries.get(fp) if fp is not None else None
        names = {i: _display(v, model) for i, v in variables.items()}
        if stored is None:
            if partial:
                report.missing += names.values()
            else:
                report.problems.append(
                    f"the file has no weights for {', '.join(names.values())} "
                    f"(layer {p or '(the model itself)'})"
                )
            continue
        used.add(fp)
        shapes_ok = set(stored) == set(variables) and all(
            tuple(stored[i].shape) == tuple(v.shape) for i, v in variables.items()
        )
        if shapes_ok:
            for i, v in variables.items():
                report._pairs.append((v, stored[i]))
                report.copied.append(names[i])
            continue
        in_head = all(id(v) in head_vars for v in variables.values())
        detail = (
            ", ".join(
                f"{names[i]} {tuple(v.shape)} in the model, "
                f"{tuple(stored[i].shape) if i in stored else 'absent'} in the file"
                for i, v in variables.items()
                if i not in stored or tuple(stored[i].shape) != tuple(v.shape)
            )
            or f"layer {p} stores {len(stored)} weights in the file, {len(variables)} in the model"
        )
        if in_head:
            report.head += names.values()
            report._head_detail.append(detail)
        else:
            report.problems.append(detail)
    for fp in sorted(set(file.entries) - used - state_only):
        report.unused += [f"{fp}/vars/{i}" if fp else f"vars/{i}" for i in sorted(file.entries[fp])]
    if report.problems:
        report.close()
    return report


def load_into(model, path: str | os.PathLike, *, partial: bool = False) -> LoadReport:
    """Load the weights file ``path`` into the built ``model``, paired by structural path.

    A head weight (:meth:`~zoo.models.base.ZooModel.head_layers`) whose shape differs from the
    file's keeps its initialisation and is reported (a ``UserWarning`` naming the head); every
    other weight must be in the file and fit; the file's entries that no weight takes are left
    alone (``report.unused``). ``partial=True`` (``--init-from``) also leaves the model's
    weights that the file lacks as initialised (``report.missing``), and a model that holds the
    file's model (a training objective wrapping a classifier), or the other way round, pairs
    the shared part.

    Returns:
        a :class:`LoadReport`.

    Raises:
        WeightsError: the file is unreadable, or does not fit (naming the weights).
    """
    report = _plan(model, path, partial=partial)
    if report.problems:
        raise WeightsError(
            f"weights file {path} does not fit {report.model_name} as configured: "
            f"{report.describe_problems()}"
        )
    return report.apply()


def weights_digest(path: str | os.PathLike) -> str:
    """sha256 over every array of a weights file (structural path, dtype, shape and bytes, in
    path order): equal for files holding the same weights whatever wrote their bytes."""
    file = _WeightsFile(Path(path))
    try:
        h = hashlib.sha256()
        for p in sorted(file.entries):
            for i in sorted(file.entries[p]):
                data = np.ascontiguousarray(file.entries[p][i][()])
                h.update(f"{p}/{i}:{data.dtype.str}:{data.shape};".encode())
                h.update(data.tobytes())
        return h.hexdigest()
    finally:
        file.close()
