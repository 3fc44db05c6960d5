"""Noise training side by side with the references, in one run.

1. The ε-projection: ``zoo.layers.noise.project_to_epsilon`` against the authors'
   ``fix_perturbation_size`` (PyTorch, bethgelab/game-of-noise ``evaluation_utils.py``) on the
   same images and directions: the largest difference of the projected images and both speeds.
2. One ANT training step (generator step + classifier step on the 50/30/20 batch) of the
   paper's MNIST CNN at batch 128: ``ant_mnist.train_step`` against the authors'
   ``train_noise_generator`` + ``fix_perturbation_size`` + ``train_classifier`` with their
   ``NoiseResNet1x1Conv`` and a PyTorch Madry CNN of the same architecture; steps/s and the ratio.
3. The corruptions against ``imagecorruptions`` (Michaelis et al.; numpy), if it is importable:
   per corruption and severity, on the same 64×64 colour images, the mean absolute difference of
   the images (0–255) for the deterministic corruptions, and for the random ones the ratio of the
   mean ℓ₂ change each applies (mine / theirs, 1.0 = the same strength); and the speed of both.
   ``imagecorruptions`` 1.1.2 needs two names that its dependencies removed (``np.float_``,
   skimage's ``multichannel=``); they are restored for it, in this process only.

The authors' functions are read from a checkout (``--reference DIR``) and executed as they are;
nothing of theirs is in the zoo. Run:

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/noise_training.py --reference PATH/game-of-noise \\
        [--imagecorruptions-path DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up (tracing)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def _reference_functions(path: Path, filename: str, names: list[str], namespace: dict) -> dict:
    """Execute the named top-level functions/classes of the reference file in ``namespace``.

    Each definition's source is cut out by itself (from its ``def``/``class`` line to the next
    top-level statement) and parsed alone: the reference's ``evaluation_utils.py`` at HEAD has a
    syntax error in another function (``load_robust_model``), so the file does not parse whole.
    """
    lines = (path / filename).read_text().splitlines()
    for name in names:
        start = next(i for i, line in enumerate(lines)
                     if line.startswith((f"def {name}(", f"class {name}(")))  # fmt: skip
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i] and not lines[i][0].isspace() and not lines[i].startswith(")")),
                   len(lines))  # fmt: skip
        source = "\n".join(lines[start:end])
        exec(compile(ast.parse(source), f"{path / filename}:{name}", "exec"), namespace)
    return {n: namespace[n] for n in names}


# -- 1. the projection ---------------------------------------------------------------------------
def projection(reference: Path | None, repeats: int) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    for shape, eps in (((128, 28, 28, 1), 10.0), ((16, 224, 224, 3), 135.0)):
        out["x".join(map(str, shape))] = _projection_at(shape, eps, rng, reference, repeats)
    return out


def _projection_at(shape, eps, rng, reference, repeats) -> dict:
    from zoo.layers.noise import project_to_epsilon

    x = rng.random(shape).astype(np.float32)
    x[: shape[0] // 4] = x[: shape[0] // 4] > 0.7
    d = rng.standard_normal(shape).astype(np.float32)
    ours = tf.function(lambda x, d: project_to_epsilon(x, d, eps))
    xt, dt = tf.constant(x), tf.constant(d)
    y = ours(xt, dt).numpy()
    row = {
        "ours_ms": round(1000 * _timed(lambda: ours(xt, dt).numpy(), repeats), 2),
        "ours_max_norm_error": float(
            np.abs(np.linalg.norm((y - x).reshape(len(x), -1), axis=1) - eps).max()
        ),
    }
    if reference is not None:
        import torch

        ns = {"torch": torch, "np": np}
        fix = _reference_functions(reference, "evaluation_utils.py",
                                   ["fix_perturbation_size"], ns)["fix_perturbation_size"]  # fmt: skip
        xr = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        dr = torch.from_numpy(d.transpose(0, 3, 1, 2).copy())
        theirs = fix(xr, dr, eps).numpy().transpose(0, 2, 3, 1)
        row["authors_ms"] = round(1000 * _timed(lambda: fix(xr, dr, eps), repeats), 2)
        row["max_abs_difference_to_authors"] = float(np.abs(theirs - y).max())
        row["speedup"] = round(row["authors_ms"] / row["ours_ms"], 2)
    return row


# -- 2. one ANT step -------------------------------------------------------------------------------
def ant_step(reference: Path | None, repeats: int, batch: int = 128) -> dict:
    import zoo

    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, 28, 28, 1)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, batch))
    model = zoo.load("ant_mnist", optimizer="sgd")  # the paper's SGD-M classifier step
    model.compile()
    model._symbolic_build(data_batch=(x, y))
    step = tf.function(model.train_step)
    out = {"ours_steps_per_s": round(1 / _timed(lambda: step((x, y))["loss"].numpy(), repeats), 2)}
    if reference is None:
        return out
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(max(1, os.cpu_count() or 1))

    class Writer:
        def add_scalar(self, *a, **k):
            pass

    ns = {"torch": torch, "np": np, "nn": nn, "F": F}
    _reference_functions(reference, "evaluation_utils.py", ["fix_perturbation_size"], ns)
    fns = _reference_functions(
        reference, "utils.py", ["train_noise_generator", "train_classifier"], ns
    )
    gen_cls = _reference_functions(reference, "Networks/generators.py", ["NoiseResNet1x1Conv"], ns)

    class MadryCNN(nn.Module):  # the architecture (Madry et al.), for the reference's step
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 32, 5, padding=2), nn.Conv2d(32, 64, 5, padding=2)
            self.f1, self.f2 = nn.Linear(7 * 7 * 64, 1024), nn.Linear(1024, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.c1(x)), 2)
            x = F.max_pool2d(F.relu(self.c2(x)), 2)
            return self.f2(F.relu(self.f1(x.flatten(1))))

    net = MadryCNN()
    gen = gen_cls["NoiseResNet1x1Conv"](1)
    gen.epsilon = nn.Parameter(torch.tensor([10.0]), requires_grad=False)
    opt_c = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-4)
    xt = torch.from_numpy(x.numpy().transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(y.numpy())
    fix = ns["fix_perturbation_size"]

    def reference_step():
        fns["train_noise_generator"](gen, net, xt, yt, 0, Writer(), opt_g, batch_idx=1)
        data = xt.clone()
        n_noisy = int(round(batch * 0.5))  # current 30 % and two replay slices of 10 %
        for start, end in ((0, int(round(batch * 0.3))), (int(round(batch * 0.3)), n_noisy)):
            with torch.no_grad():
                data[start:end] = fix(xt[start:end], gen(xt[start:end]), gen.epsilon)
        fns["train_classifier"](net, data, yt, opt_c, Writer(), 0)

    out["authors_steps_per_s"] = round(1 / _timed(reference_step, repeats), 2)
    out["speedup"] = round(out["ours_steps_per_s"] / out["authors_steps_per_s"], 2)
    out["note"] = (
        "authors: their train_noise_generator, fix_perturbation_size and train_classifier with "
        "their NoiseResNet1x1Conv; replay slices drawn from the current generator (their code "
        "loads snapshots from files)"
    )
    return out


# -- 3. the corruptions ------------------------------------------------------------------------------
DETERMINISTIC = ("gaussian_blur", "defocus_blur", "zoom_blur", "contrast", "brightness", "saturate",
                 "pixelate", "jpeg_compression")  # fmt: skip


def _import_imagecorruptions(path: str | None):
    if path:
        sys.path.insert(0, path)
    np.float_ = np.float64  # removed in NumPy 2; the reference's fog uses it
    try:
        import skimage.filters

        original = skimage.filters.gaussian

        def gaussian(image, *args, multichannel=None, **kwargs):  # removed in skimage 0.19
            if multichannel:
                kwargs.setdefault("channel_axis", -1)
            return original(image, *args, **kwargs)

        skimage.filters.gaussian = gaussian
        import imagecorruptions
        import imagecorruptions.corruptions as module

        module.gaussian = gaussian
        return imagecorruptions
    except Exception as e:  # noqa: BLE001 - not installed, or broken beyond the two shims
        print(f"imagecorruptions unavailable ({type(e).__name__}: {e}); skipping part 3")
        return None


def corruptions(path: str | None, n: int = 8, size: int = 64) -> dict:
    from zoo.eval import corruptions as C

    ic = _import_imagecorruptions(path)
    if ic is None:
        return {"skipped": "imagecorruptions is not importable"}
    import zoo.data

    digits, _ = next(
        iter(zoo.data.load("digits", "test", batch_size=n, shuffle=False, num_examples=n))
    )
    big = tf.image.resize(digits, (size, size)).numpy()
    ramp = np.linspace(0.15, 0.85, size)[None, None, :, None]
    x = np.clip(ramp * [0.9, 0.6, 0.3] + 0.7 * big, 0, 1).astype(np.float32)
    x8 = np.round(x * 255).astype(np.uint8)
    xq = x8.astype(np.float32) / 255.0  # both sides start from the same uint8 images
    out = {}
    for name in ic.get_corruption_names("all"):
        if name not in C.CORRUPTIONS:
            out[name] = {"ours": "not built"}
            continue
        for s in C.CORRUPTIONS[name].levels:
            np.random.seed(s)
            t = time.perf_counter()
            try:
                theirs = np.stack([ic.corrupt(img, corruption_name=name, severity=s) for img in x8])
            except Exception as e:  # noqa: BLE001
                out[f"{name}_{s}"] = {"reference_failed": f"{type(e).__name__}: {e}"[:120]}
                continue
            t_ref = time.perf_counter() - t
            C.corrupt(xq, name, s, seed=s).numpy()  # trace
            t = time.perf_counter()
            ours = C.corrupt(xq, name, s, seed=s).numpy()
            t_ours = time.perf_counter() - t
            # imagecorruptions returns np.uint8(float image), which truncates: compare alike.
            ours8 = np.floor(ours * 255 + 1e-4)
            row = {"ours_ms_per_image": round(1000 * t_ours / n, 2),
                   "reference_ms_per_image": round(1000 * t_ref / n, 2)}  # fmt: skip
            if name in DETERMINISTIC:
                row["mean_abs_difference_0_255"] = round(float(np.abs(ours8 - theirs).mean()), 3)
            else:
                mine = np.linalg.norm((ours8 - x8).reshape(n, -1), axis=1).mean()
                ref = np.linalg.norm((theirs.astype(np.float64) - x8).reshape(n, -1), axis=1).mean()
                row["l2_change_ratio"] = round(float(mine / max(ref, 1e-9)), 3)
            out[f"{name}_{s}"] = row
    # motion blur at one angle: the blur kernel itself, pixel for pixel
    from zoo.eval.corruptions import _motion_blur

    theirs = np.stack(
        [ic.corruptions._motion_blur(img.astype(np.float64), 15, 5, 30.0) for img in x8]
    )
    ours = _motion_blur(tf.constant(x8.astype(np.float32)), 15, 5, tf.fill([n], 30.0)).numpy()
    out["motion_blur_kernel_at_30deg"] = {
        "max_abs_difference_0_255": float(np.abs(ours - theirs).max())
    }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", help="a checkout of bethgelab/game-of-noise (needs torch)")
    p.add_argument("--imagecorruptions-path", help="a directory to import imagecorruptions from")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-corruptions", action="store_true")
    args = p.parse_args(argv)
    from zoo.runtime import describe  # the CPU and oneDNN mode, as every benchmark prints

    reference = Path(args.reference) if args.reference else None
    result = {
        "runtime": describe(),
        "projection": projection(reference, args.repeats),
        "ant_step_batch_128": ant_step(reference, args.repeats),
    }
    if not args.skip_corruptions:
        result["corruptions_vs_imagecorruptions"] = corruptions(args.imagecorruptions_path)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
