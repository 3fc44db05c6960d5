"""Parity of the ported ABS weights with the authors' code, on the same images (issue 22).

Ports the authors' ten VAE files with ``zoo-port`` (or takes ``--preset``), then runs the authors'
PyTorch ABS (their ``get_VAE()``, and ``get_ABS()`` for Binary ABS, both at their defaults: 8,000
bank codes, 50 iterations, Adam lr 0.05, clip 5) beside the zoo's ``abs_mnist`` /
``binary_abs_mnist`` built from the preset (also at their defaults), on the first ``--images``
``digits`` test images. Prints, per model: the largest and the median absolute logit difference,
the agreement of predicted classes, and both accuracies on ``digits``; and what explains the
differences:

- ``start_code_differs``: images where some class starts the latent search from another bank
  code (the argmin over 8,000 codes of a float32 ‖x‖² + ‖P‖² − 2x·P, computed by two libraries);
- ``clip_fired``: images where some latent of the reference ends on the ball ‖z‖ = 5. The authors'
  ``clip_to_sphere`` computes ``sqrt(z²·r²/‖z‖²)``, which drops the sign of every coordinate of a
  clipped latent; the zoo projects ``z·r/‖z‖`` (abs digest §1.4). ``--sign-correct`` runs the
  reference once more with the sign kept (its ``clip_to_sphere`` replaced for that run only), to
  show how much of the difference that accounts for.

``--zoo-only --save B.npz`` runs the zoo alone, and ``--compare A.npz B.npz`` compares the zoo
logits of two saved runs, e.g. one per oneDNN mode: how far the 49-step search itself moves when
only the rounding of the convolutions changes.

Needs a checkout of ``bethgelab/AnalysisBySynthesis`` and torch; it imports torchvision for the
MNIST loader only, for which a stand-in module is used when torchvision is not installed. The
last line printed is the JSON result:

    python benchmarks/abs_parity.py --reference /path/to/AnalysisBySynthesis [--images 1000]
        [--models abs_mnist binary_abs_mnist] [--sign-correct] [--save run.npz]
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/abs_parity.py --preset DIR --models abs_mnist \
        --zoo-only --save zoo0.npz
    python benchmarks/abs_parity.py --compare run.npz zoo0.npz
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def reference_models(path: Path):
    """The authors' ``get_VAE()`` (plain ABS) and ``get_ABS()`` (Binary ABS), at their defaults,
    with their shipped weights; their module ``utils`` for patching the clip."""
    import importlib.util

    sys.path.insert(0, str(path.resolve()))
    if importlib.util.find_spec("torchvision") is None:
        stub = types.ModuleType("torchvision")
        stub.datasets, stub.transforms = (
            types.ModuleType("datasets"),
            types.ModuleType("transforms"),
        )
        sys.modules["torchvision"] = stub
    from abs_models import models
    from abs_models import utils as u

    with contextlib.redirect_stdout(sys.stderr):  # they print progress
        return {"abs_mnist": models.get_VAE(), "binary_abs_mnist": models.get_ABS()}, u


def run_reference(model, x: np.ndarray, batch: int):
    """Logits (n, 10) and final latents (n, 10, 8) of the authors' model, in batches."""
    import torch

    logits, latents = [], []
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        for i in range(0, len(x), batch):
            xt = torch.from_numpy(np.ascontiguousarray(x[i : i + batch].transpose(0, 3, 1, 2)))
            _, elbos, z, _ = model(xt, return_more=True)
            logits.append(-elbos[:, :, 0, 0].numpy())  # rescaled by γ for Binary ABS
            latents.append(z[..., 0, 0].numpy())
    return np.concatenate(logits), np.concatenate(latents)


def reference_start_codes(model, x: np.ndarray, batch: int) -> np.ndarray:
    """The bank code each class's search starts from (n, 10, 8), as the reference picks it."""
    import torch
    from abs_models.inference import inference

    out = []
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        for i in range(0, len(x), batch):
            xt = torch.from_numpy(np.ascontiguousarray(x[i : i + batch].transpose(0, 3, 1, 2)))
            if getattr(model, "rescale_b", False):
                from abs_models import utils as u

                xt = u.binarize(xt)
            _, z, _ = inference(model.AEs, xt, model.n_samples, 0, model.beta, model.GM,
                                model.fraction_to_dismiss, clip=model.clip, lr=model.lr)  # fmt: skip
            out.append(z[..., 0, 0].numpy())
    return np.concatenate(out)


def compare(zoo_logits, ref_logits, labels, zoo_start, ref_start, ref_latents, clip) -> dict:
    diff = np.abs(zoo_logits - ref_logits)
    zoo_pred, ref_pred = zoo_logits.argmax(-1), ref_logits.argmax(-1)
    start_differs = np.abs(zoo_start - ref_start).max(axis=(1, 2)) > 1e-6
    clipped = (np.linalg.norm(ref_latents, axis=-1) >= clip - 1e-4).any(axis=1)
    disagree = zoo_pred != ref_pred
    big = diff.max(axis=1) > 1e-4
    return {
        "max_abs_logit_diff": float(diff.max()),
        "median_abs_logit_diff": float(np.median(diff)),
        "max_rel_logit_diff": float((diff / np.maximum(np.abs(ref_logits), 1e-12)).max()),
        "images_with_diff_over_1e-4": int(big.sum()),
        "class_agreement": float(1.0 - disagree.mean()),
        "disagreements": int(disagree.sum()),
        "zoo_accuracy_digits": float((zoo_pred == labels).mean()),
        "reference_accuracy_digits": float((ref_pred == labels).mean()),
        "start_code_differs": int(start_differs.sum()),
        "clip_fired": int(clipped.sum()),
        "over_1e-4_explained_by_start_or_clip": int((big & (start_differs | clipped)).sum()),
        "disagreements_explained_by_start_or_clip": int(
            (disagree & (start_differs | clipped)).sum()
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reference", help="checkout of bethgelab/AnalysisBySynthesis")
    p.add_argument("--preset", help="the converted preset (default: zoo-port it into a temp dir)")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--models", nargs="+", default=["abs_mnist", "binary_abs_mnist"],
                   choices=["abs_mnist", "binary_abs_mnist"])  # fmt: skip
    p.add_argument("--sign-correct", action="store_true",
                   help="also run the reference with a sign-correct clip")  # fmt: skip
    p.add_argument("--save", help="also save the logits and latents to this .npz")
    p.add_argument("--zoo-only", action="store_true",
                   help="run the zoo alone (with --save: its logits, for --compare)")  # fmt: skip
    p.add_argument("--compare", nargs=2, metavar=("A.npz", "B.npz"),
                   help="compare the zoo logits two --save runs hold (e.g. one per oneDNN mode): "
                   "how far the search itself moves when only the rounding changes")  # fmt: skip
    args = p.parse_args()
    if args.compare:
        a, b = (np.load(f) for f in args.compare)
        out = {}
        for name in ("abs_mnist", "binary_abs_mnist"):
            key = f"{name}_zoo_logits"
            if key in a and key in b:
                diff = np.abs(a[key] - b[key])
                out[name] = {
                    "max_abs_logit_diff": float(diff.max()),
                    "median_abs_logit_diff": float(np.median(diff)),
                    "images_with_diff_over_1e-4": int((diff.max(axis=1) > 1e-4).sum()),
                    "class_agreement": float((a[key].argmax(-1) == b[key].argmax(-1)).mean()),
                }
        print(json.dumps(out))
        return
    if not args.reference and not (args.zoo_only and args.preset):
        p.error("--reference is needed (or --zoo-only with --preset)")

    import zoo
    import zoo.data
    from zoo import runtime
    from zoo.port import port

    print(json.dumps(runtime.describe()), flush=True)
    preset = args.preset
    if preset is None:
        preset = tempfile.mkdtemp(prefix="abs-authors-")
        summary = port("abs_mnist", args.reference, preset)
        print(json.dumps({"ported": summary["output"], "sha256": summary["sha256"]}), flush=True)
    ds = zoo.data.load("digits", "test", batch_size=args.images, shuffle=False)
    x, y = (t.numpy() for t in next(iter(ds.take(1))))
    x, y = x[: args.images].astype(np.float32), y[: args.images]

    result = {"images": int(len(x)), "dataset": "digits/test", "preset": str(preset)}
    arrays = {"labels": y}

    def batches(fn):
        return np.concatenate([fn(tf.constant(x[i : i + args.batch])).numpy()
                               for i in range(0, len(x), args.batch)])  # fmt: skip

    if args.zoo_only:
        for name in args.models:
            arrays[f"{name}_zoo_logits"] = batches(zoo.load(name, weights=preset))
        if args.save:
            np.savez(args.save, **arrays)
        print(json.dumps({**result, "saved": args.save}))
        return

    refs, utils = reference_models(Path(args.reference))

    for name in args.models:
        ref, model = refs[name], zoo.load(name, weights=preset)
        t = time.perf_counter()
        zoo_logits = batches(model)
        zoo_s = time.perf_counter() - t
        zoo_start = batches(lambda b, m=model: m.initial_latents(m._prepare(b)))
        zoo_latents = batches(lambda b, m=model: m.fit_latents(b)["latents"])
        t = time.perf_counter()
        ref_logits, ref_latents = run_reference(ref, x, args.batch)
        ref_s = time.perf_counter() - t
        ref_start = reference_start_codes(ref, x, args.batch)
        result[name] = {
            **compare(zoo_logits, ref_logits, y, zoo_start, ref_start, ref_latents, ref.clip),
            "zoo_seconds": round(zoo_s, 1),
            "reference_seconds": round(ref_s, 1),
        }
        print(json.dumps({name: result[name]}), flush=True)
        arrays.update({f"{name}_zoo_logits": zoo_logits, f"{name}_ref_logits": ref_logits,
                       f"{name}_zoo_latents": zoo_latents, f"{name}_ref_latents": ref_latents,
                       f"{name}_zoo_start": zoo_start, f"{name}_ref_start": ref_start})  # fmt: skip
        if args.sign_correct:
            original = utils.clip_to_sphere

            def clip_keeping_sign(tens, radius, channel_dim=1):
                norm = tens.pow(2).sum(dim=channel_dim, keepdim=True).sqrt()
                tens.copy_(tens * (radius / norm).clamp(max=1.0))
                return tens

            utils.clip_to_sphere = clip_keeping_sign
            try:
                fixed_logits, fixed_latents = run_reference(ref, x, args.batch)
            finally:
                utils.clip_to_sphere = original
            key = f"{name}_reference_with_sign_correct_clip"
            result[key] = compare(
                zoo_logits, fixed_logits, y, zoo_start, ref_start, fixed_latents, ref.clip
            )
            arrays[f"{name}_ref_fixed_logits"] = fixed_logits
            print(json.dumps({key: result[key]}), flush=True)
        if args.save:
            np.savez(args.save, **arrays)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
