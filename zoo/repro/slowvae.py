"""SlowVAE reproductions (002_7240b1e8d13f6586.txt, SlowVAE; digest a.4, a.6).

- ``slowvae_toy``: App. B's theory check. Pairs of 20-D latents with N(0, 1) marginals and
  Laplace transitions, mixed nonlinearly to 200-D (``laplace_transitions``); an MLP SlowVAE
  (γ = 10) against the same model with γ = 0 (a VAE on the same pairs). MCC on held-out latents.
- ``slowvae_sprites``: digest a.6's protocol. SlowVAE (γ = 10) against γ = 0 (β = 1) on LAP pairs
  of rotation-free procedural sprites (shape 3 × scale 6 × x 32 × y 32), DisLib conv VAE, Adam
  1e-4, 32 pairs per step, 3 seeds; MCC over all four factors and over the three ordinal ones,
  and the DisLib six, printed beside Table 1's dSprites (Laplace) row.

Pass/fail flags come from :func:`toy_passes` and :func:`sprites_passes`, pure functions of the
measured figures.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from zoo.repro import register_experiment, timed_train

PAPER = "002_7240b1e8d13f6586.txt"
ORDINAL = ("scale", "x_position", "y_position")

# Table 1, dSprites (Laplace), mean (s.d.) over 10 seeds; columns as the paper prints them.
TABLE1_DSPRITES_LAPLACE = {
    "SlowVAE": {"beta_vae": 100.0, "factor_vae": 97.5, "mig": 29.5, "mcc": 69.8, "dci": 65.4,
                "modularity": 96.5, "sap": 8.1},
    "Ada-GVAE": {"beta_vae": 91.4, "factor_vae": 83.0, "mig": 21.8, "mcc": 56.9, "dci": 39.0,
                 "modularity": 87.6, "sap": 7.2},
    "PCL": {"beta_vae": 99.9, "factor_vae": 94.7, "mig": 19.2, "mcc": 67.9, "dci": 52.0,
            "modularity": 93.2, "sap": 8.1},
}  # fmt: skip
# Digest a.6: the same protocol measured at 4,000 steps (MCC ×100, all 4 / 3 ordinal factors).
DIGEST_A6 = {
    "slowvae_mcc_all": [62.7, 72.7, 60.5], "slowvae_mcc_ordinal": [75.1, 90.7, 72.6],
    "vae_mcc_all": [55.6, 49.2, 44.6], "vae_mcc_ordinal": [63.2, 57.0, 53.4],
    "delta_ordinal": [12.0, 34.0, 19.0],
}  # fmt: skip
SPRITES_MARGIN = 5.0  # ×100: "SlowVAE's ordinal MCC ≥ 0.05 above γ = 0's"
TOY_MARGIN = 10.0


def sprites_passes(slowvae_ordinal, vae_ordinal, margin: float = SPRITES_MARGIN) -> dict:
    """The issue's criterion: on at least two thirds of the seeds (2 of 3) SlowVAE's ordinal MCC
    (×100) is at least ``margin`` above γ = 0's. Pure function of the figures."""
    deltas = [float(s) - float(v) for s, v in zip(slowvae_ordinal, vae_ordinal, strict=True)]
    wins = sum(d >= margin for d in deltas)
    needed = max(1, math.ceil(2 * len(deltas) / 3))
    return {"deltas": [round(d, 1) for d in deltas], "seeds_passing": wins,
            "seeds_needed": needed, "pass": bool(deltas) and wins >= needed}  # fmt: skip


def toy_passes(slowvae_mcc, vae_mcc, margin: float = TOY_MARGIN) -> dict:
    """The toy's criterion: SlowVAE's MCC (×100) is at least ``margin`` above the VAE's."""
    delta = float(slowvae_mcc) - float(vae_mcc)
    return {"delta": round(delta, 1), "margin": margin, "pass": delta >= margin}


def _encode_latents(model, x):
    return model.encode(x)["mu"].numpy()


@register_experiment(
    "slowvae_toy",
    description="App. B: MLP SlowVAE vs a VAE (gamma 0) on 200-D mixtures of 20-D latents with "
    "Laplace transitions; MCC",
    paper=PAPER,
    claim="With sparse (Laplace) transitions the latents are identifiable: SlowVAE recovers them "
    "(high MCC) while the same VAE without the transition term stays near the MCC of a random "
    "rotation (SlowVAE App. B, Fig. 7). Pass: SlowVAE's MCC >= the VAE's + 10.",
)
def slowvae_toy(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    from zoo.data.laplace_transitions import laplace_transition_arrays
    from zoo.eval.disentanglement import mcc

    steps = 1500 if quick else 6000
    x, z = laplace_transition_arrays("test", 5000, seed=seed)
    measured, timing = {}, {}
    for label, gamma in (("slowvae", 10.0), ("vae", 0.0)):
        result, seconds = timed_train(
            model="slowvae_toy", epochs=1, steps_per_epoch=steps, validation_steps=2, seed=seed,
            output=str(output / label), overrides={"gamma": gamma},
        )  # fmt: skip
        measured[f"{label}_mcc"] = round(
            mcc(_encode_latents(result.model, x[:, 0]), z[:, 0])["mcc"], 1
        )
        timing[label] = seconds
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((z.shape[-1], z.shape[-1])))
    measured["random_rotation_mcc"] = round(mcc(z[:, 0] @ rotation, z[:, 0])["mcc"], 1)
    measured.update(toy_passes(measured["slowvae_mcc"], measured["vae_mcc"]))
    return {
        "measured": measured,
        "paper": {
            "note": "App. B, Fig. 7 (20-D latents, 200-D data): SlowVAE reaches a high MCC; the "
            "paper gives the figure only as a plot. SlowFlow on the 20-D AR(1) Laplace toy: MCC "
            "0.997/0.987/0.982/0.975/0.975 for 1-5 mixing layers (App. F.1.2).",
        },
        "config": {
            "steps": steps,
            "batch_size": 64,
            "latent_dim": 20,
            "data_dim": 200,
            "seed": seed,
            "quick": quick,
            "seconds": timing,
        },  # fmt: skip
    }


@register_experiment(
    "slowvae_sprites",
    description="SlowVAE (gamma 10) vs gamma 0 on LAP pairs of rotation-free sprites, 3 seeds; "
    "MCC (all / ordinal factors) and the DisLib six beside Table 1",
    paper=PAPER,
    claim="The Laplace transition prior disentangles: on LAP pairs SlowVAE's MCC over the ordinal "
    "factors is above that of the same VAE without it (gamma 0), by >= 0.05 on >= 2 of 3 seeds "
    "(digest a.6 measured +0.12 to +0.34; Table 1, dSprites (Laplace): SlowVAE MCC 69.8).",
)
def slowvae_sprites(quick: bool, data_dir: str | None, output: Path, seed: int) -> dict:
    import json

    from zoo.data.factors import get_factor_dataset
    from zoo.eval import disentanglement as dis

    # 64×64 as the digest's run (at 32×32 and 600 steps SlowVAE had not yet separated from γ = 0).
    dataset_name, image_shape = "sprites/no_rotation", (64, 64, 1)
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    steps = 500 if quick else 1500
    metric_scale = 0.005 if quick else 0.02
    dataset = get_factor_dataset(dataset_name)
    runs, timing = {}, {}
    for s in seeds:
        for label, gamma in (("slowvae", 10.0), ("vae", 0.0)):
            result, seconds = timed_train(
                model="slowvae_sprites", dataset=f"{dataset_name}/lap", epochs=1,
                steps_per_epoch=steps, validation_steps=2, seed=s,
                output=str(output / f"{label}_seed{s}"),
                overrides={"gamma": gamma, "image_shape": image_shape},
            )  # fmt: skip
            model = result.model
            figures = {
                "mcc_all": dis.compute_mcc(model, dataset, seed=s)["mcc"],
                "mcc_ordinal": dis.compute_mcc(model, dataset, factors=ORDINAL, seed=s)["mcc"],
                "reconstruction": result.metrics.get("val_reconstruction"),
            }
            figures.update(
                dis.evaluate(model, dataset, [m for m in dis.METRICS if m != "mcc"],
                             scale=metric_scale, seed=s)
            )  # fmt: skip
            runs[f"{label}_seed{s}"] = {k: round(float(v), 2) for k, v in figures.items()}
            timing[f"{label}_seed{s}"] = seconds
            if s == seeds[0]:
                codes, ys = dis._sample_codes(
                    dis.representation_function(model),
                    dataset,
                    list(range(4)),
                    2000,
                    np.random.default_rng(s),
                )
                dis.plot_correlation_heatmap(
                    codes,
                    ys,
                    output / f"correlation_{label}.png",
                    factor_names=dataset.grid.names,
                    title=f"{label} (seed {s})",
                )
                rng = np.random.default_rng(s)
                dis.plot_traversals(
                    model, dataset.images(dataset.sample_indices(1, rng)),
                    output / f"traversals_{label}.png",
                    reference_images=dataset.images(dataset.sample_indices(1000, rng)),
                )  # fmt: skip
    slow = [runs[f"slowvae_seed{s}"]["mcc_ordinal"] for s in seeds]
    vae = [runs[f"vae_seed{s}"]["mcc_ordinal"] for s in seeds]

    def mean(label, key):
        return round(float(np.mean([runs[f"{label}_seed{s}"][key] for s in seeds])), 2)

    keys = ("mcc_all", "mcc_ordinal", "beta_vae", "factor_vae", "mig", "dci", "modularity", "sap")
    measured = {
        "slowvae_mean": {k: mean("slowvae", k) for k in keys},
        "vae_gamma0_mean": {k: mean("vae", k) for k in keys},
        "runs": runs,
        **sprites_passes(slow, vae),
    }
    (output / "runs.json").write_text(json.dumps(runs, indent=2))
    return {
        "measured": measured,
        "paper": {
            "table1_dsprites_laplace": TABLE1_DSPRITES_LAPLACE,
            "digest_a6_4000_steps": DIGEST_A6,
            "note": "Table 1 is real dSprites after 300k steps x 10 seeds; this run is procedural "
            "rotation-free sprites, far fewer steps, so only the direction (SlowVAE above gamma 0) "
            "is compared. The DisLib six here use scaled-down sample counts (metric_scale).",
        },
        "config": {
            "dataset": f"{dataset_name}/lap",
            "image_shape": list(image_shape),
            "steps": steps,
            "batch_pairs": 32,
            "seeds": seeds,
            "beta": 1.0,
            "gammas": {"slowvae": 10.0, "vae": 0.0},
            "rate_prior": 6.0,
            "mcc_points": 10_000,
            "metric_scale": metric_scale,
            "quick": quick,
            "seconds": timing,
        },  # fmt: skip
    }
