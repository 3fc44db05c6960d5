"""The racecar paper's claims (000_7daca03a93eb4fe1.txt), at a 2-core CPU's scale.

- ``racecar_two_image``: one linear layer 784 → 10 trained on two digit images (a 0 and a 1) with
  the reference settings. Only RR reconstructs its training inputs through the transposed
  weights, and only RR's right-singular subspace holds them (sec. 3, Fig. 3a, Tab. 8).
- ``racecar_peak``: one linear layer 784 → 2 on the ``peak`` images, 5 runs. RR's two singular
  values go to 1 and its singular subspace holds the class means; Std's does not (Figs. 3b/4a).
- ``racecar_mi``: the 12 → 10 → 7 → 5 → 4 → 3 → 2 tanh MLP on ``var_u``: binned I(X;D) and
  I(D;Y) per layer after phase A, then fine-tuning without the regulariser on the same task (AA)
  and on task B with the labels exchanged (AB) (sec. 4, Tabs. 1, 2, 26).

The figures the digest's numpy re-implementation measured with the same settings ([sim]) are
reported beside the paper's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.repro import register_experiment, timed_train

PAPER = "000_7daca03a93eb4fe1.txt"
REGULARIZERS = {"RR": "rr", "Std": "none", "Ort": "ort"}


def _fit_full_batch(model, x, y, steps: int) -> None:
    """``steps`` Adam steps on the whole (tiny) training set, as the reference demos run."""
    import tensorflow as tf

    model.compile()
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)


def _two_digits(split: str, data_dir: str | None):
    """The first 0 and the first 1 of ``split`` (MNIST with ``data_dir``, else ``digits``)."""
    import zoo.data

    dataset = "mnist" if data_dir else "digits"
    images, labels = [], []
    for x, y in zoo.data.load(dataset, split, batch_size=256, data_dir=data_dir, shuffle=False):
        images.append(x.numpy())
        labels.append(y.numpy())
        if len(images) >= 2:
            break
    x, y = np.concatenate(images), np.concatenate(labels)
    idx = [int(np.flatnonzero(y == c)[0]) for c in (0, 1)]
    return x[idx], y[idx].astype(np.int64), dataset


@register_experiment(
    "racecar_two_image",
    description="linear 784→10 on two digit images: reverse-pass reconstruction and singular "
    "subspace for RR, Std and Ort",
    paper=PAPER,
    claim="With the racecar loss the right-singular vectors of the layer align with the two "
    "training images, so the transposed weights reconstruct them (relative error ≈ 0.01); Std "
    "and Ort do not (≈ 1.0).",
)
def racecar_two_image(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    import keras

    import zoo
    from zoo.eval.spectral import kernel_svd, max_abs_cosine, save_vector_images, subspace_energy

    x_train, y_train, dataset = _two_digits("train", data_dir)
    x_test, _, _ = _two_digits("test", data_dir)
    steps = 1000  # the reference's 1000 epochs of one full batch; seconds on 2 cores
    measured, rows, titles = {}, [], []
    for label, reg in REGULARIZERS.items():
        keras.utils.set_random_seed(seed)
        model = zoo.load("racecar_mnist_2img", regularizer=reg)
        _fit_full_batch(model, x_train, y_train, steps)
        singular, vectors = kernel_svd(model.get_layer("tied_dense1").kernel.numpy())
        flat = x_train.reshape(2, -1)
        measured[label] = {
            "rel_err_train": [round(float(e), 4) for e in model.relative_reconstruction_error(x_train)],
            "rel_err_test": [round(float(e), 4) for e in model.relative_reconstruction_error(x_test)],
            "energy_in_singular_subspace": [round(float(e), 4) for e in subspace_energy(flat, vectors)],
            "max_abs_cos_with_singular_vectors": [
                round(float(c), 3) for c in max_abs_cosine(flat, vectors)
            ],
            "singular_values": [round(float(s), 4) for s in singular],
        }  # fmt: skip
        # The two singular vectors that carry most of the training images' energy, with their σ
        # (the largest σ belong to directions the data never constrained).
        order = np.argsort(-np.sum((vectors @ flat.T) ** 2, axis=1))[:2]
        rows.append((f"{label}: sing. vectors", vectors[order]))
        titles.append([f"σ={singular[i]:.3f}" for i in order])
        rows.append(
            (f"{label}: reverse pass", np.asarray(model.reconstruct(x_train)).reshape(2, -1))
        )
        titles.append(["d'_1", "d'_1"])
    save_vector_images(rows, (28, 28, 1), output / "two_image.png", titles=titles)
    mean = {k: float(np.mean(v["rel_err_train"])) for k, v in measured.items()}
    measured["summary"] = {
        "rel_err_train": {k: round(v, 4) for k, v in mean.items()},
        "targets_met": bool(mean["RR"] < 0.05 and mean["Std"] > 0.9 and mean["Ort"] > 0.9),
    }
    return {
        "measured": measured,
        "paper": {
            "lpips_singular_vectors_vs_data": {"RR": 0.282, "Std": 0.411, "Ort": 0.403},
            "digest_sim_rel_err_train": {"RR": 0.010, "Std": 0.997, "Ort": 0.987},
            "digest_sim_rel_err_test": {
                "RR": "0.53-0.57",
                "Std": "0.997-1.000",
                "Ort": "0.98-0.99",
            },
            "note": "The paper reports LPIPS between singular vectors and the data (pretrained "
            "AlexNet features, not available offline); the reconstruction errors are the "
            "digest's numpy re-implementation with the same settings.",
        },
        "config": {
            "dataset": dataset,
            "steps": steps,
            "batch": "full (2 images)",
            "lambda": 1e-5,
            "learning_rate": 1e-4,
            "input_scale": 255,
            "plot": "two_image.png",
            "seed": seed,
        },
    }


# racecar_peak's targets. The paper reports only LPIPS for this test; the figures are the
# registered claim's ("RR σ = 1 ± 0.01 over 5 runs", "energy ≥ 0.99") and the digest's (§3.3 item
# 2: [sim] measured RR σ 1.000 ± 0.002 and class-mean energy RR ≥ 0.99, Std 0.002; its suggested
# assertion is |σ − 1| < 0.02 and energy(RR) > 0.95 > 0.05 > energy(Std)).
PEAK_MAX_RR_SINGULAR_DEVIATION = 0.01  # max |σ − 1| over RR's runs, at most
PEAK_MIN_RR_CLASS_MEAN_ENERGY = 0.99  # RR's smallest class-mean energy, at least
PEAK_MAX_STD_CLASS_MEAN_ENERGY = 0.05  # Std's largest class-mean energy, below


def racecar_peak_checks(figures: dict) -> dict:
    """The three conditions of ``racecar_peak``'s ``targets_met``, by name.

    ``figures`` is the experiment's ``measured`` object: per regularizer the summary, rounded to 4
    decimals (``figures["RR"]["max_abs_singular_value_minus_1"]``, ...). The experiment reports
    only their conjunction, ``targets_met`` (:func:`racecar_peak_targets_met`).
    """
    rr, std = figures["RR"], figures["Std"]
    return {
        "rr_singular_values_within_0.01_of_1": rr["max_abs_singular_value_minus_1"]
        <= PEAK_MAX_RR_SINGULAR_DEVIATION,
        "rr_class_mean_energy_at_least_0.99": rr["class_mean_energy_min"]
        >= PEAK_MIN_RR_CLASS_MEAN_ENERGY,
        "std_class_mean_energy_below_0.05": std["class_mean_energy_max"]
        < PEAK_MAX_STD_CLASS_MEAN_ENERGY,
    }


def racecar_peak_targets_met(figures: dict) -> bool:
    """``targets_met`` of ``racecar_peak``: every condition of :func:`racecar_peak_checks`."""
    return bool(all(racecar_peak_checks(figures).values()))


@register_experiment(
    "racecar_peak",
    description="linear 784→2 on the peak images, 5 runs: singular values and the class means' "
    "energy in the singular subspace for RR, Std and Ort",
    paper=PAPER,
    claim="RR's singular values converge to 1 (±0.01 over 5 runs) and its right-singular subspace "
    "holds the class means (energy ≥ 0.99) and spans the data's top-2 uncentered principal "
    "subspace; Std's subspace holds almost none of it.",
)
def racecar_peak(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    import keras

    import zoo
    from zoo.data.peak import peak_arrays, peak_template
    from zoo.eval.spectral import (
        kernel_svd,
        pca_basis,
        principal_cosines,
        save_vector_images,
        subspace_energy,
    )

    x_train, y_train = peak_arrays("train")
    x_test, y_test = peak_arrays("test")
    flat = x_train.reshape(len(x_train), -1)
    class_means = np.stack([flat[y_train == c].mean(0) for c in (0, 1)])
    templates = np.stack([peak_template(c).reshape(-1) for c in (0, 1)])
    pca2 = pca_basis(flat, 2)
    runs = 2 if quick else 5
    steps = 5000
    per_run = {k: [] for k in REGULARIZERS}
    rows = []
    for run in range(runs):
        for label, reg in REGULARIZERS.items():
            keras.utils.set_random_seed(seed + run)
            model = zoo.load("racecar_peak", regularizer=reg)
            _fit_full_batch(model, x_train, y_train, steps)
            singular, vectors = kernel_svd(model.get_layer("tied_dense1").kernel.numpy())
            logits = np.asarray(model(x_test))
            per_run[label].append(
                {
                    "singular_values": singular.tolist(),
                    "class_mean_energy": subspace_energy(class_means, vectors).tolist(),
                    "template_energy": subspace_energy(templates, vectors).tolist(),
                    "min_cos_with_pca2": float(principal_cosines(vectors, pca2).min()),
                    "rel_err_test": float(np.mean(model.relative_reconstruction_error(x_test))),
                    "test_accuracy": float(np.mean(np.argmax(logits, -1) == y_test)),
                }
            )
            if run == 0:
                rows.append((f"{label}: right sing. vectors", vectors))
    save_vector_images(rows, (28, 28, 1), output / "peak_singular_vectors.png")

    def summary(label):
        r = per_run[label]
        s = np.array([v["singular_values"] for v in r])
        return {
            "singular_values_min_max": [round(float(s.min()), 4), round(float(s.max()), 4)],
            "max_abs_singular_value_minus_1": round(float(np.abs(s - 1).max()), 4),
            "class_mean_energy_min": round(float(min(min(v["class_mean_energy"]) for v in r)), 4),
            "class_mean_energy_max": round(float(max(max(v["class_mean_energy"]) for v in r)), 4),
            "template_energy_mean": round(float(np.mean([v["template_energy"] for v in r])), 4),
            "min_principal_cos_with_pca2": round(float(min(v["min_cos_with_pca2"] for v in r)), 4),
            "rel_err_test_mean": round(float(np.mean([v["rel_err_test"] for v in r])), 4),
            "test_accuracy_mean": round(float(np.mean([v["test_accuracy"] for v in r])), 3),
        }

    measured = {label: summary(label) for label in REGULARIZERS}
    measured["targets_met"] = racecar_peak_targets_met(measured)
    return {
        "measured": measured,
        "paper": {
            "lpips_singular_vectors_vs_data": {"RR": 0.217, "Std": 0.500, "Ort": 0.495},
            "digest_sim": {
                "RR_singular_values": "1.000 ± 0.002",
                "Std_singular_values": "1.34-1.46",
                "Ort_singular_values": "1.0-1.2",
                "class_mean_energy": {"RR": ">= 0.99", "Std": 0.002},
                "template_energy": {
                    "RR": "0.55-0.59 (repo data), 0.87 (synthetic)",
                    "Std/Ort": "<= 0.02",
                },
                "min_principal_cos_with_pca2": {"RR": ">= 0.999"},
                "rel_err_test": {"RR": "0.46-0.51", "Std/Ort": ">= 0.99"},
            },
        },
        "config": {
            "dataset": "peak (procedural; 100 train, 10 test)",
            "runs": runs,
            "steps": steps,
            "batch": "full (100 images)",
            "lambda": 1e-6,
            "learning_rate": 1e-4,
            "input_scale": 255,
            "plot": "peak_singular_vectors.png",
            "seed": seed,
        },
    }


def _layer_information(model, x, p_y) -> list[list[float]]:
    """[I(X;D), I(D;Y)] in bits for every layer state D_2..D_7 over all 4096 patterns."""
    from zoo.eval.information import binned_mutual_information

    _, states = model.forward_states(x)
    return [
        [round(v, 3) for v in binned_mutual_information(np.asarray(d), p_y)] for d in states[1:]
    ]


@register_experiment(
    "racecar_mi",
    description="the MI test's tanh MLP on var_u: per-layer information after phase A, and "
    "accuracy after fine-tuning on the same task (AA) and on swapped labels (AB)",
    paper=PAPER,
    claim="RR keeps more input information in the deep layers (the paper's I(X;D_7) 4.62 bits vs "
    "Std's 1.24) and transfers better to the swapped task: AB accuracy 0.997 for RR against 0.471 "
    "for Std (0.136 in 3 of 5 runs).",
)
def racecar_mi(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    import zoo
    from zoo.data.var_u import var_u_patterns
    from zoo.eval.information import plot_information_plane

    x_all, p_all, _ = var_u_patterns()
    variants = {
        "Std": {"regularizer": "none"},
        "RR": {"regularizer": "rr"},
    }
    if not quick:
        variants["Ort"] = {"regularizer": "ort"}
        variants["IRR"] = {
            "regularizer": "rr",
            "mode": "layerwise",
            "racecar_lambda": [8e-2, 6e-2, 4e-2, 2e-2, 1e-2, 1e-2],
        }
    epochs = 1000 if quick else 3000  # per phase; the paper runs 20000
    steps_per_epoch = 3277 // 512  # 6 full batches of 512
    chunks = 4 if quick else 10  # epochs of the trainer (each validates and checkpoints)
    common = {
        "model": "racecar_mnist_mlp",
        "batch_size": 512,
        "epochs": chunks,
        "steps_per_epoch": epochs * steps_per_epoch // chunks,
        "seed": seed,
    }
    measured, timing = {}, {}
    for label, overrides in variants.items():
        phase_a, seconds_a = timed_train(
            dataset="var_u", overrides=overrides, output=str(output / f"{label}_A"), **common
        )
        model = zoo.load("racecar_mnist_mlp", weights=output / f"{label}_A", **overrides)
        info = _layer_information(model, x_all, p_all)
        row = {
            "A": round(phase_a.metrics["val_accuracy"], 4),
            "I_X_D": [v[0] for v in info],
            "I_D_Y": [v[1] for v in info],
        }
        timing[label] = {"A": seconds_a}
        phases = {"AB": "var_u_swapped"} if quick else {"AA": "var_u", "AB": "var_u_swapped"}
        for phase, dataset in phases.items():
            result, seconds = timed_train(
                dataset=dataset, overrides={"phase": 2}, init_from=str(output / f"{label}_A"),
                output=str(output / f"{label}_{phase}"), **common,
            )  # fmt: skip
            row[phase] = round(result.metrics["val_accuracy"], 4)
            timing[label][phase] = seconds
        measured[label] = row
    plot_information_plane(
        {k: list(zip(v["I_X_D"], v["I_D_Y"], strict=True)) for k, v in measured.items()},
        output / "information_plane.png",
    )
    measured["RR_minus_Std_AB"] = round(measured["RR"]["AB"] - measured["Std"]["AB"], 4)
    measured["RR_minus_Std_I_X_D7"] = round(
        measured["RR"]["I_X_D"][-1] - measured["Std"]["I_X_D"][-1], 3
    )
    return {
        "measured": measured,
        "paper": {
            "accuracy": {
                "Std": {"A": 0.972, "AA": 0.973, "AB": 0.471},
                "Ort": {"A": 0.963, "AA": 0.965, "AB": 0.809},
                "IRR": {"A": 0.8334, "AA": 0.9794, "AB": 0.9850},
                "RR": {"A": 0.765, "AA": 0.992, "AB": 0.997},
                "Std_B_from_scratch": 0.934,
            },
            "I_X_D": {
                "Std": [11.999, 11.988, 11.728, 7.909, 2.961, 1.237],
                "Ort": [11.998, 11.970, 11.478, 7.702, 2.631, 1.076],
                "IRR": [11.552, 6.774, 4.005, 4.009, 3.846, 3.712],
                "RR": [5.285, 4.884, 4.267, 3.936, 4.760, 4.624],
            },
            "I_D_Y": {
                "Std": [0.9992, 0.9992, 0.9973, 0.9947, 0.9786, 0.9554],
                "RR": [0.5654, 0.5369, 0.5358, 0.5182, 0.5261, 0.5336],
            },
            "note": "5 runs of 20000 epochs per phase on the original var_u.mat; Std's AB "
            "average includes 3 of 5 runs stuck at 0.136, which the digest expects to depend on "
            "that over-training.",
        },
        "config": {
            "dataset": "var_u (regenerated: 4096 patterns on icosahedron vertices, I(X;Y) = 0.99 "
            "bit; 3277 train / 819 test)",
            "epochs_per_phase": epochs,
            "batch_size": 512,
            "learning_rate": 4e-4,
            "lambda": "1e-2 per layer (RR); 8e-2 … 1e-2 (IRR)",
            "mi_bins": "30 over [-1, 1], all 4096 patterns",
            "plot": "information_plane.png",
            "runs": 1,
            "timing_seconds": timing,
            "seed": seed,
            "quick": quick,
        },
    }
