"""Noise training on MNIST-shaped digits: GNT and ANT against a vanilla CNN (the noise-training
paper, 002_7240b1e8d13f6586.txt lines 2827–3376; digest c.4).

``noise_training`` trains the paper's MNIST CNN three times with identical budgets — vanilla
(``madry_cnn_mnist``), GNT σ = 0.5 (``gnt_mnist``) and ANT¹ˣ¹ at ε = 10 (``ant_mnist``) — on
``digits`` (or MNIST with ``--data-dir``), and measures for each: clean test accuracy, the mean
accuracy over the MNIST-C corruptions (in-graph on the test set; the released MNIST-C with
``--data-dir`` holding TFDS ``mnist_corrupted``), ε*_GN, ε*_UN and ε*_AN (median ℓ₂ along
Gaussian, uniform and freshly trained generator noise), and the DDN ℓ₂ accuracy at ε = 1.5
(Table 7). The pass flags (digest c.4): GNT and ANT each beat vanilla on the corruption mean by
≥ 2 points and on ε*_GN by ≥ 1.5×, with clean accuracy within 0.5 points of vanilla's.

Scaled down: the paper fine-tunes a pretrained CNN for 500–600 epochs of MNIST (batch 300, SGD-M);
here every model trains from scratch for the same few thousand steps (Adam), and the evaluations
use a subset of the test set.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from zoo.repro import register_experiment, timed_train

PAPER = "002_7240b1e8d13f6586.txt"
MODELS = {"vanilla": "madry_cnn_mnist", "gnt": "gnt_mnist", "ant": "ant_mnist"}
# The paper's MNIST figures (digest c.3): clean / MNIST-C mean (App. Table 6), DDN ℓ₂ accuracy
# at ε = 1.5 (Table 7). The paper reports ε* only on ImageNet (Table 2): there GNT σ0.5 / vanilla
# is 1.9× on ε*_GN, ANT¹ˣ¹ / vanilla 3.5× on ε*_GN and 6.1× on ε*_AN.
PAPER_FIGURES = {
    "clean_accuracy": {"vanilla": 0.991, "gnt": 0.993, "ant": 0.994},
    "mnist_c_mean_accuracy": {"vanilla": 0.869, "gnt": 0.924, "ant": 0.924},
    "ddn_accuracy_at_1.5": {"vanilla": 0.732, "gnt": 0.892, "ant": 0.904},
    "imagenet_epsilon_star": {
        "vanilla": {"gaussian": 39.0, "uniform": 39.1, "generator": 15.7},
        "gnt": {"gaussian": 74.8, "uniform": 74.9, "generator": 31.8},
        "ant": {"gaussian": 136.7, "uniform": 137.0, "generator": 95.4},
    },
}
# Pass thresholds (digest c.4).
MIN_CORRUPTION_GAIN_POINTS = 2.0
MIN_EPSILON_RATIO = 1.5
MAX_CLEAN_DROP_POINTS = 0.5


def noise_training_checks(measured: dict) -> dict:
    """The pass flags, from ``measured[model]`` = ``{"clean_accuracy", "corruption_mean",
    "epsilon_star": {"gaussian", ...}}`` (accuracies as fractions) for vanilla, gnt and ant."""
    base = measured["vanilla"]
    flags = {}
    for m in ("gnt", "ant"):
        f = measured[m]
        gain = 100 * (f["corruption_mean"] - base["corruption_mean"])
        ratio = f["epsilon_star"]["gaussian"] / max(base["epsilon_star"]["gaussian"], 1e-12)
        drop = 100 * (base["clean_accuracy"] - f["clean_accuracy"])
        flags[f"{m}_corruption_mean_gain_at_least_2_points"] = bool(
            gain >= MIN_CORRUPTION_GAIN_POINTS
        )
        flags[f"{m}_epsilon_star_at_least_1.5x"] = bool(ratio >= MIN_EPSILON_RATIO)
        flags[f"{m}_clean_accuracy_within_0.5_points"] = bool(drop <= MAX_CLEAN_DROP_POINTS)
    return flags


def _test_arrays(dataset, data_dir, n):
    import zoo.data

    ds = zoo.data.load(dataset, "test", batch_size=n, data_dir=data_dir, shuffle=False,
                       num_examples=n)  # fmt: skip
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def _released_mnist_c(data_dir) -> bool:
    if not data_dir:
        return False
    return any(Path(data_dir).glob("mnist_corrupted/*"))


@register_experiment(
    "noise_training",
    description="vanilla vs GNT σ=0.5 vs ANT¹ˣ¹ (ε=10) on the paper's MNIST CNN: clean accuracy, "
    "MNIST-C mean, ε* (Gaussian, uniform, generator) and DDN",
    paper=PAPER,
    claim="Gaussian and adversarial noise training make a classifier robust to common corruptions "
    "and to noise: GNT and ANT beat vanilla on the MNIST-C mean by >= 2 points and on ε*_GN by "
    ">= 1.5x, with clean accuracy within 0.5 points (digest c.4; paper: 86.9 -> 92.4 % on MNIST-C, "
    "clean 99.1 / 99.3 / 99.4 %).",
)
def noise_training(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    from zoo.eval import corruption_report, ddn, epsilon_star, train_adversarial_generator

    dataset = "mnist" if data_dir else "digits"
    budget = {
        "epochs": 3 if quick else 8,
        "steps_per_epoch": 80 if quick else 250,
        "batch_size": 64 if quick else 128,
        "train_examples": 12_000 if quick else None,
    }
    # ANT: resets every ⅓ epoch (the paper's interval). The paper's generator rate (1e-4 to
    # 1e-5 over 500 MNIST epochs) barely moves a generator in the few dozen steps between resets
    # here (measured: after 150 steps at 5e-4 it fools the vanilla CNN no more than Gaussian
    # noise does; at 5e-3 it cuts the accuracy from 36 % to 21 %), so the scaled-down run uses
    # 1e-3, and 5e-3 for the 10 warm-up steps after a reset.
    ant_overrides = {
        "noise_generator_learning_rate": 1e-3,
        "noise_reset_learning_rate": 5e-3,
        "noise_reset_steps": 10,
    }
    n_eval = 300 if quick else 2000
    n_eps = 150 if quick else 1000
    generator = {"steps": 60, "learning_rate": 1e-2, "batch_size": 64} if quick else {
        "steps": 300, "learning_rate": 5e-3, "batch_size": 128}  # fmt: skip
    ddn_steps = 50 if quick else 100
    x, y = _test_arrays(dataset, data_dir, n_eval)
    xe, ye = x[:n_eps], y[:n_eps]
    released = _released_mnist_c(data_dir)
    measured, timing = {}, {}
    for key, name in MODELS.items():
        # Always a fresh run: a previous run's backup in the same directory would be resumed.
        shutil.rmtree(output / key, ignore_errors=True)
        result, seconds = timed_train(
            model=name, dataset=dataset, data_dir=data_dir, output=str(output / key), seed=seed,
            overrides=ant_overrides if key == "ant" else {}, validation_steps=4, **budget,
        )  # fmt: skip
        model = result.model.classifier if hasattr(result.model, "classifier") else result.model
        start = time.perf_counter()
        if released:
            report = corruption_report(model, "mnist_corrupted", data_dir=data_dir,
                                       num_examples=n_eval)  # fmt: skip
        else:
            report = corruption_report(model, (x, y), seed=seed)
        eps = {
            kind: epsilon_star(model, xe, ye, kind, seed=seed)["epsilon_star"]
            for kind in ("gaussian", "uniform")
        }
        adversary = train_adversarial_generator(model, x, y, 10.0, seed=seed, **generator)
        eps["generator"] = epsilon_star(model, xe, ye, "generator", generator=adversary,
                                        seed=seed)["epsilon_star"]  # fmt: skip
        adv = ddn(model, xe, ye, steps=ddn_steps)
        measured[key] = {
            "clean_accuracy": round(report["clean_accuracy"], 4),
            "corruption_mean": round(report["mean_accuracy"], 4),
            "corruption_accuracy": {
                k: round(v, 4) for k, v in report["corruption_accuracy"].items()
            },
            "epsilon_star": {k: round(float(v), 3) for k, v in eps.items()},
            "ddn_accuracy_at_1.5": round(float(np.mean(adv.distances("l2") > 1.5)), 4),
        }
        timing[key] = {
            "train_seconds": seconds,
            "eval_seconds": round(time.perf_counter() - start, 1),
        }
    ratios = {
        m: {k: round(measured[m]["epsilon_star"][k] / max(measured["vanilla"]["epsilon_star"][k], 1e-12), 2)
            for k in ("gaussian", "uniform", "generator")}
        for m in ("gnt", "ant")
    }  # fmt: skip
    checks = noise_training_checks(measured)
    return {
        "measured": {
            **measured,
            "epsilon_star_ratio_to_vanilla": ratios,
            "checks": checks,
            "passed": all(checks.values()),
        },  # fmt: skip
        "paper": {
            **PAPER_FIGURES,
            "imagenet_epsilon_star_ratio_to_vanilla": {
                "gnt": {"gaussian": 1.92, "generator": 2.03},
                "ant": {"gaussian": 3.51, "generator": 6.08},
            },
            "note": "MNIST: App. Table 6 (MNIST-C, 15 corruptions) and Table 7 (DDN); ε* is "
            "reported for ImageNet only (Table 2).",
        },  # fmt: skip
        "config": {
            "dataset": dataset,
            "corruptions": "released MNIST-C (TFDS mnist_corrupted)"
            if released
            else "in-graph MNIST-C suite on the test images (14 of 15: no canny_edges)",
            "budget": budget,
            "ant_overrides": ant_overrides,
            "eval_images": n_eval,
            "epsilon_star_images": n_eps,
            "generator_for_epsilon_an": generator,
            "ddn_steps": ddn_steps,
            "timing": timing,
            "seed": seed,
            "quick": quick,
        },  # fmt: skip
    }
