"""ABS inference speed on this machine, in one run (the ABS issue's benchmark).

Measures, for ``abs_mnist`` at its default settings (8,000-code bank, 49 Adam steps, 10 classes):
- the one-time decode of the 80,000-prototype bank;
- images/s at batch 1 and batch 64 (seconds per call at batch 1);
- FLOPs per image counted from the model (the decoder's convolutions, forward and input gradient,
  over the search; plus the bank match), and the achieved GFLOP/s as a fraction of a large
  float32 matmul's GFLOP/s measured in the same run.

The reference (the authors' PyTorch code at its defaults, on this 2-core CPU, from the issue):
0.111 s per image at batch 64 (9 images/s), 0.95-1.3 s for one image, 21 s for the bank decode.
Targets, in each oneDNN mode: batch 64 >= 3x the reference's images/s and batch 1 >= 5x its
speed (against the issue's figures, or the reference timed in this run), bank decode <= 5 s; and
batch 1 <= 0.15 s where oneDNN is on.

With ``--reference DIR`` (a checkout of bethgelab/AnalysisBySynthesis, and ``torch`` importable)
the reference is timed in the same run, at its defaults with its shipped weights, and the
speedups are taken against those figures instead of the issue's. The ten VAEs, the Gaussian
bank and the search are built from its ``nets``, ``sampling`` and ``inference`` modules exactly
as its ``get_ABS`` builds them (its ``models.py`` also loads datasets). It imports torchvision
for its MNIST loader only; a stand-in module is used when torchvision is not installed.

It also times batch 64 with a single search (``search_parallelism=1``) against the default
side-by-side searches, and with ``--xla`` the search compiled by XLA. It prints the CPU, the
oneDNN mode and the grouped-convolution implementation it ran with; run it once per mode:

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/abs_inference.py [--repeats 3] [--reference DIR]
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/abs_inference.py [--repeats 3] [--reference DIR]
"""

from __future__ import annotations

import argparse
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

REFERENCE = {"batch64_images_per_s": 9.0, "batch1_s": 0.95, "bank_decode_s": 21.0}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    f = tf.function(lambda: tf.matmul(a, b))
    f().numpy()
    t = time.perf_counter()
    for _ in range(repeats):
        out = f()
    out.numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def decoder_macs(model) -> int:
    """Multiply-accumulates of one class decoder's forward pass, counted from its layers."""
    macs, h = 0, 1
    for layer in [*model.decoder_layers, model.decoder_out]:
        if not hasattr(layer, "kernel"):
            continue
        k, s, f = layer.kernel_size, layer.strides, layer.filters
        cin = layer.kernel.shape[-1] // layer.groups
        macs += h * h * k * k * cin * f  # each input pixel scatters a k×k×f patch
        h = (h - 1) * s + k
    return macs


def time_reference(path: str, repeats: int, x64: np.ndarray) -> dict:
    """The authors' PyTorch ABS at its defaults (8,000 codes per class, 50 iterations, clip 5,
    lr 0.05): bank decode, seconds at batch 1, images/s at batch 64."""
    sys.path.insert(0, str(Path(path).resolve()))
    import importlib.util
    import types

    import torch

    if importlib.util.find_spec("torchvision") is None:
        # abs_models.utils imports torchvision for its MNIST loader only, which is not timed.
        sys.modules["torchvision"] = types.ModuleType("torchvision")
    from abs_models import nets, sampling
    from abs_models import utils as u
    from abs_models.inference import inference

    enc = {"feat_maps": [32, 32, 64, 8], "kernels": [5, 4, 3, 5], "strides": [1, 2, 2, 1]}
    dec = {"feat_maps": [32, 16, 16, 1], "kernels": [4, 5, 5, 4], "strides": [1, 2, 2, 1]}
    aes = []
    for i in range(10):
        ae = nets.VariationalAutoEncoder(enc, dec, latent_act_fct=u.LinearActFct)
        weights = Path(path) / "exp" / "VAE_swarm_MSE" / "nets" / f"ABS_{i}.net"
        ae.load_state_dict(torch.load(weights, map_location="cpu"))
        aes.append(ae.eval())
    gm = sampling.GaussianSamples(aes, 8, 10, nx=28, ny=28)

    def run(x):
        return inference(aes, x, 8000, 50, 1, gm, 0.1, clip=5, lr=0.05)

    xt = torch.from_numpy(np.transpose(x64, (0, 3, 1, 2)).copy())
    # Warm, as ours: decode once, drop the cached bank, and time the second decode.
    gm.get_images(8000, 0.1)
    for cache in (gm.images, gm.th_images, gm.l_v):
        cache.pop(8000, None)
    t = time.perf_counter()
    gm.get_images(8000, 0.1)
    decode_s = time.perf_counter() - t

    def timed(x) -> float:
        run(x)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            run(x)
            best = min(best, time.perf_counter() - t)
        return best

    return {
        "bank_decode_s": decode_s,
        "batch1_s": timed(xt[:1]),
        "batch64_images_per_s": 64 / timed(xt),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference", help="checkout of bethgelab/AnalysisBySynthesis to time beside")
    p.add_argument("--xla", action="store_true",
                   help="also time the batch-64 search compiled with XLA (jit_compile=True)")  # fmt: skip
    args = p.parse_args()
    import zoo
    from zoo import runtime
    from zoo.layers import grouped

    machine = {**runtime.describe(), "grouped_implementation": grouped.implementation()}
    print(json.dumps(machine), flush=True)

    model = zoo.load("abs_mnist")
    rng = np.random.default_rng(0)
    x64 = tf.constant(rng.random((64, 28, 28, 1), dtype=np.float32))
    x1 = x64[:1]

    fit = tf.function(lambda x: model.fit_latents(x)["losses"])
    bank = tf.function(model.prototypes)
    bank().numpy()  # trace
    model.clear_prototypes()
    t = time.perf_counter()
    bank().numpy()
    decode_s = time.perf_counter() - t

    def timed(x) -> float:
        fit(x).numpy()  # trace / warm up
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            fit(x).numpy()
            best = min(best, time.perf_counter() - t)
        return best

    batch1_s = timed(x1)
    batch64_s = timed(x64)
    # The same batch with a single search over it (search_parallelism=1), traced afresh.
    parallelism = model.search_parallelism
    model.search_parallelism = 1
    fit = tf.function(lambda x: model.fit_latents(x)["losses"])
    one_search_s = timed(x64)
    model.search_parallelism = parallelism
    xla = None
    if args.xla:
        fit = tf.function(lambda x: model.fit_latents(x)["losses"], jit_compile=True)
        t = time.perf_counter()
        fit(x64).numpy()
        compile_s = time.perf_counter() - t
        xla = {
            "batch64_images_per_s": round(64 / timed(x64), 1),
            "first_call_s": round(compile_s, 1),
        }
    gflops_peak = matmul_gflops()

    c, s, updates = model.num_classes, model.bank_size, model.search_steps - 1
    dec = decoder_macs(model)
    # forward + input gradient (≈ 2 forward) per update, one final forward; the bank match
    search_macs = c * (updates * 2 * dec + dec)
    match_macs = c * s * model.pixels
    flops = 2 * (search_macs + match_macs)
    achieved = flops * 64 / batch64_s / 1e9
    reference, measured_reference = REFERENCE, None
    if args.reference:
        measured_reference = time_reference(args.reference, args.repeats, x64.numpy())
        reference = measured_reference
    summary = {
        **machine,
        "bank_decode_s": round(decode_s, 2),
        "batch1_s": round(batch1_s, 3),
        "batch64_images_per_s": round(64 / batch64_s, 1),
        "batch64_images_per_s_one_search": round(64 / one_search_s, 1),
        f"search_parallelism_{parallelism}_over_1": round(one_search_s / batch64_s, 2),
        "xla": xla if xla else "not timed (pass --xla)",
        "flops_per_image_G": round(flops / 1e9, 3),
        "achieved_gflops_batch64": round(achieved, 1),
        "matmul_gflops": round(gflops_peak, 1),
        "fraction_of_matmul": round(achieved / gflops_peak, 3),
        "speedup_vs_reference_batch64": round(
            64 / batch64_s / reference["batch64_images_per_s"], 2
        ),
        "speedup_vs_reference_batch1": round(reference["batch1_s"] / batch1_s, 2),
        "speedup_vs_reference_bank_decode": round(reference["bank_decode_s"] / decode_s, 2),
        "reference": (
            {k: round(v, 3) if isinstance(v, float) else v for k, v in measured_reference.items()}
            if measured_reference
            else "the issue's figures (pass --reference DIR to time it in this run)"
        ),
        # 3× the reference: 27 images/s against the 9, or 3× the one timed in this run
        "target_batch64_met": 64 / batch64_s >= 3 * reference["batch64_images_per_s"],
        # >= 5x the reference's one-image speed, in each mode; and the absolute 0.15 s,
        # which was set on a CPU where oneDNN is on.
        "target_batch1_met": reference["batch1_s"] / batch1_s >= 5,
        "target_batch1_0.15s_met": batch1_s <= 0.15,
        "target_bank_decode_met": decode_s <= 5,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
