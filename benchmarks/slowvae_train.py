"""SlowVAE training speed: the zoo's step against the authors' PyTorch step, on this CPU, in one run.

Times one optimisation step at 32 pairs (64 images) of 64×64×1: the zoo's ``slowvae_sprites``
``train_step`` (compiled with ``tf.function``, as the trainer runs it) and the reference's step,
which is the body of ``Solver.train`` in ``bethgelab/slow_disentanglement/scripts/solver.py``:
its ``BetaVAE_H`` forward, ``reconstruction_loss``, ``compute_cross_ent_combined``, the loss
``2·rec + β·KL_N + γ·KL_L``, ``backward`` and Adam, with the per-step ``.item()`` its logging
does. Both see the same batch of LAP pairs of ``sprites``, alternate in rounds, and the median
of the rounds is reported as steps/s and the ratio zoo / reference (target ≥ 1.0).

    python benchmarks/slowvae_train.py --reference /tmp/slow_disentanglement [--steps 20]
        [--rounds 5] [--image-size 64]

``--reference`` is a checkout of the authors' repository (only ``scripts/`` is used). Its
``solver.py`` imports ``torchvision.utils`` and ``imageio`` for image logging the timed step
never calls; when they are missing, placeholders stand in for them (the files are not changed).
Without ``--reference`` only the zoo is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _batch(pairs: int, image_size: int):
    import numpy as np

    import zoo.data

    name = "sprites/lap" if image_size == 64 else "sprites/32x32/lap"
    ds = zoo.data.load(name, "test", batch_size=pairs, shuffle=False)
    x, _ = next(iter(ds))
    return np.asarray(x)  # (P, 2, S, S, 1)


def time_zoo(x, steps: int, rounds: int):
    import tensorflow as tf

    import zoo

    size = x.shape[2]
    model = zoo.load("slowvae_sprites", image_shape=(size, size, 1))
    model.compile()
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step)
    batch = tf.constant(x)
    for _ in range(3):  # trace and warm up
        step(batch)

    def run():
        start = time.perf_counter()
        for _ in range(steps):
            logs = step(batch)
        float(logs["loss"])
        return steps / (time.perf_counter() - start)

    return run


def _reference_solver(reference: Path):
    """Import the authors' Solver; placeholders for image-logging imports missing here."""
    for name in ("torchvision", "imageio"):
        if importlib.util.find_spec(name) is None:
            module = types.ModuleType(name)
            if name == "torchvision":
                utils = types.ModuleType("torchvision.utils")

                def unavailable(*args, **kwargs):
                    raise RuntimeError("torchvision is not installed (image logging only)")

                utils.save_image = utils.make_grid = unavailable
                module.utils = utils
                sys.modules["torchvision.utils"] = utils
            sys.modules[name] = module
    sys.path.insert(0, str(reference))
    from scripts import solver  # the authors' module

    return solver


def time_reference(reference: Path, x, steps: int, rounds: int):
    import numpy as np
    import torch

    solver = _reference_solver(reference)
    out = Path(tempfile.mkdtemp(prefix="slowvae-ref-"))
    args = types.SimpleNamespace(
        ckpt_dir=str(out), output_dir=str(out), dataset="dsprites", cuda=False, max_iter=steps,
        z_dim=10, num_channel=1, beta=1.0, gamma=10.0, rate_prior=6.0, lr=1e-4, beta1=0.9,
        beta2=0.999, ckpt_name=None, log_step=10**9, save_step=10**9,
    )  # fmt: skip
    s = solver.Solver(args, data_loader=None)
    s.net_mode(train=True)
    # The authors' interleaved layout [x1_(t-1), x1_t, x2_(t-1), ...], NCHW.
    images = np.transpose(x.reshape(-1, *x.shape[2:]), (0, 3, 1, 2)).copy()
    batch = torch.from_numpy(images)

    def one_step():  # the body of Solver.train, unchanged in substance
        x_recon, mu, logvar = s.net(batch)
        recon_loss = solver.reconstruction_loss(batch, x_recon, s.decoder_dist)
        normal_entropy, cross_ent_normal, cross_ent_laplace = s.compute_cross_ent_combined(
            mu, logvar
        )
        vae_loss = 2 * recon_loss
        vae_loss = vae_loss + s.beta * (cross_ent_normal - normal_entropy)
        vae_loss = vae_loss + s.gamma * (cross_ent_laplace - normal_entropy)
        recon_loss.item(), vae_loss.item()
        s.optim.zero_grad()
        vae_loss.backward()
        s.optim.step()

    import warnings

    warnings.filterwarnings("ignore")  # size_average deprecation in the authors' loss
    for _ in range(3):
        one_step()

    def run():
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
        return steps / (time.perf_counter() - start)

    return run, torch.get_num_threads()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, help="checkout of bethgelab/slow_disentanglement")
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--image-size", type=int, default=64, choices=(32, 64))
    args = p.parse_args()

    import tensorflow as tf

    x = _batch(args.pairs, args.image_size)
    runners = {"zoo": time_zoo(x, args.steps, args.rounds)}
    threads = None
    if args.reference is not None:
        if not (args.reference / "scripts" / "solver.py").is_file():
            sys.exit(f"--reference {args.reference}: no scripts/solver.py (a checkout of "
                     f"bethgelab/slow_disentanglement)")  # fmt: skip
        runners["reference"], threads = time_reference(args.reference, x, args.steps, args.rounds)
    rates = {k: [] for k in runners}
    for _ in range(args.rounds):  # alternate, so load on a shared machine hits both alike
        for k, run in runners.items():
            rates[k].append(run())
    result = {
        "pairs_per_step": args.pairs,
        "image_size": args.image_size,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "zoo_steps_per_s": round(statistics.median(rates["zoo"]), 2),
        "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }
    if "reference" in rates:
        import torch

        result["reference_steps_per_s"] = round(statistics.median(rates["reference"]), 2)
        result["ratio_zoo_over_reference"] = round(
            result["zoo_steps_per_s"] / result["reference_steps_per_s"], 3
        )
        result["torch"] = torch.__version__
        result["torch_threads"] = threads
        result["target_ratio"] = 1.0
    print(json.dumps(result))


if __name__ == "__main__":
    main()
