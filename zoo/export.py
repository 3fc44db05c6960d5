"""Export a zoo model as a versioned SavedModel in TF Serving's layout.

``BASE/NAME/N/{saved_model.pb, variables/, assets.extra/model.json}``, where N is the next free
integer unless given. Every signature the model declares through ``serving_signatures()`` is
exported with ``keras.export.ExportArchive``; the version is written to a hidden temporary
directory next to it and renamed into place, so a server polling ``BASE/NAME`` never sees a
half-written version (TF Serving ignores directories whose names are not integers).

CLI: ``python export/export.py [--model NAME] [--weights PATH] --base-dir BASE [--version N]``
(also installed as ``zoo-export``). A preset (a ``zoo-train --output`` directory) as ``--weights``
is rebuilt with its own config, and ``--model`` may then be left out.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["export_model", "next_version", "existing_versions", "main", "ExportError"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# SignatureDef method names TF Serving dispatches on (Predict vs Classify).
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"


class ExportError(RuntimeError):
    """An export that cannot be written (bad name, version taken, model without signatures)."""


def existing_versions(model_dir: str | os.PathLike) -> list[int]:
    """The integer version directories under ``BASE/NAME``, sorted."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: str | os.PathLike) -> int:
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def _signature_summary(archive_fn_specs: dict[str, Any]) -> dict[str, Any]:
    return {
        name: [{"name": s.name, "dtype": s.dtype.name, "shape": s.shape.as_list()} for s in specs]
        for name, specs in archive_fn_specs.items()
    }


def export_model(
    model,
    base_dir: str | os.PathLike,
    *,
    name: str | None = None,
    version: int | None = None,
    metadata: dict[str, Any] | None = None,
    verbose: bool = False,
) -> Path:
    """Write ``model`` to ``base_dir/name/version`` and return that path.

    Args:
        model: a zoo model (it must implement ``serving_signatures()``).
        base_dir: the TF Serving model base path's parent.
        name: the served model name; defaults to the model's registered name.
        version: an integer version; defaults to the next free one. An existing version is never
            overwritten.
        metadata: extra entries for ``assets.extra/model.json`` (e.g. training metrics).
    """
    import keras

    name = name or getattr(model, "zoo_name", None) or model.name
    if not _NAME_RE.match(name):
        raise ExportError(f"model name {name!r} is not a safe directory name")
    signatures = model.serving_signatures()
    if "serving_default" not in signatures:
        raise ExportError(f"{name} declares no serving_default signature")

    archive = keras.export.ExportArchive()
    archive.track(model)
    # serving_default first: ExportArchive aliases the first endpoint as the default signature.
    ordered = ["serving_default"] + sorted(k for k in signatures if k != "serving_default")
    methods = {}
    for sig in ordered:
        fn, input_signature, *method = signatures[sig]
        archive.add_endpoint(sig, fn, input_signature=list(input_signature))
        if method and method[0] != PREDICT_METHOD:
            methods[sig] = method[0]

    model_dir = Path(base_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is not None and (not isinstance(version, int) or version < 0):
        raise ExportError(f"version must be a non-negative integer, got {version!r}")
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        archive.write_out(str(tmp), verbose=verbose)
        if methods:
            _set_method_names(tmp, methods)
        info = {
            "name": name,
            "registered_name": getattr(model, "zoo_name", name),
            "family": _family_of(model),
            "config": getattr(model, "zoo_config", {}),
            "signatures": _signature_summary({k: v[1] for k, v in signatures.items()}),
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "zoo_version": _zoo_version(),
            **(metadata or {}),
        }
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / "model.json").write_text(json.dumps(info, indent=2, default=str))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a server running as another user must read it
        while True:
            target_version = version if version is not None else next_version(model_dir)
            target = model_dir / str(target_version)
            try:
                # rename() of a directory onto an existing non-empty one fails, so a version that
                # appeared meanwhile is never overwritten.
                if target.exists():
                    raise FileExistsError(target)
                os.rename(tmp, target)
                break
            except (FileExistsError, OSError) as e:
                if version is not None:
                    raise ExportError(f"version {target} already exists; not overwriting") from e
                if not target.exists():
                    raise
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _set_method_names(path: Path, methods: dict[str, str]) -> None:
    """Mark signatures as TF Serving classify/regress signatures in ``saved_model.pb``.

    TF2 saves every signature with the predict method; TF Serving's Classify and Regress refuse
    anything else, and TensorFlow's loader ignores the field, so it is set here.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pb.read_bytes())
    for meta_graph in saved.meta_graphs:
        for name, method in methods.items():
            meta_graph.signature_def[name].method_name = method
    pb.write_bytes(saved.SerializeToString())


def _family_of(model) -> str | None:
    try:
        from zoo.registry import get_spec

        return get_spec(model.zoo_name).family
    except Exception:
        return None


def _zoo_version() -> str:
    import zoo

    return zoo.__version__


def build_parser() -> argparse.ArgumentParser:
    from zoo.cli_utils import add_overrides_argument

    p = argparse.ArgumentParser(
        prog="zoo-export",
        description="Export a zoo model as BASE/NAME/VERSION in TF Serving's SavedModel layout.",
    )
    p.add_argument(
        "--model",
        help="registered model name (zoo.list_models()); default: the model of the --weights "
        "preset",
    )
    p.add_argument(
        "--weights",
        help="a manifest tag, a .weights.h5 file, or a preset (a zoo-train --output "
        "directory), rebuilt with its config (default: random initialisation)",
    )
    p.add_argument("--base-dir", required=True, help="export base directory")
    p.add_argument("--version", type=int, help="version number (default: next free integer)")
    p.add_argument("--name", help="served model name (default: the registered name)")
    add_overrides_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from zoo.cli_utils import announce_runtime, parse_overrides, start_cli

    start_cli("zoo-export")
    parser = build_parser()
    args = parser.parse_args(argv)
    import zoo
    from zoo import presets

    preset = None
    try:
        if args.weights and presets.is_preset(args.weights):
            preset = presets.read_preset(args.weights)
        if args.model is None and preset is None:
            raise ValueError("--model is required unless --weights is a preset")
        spec = zoo.get_spec(args.model or preset.model)
        overrides = parse_overrides(args.overrides)
        spec.config(**overrides)
    except zoo.WeightsError as e:
        print(f"zoo-export: error: {e}", file=sys.stderr)
        return 1
    except (zoo.UnknownModelError, zoo.InvalidConfigError, ValueError) as e:
        parser.error(str(e))
    metadata: dict[str, Any] = {}
    if preset is not None:
        # Carry the preset's figures, record and provenance into model.json.
        metadata = {"metrics": preset.metrics, "training": preset.record}
        if preset.metadata:
            metadata["preset"] = preset.metadata
    announce_runtime("zoo-export")
    try:
        # The preset's config is the base; --set changes it (architecture keys are refused).
        model = zoo.load(spec.name, weights=args.weights, **overrides)
        path = export_model(
            model, args.base_dir, name=args.name, version=args.version, metadata=metadata
        )
    except (zoo.WeightsError, zoo.InvalidConfigError, ExportError) as e:
        print(f"zoo-export: error: {e}", file=sys.stderr)
        return 1
    print(f"Exported {spec.name} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
