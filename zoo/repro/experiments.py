"""The registered experiments. Each family adds its own here (one function per claim)."""

from __future__ import annotations

import time
from pathlib import Path

from zoo.repro import register_experiment


@register_experiment(
    "cnn_digits",
    description="cnn_mnist on the procedural digits (or MNIST with --data-dir), beside a linear "
    "baseline",
    paper="002_7240b1e8d13f6586.txt",
    claim="The ABS paper's vanilla CNN is an accurate digit classifier (99.1% on MNIST, Table 1), "
    "far above a linear classifier on raw pixels; on digits it must reach >= 95% while the "
    "linear model stays clearly below.",
)
def cnn_digits(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    from zoo.training import TrainConfig, train

    dataset = "mnist" if data_dir else "digits"
    train_examples = 12_000 if quick else None  # None: the whole split (60,000)
    settings = {
        "cnn_mnist": {"epochs": 2 if quick else 3, "batch_size": 128},
        "linear_mnist": {"epochs": 4 if quick else 15, "batch_size": 128},
    }
    measured, timing = {}, {}
    for model, s in settings.items():
        start = time.perf_counter()
        result = train(
            TrainConfig(
                model=model,
                dataset=dataset,
                data_dir=data_dir,
                epochs=s["epochs"],
                batch_size=s["batch_size"],
                train_examples=train_examples,
                output=str(output / model),
                seed=seed,
                verbose=0,
            )
        )
        measured[f"{model}_test_accuracy"] = round(result.metrics["val_accuracy"], 4)
        timing[model] = {
            "seconds": round(time.perf_counter() - start, 1),
            "steps_per_second": round(result.steps_per_second or 0, 1),
        }
    measured["gap"] = round(
        measured["cnn_mnist_test_accuracy"] - measured["linear_mnist_test_accuracy"], 4
    )
    return {
        "measured": measured,
        "paper": {
            "cnn_mnist_test_accuracy": 0.991,
            "note": "ABS paper Table 1, vanilla CNN on the real MNIST test set; the paper reports "
            "no linear baseline.",
        },
        "config": {
            "dataset": dataset,
            "train_examples": train_examples or "all",
            "test_examples": "all",
            "settings": settings,
            "timing": timing,
            "seed": seed,
            "quick": quick,
        },
    }


# Each module registers its experiments: abs_robustness; spheres and firevnet_ice;
# racecar_two_image, racecar_peak and racecar_mi; inn_ae_bottleneck; slowvae_toy and
# slowvae_sprites; generalization; feature_alignment; noise_training.
from zoo.repro import (  # noqa: E402,F401
    abs_robustness,
    feature_alignment,
    firevnet,
    generalization,
    inn_autoencoder,
    noise_training,
    racecar,
    slowvae,
)
