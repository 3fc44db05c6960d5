"""zoo-port: the ABS and i-RevNet converters both ways, their errors, torch.load(weights_only=True)
and nothing else, the manifest's ported tags.

No third-party weights are used: checkpoints in the authors' layouts are built from random zoo
models with the converters' inverses. Tests that write PyTorch files need torch and are skipped
without it; the converters, the manifest and the messages are tested without it.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

import zoo
import zoo.port as zp
import zoo.weights as zw

# One of the authors' ABS_c.net state dicts, as the released files hold it (listed from
# bethgelab/AnalysisBySynthesis@daa5a3d exp/VAE_swarm_MSE/nets/ABS_0.net).
AUTHORS_ABS_LAYOUT = {
    **{f"Encoder.{k}": s for k, s in [
        ("conv_0.weight", (32, 1, 5, 5)), ("conv_0.bias", (32,)),
        ("conv_1.weight", (32, 32, 4, 4)), ("conv_1.bias", (32,)),
        ("conv_2.weight", (64, 32, 3, 3)), ("conv_2.bias", (64,)),
        ("conv_3.weight", (16, 64, 5, 5)), ("conv_3.bias", (16,)),
    ]},
    **{f"Encoder.bn_{i}.{k}": (n,) for i, n in enumerate((32, 32, 64))
       for k in ("weight", "bias", "running_mean", "running_var")},
    **{f"Decoder.{k}": s for k, s in [
        ("conv_0.weight", (8, 32, 4, 4)), ("conv_0.bias", (32,)),
        ("conv_1.weight", (32, 16, 5, 5)), ("conv_1.bias", (16,)),
        ("conv_2.weight", (16, 16, 5, 5)), ("conv_2.bias", (16,)),
        ("conv_3.weight", (16, 1, 4, 4)), ("conv_3.bias", (1,)),
    ]},
    **{f"Decoder.bn_{i}.{k}": (n,) for i, n in enumerate((32, 16, 16))
       for k in ("weight", "bias", "running_mean", "running_var")},
}  # fmt: skip
IREVNET_SMALL = dict(image_shape=(16, 16, 3), num_classes=5, blocks=(2, 2), channels=(24, 96),
                     strides=(2, 2), couplings=("additive", "additive"))  # fmt: skip


def _randomize(model, seed=0):
    """Distinct values in every weight a checkpoint holds (ABS's KL schedule weight is training
    state, not in the authors' files)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith("kl_weight"):
            continue
        value = (
            rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else rng.normal(0, 0.3, w.shape)
        )
        w.assign(value.astype(w.dtype))
    return model


def _assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


@pytest.fixture(scope="module")
def abs_source():
    """A random ABS and its ten state dicts in the authors' layout (the converter's inverse)."""
    model = _randomize(zoo.build("abs_mnist", bank_size=16))
    return model, zp.abs_state_dicts(model)


@pytest.fixture(scope="module")
def irevnet_source():
    model = _randomize(zoo.build("irevnet301", **IREVNET_SMALL), seed=2)
    return model, zp.irevnet_state_dict(model)


# -- ABS ---------------------------------------------------------------------------------------
def test_abs_inverse_gives_the_authors_keys_and_shapes(abs_source):
    _, sds = abs_source
    assert len(sds) == 10
    for sd in sds:
        assert {k: v.shape for k, v in sd.items()} == AUTHORS_ABS_LAYOUT
        assert all(v.dtype == np.float32 for v in sd.values())


def test_abs_converter_round_trips_bit_for_bit(abs_source):
    model, sds = abs_source
    fresh = zoo.build("abs_mnist", bank_size=16)
    zp.port_abs_state_dicts(fresh, sds)
    _assert_same_weights(fresh, model)


def _conv2d(x, w, b, stride):  # PyTorch Conv2d, valid padding: x (c, h, w), w (o, c, k, k)
    k = w.shape[-1]
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((w.shape[0], ho, wo))
    for dy in range(k):
        for dx in range(k):
            patch = x[:, dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]  # fmt: skip
            out += np.einsum("chw,oc->ohw", patch, w[:, :, dy, dx])
    return out + b[:, None, None]


def _conv_transpose2d(x, w, b, stride):  # PyTorch ConvTranspose2d, padding 0: w (c, o, k, k)
    k = w.shape[-1]
    h, wd = x.shape[1:]
    out = np.zeros((w.shape[1], (h - 1) * stride + k, (wd - 1) * stride + k))
    for dy in range(k):
        for dx in range(k):
            out[:, dy : dy + stride * (h - 1) + 1 : stride, dx : dx + stride * (wd - 1) + 1 : stride] += (
                np.einsum("chw,co->ohw", x, w[:, :, dy, dx]))  # fmt: skip
    return out + b[:, None, None]


def _bn(x, sd, p):  # BatchNorm2d in eval mode, eps 1e-5
    g, b, m, v = (sd[f"{p}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]  # fmt: skip


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def test_ported_abs_equals_a_numpy_forward_of_the_authors_vae(abs_source):
    """The authors' VariationalAutoEncoder in eval mode, in float64 numpy from their nets.py:
    encoder conv/BN/ELU ×3, conv_3 → μ = the first 8 channels; decoder convT/BN/ELU ×3, convT,
    sigmoid. Class 3's VAE against group 3 of the ported grouped model."""
    model, sds = abs_source
    fresh = zoo.build("abs_mnist", bank_size=16)
    zp.port_abs_state_dicts(fresh, sds)
    c, sd = 3, {k: v.astype(np.float64) for k, v in sds[3].items()}
    rng = np.random.default_rng(7)
    x = rng.random((28, 28))
    h = x[None]
    for i, stride in enumerate((1, 2, 2)):
        h = _elu(_bn(_conv2d(h, sd[f"Encoder.conv_{i}.weight"], sd[f"Encoder.conv_{i}.bias"], stride), sd, f"Encoder.bn_{i}"))  # fmt: skip
    mu_ref = _conv2d(h, sd["Encoder.conv_3.weight"], sd["Encoder.conv_3.bias"], 1)[:8, 0, 0]
    folded = np.tile(x[None, :, :, None], (1, 1, 1, 10)).astype(np.float32)
    mu, _ = fresh.encode(folded)
    np.testing.assert_allclose(mu.numpy()[0, c], mu_ref, rtol=1e-4, atol=1e-4)

    z = rng.normal(size=(10, 8))
    h = z[c][:, None, None]
    for i, stride in enumerate((1, 2, 2)):
        h = _elu(_bn(_conv_transpose2d(h, sd[f"Decoder.conv_{i}.weight"], sd[f"Decoder.conv_{i}.bias"], stride), sd, f"Decoder.bn_{i}"))  # fmt: skip
    image = 1 / (1 + np.exp(-_conv_transpose2d(h, sd["Decoder.conv_3.weight"], sd["Decoder.conv_3.bias"], 1)[0]))  # fmt: skip
    decoded = fresh.decode(z[None].astype(np.float32)).numpy()[0, :, :, c]
    assert np.abs(image - image.mean()).max() > 0.05  # a real image, not a constant
    np.testing.assert_allclose(decoded, image, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda sd: sd.update({"Encoder.conv0.weight": sd.pop("Encoder.conv_0.weight")}),
         r"ABS_4\.net: unexpected tensor\(s\) 'Encoder\.conv0\.weight'.*lacks 'Encoder\.conv_0\.weight'"),
        (lambda sd: sd.update({"Decoder.conv_1.weight": sd["Decoder.conv_1.weight"].transpose(1, 0, 2, 3)}),
         r"ABS_4\.net: tensor 'Decoder\.conv_1\.weight' has shape \(16, 32, 5, 5\), the checkpoint layout \(and the model\) needs \(32, 16, 5, 5\)"),
        (lambda sd: sd.pop("Decoder.bn_2.running_var"),
         r"ABS_4\.net: missing tensor\(s\) 'Decoder\.bn_2\.running_var'"),
    ],
    ids=["wrong_key", "wrong_shape", "missing_tensor"],
)  # fmt: skip
def test_abs_converter_names_a_wrong_key_a_wrong_shape_or_a_missing_tensor(abs_source, damage, message):  # fmt: skip
    model, sds = abs_source
    broken = [dict(sd) for sd in sds]
    damage(broken[4])
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(zoo.WeightsError, match=message):
        zp.port_abs_state_dicts(model, broken)
    for w, b in zip(model.weights, before, strict=True):  # nothing was half-assigned
        np.testing.assert_array_equal(w.numpy(), b)


def test_abs_converter_ignores_pytorch_batchnorm_counters(abs_source):
    model, sds = abs_source
    counted = [{**sd, "Encoder.bn_0.num_batches_tracked": np.array(29000)} for sd in sds]
    fresh = zoo.build("abs_mnist", bank_size=16)
    zp.port_abs_state_dicts(fresh, counted)
    _assert_same_weights(fresh, model)


# -- i-RevNet ----------------------------------------------------------------------------------
def test_irevnet_converter_round_trips_in_the_checkpoint_layout(irevnet_source):
    model, sd = irevnet_source
    layout = zp.irevnet_checkpoint_layout(model)
    assert list(sd) == list(layout)  # the authors' keys, in their order
    assert {k: v.shape for k, v in sd.items()} == layout
    assert "module.stack.0.bottleneck_block.7.weight" in sd  # first block: no leading BN
    assert "module.stack.1.bottleneck_block.9.weight" in sd  # others: BN, ReLU first
    fresh = zoo.build("irevnet301", **IREVNET_SMALL)
    counters = {"module.stack.1.bottleneck_block.0.num_batches_tracked": np.array(5)}
    unused = zp.port_irevnet_checkpoint(fresh, {**sd, **counters})
    assert unused == list(counters)
    _assert_same_weights(fresh, model)
    _randomize(fresh, seed=9)  # and again, from keys without DataParallel's module. prefix
    zp.port_irevnet_checkpoint(fresh, {k.removeprefix("module."): v for k, v in sd.items()})
    _assert_same_weights(fresh, model)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda sd: sd.update({"module.linear.weights": sd.pop("module.linear.weight")}),
         r"ckpt: unexpected tensor\(s\) 'module\.linear\.weights'"),
        (lambda sd: sd.update({"module.stack.2.bottleneck_block.5.weight": np.zeros((24, 24, 1, 1), np.float32)}),
         r"ckpt: tensor 'module\.stack\.2\.bottleneck_block\.5\.weight' has shape \(24, 24, 1, 1\), the checkpoint layout \(and the model\) needs \(24, 24, 3, 3\)"),
        (lambda sd: sd.pop("module.bn1.running_mean"), r"ckpt: missing tensor\(s\) 'module\.bn1\.running_mean'"),
    ],
    ids=["wrong_key", "wrong_shape", "missing_tensor"],
)  # fmt: skip
def test_irevnet_converter_names_a_wrong_key_a_wrong_shape_or_a_missing_tensor(irevnet_source, damage, message):  # fmt: skip
    model, sd = irevnet_source
    broken = dict(sd)
    damage(broken)
    with pytest.raises(zoo.WeightsError, match=message):
        zp.port_irevnet_checkpoint(model, broken, "ckpt")


def test_irevnet301_layout_is_the_released_checkpoints():
    """The full i-RevNet-301 layout, from the zoo's default config without building the model:
    100 blocks and 125,120,356 trainable parameters, the released checkpoint's count."""
    config = zoo.get_spec("irevnet301").default_config
    stand_in = types.SimpleNamespace(**config)  # the layout reads the config's fields only
    layout = zp.irevnet_checkpoint_layout(stand_in)
    trainable = sum(int(np.prod(s)) for k, s in layout.items() if not k.endswith(("running_mean", "running_var")))  # fmt: skip
    assert trainable == 125_120_356
    assert len({re.match(r"module\.stack\.(\d+)\.", k)[1] for k in layout if ".stack." in k}) == 100
    assert layout["module.stack.0.bottleneck_block.0.weight"] == (6, 6, 3, 3)
    assert layout["module.stack.99.bottleneck_block.9.weight"] == (1536, 384, 3, 3)
    assert layout["module.linear.weight"] == (1000, 3072)


# -- presets from ported state, and the manifest ---------------------------------------------------
def _fake_sources(directory: Path, names) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i, name in enumerate(names):
        (directory / name).write_bytes(f"stand-in for {name} #{i}".encode())
        files.append(directory / name)
    return files


def test_convert_writes_a_preset_with_the_sources_sha256(abs_source, tmp_path):
    model, sds = abs_source
    files = _fake_sources(tmp_path / "nets", [f"ABS_{c}.net" for c in range(10)])
    summary = zp.convert("abs_mnist", sds, tmp_path / "preset", files=files,
                         overrides={"bank_size": 16})  # fmt: skip
    meta = json.loads((tmp_path / "preset" / "metadata.json").read_text())
    assert [f["sha256"] for f in meta["source"]["files"]] == [zw.sha256_of(f) for f in files]
    assert all(f["matches_manifest"] is False for f in meta["source"]["files"])  # not the authors'
    assert (
        meta["sha256"] == summary["sha256"] == zw.sha256_of(tmp_path / "preset/weights.weights.h5")
    )
    assert meta["license"] == "Apache-2.0" and "Schott" in meta["paper"]
    assert meta["source"]["repository"] == "bethgelab/AnalysisBySynthesis"
    loaded = zoo.load(tmp_path / "preset")
    assert loaded.zoo_name == "abs_mnist" and loaded.bank_size == 16
    _assert_same_weights(loaded, model)


def test_manifest_lists_the_authors_checkpoints():
    abs_entry = zw.available("abs_mnist")["authors"]
    assert [s.name for s in abs_entry.sources] == [f"ABS_{c}.net" for c in range(10)]
    assert all(re.fullmatch("[0-9a-f]{64}", s.sha256) for s in abs_entry.sources)
    assert re.fullmatch("[0-9a-f]{64}", abs_entry.sha256) and abs_entry.license == "Apache-2.0"
    assert abs_entry.preset == "presets/abs_mnist/authors"
    assert zw.available("binary_abs_mnist")["authors"].sha256 == abs_entry.sha256  # same VAEs
    irevnet = zw.available("irevnet301")["authors"]
    assert irevnet.preset == "presets/irevnet301/authors" and irevnet.license == "MIT"
    assert irevnet.sha256 is None  # the checkpoint could not be obtained to hash it


@pytest.mark.parametrize(
    "model, command",
    [("abs_mnist", "zoo-port abs_mnist --from AnalysisBySynthesis/exp/VAE_swarm_MSE/nets"),
     ("irevnet301", "zoo-port irevnet301 --from i-revnet-301.pth.tar")],
)  # fmt: skip
def test_authors_tag_without_the_converted_preset_gives_the_port_command(model, command):
    target = zw.cache_dir() / "presets" / model / "authors"
    with pytest.raises(zoo.WeightsError) as info:
        zoo.load(model, weights="authors")
    assert f"\n    {command} --output {target}\n" in str(info.value)


def test_authors_tag_loads_the_converted_preset_and_checks_its_sha256(abs_source, monkeypatch):
    model, sds = abs_source
    target = zw.cache_dir() / "presets" / "abs_mnist" / "authors"
    zp.convert("abs_mnist", sds, target, overrides={"bank_size": 16})
    with pytest.raises(zoo.WeightsError, match="sha256 mismatch for weights file"):
        zoo.load("abs_mnist", weights="authors")  # random weights are not the authors'
    entry = zw.available("abs_mnist")["authors"]
    ours = zw.sha256_of(target / "weights.weights.h5")
    monkeypatch.setitem(zw._MANIFEST["abs_mnist"], "authors",
                        zw.WeightsEntry(**{**entry.__dict__, "sha256": ours, "size": None}))  # fmt: skip
    loaded = zoo.load("abs_mnist", weights="authors")
    assert loaded.bank_size == 16  # the preset's config, not the default
    _assert_same_weights(loaded, model)


# -- torch.load(weights_only=True), and nothing else ----------------------------------------------
class _Payload:
    """Unpickling this runs os.mkdir(flag): evidence that a file was unpickled."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.mkdir, (str(self.flag),))


def test_every_torch_load_in_the_zoo_passes_weights_only_true():
    calls = []
    for path in (ROOT / "zoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":  # fmt: skip
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True  # fmt: skip
                calls.append((path.name, node.lineno, ok))
    assert calls and all(ok for *_, ok in calls), calls


def test_without_torch_the_port_says_to_install_it_and_unpickles_nothing(tmp_path, monkeypatch):
    flag = tmp_path / "unpickled"
    nets = tmp_path / "nets"
    nets.mkdir()
    for c in range(10):
        (nets / f"ABS_{c}.net").write_bytes(pickle.dumps(_Payload(flag)))
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(zoo.WeightsError, match=r"needs torch, which is not installed: pip install torch"):  # fmt: skip
        zp.port("abs_mnist", nets, tmp_path / "out")
    assert not flag.exists() and not (tmp_path / "out").exists()


def test_read_torch_file_calls_torch_load_with_weights_only(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.arange(3.0)}, path)
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert zp.read_torch_file(path)["w"].tolist() == [0.0, 1.0, 2.0]
    assert seen == [{"map_location": "cpu", "weights_only": True}]


def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path):
    torch = pytest.importorskip("torch")
    flag = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(_Payload(flag)))  # the payload is live: unpickling it runs it
    assert flag.is_dir()
    flag.rmdir()
    nets = tmp_path / "nets"
    nets.mkdir()
    for c in range(10):  # a state dict with one extra object that runs code when unpickled
        torch.save({"Encoder.conv_0.bias": torch.zeros(32), "evil": _Payload(flag)}, nets / f"ABS_{c}.net")  # fmt: skip
    with pytest.raises(zoo.WeightsError, match=r"torch\.load\(.*ABS_0\.net', weights_only=True\) refused the file"):  # fmt: skip
        zp.port("abs_mnist", nets, tmp_path / "out")
    assert not flag.exists() and not (tmp_path / "out").exists()


def test_zoo_port_reads_every_file_through_torch_load_weights_only(abs_source, tmp_path, monkeypatch, capsys):  # fmt: skip
    """The whole zoo-port path (find the ten files, read each, convert, write the preset) with
    a stand-in ``torch`` whose ``load`` reads arrays only and records how it was called, so it
    runs where torch is not installed."""
    model, sds = abs_source
    nets = tmp_path / "nets"
    nets.mkdir()
    for c, sd in enumerate(sds):
        with open(nets / f"ABS_{c}.net", "wb") as f:
            np.savez(f, **sd)
    calls = []

    def load(path, **kwargs):
        calls.append((Path(path).name, kwargs))
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load))
    out = tmp_path / "preset"
    argv = ["abs_mnist", "--from", str(nets), "--output", str(out), "--set", "bank_size=16"]
    assert zp.main(argv) == 0
    assert calls == [(f"ABS_{c}.net", {"map_location": "cpu", "weights_only": True}) for c in range(10)]  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sources"][3]["sha256"] == zw.sha256_of(nets / "ABS_3.net")
    _assert_same_weights(zoo.load(out), model)


def test_zoo_port_cli_converts_the_authors_abs_files(abs_source, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from collections import OrderedDict

    model, sds = abs_source
    nets = tmp_path / "AnalysisBySynthesis" / "exp" / "VAE_swarm_MSE" / "nets"
    nets.mkdir(parents=True)
    for c, sd in enumerate(sds):  # as the authors saved them: an OrderedDict of tensors
        torch.save(OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items()), nets / f"ABS_{c}.net")  # fmt: skip
    out = tmp_path / "preset"
    argv = ["abs_mnist", "--from", str(tmp_path / "AnalysisBySynthesis"), "--output", str(out),
            "--set", "bank_size=16"]  # fmt: skip
    assert zp.main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["sources"][3]["sha256"] == zw.sha256_of(nets / "ABS_3.net")
    assert "is not the published file" in captured.err  # random weights, not the authors'
    _assert_same_weights(zoo.load(out), model)


def test_zoo_port_converts_an_irevnet_checkpoint_in_the_training_scripts_format(irevnet_source, tmp_path):  # fmt: skip
    """The layout of ILSVRC_main.py's save_checkpoint (torch 0.3 era: the legacy, non-zip
    format), at a small config: keys, their order and the per-block numbering are the released
    i-RevNet-301's; only the sizes are small (the full model takes a minute to build here)."""
    torch = pytest.importorskip("torch")
    from collections import OrderedDict

    model, sd = irevnet_source
    checkpoint = {
        "epoch": 160,
        "arch": "iRevNet",
        "state_dict": OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items()),
        "best_prec1": 74.018,
        "optimizer": {
            "state": {},
            "param_groups": [{"lr": 1e-4, "momentum": 0.9, "params": [0, 1]}],
        },
    }
    path = tmp_path / "i-revnet-301.pth.tar"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    overrides = [item for k, v in IREVNET_SMALL.items() for item in ("--set", f"{k}={v!r}")]
    assert zp.main(["irevnet301", "--from", str(path), "--output", str(tmp_path / "p"), *overrides]) == 0  # fmt: skip
    loaded = zoo.load(tmp_path / "p")
    assert loaded.zoo_config["blocks"] == [2, 2]
    _assert_same_weights(loaded, model)
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert meta["source"]["files"][0]["sha256"] == zw.sha256_of(path) and meta["license"] == "MIT"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_zoo_port_converts_a_full_size_irevnet301_checkpoint(tmp_path):
    """End to end at the released checkpoint's exact key layout and shapes (125 M parameters;
    two builds of the full model, minutes on 2 cores): random weights in the training script's
    format → zoo-port → preset → zoo.load → the weights read back in the authors' layout."""
    torch = pytest.importorskip("torch")
    layout = zp.irevnet_checkpoint_layout(
        types.SimpleNamespace(**zoo.get_spec("irevnet301").default_config)
    )
    rng = np.random.default_rng(0)
    sd = {
        k: (
            rng.uniform(0.5, 1.5, s) if k.endswith("running_var") else rng.normal(0, 0.1, s)
        ).astype(np.float32)
        for k, s in layout.items()
    }
    path = tmp_path / "i-revnet-301.pth.tar"
    torch.save(
        {"epoch": 160, "state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}},
        path,
        _use_new_zipfile_serialization=False,
    )
    assert zp.main(["irevnet301", "--from", str(path), "--output", str(tmp_path / "p")]) == 0
    loaded = zoo.load(tmp_path / "p")
    assert loaded.count_params() == 125_239_060  # 125,120,356 trainable + BN statistics
    back = zp.irevnet_state_dict(loaded)
    assert list(back) == list(layout)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
