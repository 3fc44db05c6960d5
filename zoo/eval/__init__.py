"""Evaluation: adversarial attacks, robustness metrics and curves, and certified-style bounds.

- :mod:`zoo.eval.attacks`: Pointwise (L0), salt-and-pepper, PGD/BIM (L2, L∞) with an ε search,
  transfer attacks from a substitute, Gaussian noise, and ABS's Latent Descent.
- :mod:`zoo.eval.metrics`: distances with the ABS paper's conventions (0 for a clean error, ∞ for
  a failed attack), "all attacks" minima, medians, accuracy at ε, and
  :func:`robustness_curves` (JSON + PNG).
- :mod:`zoo.eval.bounds`: the ABS L2 lower bound (:func:`lower_bound_l2`).
- :mod:`zoo.eval.metamers`: metameric sampling and nuisance interpolation for fully invertible
  classifiers, a PNG grid, and the post-hoc nuisance classifier (:func:`posthoc_nuisance_error`).
- :mod:`zoo.eval.spectral`: the right singular vectors of a layer (:func:`kernel_svd`, in the
  layer matrix's orientation), subspace energies, principal angles, PCA bases and PNG grids.
- :mod:`zoo.eval.information`: binned mutual information I(X;T), I(T;Y) over a pattern set and
  the information-plane PNG.
- :mod:`zoo.eval.corruptions`: ImageNet-C / MNIST-C corruptions in-graph (``corrupt``), the
  released TFDS corrupted sets, ``corruption_report`` and mCE against AlexNet.
- :mod:`zoo.eval.noise`: noise robustness ε* along Gaussian, uniform and adversarially trained
  generator directions (``epsilon_star``, ``noise_robustness``); DDN L2 is in the attacks.
- :mod:`zoo.eval.fid`: the Fréchet distance between feature statistics (FID), Inception-V3
  features from a local weights file, and a zoo classifier's penultimate layer (proxy FID).
- :mod:`zoo.eval.disentanglement`: MCC and disentanglement_lib's BetaVAE, FactorVAE, MIG, DCI,
  Modularity and SAP (×100) for any encoder on any dataset with a factor grid; latent-traversal
  and factor × latent correlation PNGs.
- :mod:`zoo.eval.generalization`: the in-domain generalization benchmark's :class:`RSquared`
  (full-grid variance), single-OOD-factor OOD/ID R², the ratio r, and ``evaluate_model``.
"""

from zoo.eval import disentanglement, generalization  # noqa: F401  (zoo.eval.<module>)
from zoo.eval.attacks import (
    Predictor,
    binary_postprocess,
    ddn,
    gaussian_noise,
    latent_descent,
    pgd,
    pointwise,
    salt_and_pepper,
    transfer,
)
from zoo.eval.bounds import lower_bound_from_fits, lower_bound_l2
from zoo.eval.corruptions import corrupt, corruption_names, corruption_report, mce
from zoo.eval.fid import (
    classifier_features,
    fid,
    fid_from_features,
    frechet_distance,
    inception_v3_features,
)
from zoo.eval.generalization import RSquared
from zoo.eval.information import binned_mutual_information, plot_information_plane
from zoo.eval.metamers import (
    metamer_grid,
    metameric_sample,
    nuisance_interpolation,
    posthoc_nuisance_error,
)
from zoo.eval.metrics import (
    NORMS,
    PAPER_EPSILONS,
    AttackResult,
    accuracy_at,
    best_over,
    distances,
    median_distance,
    robustness_curves,
    summarize,
)
from zoo.eval.noise import epsilon_star, noise_robustness, train_adversarial_generator
from zoo.eval.spectral import (
    kernel_svd,
    max_abs_cosine,
    pca_basis,
    principal_cosines,
    save_vector_images,
    subspace_energy,
)

__all__ = [
    "Predictor",
    "AttackResult",
    "NORMS",
    "PAPER_EPSILONS",
    "pointwise",
    "salt_and_pepper",
    "pgd",
    "transfer",
    "gaussian_noise",
    "latent_descent",
    "binary_postprocess",
    "lower_bound_l2",
    "lower_bound_from_fits",
    "distances",
    "best_over",
    "median_distance",
    "accuracy_at",
    "summarize",
    "robustness_curves",
    "metameric_sample",
    "nuisance_interpolation",
    "metamer_grid",
    "posthoc_nuisance_error",
    "kernel_svd",
    "subspace_energy",
    "principal_cosines",
    "pca_basis",
    "max_abs_cosine",
    "save_vector_images",
    "binned_mutual_information",
    "plot_information_plane",
    "RSquared",
    "ddn",
    "corrupt",
    "corruption_names",
    "corruption_report",
    "mce",
    "epsilon_star",
    "noise_robustness",
    "train_adversarial_generator",
    "frechet_distance",
    "fid_from_features",
    "fid",
    "inception_v3_features",
    "classifier_features",
]
