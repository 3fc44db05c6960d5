"""``zoo-port``: convert a released PyTorch checkpoint into a zoo preset, once.

```
zoo-port MODEL --from PATH [--output DIR] [--set KEY=VALUE ...]
python -m zoo.port MODEL --from PATH [--output DIR]
```

``MODEL`` is a model with a converter (``zoo-port --list``):

- ``abs_mnist``: the authors' ten class VAEs, ``ABS_0.net`` … ``ABS_9.net`` of
  ``bethgelab/AnalysisBySynthesis`` (``exp/VAE_swarm_MSE/nets``; ``--from`` is that directory or
  the checkout). Each is a ``VariationalAutoEncoder`` state dict; class c's tensors become group
  c of each grouped layer (:mod:`zoo.layers.grouped`: the class axis is folded into the channels).
- ``irevnet301``: ``i-revnet-301.pth.tar`` of ``jhjacobsen/pytorch-i-revnet`` (the training
  script's checkpoint: its ``state_dict``), through
  :func:`zoo.models.firevnet.port_irevnet_state_dict`.

The files are read with ``torch.load(..., map_location="cpu", weights_only=True)`` and nothing
else: torch's restricted unpickler rebuilds tensors and plain containers and refuses any other
object, so a pickle payload in a file never runs. Without torch installed, zoo-port says to
``pip install torch`` and reads nothing. The state dict is checked against the checkpoint's layout
(every key, every shape) before anything is converted; a wrong key, a wrong shape or a missing
tensor raises :class:`~zoo.weights.WeightsError` naming it.

The output is a preset (``zoo.presets``): ``config.json``, ``weights.weights.h5`` and
``metadata.json`` with the source files' sha256, the converted file's sha256, the source,
license and paper. Without ``--output`` it goes where the manifest tag looks for it
(``$ZOO_HOME/presets/MODEL/authors``), so ``zoo.load(MODEL, weights="authors")`` finds it.

Each converter has its inverse (zoo model → state dict in the checkpoint's layout), which the
tests use to build checkpoints without shipping anyone's weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.weights import WeightsError, available, cache_dir, sha256_of

__all__ = [
    "PORTS",
    "Port",
    "read_torch_file",
    "abs_checkpoint_layout",
    "port_abs_state_dicts",
    "abs_state_dicts",
    "irevnet_checkpoint_layout",
    "port_irevnet_checkpoint",
    "irevnet_state_dict",
    "convert",
    "port",
    "main",
]

TAG = "authors"
TORCH_HINT = "pip install torch (the CPU wheel is enough)"
# BatchNorm counters PyTorch ≥ 0.4.1 adds to state dicts; they carry no weights.
_IGNORED_SUFFIXES = (".num_batches_tracked",)


# -- reading PyTorch files -------------------------------------------------------------------------
def read_torch_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, the only way the zoo reads a
    PyTorch file: tensors and plain containers only, never an arbitrary pickled object.

    Raises:
        WeightsError: torch is not installed (says to install it; nothing is read), the file
            is missing, or torch refuses it (a pickle with other objects, a damaged file).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    try:
        import torch
    except ImportError as e:
        raise WeightsError(
            f"reading the PyTorch checkpoint {path} needs torch, which is not installed: "
            f"{TORCH_HINT}. Nothing was read."
        ) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        raise WeightsError(
            f"torch.load({str(path)!r}, weights_only=True) refused the file: {e}. The zoo reads "
            f"tensors and plain containers only and never unpickles other objects; a "
            f"checkpoint that needs them is not one the zoo will convert."
        ) from e


def _numpy_state_dict(obj: Any, what: str) -> dict[str, np.ndarray]:
    """A state dict of tensors (or arrays) → ``{key: float32/int numpy array}``."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{what} holds a {type(obj).__name__}, not a state dict of tensors")
    out = {}
    for key, value in obj.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            raise WeightsError(f"{what}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[str(key)] = value
    return out


def _check_layout(
    given: Mapping[str, np.ndarray], layout: Mapping[str, tuple], what: str, strip: str = ""
) -> None:
    """Every key of ``layout`` present with its shape, nothing else (but ignorable counters).
    ``strip`` is a prefix the checkpoint may put on every key (DataParallel's ``module.``)."""

    def bare(k: str) -> str:
        return k[len(strip) :] if strip and k.startswith(strip) else k

    keys = {bare(k): k for k in given}
    expected = {bare(k): v for k, v in layout.items()}
    # Name a missing tensor as this checkpoint spells its keys.
    spell = strip if strip and any(k.startswith(strip) for k in given) else ""
    unexpected = sorted(
        keys[k] for k in keys if k not in expected and not k.endswith(_IGNORED_SUFFIXES)
    )
    missing = sorted(spell + k for k in expected if k not in keys)
    if unexpected:
        hint = f"; and it lacks {', '.join(map(repr, missing[:3]))}" if missing else ""
        raise WeightsError(
            f"{what}: unexpected tensor(s) {', '.join(map(repr, unexpected[:5]))}, which the "
            f"checkpoint layout does not have{hint}"
        )
    if missing:
        raise WeightsError(
            f"{what}: missing tensor(s) {', '.join(map(repr, missing[:5]))}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    for k, shape in expected.items():
        got = tuple(np.shape(given[keys[k]]))
        if got != tuple(shape):
            raise WeightsError(
                f"{what}: tensor {keys[k]!r} has shape {got}, the checkpoint layout (and the "
                f"model) needs {tuple(shape)}"
            )


# -- ABS: ten VariationalAutoEncoder state dicts ↔ one grouped model ---------------------------
def _abs_layers(model) -> list[tuple[str, Any, str]]:
    """``(torch prefix, layer, kind)`` per weighted layer, in the authors' module order: the
    encoder's ``conv_i``/``bn_i`` and ``conv_3`` (the μ, log σ² head), then the decoder's."""
    import keras

    out = []
    for part, layers, last in (("Encoder", model.encoder_layers, model.encoder_head),
                               ("Decoder", model.decoder_layers, model.decoder_out)):  # fmt: skip
        bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
        convs = [layer for layer in layers if layer.weights and layer not in bns]
        for i, (conv, bn) in enumerate(zip(convs, bns, strict=True)):
            out += [(f"{part}.conv_{i}", conv, "conv"), (f"{part}.bn_{i}", bn, "bn")]
        out.append((f"{part}.conv_{len(convs)}", last, "conv"))
    return out


_BN = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
       ("running_var", "moving_variance"))  # fmt: skip


def abs_checkpoint_layout(model) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of one of the authors' ``ABS_c.net`` state dicts for ``model``'s
    config: ``Encoder.conv_0.weight`` (32, 1, 5, 5) … ``Decoder.conv_3.bias`` (1,)."""
    C = model.num_classes
    layout = {}
    for prefix, layer, kind in _abs_layers(model):
        if kind == "conv":
            k, _, a, cb = layer.kernel.shape
            layout[f"{prefix}.weight"] = (cb // C, a, k, k)  # torch (out|in, in|out, kh, kw)
            layout[f"{prefix}.bias"] = (layer.bias.shape[0] // C,)
        else:
            for torch_name, _ in _BN:
                layout[f"{prefix}.{torch_name}"] = (layer.gamma.shape[0] // C,)
    return layout


def port_abs_state_dicts(
    model, state_dicts: Sequence[Mapping[str, np.ndarray]], names: Sequence[str] | None = None
) -> None:
    """Load the authors' per-class VAE state dicts (class c's is ``state_dicts[c]``) into the
    grouped ABS ``model``.

    A per-class kernel, PyTorch ``Conv2d`` (out, in, kh, kw) or ``ConvTranspose2d``
    (in, out, kh, kw), becomes group c of the grouped kernel by ``transpose(2, 3, 1, 0)``
    concatenated on the last (group-major) axis; biases and the BatchNorm vectors
    (weight/bias/running_mean/running_var → gamma/beta/moving_mean/moving_variance; eps 1e-5,
    as PyTorch's and the model's) concatenate class by class. Every file is checked against
    :func:`abs_checkpoint_layout` before anything is assigned.

    Raises:
        WeightsError: a wrong number of classes, or a wrong, missing or misshapen tensor
            (naming the file and the key).
    """
    C = model.num_classes
    names = list(names) if names is not None else [f"ABS_{c}.net" for c in range(C)]
    if len(state_dicts) != C:
        raise WeightsError(f"ABS needs {C} class VAEs (ABS_0.net … ABS_{C - 1}.net), got "
                           f"{len(state_dicts)}")  # fmt: skip
    layout = abs_checkpoint_layout(model)
    for sd, name in zip(state_dicts, names, strict=True):
        _check_layout(sd, layout, name)

    def stack(key, transform=lambda a: a):
        return np.concatenate([transform(np.asarray(sd[key], np.float32)) for sd in state_dicts],
                              axis=-1)  # fmt: skip

    values = []
    for prefix, layer, kind in _abs_layers(model):
        if kind == "conv":
            values.append((layer.kernel, stack(f"{prefix}.weight", lambda a: a.transpose(2, 3, 1, 0))))  # fmt: skip
            values.append((layer.bias, stack(f"{prefix}.bias")))
        else:
            for torch_name, attr in _BN:
                values.append((getattr(layer, attr), stack(f"{prefix}.{torch_name}")))
    for variable, value in values:
        variable.assign(value)
    model.clear_prototypes()  # the decoded bank belonged to the old decoders


def abs_state_dicts(model) -> list[dict[str, np.ndarray]]:
    """The inverse of :func:`port_abs_state_dicts`: ``model``'s weights as ten state dicts in
    the layout of the authors' ``ABS_c.net`` files (float32, their key order)."""
    C = model.num_classes
    out: list[dict[str, np.ndarray]] = [{} for _ in range(C)]

    def split(array, transform=lambda a: a):
        parts = np.split(np.asarray(array), C, axis=-1)
        return [np.ascontiguousarray(transform(p)) for p in parts]

    for prefix, layer, kind in _abs_layers(model):
        if kind == "conv":
            entries = [("weight", split(layer.kernel.numpy(), lambda a: a.transpose(3, 2, 0, 1))),
                       ("bias", split(layer.bias.numpy()))]  # fmt: skip
        else:
            entries = [(t, split(getattr(layer, a).numpy())) for t, a in _BN]
        for torch_name, parts in entries:
            for c in range(C):
                out[c][f"{prefix}.{torch_name}"] = parts[c]
    return out


def _abs_sources(path: Path, num_classes: int = 10) -> list[Path]:
    base = path
    if not (base / "ABS_0.net").is_file() and (path / "exp/VAE_swarm_MSE/nets").is_dir():
        base = path / "exp" / "VAE_swarm_MSE" / "nets"  # the checkout itself
    files = [base / f"ABS_{c}.net" for c in range(num_classes)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise WeightsError(
            f"--from {path}: no {', '.join(missing) if len(missing) < 4 else 'ABS_*.net'} there. "
            f"Pass the directory holding the "
            f"authors' ABS_0.net … ABS_9.net (exp/VAE_swarm_MSE/nets of a checkout of "
            f"bethgelab/AnalysisBySynthesis), or the checkout itself."
        )
    return files


def _abs_read(files: list[Path]) -> list[dict[str, np.ndarray]]:
    return [_numpy_state_dict(read_torch_file(f), f.name) for f in files]


def _abs_apply(model, state, files: list[Path]) -> list[str]:
    port_abs_state_dicts(model, state, [f.name for f in files] or None)
    return []


# -- i-RevNet-301: the training script's checkpoint ↔ IRevNet -----------------------------------
def irevnet_checkpoint_layout(model, prefix: str = "module.") -> dict[str, tuple[int, ...]]:
    """The keys and shapes of pytorch-i-revnet's ``iRevNet`` state dict for the zoo i-RevNet
    ``model``'s config (its ``ILSVRC_main.py`` saves it from ``DataParallel``, hence
    ``module.``), written from the authors' ``irevnet_block`` and ``iRevNet``: per block i,
    ``stack.{i}.bottleneck_block.{j}`` numbers every module of its ``nn.Sequential`` ([BN,
    ReLU,] conv, BN, ReLU, conv, Dropout, BN, ReLU, conv; the first block has no leading BN);
    then ``bn1`` and ``linear``. BatchNorm counters (``num_batches_tracked``) are not listed: a
    checkpoint may have them or not."""
    in_ch = model.image_shape[-1] * 4**model.init_squeezes  # their in_ch = 3·2^init_ds
    layout: dict[str, tuple[int, ...]] = {}

    def bn(p: str, n: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{p}.{name}"] = (n,)

    i, first = 0, True
    for depth, ch in zip(model.blocks, model.channels, strict=True):
        for _ in range(depth):
            w, p = ch // model.mult, f"{prefix}stack.{i}.bottleneck_block"
            j = 0
            if not first:
                bn(f"{p}.0", in_ch // 2)
                j = 2
            layout[f"{p}.{j}.weight"] = (w, in_ch // 2, 3, 3)
            bn(f"{p}.{j + 1}", w)
            layout[f"{p}.{j + 3}.weight"] = (w, w, 3, 3)  # j + 4 is the Dropout
            bn(f"{p}.{j + 5}", w)
            layout[f"{p}.{j + 7}.weight"] = (ch, w, 3, 3)
            in_ch, first, i = 2 * ch, False, i + 1
    bn(f"{prefix}bn1", in_ch)
    layout[f"{prefix}linear.weight"] = (model.num_classes, in_ch)
    layout[f"{prefix}linear.bias"] = (model.num_classes,)
    return layout


def _check_irevnet(model) -> None:
    from zoo.models.firevnet import IRevNet

    if not isinstance(model, IRevNet) or model.head != "linear" or model.actnorm:
        raise WeightsError("the i-RevNet checkpoint ports into an i-RevNet with its linear head "
                           f"(irevnet301), not {getattr(model, 'zoo_name', model.name)}")  # fmt: skip


def port_irevnet_checkpoint(model, state_dict: Mapping[str, np.ndarray], name: str = "checkpoint") -> list[str]:  # fmt: skip
    """Check ``state_dict`` against :func:`irevnet_checkpoint_layout` (keys with or without
    ``module.``), then load it with :func:`zoo.models.firevnet.port_irevnet_state_dict`.
    Returns the entries left unused (BatchNorm counters).

    Raises:
        WeightsError: a wrong, missing or misshapen tensor, naming it.
    """
    from zoo.models.firevnet import port_irevnet_state_dict

    _check_irevnet(model)
    _check_layout(state_dict, irevnet_checkpoint_layout(model, ""), name, strip="module.")
    try:
        unused = port_irevnet_state_dict(model, state_dict)
    except (KeyError, ValueError) as e:  # the layout check makes these unreachable
        raise WeightsError(f"{name}: {e}") from e
    spelled = {k.removeprefix("module."): k for k in state_dict}
    return [spelled.get(k, k) for k in unused]


def irevnet_state_dict(model, prefix: str = "module.") -> dict[str, np.ndarray]:
    """The inverse of the port: the zoo i-RevNet's weights as the authors' state dict (HWIO
    kernels back to OIHW, the linear kernel transposed, BatchNorm by name), keyed as
    :func:`irevnet_checkpoint_layout` and in its order."""
    import keras

    from zoo.layers.invertible import IRevNetBlock

    _check_irevnet(model)
    sd: dict[str, np.ndarray] = {}

    def bn(p: str, layer) -> None:
        for torch_name, attr in _BN:
            sd[f"{p}.{torch_name}"] = getattr(layer, attr).numpy()

    blocks = [b for b in model.stack.blocks if isinstance(b, IRevNetBlock)]
    for i, block in enumerate(blocks):
        j = 0  # the authors' nn.Sequential index: every module counts, padding is in the conv
        for layer in block.bottleneck.layers:
            if isinstance(layer, keras.layers.ZeroPadding2D):
                continue
            p = f"{prefix}stack.{i}.bottleneck_block.{j}"
            if isinstance(layer, keras.layers.Conv2D):
                sd[f"{p}.weight"] = np.ascontiguousarray(layer.kernel.numpy().transpose(3, 2, 0, 1))
            elif isinstance(layer, keras.layers.BatchNormalization):
                bn(p, layer)
            j += 1
            if isinstance(layer, keras.layers.Conv2D) and j == (4 if block.first else 6):
                j += 1  # the Dropout after the second conv
    bn(f"{prefix}bn1", model.head_bn)
    sd[f"{prefix}linear.weight"] = np.ascontiguousarray(model.head_linear.kernel.numpy().T)
    sd[f"{prefix}linear.bias"] = model.head_linear.bias.numpy()
    return sd


def _irevnet_sources(path: Path) -> list[Path]:
    if path.is_dir():
        raise WeightsError(f"--from {path} is a directory; pass the checkpoint file "
                           "(i-revnet-301.pth.tar)")  # fmt: skip
    if not path.is_file():
        raise WeightsError(f"--from {path}: no such checkpoint file")
    return [path]


def _irevnet_read(files: list[Path]) -> dict[str, np.ndarray]:
    (f,) = files
    obj = read_torch_file(f)
    # The training script saves {"epoch", "arch", "state_dict", "best_prec1", "optimizer"}.
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    return _numpy_state_dict(obj, f.name)


def _irevnet_apply(model, state, files: list[Path]) -> list[str]:
    return port_irevnet_checkpoint(model, state, files[0].name)


# -- the converters --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Port:
    """A released checkpoint the zoo converts: how to find, read and apply its files, and what
    to record about it."""

    model: str
    find: Callable[[Path], list[Path]]
    read: Callable[[list[Path]], Any]
    apply: Callable[[Any, Any, list[Path]], list[str]]
    source: Mapping[str, Any]
    license: str
    paper: str
    reported: Mapping[str, Any]


PORTS: dict[str, Port] = {
    "abs_mnist": Port(
        model="abs_mnist",
        find=_abs_sources,
        read=_abs_read,
        apply=_abs_apply,
        source={
            "repository": "bethgelab/AnalysisBySynthesis",
            "commit": "daa5a3d",
            "path": "exp/VAE_swarm_MSE/nets",
            "url": "https://github.com/bethgelab/AnalysisBySynthesis/tree/master/exp/VAE_swarm_MSE/nets",
        },
        license="Apache-2.0",
        paper="Schott, Rauber, Bethge, Brendel: Towards the first adversarially robust neural "
        "network model on MNIST, ICLR 2019 (shared/papers/002_7240b1e8d13f6586.txt)",
        reported={"mnist_accuracy_percent": 99.0, "source": "paper, Table 1 (ABS)"},
    ),
    "irevnet301": Port(
        model="irevnet301",
        find=_irevnet_sources,
        read=_irevnet_read,
        apply=_irevnet_apply,
        source={
            "repository": "jhjacobsen/pytorch-i-revnet",
            "file": "i-revnet-301.pth.tar",
            "url": "https://drive.google.com/uc?id=1eQtZIpmtVM0-JDv_2nx3xMuGKjA1beLF&export=download",
            "architecture": "iRevNet(nBlocks=[6, 16, 72, 6], nStrides=[2, 2, 2, 2], "
            "nChannels=[24, 96, 384, 1536], nClasses=1000, init_ds=2, in_shape=[3, 224, 224])",
        },
        license="MIT",
        paper="Jacobsen, Smeulders, Oyallon: i-RevNet: Deep Invertible Networks, ICLR 2018",
        reported={
            "imagenet_top1_accuracy_percent": 74.018,
            "imagenet_top5_accuracy_percent": 91.59,
            "source": "checkpoint/ilsvrc2012/pre-trained/info.txt of the repository",
        },  # fmt: skip
    ),
}


def _get_port(model: str) -> Port:
    from zoo.registry import get_spec

    name = get_spec(model).name  # UnknownModelError names close matches
    if name not in PORTS:
        raise WeightsError(
            f"zoo-port has no converter for {name}; it converts {', '.join(sorted(PORTS))}"
        )
    return PORTS[name]


def default_output(model: str) -> Path:
    """Where the manifest tag ``MODEL/authors`` looks for the converted preset."""
    entry = available(model).get(TAG)
    return cache_dir() / (entry.preset if entry and entry.preset else f"presets/{model}/{TAG}")


def convert(
    model: str,
    state: Any,
    output: str | Path,
    *,
    files: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert ``state`` (numpy, as the port's reader returns it: ten state dicts for ABS, one
    for i-RevNet) into a preset at ``output``; ``files`` are the source files, whose sha256 go
    into ``metadata.json`` and are compared with the manifest's. Returns the summary zoo-port
    prints."""
    import zoo
    from zoo.presets import save_preset, weights_digest, write_metadata

    port_ = _get_port(model)
    files = [Path(f) for f in files]
    net = zoo.build(port_.model, **dict(overrides or {}))
    unused = port_.apply(net, state, files)
    entry = available(port_.model).get(TAG)
    expected = {s.name: s.sha256 for s in entry.sources} if entry else {}
    sources = []
    for f in files:
        digest = sha256_of(f)
        known = expected.get(f.name)
        sources.append({"name": f.name, "sha256": digest,
                        "matches_manifest": None if known is None else digest == known})  # fmt: skip
    source = {"kind": "zoo-port", **port_.source, "files": sources,
              "converted_from": [str(f.resolve()) for f in files]}  # fmt: skip
    output = Path(output).expanduser()
    save_preset(net, output, source=source, license=port_.license, paper=port_.paper,
                metrics={"reported": dict(port_.reported)}, tag=TAG)  # fmt: skip
    digest = weights_digest(output / "weights.weights.h5")
    metadata = write_metadata(
        output, model=port_.model, source=source, metrics={"reported": dict(port_.reported)},
        license=port_.license, paper=port_.paper, tag=TAG, content_sha256=digest,
        unused_source_entries=unused,
    )  # fmt: skip
    summary = {
        "model": port_.model,
        "output": str(output),
        "sha256": metadata["sha256"],
        "content_sha256": digest,
        "sources": sources,
        "unused_source_entries": unused,
    }
    if entry is not None and entry.sha256 is not None:
        summary["matches_manifest"] = metadata["sha256"] == entry.sha256 or digest == entry.content_sha256  # fmt: skip
    return summary


def port(
    model: str,
    source: str | Path,
    output: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the released checkpoint at ``source`` (with ``torch.load(weights_only=True)``) and
    write its preset to ``output`` (default: where ``weights="authors"`` looks); returns the
    summary. See the module docstring."""
    port_ = _get_port(model)
    files = port_.find(Path(source).expanduser())
    state = port_.read(files)
    target = Path(output) if output is not None else default_output(port_.model)
    return convert(port_.model, state, target, files=files, overrides=overrides)


def build_parser() -> argparse.ArgumentParser:
    from zoo.cli_utils import add_overrides_argument

    p = argparse.ArgumentParser(
        prog="zoo-port",
        description="Convert a released PyTorch checkpoint into a zoo preset (config.json, "
        "weights.weights.h5, metadata.json with the sources' sha256). Files are read with "
        "torch.load(weights_only=True) only.",
    )
    p.add_argument("model", nargs="?", help=f"model to convert to: {', '.join(sorted(PORTS))}")
    p.add_argument("--from", dest="source", help="the released file(s): ABS's nets directory "
                   "(or the checkout), i-RevNet's .pth.tar")  # fmt: skip
    p.add_argument("--output", help="preset directory (default: where zoo.load(MODEL, "
                   "weights='authors') looks, under $ZOO_HOME)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="list the convertible models and exit")
    add_overrides_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from zoo.cli_utils import parse_overrides, start_cli

    start_cli("zoo-port")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, p in sorted(PORTS.items()):
            print(f"{name}\t{p.source['repository']}\t{p.license}")
        return 0
    if not args.model or not args.source:
        parser.error("MODEL and --from are required (zoo-port --list names the models)")
    import zoo

    try:
        overrides = parse_overrides(args.overrides)
        _get_port(args.model)
    except (zoo.UnknownModelError, ValueError) as e:
        parser.error(str(e))
    try:
        summary = port(args.model, args.source, args.output, overrides=overrides)
    except (WeightsError, zoo.InvalidConfigError) as e:
        print(f"zoo-port: error: {e}", file=sys.stderr)
        return 1
    for s in summary["sources"]:
        if s["matches_manifest"] is False:
            print(f"zoo-port: warning: {s['name']} (sha256 {s['sha256']}) is not the published "
                  f"file the manifest lists; the preset is written, but weights='{TAG}' will "
                  "refuse it", file=sys.stderr)  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
