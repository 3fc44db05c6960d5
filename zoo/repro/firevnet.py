"""The excessive-invariance paper's claims (004_a2e2a3876a23345e.txt), scaled to a 2-core CPU.

- ``spheres``: the fully connected fiRevNet on the concentric spheres at the paper's scale
  (500,000 training points, 10 epochs; App. B.2): logit and post-hoc nuisance-classifier
  accuracy, and 5,000 metamers with the logits of an inner-sphere point and the nuisance
  variables of an outer-sphere point: the classifier keeps saying "inner" while the oracle
  sign(‖x‖ − 5.5) and the nuisance classifier say "outer" (Fig. 3, §2.2).
- ``firevnet_ice``: the small MNIST-style fiRevNet trained with CE and with iCE on ``digits`` (or
  MNIST from ``--data-dir``): logit error and the error of a classifier trained afterwards on the
  frozen nuisance variables (Table 2), and which class an independent CNN sees in metamers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from zoo.repro import register_experiment, timed_train

PAPER = "004_a2e2a3876a23345e.txt"


# spheres: the digest's pass criteria (§3 check 3). The paper reports 0 % logit error and 100 %
# nuisance-classifier accuracy (App. B.2 / §3); it shows metamers (Fig. 3) but does not count them.
SPHERES_MIN_ACCURACY = 0.999  # logit and nuisance-classifier test accuracy, at least
SPHERES_MIN_METAMERS_KEPT_AND_FLIPPED = 0.95  # fraction of metamers, at least
# firevnet_ice: the digest's example margin (§3 check 5), set without a run to calibrate it on.
ICE_MIN_MARGIN_POINTS = 10.0


def spheres_checks(figures: dict) -> dict:
    """The ``spheres`` pass flags from its measured figures.

    Reads ``logit_test_accuracy`` and ``nuisance_classifier_test_accuracy`` (as reported, rounded
    to 5 decimals) and ``metamers_D_kept_while_oracle_flipped``, which the experiment passes
    unrounded: the fraction of metamers D calls "inner" while the oracle says "outer".
    """
    return {
        "logit_accuracy_at_least_0.999": figures["logit_test_accuracy"] >= SPHERES_MIN_ACCURACY,
        "nuisance_accuracy_at_least_0.999": figures["nuisance_classifier_test_accuracy"]
        >= SPHERES_MIN_ACCURACY,
        "metamers_95pct_kept_and_flipped": figures["metamers_D_kept_while_oracle_flipped"]
        >= SPHERES_MIN_METAMERS_KEPT_AND_FLIPPED,
    }


def firevnet_ice_checks(figures: dict) -> dict:
    """The ``firevnet_ice`` pass flags from its measured figures.

    Reads ``figures["ce"]["nuisance_test_error"]`` and ``figures["ice"]["nuisance_test_error"]``
    (post-hoc nuisance-classifier test error in percent, as reported, rounded to 2 decimals); the
    margin is their unrounded difference in points.
    """
    margin = figures["ice"]["nuisance_test_error"] - figures["ce"]["nuisance_test_error"]
    return {
        # The expectation at small scale: the direction of Table 2.
        "ice_nuisance_error_above_ce": margin > 0,
        # The digest's example margin (§3 check 5).
        "ice_nuisance_error_at_least_ce_plus_10_points": margin >= ICE_MIN_MARGIN_POINTS,
    }


def _batched(fn, x, batch=1000):
    return np.concatenate([np.asarray(fn(x[i : i + batch])) for i in range(0, len(x), batch)])


@register_experiment(
    "spheres",
    description="fiRevNet on the concentric spheres: accuracy, nuisance classifier, metamers",
    paper=PAPER,
    claim="A fully invertible classifier separates the spheres perfectly (0% error), a classifier "
    "on its nuisance variables does too (100%), and metamers with an inner point's logits and an "
    "outer point's nuisance are still called 'inner' while the oracle says 'outer'.",
)
def spheres(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    import tensorflow as tf

    import zoo.data
    from zoo.data.spheres import oracle, spheres_arrays
    from zoo.eval.metamers import metameric_sample, posthoc_nuisance_error

    train_examples = 100_000 if quick else 500_000
    epochs = 2 if quick else 10
    batch_size = 256
    result, seconds = timed_train(
        model="firevnet_spheres", dataset="spheres", epochs=epochs, batch_size=batch_size,
        train_examples=train_examples, validation_steps=40,
        output=str(output / "firevnet_spheres"), seed=seed,
    )  # fmt: skip
    model = result.model
    x_train, y_train = spheres_arrays("train", num_examples=min(train_examples, 100_000), seed=0)
    x_test, y_test = spheres_arrays("test", num_examples=20_000 if quick else 100_000, seed=0)

    def accuracy(x, y):
        return float(np.mean(np.argmax(_batched(model, x, 10_000), -1) == y))

    start = time.perf_counter()
    nuisance_train = zoo.data.load(
        "spheres", "train", batch_size=1000, num_examples=50_000 if quick else 100_000
    )
    nuisance_test = zoo.data.load("spheres", "test", batch_size=1000, num_examples=20_000)
    nuisance = posthoc_nuisance_error(
        model, nuisance_train, nuisance_test, hidden=(1000, 1000), epochs=2 if quick else 5,
        batch_size=256, seed=seed,
    )  # fmt: skip
    nuisance_seconds = round(time.perf_counter() - start, 1)

    # 5,000 metamers: logits of inner-sphere points, nuisance of outer-sphere points.
    n = 5000
    inner, outer = x_test[y_test == 0][:n], x_test[y_test == 1][:n]
    met = _batched(
        lambda i: metameric_sample(model, tf.constant(inner[i]), tf.constant(outer[i])),
        np.arange(n),
    )
    d_label = np.argmax(_batched(model, met, 5000), -1)
    logit_drift = float(np.max(np.abs(_batched(model, met, 5000) - _batched(model, inner, 5000))))
    oracle_label = oracle(met)
    kept_and_flipped = float(np.mean((d_label == 0) & (oracle_label == 1)))
    measured = {
        "logit_train_accuracy": round(accuracy(x_train, y_train), 5),
        "logit_test_accuracy": round(accuracy(x_test, y_test), 5),
        "nuisance_classifier_train_accuracy": round(1 - nuisance["train_error"] / 100, 5),
        "nuisance_classifier_test_accuracy": round(1 - nuisance["test_error"] / 100, 5),
        "metamers": n,
        "metamers_D_says_inner": round(float(np.mean(d_label == 0)), 4),
        "metamers_oracle_says_outer": round(float(np.mean(oracle_label == 1)), 4),
        "metamers_D_kept_while_oracle_flipped": round(kept_and_flipped, 4),
        "metamer_median_norm": round(float(np.median(np.linalg.norm(met, axis=1))), 2),
        "metamer_max_logit_drift": logit_drift,
    }
    # The check reads the unrounded fraction, not the 4-decimal figure reported above.
    measured["checks"] = spheres_checks(
        {**measured, "metamers_D_kept_while_oracle_flipped": kept_and_flipped}
    )
    return {
        "measured": measured,
        "paper": {
            "logit_error": 0.0,
            "nuisance_classifier_accuracy": 1.0,
            "note": "App. B.2 / §3: '0 % error on the spheres set', '100% train and validation "
            "accuracy for logit and nuisance classifier'; metamers are shown (Fig. 3) but not "
            "counted in the paper.",
        },
        "config": {
            "model": "firevnet_spheres (4 FC additive blocks, hidden 256, Adam 1e-4)",
            "train_examples": train_examples,
            "epochs": epochs,
            "batch_size": batch_size,
            "nuisance_classifier": "ReLU MLP 1000-1000 on standardised z_n (98 dims)",
            "seconds": {"train": seconds, "nuisance_classifier": nuisance_seconds},
            "seed": seed,
            "quick": quick,
        },
    }


@register_experiment(
    "firevnet_ice",
    description="small MNIST fiRevNet, CE vs iCE: logit error and post-hoc nuisance error",
    paper=PAPER,
    claim="iCE keeps the logit error of CE training while removing label information from the "
    "nuisance variables: a classifier trained afterwards on z_n errs far more after iCE than "
    "after CE (Table 2: CE 0.39/0.34, iCE 0.38/27.70 % logit/nuisance test error).",
)
def firevnet_ice(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    import tensorflow as tf

    import zoo
    import zoo.data
    from zoo.eval.metamers import metamer_grid, metameric_sample, posthoc_nuisance_error

    dataset = "mnist" if data_dir else "digits"
    examples = 19_200 if quick else 20_000
    epochs, steps = (1, 300) if quick else (4, 300)  # 300 or 1,200 steps of 64
    batch_size = 64
    runs, timing = {}, {}
    # The digest's protocol (§3, check 5): CE training, then iCE training started from the CE
    # weights for as many steps again. The CE run is the baseline.
    for loss in ("ce", "ice"):
        result, seconds = timed_train(
            model="firevnet_mnist_small", dataset=dataset, data_dir=data_dir, epochs=epochs,
            steps_per_epoch=steps, validation_steps=10, batch_size=batch_size,
            train_examples=examples, overrides={"loss": loss},
            output=str(output / f"firevnet_mnist_small_{loss}"), seed=seed,
            init_from=str(runs["ce"].output) if loss == "ice" else None,
        )  # fmt: skip
        runs[loss], timing[loss] = result, seconds
    oracle_result, timing["cnn_oracle"] = timed_train(
        model="cnn_mnist", dataset=dataset, data_dir=data_dir, epochs=1, batch_size=128,
        train_examples=examples, validation_steps=10, output=str(output / "cnn_oracle"),
        seed=seed + 1,
    )  # fmt: skip
    oracle = oracle_result.model

    test = zoo.data.load(dataset, "test", batch_size=500, data_dir=data_dir, shuffle=False)
    test = test.take(2 if quick else 10)
    x_test = np.concatenate([x.numpy() for x, _ in test])
    y_test = np.concatenate([y.numpy() for _, y in test])
    train = zoo.data.load(
        dataset, "train", batch_size=500, data_dir=data_dir, shuffle=False, num_examples=examples
    )
    measured = {}
    n_met = 200 if quick else 1000
    rng = np.random.default_rng(seed)
    partner = rng.permutation(n_met)
    for loss, result in runs.items():
        model = result.model
        logits = _batched(model, x_test, 500)
        start = time.perf_counter()
        nuisance = posthoc_nuisance_error(
            model, train, test, hidden=(512, 512), epochs=3 if quick else 10, seed=seed
        )
        timing[f"nuisance_classifier_{loss}"] = round(time.perf_counter() - start, 1)
        # Metamers: logits of image i, nuisance of image partner[i]; the CNN oracle judges them.
        a, b = x_test[:n_met], x_test[:n_met][partner]
        met = _batched(
            lambda i, a=a, b=b, model=model: metameric_sample(
                model, tf.constant(a[i]), tf.constant(b[i])
            ),
            np.arange(n_met),
            100,
        )
        seen = np.argmax(_batched(oracle, np.clip(met[:, 2:30, 2:30], 0, 1), 500), -1)
        # Fig. 6: from x_a (α = 0) to the metamer with x_b's nuisance (α = 1), logits fixed.
        metamer_grid(model, a[:4], b[:4], output / f"metamers_{loss}.png", steps=6)
        differ = y_test[:n_met] != y_test[:n_met][partner]
        measured[loss] = {
            "logit_test_error": round(100 * float(np.mean(np.argmax(logits, -1) != y_test)), 2),
            "nuisance_train_error": round(nuisance["train_error"], 2),
            "nuisance_test_error": round(nuisance["test_error"], 2),
            "metamers_oracle_sees_logit_source": round(
                float(np.mean(seen[differ] == y_test[:n_met][differ])), 3
            ),
            "metamers_oracle_sees_nuisance_source": round(
                float(np.mean(seen[differ] == y_test[:n_met][partner][differ])), 3
            ),
            "train_metrics": {k: round(float(v), 4) for k, v in result.metrics.items()},
        }
    margin = measured["ice"]["nuisance_test_error"] - measured["ce"]["nuisance_test_error"]
    measured["ice_minus_ce_nuisance_error_points"] = round(margin, 2)
    ce_error = measured["ce"]["nuisance_test_error"]
    measured["ice_over_ce_nuisance_error"] = (
        round(measured["ice"]["nuisance_test_error"] / ce_error, 1) if ce_error else float("inf")
    )
    measured["checks"] = firevnet_ice_checks(measured)
    return {
        "measured": measured,
        "paper": {
            "ce": {"logit_test_error": 0.39, "nuisance_test_error": 0.34},
            "ice": {"logit_test_error": 0.38, "nuisance_test_error": 27.70},
            "note": "Table 2 (MNIST, 3×16 steps, 128 filters, 100 epochs); this run is a small "
            "model trained briefly, so only the direction and margin are comparable.",
        },
        "config": {
            "dataset": dataset,
            "model": "firevnet_mnist_small (3 levels × 4 steps, 32 filters)",
            "train_examples": examples,
            "steps": {"ce": epochs * steps, "ice": f"{epochs * steps} from the CE weights"},
            "batch_size": batch_size,
            "ice": "authors' code defaults: shuffled-label adversarial term × 0.05, 5 nuisance "
            "steps per step, NLL in bits/dim",
            "posthoc_nuisance_classifier": "ReLU MLP 512-512 on standardised z_n (1014 dims)",
            "metamers": n_met,
            "plots": ["metamers_ce.png", "metamers_ice.png"],
            "seconds": timing,
            "seed": seed,
            "quick": quick,
        },
    }
