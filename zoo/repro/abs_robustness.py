"""``python -m zoo.repro abs_robustness``: the ABS paper's Table 1, scaled to a 2-core CPU.

Trains (with the zoo's trainer) the CNN, the Binary CNN, the nearest-neighbour baseline, ABS and a
substitute CNN for the transfer attacks; Binary ABS reuses ABS's weights. Then, on the same test
images for every model, it runs the attacks this machine affords (digest §5.3) and reports per
model: clean accuracy, the median L2 / L∞ / L0 distance over all attacks, the accuracy at
L2 1.5 / L∞ 0.3 / L0 12, each attack's median, and for the ABS models the mean L2 lower bound, beside
Table 1. Curves go to ``curves.png`` / ``curves.json``.

What is scaled down, and why:
- Training: a few epochs on 30,000 training images (12,000 with ``--quick``); full-MNIST ABS
  takes about an hour.
- Pointwise: one run per image (the paper's "10x" keeps the best of ten).
- Images attacked: 8 (``--quick``) or 32; clean accuracy on 100 or 500.
- ABS's attacks: transfer (4 directions from the substitute), Gaussian noise, Latent Descent, and
  L2/L∞ PGD through Danskin's gradient (outside the paper's protocol, which only used estimated
  gradients on ABS; it is the strongest attack here, so L2 is reported both ways). The L0 attacks
  (Pointwise and salt-and-pepper, each with the same query budget on every model) query ABS's
  10-step latent search and are then checked on the full model (an adversarial that does not
  hold there counts as a failure); the Boundary attack and the gradient-estimation attacks are
  not run. ABS's figures are therefore upper bounds on its true robustness, as the paper's are.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from zoo.repro import register_experiment, timed_train

# Table 1, "All ... Attacks" rows and the clean row: (median, accuracy at ε).
PAPER_TABLE1 = {
    "cnn_mnist": {"clean": 0.991, "l2": (1.1, 0.08), "linf": (0.08, 0.00), "l0": (9.0, 0.19)},
    "binary_cnn_mnist": {"clean": 0.985, "l2": (0.9, 0.03), "linf": (0.34, 0.64), "l0": (11.0, 0.38)},
    "nn_mnist": {"clean": 0.969, "l2": (1.5, 0.53), "linf": (0.19, 0.22), "l0": (10.0, 0.34)},
    "binary_abs_mnist": {"clean": 0.990, "l2": (1.3, 0.39), "linf": (0.44, 0.77), "l0": (21.5, 0.77)},
    "abs_mnist": {"clean": 0.990, "l2": (2.3, 0.80), "linf": (0.23, 0.08), "l0": (16.5, 0.69)},
}  # fmt: skip
PAPER_LOWER_BOUND = {"abs_mnist": 0.690, "binary_abs_mnist": 0.601}
SUBSTITUTE = {"filters": [32, 32, 64, 10]}  # the authors' transfer_cnn (digest §2)
# White-box gradient attacks on ABS (through the fixed latent optimum) are beyond the paper's
# protocol, which attacked ABS with estimated gradients only: reported, but apart.
DANSKIN = " (danskin)"


def _arrays(dataset, split, n, data_dir):
    import zoo.data

    ds = zoo.data.load(dataset, split, batch_size=n, data_dir=data_dir, shuffle=False)
    x, y = next(iter(ds.take(1)))
    return x.numpy().astype(np.float32), y.numpy().astype(np.int64)


def _train(name, dataset, data_dir, output, seed, epochs, examples, overrides=None, tag=None):
    return timed_train(
        model=name,
        dataset=dataset,
        data_dir=data_dir,
        epochs=epochs,
        train_examples=examples,
        validation_steps=5,
        overrides=overrides or {},
        output=str(output / (tag or name)),
        seed=seed,
    )


def _l0_budget(quick: bool) -> int:
    """Queries per image of each L0 attack (Pointwise, salt-and-pepper), the same for every
    model, so the L0 comparison sets equal attacks against each other."""
    return 300 if quick else 1000


def _attack_model(name, model, substitute, x, y, quick, seed, fast_model=None):
    """Every attack for one model → {attack: AttackResult}."""
    from zoo import eval as ze

    is_abs = hasattr(model, "fit_latents")
    line = dict(grid=10, refine=5) if is_abs else dict(grid=24, refine=8)
    results = {}
    for r in ze.transfer(model, substitute, x, y, **line):
        results[r.name] = r
    results["gaussian_noise"] = ze.gaussian_noise(model, x, y, seed=seed, **line)
    if is_abs:
        results["latent_descent"] = ze.latent_descent(model, x, y, check_every=8 if quick else 2)
        pgd = dict(steps=5, bisect_steps=3 if quick else 5)
    else:
        pgd = dict(steps=10, bisect_steps=10)
    # The paper treats nearest neighbour as gradient-free, as here; --quick leaves out the
    # Danskin-gradient attacks on ABS (outside the paper's protocol, and 30 s each).
    if name != "nn_mnist" and not (is_abs and quick):
        suffix = DANSKIN if is_abs else ""
        results["pgd_l2" + suffix] = ze.pgd(model, x, y, norm="l2", **pgd)
        results["pgd_linf" + suffix] = ze.pgd(model, x, y, norm="linf", **pgd)
    # L0: the same two attacks with the same query budget on every model. On ABS they query the
    # 10-step search (1,000 sequential full-search queries per image are beyond this CPU), and an
    # adversarial counts only if it also fools the full model.
    budget = _l0_budget(quick)
    query = fast_model if (is_abs and fast_model is not None) else model
    for attack, run in (
        ("salt_and_pepper", lambda: ze.salt_and_pepper(query, x, y, seed=seed, budget=budget)),
        ("pointwise", lambda: ze.pointwise(query, x, y, seed=seed, budget=budget)),
    ):
        result = run()
        if query is not model:
            holds = ze.Predictor.of(model).is_adversarial(result.adversarials, y)
            result.status = np.where((result.status == 1) & ~holds, 2, result.status).astype(
                np.int8
            )
            result.name = f"{attack} (10-step search, verified)"
        results[attack] = result
    return results


def robustness_checks(measured: dict) -> dict:
    """The pass flags of ``abs_robustness`` from its measured figures (a pure function, so the
    pass logic is tested on crafted figures).

    L2 is reported two ways. Under the paper's protocol ABS meets no true-gradient attack (only
    transfer, noise, Latent Descent and decision-based ones) while the CNN does; under every
    attack the zoo runs, ABS also meets PGD through Danskin's gradient, the strongest attack
    here. L0 compares the same attacks (Pointwise and salt-and-pepper, the same budget) on every
    model."""
    cnn, abs_ = measured["cnn_mnist"], measured["abs_mnist"]
    transfer = measured["transfer_l2_median"]
    protocol = _ratio(abs_["median_l2"], cnn["median_l2"])
    every = abs_.get("with_danskin_gradients_median_l2")
    every_ratio = _ratio(every, cnn["median_l2"]) if every is not None else None
    transfer_ratio = _ratio(transfer["abs_mnist"], transfer["cnn_mnist"])
    return {
        "abs_over_cnn_transfer_l2": transfer_ratio,
        "abs_over_cnn_l2_paper_protocol": protocol,
        "abs_over_cnn_l2_every_attack": every_ratio,
        "abs_at_least_1.5x_cnn_l2_paper_protocol": protocol >= 1.5 and transfer_ratio >= 1.5,
        # None where the Danskin-gradient attacks did not run (--quick)
        "abs_at_least_1.5x_cnn_l2_every_attack": None
        if every_ratio is None
        else every_ratio >= 1.5,
        "abs_and_binary_abs_beat_cnn_in_l0_same_attacks": all(
            _num(measured[m]["median_l0"]) > _num(cnn["median_l0"])
            for m in ("abs_mnist", "binary_abs_mnist")
        ),
        # The bound holds for ABS's continuous input. Binary ABS's is computed on the binarized
        # image (and ignores γ): a continuous perturbation of 0.01 can flip a pixel near 0.5 by
        # 1, so it bounds distances between binarized images, not the attacks' distances.
        "abs_lower_bound_below_every_attack": abs_["lower_bound_below_every_attack"],
    }


@register_experiment(
    "abs_robustness",
    description="ABS, Binary ABS, CNN, Binary CNN and nearest neighbour under the paper's "
    "attacks, with the L2 lower bound (Table 1)",
    paper="002_7240b1e8d13f6586.txt",
    claim="ABS is the most robust model in L2 (paper: median 2.3 vs at most 1.5 for the others; "
    "here: ABS's median L2 is at least 1.5x the CNN's under the paper's protocol, which gives ABS "
    "no true-gradient attack, reported also under every attack the zoo runs), both ABS variants "
    "beat the CNN in L0 under the same attacks, and the L2 lower bound (paper: mean 0.690) is "
    "below every adversarial found.",
)
def abs_robustness(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    import zoo
    from zoo import eval as ze

    dataset = "mnist" if data_dir else "digits"
    n_attack, n_clean = (8, 100) if quick else (32, 500)
    small = 6_000 if quick else 30_000
    timing, clean = {}, {}

    runs = {}
    plan = [
        ("cnn_mnist", 2 if quick else 3, 12_000 if quick else small, None, None),
        ("binary_cnn_mnist", 2 if quick else 3, 12_000 if quick else small, None, None),
        ("cnn_mnist", 2 if quick else 3, 12_000 if quick else small, SUBSTITUTE, "substitute"),
        ("nn_mnist", 1, small, {"memory_size": small}, None),
        (
            "abs_mnist",
            4 if quick else 10,
            12_000 if quick else small,
            {"kl_anneal_epochs": 3 if quick else 8},
            None,
        ),  # fmt: skip
    ]
    for name, epochs, examples, overrides, tag in plan:
        result, seconds = _train(name, dataset, data_dir, output, seed, epochs, examples,
                                 overrides, tag)  # fmt: skip
        runs[tag or name] = (result.output, overrides or {})
        timing[f"train_{tag or name}"] = seconds

    def load(tag, name=None, **extra):
        path, overrides = runs[tag]
        return zoo.load(name or tag, weights=path, **{**overrides, **extra})

    models = {
        "cnn_mnist": load("cnn_mnist"),
        "binary_cnn_mnist": load("binary_cnn_mnist"),
        "nn_mnist": load("nn_mnist"),
        "abs_mnist": load("abs_mnist"),
        "binary_abs_mnist": load("abs_mnist", "binary_abs_mnist"),
    }
    substitute = load("substitute", "cnn_mnist")
    fast = {
        "abs_mnist": load("abs_mnist", search_steps=10),
        "binary_abs_mnist": load("abs_mnist", "binary_abs_mnist", search_steps=10),
    }

    xc, yc = _arrays(dataset, "test", n_clean, data_dir)
    x, y = xc[:n_attack], yc[:n_attack]
    measured, per_attack, curves_in, bounds, attack_seconds = {}, {}, {}, {}, {}
    transfers = {}
    for name, model in models.items():
        start = time.perf_counter()
        clean[name] = float(np.mean(ze.Predictor.of(model).labels(xc) == yc))
        results = _attack_model(name, model, substitute, x, y, quick, seed, fast.get(name))
        row = {"clean_accuracy": round(clean[name], 4)}
        curves_in[name] = {}
        protocol = [r for a, r in results.items() if not a.endswith(DANSKIN)]
        for norm in ze.NORMS:
            d = ze.best_over(protocol, norm)
            curves_in[name][norm] = d
            s = ze.summarize(d, norm)
            row[f"median_{norm}"] = s["median"]
            row[f"accuracy_at_{norm}"] = s["accuracy_at_eps"]
        if len(protocol) < len(results):
            for norm in ("l2", "linf"):
                s = ze.summarize(ze.best_over(list(results.values()), norm), norm)
                row[f"with_danskin_gradients_median_{norm}"] = s["median"]
                row[f"with_danskin_gradients_accuracy_at_{norm}"] = s["accuracy_at_eps"]
        per_attack[name] = {
            f"{attack} ({r.norm})": _finite(ze.median_distance(r.distances()))
            for attack, r in results.items()
        }
        attack_seconds[name] = {a: round(r.seconds, 1) for a, r in results.items()}
        transfers[name] = [r for a, r in results.items() if a.startswith("transfer")]
        if hasattr(model, "fit_latents"):
            lb = ze.lower_bound_l2(model, x, y, restarts=2 if quick else 4)
            bounds[name] = lb
            row["lower_bound_l2_mean"] = round(float(np.mean(lb)), 4)
            every = ze.best_over(list(results.values()), "l2")
            row["lower_bound_below_every_attack"] = bool(np.all(lb <= every + 1e-6))
            if getattr(model, "binarize", False):
                row["lower_bound_note"] = "on the binarized input: not a bound on these attacks"
        measured[name] = row
        timing[f"eval_{name}"] = round(time.perf_counter() - start, 1)

    ze.robustness_curves(
        curves_in, output / "curves.png", title=f"ABS robustness ({dataset}, {n_attack} images)"
    )
    transfer = {
        m: _finite(ze.median_distance(ze.best_over(transfers[m], "l2")))
        for m in ("cnn_mnist", "abs_mnist")
    }
    checks = robustness_checks({**measured, "transfer_l2_median": transfer})
    measured["checks"] = {"transfer_l2_median": transfer, **checks}
    measured["per_attack_median"] = per_attack
    return {
        "measured": measured,
        "paper": {
            "table1_all_attacks": {
                m: {
                    "clean_accuracy": v["clean"],
                    **{f"median_{n}": v[n][0] for n in ze.NORMS},
                    **{f"accuracy_at_{n}": v[n][1] for n in ze.NORMS},
                }
                for m, v in PAPER_TABLE1.items()
            },
            "lower_bound_l2_mean": PAPER_LOWER_BOUND,
            "note": "Table 1 on the MNIST test set with many more attacks (Boundary, gradient "
            "estimation, Pointwise 10x on every model); the paper's ABS was trained for 50 "
            "epochs on all of MNIST.",
        },
        "config": {
            "dataset": dataset,
            "images_attacked": n_attack,
            "clean_accuracy_images": n_clean,
            "training": {tag: ov for tag, (_, ov) in runs.items()},
            "train_examples": {"cnn": 12_000 if quick else small, "abs_and_nn": small},
            "timing_seconds": timing,
            "attack_seconds": attack_seconds,
            "curves": str(output / "curves.png"),
            "seed": seed,
            "quick": quick,
        },
    }


def _num(v) -> float:
    return float("inf") if v == "inf" else float(v)


def _ratio(a, b) -> float:
    a, b = _num(a), _num(b)
    return round(a / b, 3) if b > 0 else float("inf")


def _finite(v: float):
    return round(v, 4) if np.isfinite(v) else "inf"
