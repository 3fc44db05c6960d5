"""One feature-alignment encoder step (double backprop) against the authors' step, in one run.

The step is the VFA encoder update of the authors' MNIST ``training.py`` (tiago939/feature_alignment):
weight clamp, clamped inputs, μ/log-variance/label heads, one reverse step from r⁰ = 0 with
``create_graph=True``, the ½-sum reconstruction plus β·KL, backward and Adam. The zoo's is
``vfa_mnist.train_step`` under ``tf.function`` (what the trainer runs), at the same sizes
(Table 2 network, Z = 128, batch 128).

The authors' code hard-codes CUDA and is a script (it loads MNIST through torchvision and an
unguarded checkpoint at import). So the benchmark copies the reference's ``mnist/`` folder into a
scratch directory under /tmp, sets ``device = 'cpu'`` there, and turns the body of its training
loop, from the weight clamp to the encoder's ``optimizer.step()``, into a function of ``(encoder,
optimizer, inputs, targets)``; nothing of it is kept in this repository. ``networks.py`` is used
as it is. Both sides get the same random batch, alternate in rounds (so load changes hit both)
and use the machine's default thread pools (printed).

    python benchmarks/feature_alignment.py [--reference DIR] [--steps 5] [--rounds 3]

``DIR`` is a checkout of tiago939/feature_alignment or its git directory (default: the copy the
``fetch`` tool leaves under /work/.mirror). The last line is JSON; ``speedup`` is the reference's
median step time over the zoo's (the issue's target: ≥ 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEFAULT_REFERENCE = "/work/.mirror/tiago939+feature_alignment/repo"
LOOP_HEADER = "for batch_idx, (inputs, targets) in enumerate(trainloader):"


def scratch_copy(reference: str) -> Path:
    """The reference's ``mnist/`` folder in a fresh directory under /tmp."""
    ref = Path(reference)
    scratch = Path(tempfile.mkdtemp(prefix="fa_reference_"))
    if (ref / "mnist" / "networks.py").is_file():
        shutil.copytree(ref / "mnist", scratch / "mnist")
    elif (ref / "HEAD").is_file():  # a bare git directory, as fetch leaves it
        archive = subprocess.run(
            ["git", "--git-dir", str(ref), "archive", "HEAD", "mnist"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
    else:
        raise SystemExit(
            f"--reference {reference}: neither a checkout of tiago939/feature_alignment (with "
            f"mnist/networks.py) nor its git directory"
        )
    return scratch / "mnist"


def patched_step(folder: Path) -> Path:
    """Write ``fa_step.py`` beside the reference's files: its training loop body (the encoder
    update) as ``step(encoder, optimizer, inputs, targets)``, with the device set to the CPU."""
    source = (folder / "training.py").read_text()
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == LOOP_HEADER)
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "optimizer.step()")
    body = [line for line in lines[start + 1 : end + 1] if not line.strip().startswith("print(")]
    device = re.search(r"^device = .*$", source, re.M).group(0)
    code = "\n".join(
        [
            "import torch",
            "import torch.nn as nn",
            device.replace("'cuda'", "'cpu'").replace('"cuda"', "'cpu'"),
            re.search(r"^T = \d+", source, re.M).group(0),
            "",
            "def step(encoder, optimizer, inputs, targets):",
            textwrap.indent(textwrap.dedent("\n".join(body)), "    "),
            "    return loss",
            "",
        ]
    )
    (folder / "fa_step.py").write_text(code)
    return folder / "fa_step.py"


def reference_runner(reference: str, x: np.ndarray, y: np.ndarray):
    import torch

    folder = scratch_copy(reference)
    patched_step(folder)
    sys.path.insert(0, str(folder))
    import fa_step  # noqa: E402
    import networks  # noqa: E402

    torch.manual_seed(1)
    encoder = networks.Encoder(128)
    for m in encoder.modules():  # the reference's init: orthogonal weights, default biases
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            torch.nn.init.orthogonal_(m.weight)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-4, betas=(0.5, 0.999))
    encoder.train()
    inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    targets = torch.from_numpy(y)

    def run():
        return float(fa_step.step(encoder, optimizer, inputs, targets).detach())

    return run, {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "scratch": str(folder)}  # fmt: skip


def zoo_runner(x: np.ndarray, y: np.ndarray):
    import tensorflow as tf

    import zoo

    model = zoo.load("vfa_mnist")
    model.compile()
    step = tf.function(model.train_step)
    batch = (tf.constant(x), tf.constant(y))

    def run():
        return float(step(batch)["loss"])

    from zoo import runtime

    # The CPU, TensorFlow's oneDNN mode as it runs (on by default on AVX-512 CPUs) and who
    # chose it, as every benchmark prints them.
    return run, {
        **runtime.describe(),
        "tf_intra_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


def time_steps(run, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        out.append(time.perf_counter() - start)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", default=os.environ.get("FA_REFERENCE", DEFAULT_REFERENCE))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--keep-scratch", action="store_true", help="keep the patched scratch copy")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch_size, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=args.batch_size).astype(np.int64)
    ours, ours_info = zoo_runner(x, y)
    theirs, theirs_info = reference_runner(args.reference, x, y)
    for _ in range(args.warmup):
        ours(), theirs()
    times = {"zoo": [], "reference": []}
    for _ in range(args.rounds):
        times["zoo"] += time_steps(ours, args.steps)
        times["reference"] += time_steps(theirs, args.steps)
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {
        "step": "VFA encoder step with the label head, double backprop (Table 2 net, Z=128)",
        "batch_size": args.batch_size,
        "zoo_s_per_step": round(med["zoo"], 4),
        "reference_s_per_step": round(med["reference"], 4),
        "speedup": round(med["reference"] / med["zoo"], 3),
        "target": 1.0,
        "steps_timed_per_side": len(times["zoo"]),
        "cpu_count": os.cpu_count(),
        **ours_info,
        **theirs_info,
    }
    if not args.keep_scratch:
        shutil.rmtree(Path(theirs_info["scratch"]).parent, ignore_errors=True)
    print(f"{ours_info['cpu']}, oneDNN {ours_info['onednn']} ({ours_info['onednn_source']})")
    print(f"zoo       {med['zoo']:.3f} s/step")
    print(f"reference {med['reference']:.3f} s/step")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
