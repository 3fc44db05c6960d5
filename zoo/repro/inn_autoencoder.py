"""The INN-autoencoder paper's bottleneck sweep (003_2c9ba5de01816b66.txt, §4 and Fig. 5), scaled
to a 2-core CPU.

``inn_ae_bottleneck`` trains one INN autoencoder and one classical autoencoder per bottleneck
size k on ``digits`` (or MNIST from ``--data-dir``), measures the test mean L1 reconstruction
error, plots it against k (Fig. 5a) and checks the paper's three claims: (a) the INN's error
keeps falling past the bottleneck where the classical one saturates (≈ 12 on MNIST); (b) at
k = 64 the INN's error is the lower; (c) at small k the two are close.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.repro import register_experiment, timed_train

PAPER = "003_2c9ba5de01816b66.txt"
# The scale that fits about 20 minutes for five k on 2 cores (digest §0 item 11: the paper's INN
# takes minutes per hundred steps here). The paper: hidden 100 (conv) and 180 (FC), 10 epochs at
# lr 1e-3 (4,690 steps); the classical AE 100 epochs.
INN_SCALE = {"conv_hidden": 16, "fc_hidden": 180, "learning_rate": 3e-3}


def _plot(ks, errors: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, values in errors.items():
        ax.plot(ks, values, "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("bottleneck size k")
    ax.set_ylabel("test mean L1 reconstruction error")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The thresholds of the three claims. Fig. 5 is a plot only (no table), and the digest (§3 check 4)
# asks for thresholds calibrated on a first run (its own suggestion for (c): within ~1.5× at k = 8),
# so both figures below are this reproduction's, not the paper's.
# (a) The classical AE "saturates" at the first k whose error is within 10 % of its best.
CLASSIC_SATURATION_FACTOR = 1.1
# (c) "Similar at small k": |INN − classic| below 20 % of the classical error at the smallest k.
SMALL_K_MAX_RELATIVE_GAP = 0.2


def bottleneck_claims(figures: dict) -> dict:
    """The paper's three claims, checked on the measured errors.

    ``figures`` is the experiment's ``measured`` object: ``{"k": [...], "test_mean_l1": {"INN":
    [...], "classic": [...]}}``, one error per k, k ascending. Returns the ``claims`` object: the
    saturation k, the relative drops and gap (rounded to 3 decimals), and the flags ``a_…``,
    ``b_…`` and ``c_…``, which compare the unrounded figures.
    """
    ks = figures["k"]
    inn = np.asarray(figures["test_mean_l1"]["INN"])
    classic = np.asarray(figures["test_mean_l1"]["classic"])
    best = classic.min()
    k_sat_index = int(np.flatnonzero(classic <= CLASSIC_SATURATION_FACTOR * best)[0])
    tail = slice(k_sat_index, None)
    inn_drop = float((inn[k_sat_index] - inn[-1]) / inn[k_sat_index])
    classic_drop = float((classic[k_sat_index] - classic[-1]) / classic[k_sat_index])
    small_gap = float(abs(inn[0] - classic[0]) / classic[0])
    return {
        "classic_saturates_at_k": ks[k_sat_index],
        "inn_relative_drop_after_saturation": round(inn_drop, 3),
        "classic_relative_drop_after_saturation": round(classic_drop, 3),
        "a_inn_keeps_falling_past_classic_saturation": bool(
            np.all(np.diff(inn[tail]) < 0) and inn_drop > classic_drop
        ),
        "b_inn_below_classic_at_largest_k": bool(inn[-1] < classic[-1]),
        "c_close_at_smallest_k": bool(small_gap < SMALL_K_MAX_RELATIVE_GAP),
        "relative_gap_at_smallest_k": round(small_gap, 3),
    }


@register_experiment(
    "inn_ae_bottleneck",
    description="INN autoencoder vs classical autoencoder: test mean L1 against the bottleneck k",
    paper=PAPER,
    claim="The classical autoencoder's error saturates (at k ≈ 12 on MNIST) while the INN's keeps "
    "falling; for large k the INN reconstructs better, for small k the two are similar (Fig. 5a).",
)
def inn_ae_bottleneck(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    import zoo
    import zoo.data

    dataset = "mnist" if data_dir else "digits"
    ks = [4, 64] if quick else [4, 8, 16, 32, 64]
    inn_steps, classic_steps = (300, 600) if quick else (1600, 3200)
    train_examples = 20_000 if quick else None  # None: the whole training split
    test_examples = 2_000 if quick else None
    chunks = 4  # trainer epochs; the learning rate drops ×10 for the last one (the paper: 8 of 10)
    test = zoo.data.load(
        dataset, "test", batch_size=500, data_dir=data_dir, num_examples=test_examples
    )
    errors = {"INN": [], "classic": []}
    timing = {"INN": [], "classic": []}
    for k in ks:
        for label, model, steps, overrides in (
            ("INN", "inn_ae_mnist", inn_steps, {**INN_SCALE, "lr_milestones": [chunks - 1]}),
            ("classic", "ae_mnist", classic_steps, {"lr_milestones": [chunks - 1]}),
        ):
            result, seconds = timed_train(
                model=model, dataset=dataset, data_dir=data_dir, batch_size=128, epochs=chunks,
                steps_per_epoch=steps // chunks, validation_steps=2, seed=seed,
                train_examples=train_examples,
                overrides={"k": k, **overrides}, output=str(output / f"{model}_k{k}"),
            )  # fmt: skip
            error = result.model.evaluate(test, verbose=0, return_dict=True)["reconstruction"]
            errors[label].append(round(float(error), 5))
            timing[label].append(seconds)
    _plot(ks, errors, output / "bottleneck.png")
    measured = {"k": ks, "test_mean_l1": errors}
    measured["claims"] = bottleneck_claims(measured)
    return {
        "measured": measured,
        "paper": {
            "classic_saturation_k": {"MNIST": 12, "CIFAR-10": 250, "CelebA": "200-250"},
            "claims": "(a) the INN error keeps falling past the classical saturation; (b) INN "
            "below classic at large k; (c) similar at small k. Fig. 5 is a plot only (no table).",
        },
        "config": {
            "dataset": dataset,
            "inn": {
                **INN_SCALE,
                "steps": inn_steps,
                "batch_size": 128,
                "paper": "hidden 100/180, lr 1e-3, 10 epochs (4,690 steps)",
            },  # fmt: skip
            "classic": {
                "architecture": "784-512-256-128-k",
                "steps": classic_steps,
                "batch_size": 128,
                "paper": "100 epochs",
            },  # fmt: skip
            "lr_schedule": f"÷10 for the last quarter of the steps ({chunks} trainer epochs)",
            "train_examples": train_examples or "the whole training split",
            "test_examples": test_examples or "the whole test split",
            "timing_seconds": timing,
            "plot": "bottleneck.png",
            "seed": seed,
            "quick": quick,
        },
    }
