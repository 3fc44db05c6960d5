"""The pass logic of the reproductions, on crafted figures (no training, no TensorFlow).

Each experiment's flags come from one pure function of its measured figures:
``robustness_checks`` (abs_robustness), ``bottleneck_claims`` (inn_ae_bottleneck), ``spheres_checks`` (spheres), ``firevnet_ice_checks``
(firevnet_ice) and ``racecar_peak_checks`` / ``racecar_peak_targets_met`` (racecar_peak). For each:
a realistic set of figures (the README's measurements where it has them) passes every check, and a
variation of one figure fails exactly one check, including a figure exactly at the threshold.
"""

from __future__ import annotations

import copy

import pytest

from zoo.repro.abs_robustness import robustness_checks
from zoo.repro.firevnet import (
    ICE_MIN_MARGIN_POINTS,
    SPHERES_MIN_ACCURACY,
    SPHERES_MIN_METAMERS_KEPT_AND_FLIPPED,
    firevnet_ice_checks,
    spheres_checks,
)
from zoo.repro.inn_autoencoder import (
    CLASSIC_SATURATION_FACTOR,
    SMALL_K_MAX_RELATIVE_GAP,
    bottleneck_claims,
)
from zoo.repro.racecar import (
    PEAK_MAX_RR_SINGULAR_DEVIATION,
    PEAK_MAX_STD_CLASS_MEAN_ENERGY,
    PEAK_MIN_RR_CLASS_MEAN_ENERGY,
    racecar_peak_checks,
    racecar_peak_targets_met,
)


def failed(flags: dict) -> set[str]:
    return {name for name, ok in flags.items() if not ok}


def test_thresholds_are_the_documented_ones():
    assert (CLASSIC_SATURATION_FACTOR, SMALL_K_MAX_RELATIVE_GAP) == (1.1, 0.2)
    assert (SPHERES_MIN_ACCURACY, SPHERES_MIN_METAMERS_KEPT_AND_FLIPPED) == (0.999, 0.95)
    assert ICE_MIN_MARGIN_POINTS == 10.0
    assert (PEAK_MAX_RR_SINGULAR_DEVIATION, PEAK_MIN_RR_CLASS_MEAN_ENERGY) == (0.01, 0.99)
    assert PEAK_MAX_STD_CLASS_MEAN_ENERGY == 0.05


# --- inn_ae_bottleneck ---------------------------------------------------------------------------

KS = [4, 8, 16, 32, 64]
# The README's full run on digits (test mean L1 per k).
INN = [0.0757, 0.0562, 0.0468, 0.0412, 0.0367]
CLASSIC = [0.0702, 0.0493, 0.0447, 0.0431, 0.0428]
CLAIM_A = "a_inn_keeps_falling_past_classic_saturation"
CLAIM_B = "b_inn_below_classic_at_largest_k"
CLAIM_C = "c_close_at_smallest_k"


def claims(inn=INN, classic=CLASSIC, ks=KS) -> dict:
    figures = {"k": list(ks), "test_mean_l1": {"INN": list(inn), "classic": list(classic)}}
    return bottleneck_claims(figures)


def claim_failures(result: dict) -> set[str]:
    return failed({k: result[k] for k in (CLAIM_A, CLAIM_B, CLAIM_C)})


def test_bottleneck_readme_figures_pass_all_three_claims_with_the_readme_summary():
    result = claims()
    assert result == {
        "classic_saturates_at_k": 16,
        "inn_relative_drop_after_saturation": 0.216,
        "classic_relative_drop_after_saturation": 0.043,
        CLAIM_A: True,
        CLAIM_B: True,
        CLAIM_C: True,
        "relative_gap_at_smallest_k": 0.078,
    }
    assert all(type(result[k]) is bool for k in (CLAIM_A, CLAIM_B, CLAIM_C))


def test_bottleneck_claim_a_fails_when_the_inn_error_rises_after_the_classic_saturation():
    result = claims(inn=[0.0757, 0.0562, 0.0468, 0.0470, 0.0367])  # k = 32 above k = 16
    assert result["inn_relative_drop_after_saturation"] == 0.216  # the overall drop is unchanged
    assert claim_failures(result) == {CLAIM_A}


def test_bottleneck_claim_a_fails_when_the_inn_error_is_flat_after_the_saturation():
    # Boundary of "keeps falling": two equal consecutive errors are not a fall (strict).
    assert claim_failures(claims(inn=[0.0757, 0.0562, 0.0468, 0.0468, 0.0367])) == {CLAIM_A}


def test_bottleneck_claim_a_ignores_the_inn_errors_before_the_classic_saturation():
    assert claim_failures(claims(inn=[0.0757, 0.0780, 0.0468, 0.0412, 0.0367])) == set()


def test_bottleneck_claim_a_fails_when_the_inn_falls_less_than_the_classic_after_it():
    result = claims(inn=[0.0757, 0.0562, 0.0420, 0.0415, 0.0410])  # strictly falling, by 2.4 %
    assert result["inn_relative_drop_after_saturation"] == 0.024
    assert result["classic_relative_drop_after_saturation"] == 0.043
    assert claim_failures(result) == {CLAIM_A}


def test_bottleneck_claim_a_fails_when_the_inn_falls_exactly_as_much_as_the_classic():
    classic = [0.0702, 0.0493, 0.04446, 0.0431, 0.04275]
    inn = [0.0757, 0.0562, 0.04212, 0.0413, 0.0405]
    assert (inn[2] - inn[-1]) / inn[2] == (classic[2] - classic[-1]) / classic[2]  # same drop
    assert claim_failures(claims(inn=inn, classic=classic)) == {CLAIM_A}  # strict
    inn[-1] = 0.04049  # a hair more
    assert claim_failures(claims(inn=inn, classic=classic)) == set()


def test_bottleneck_claim_a_fails_when_the_classic_saturates_only_at_the_largest_k():
    # The classical AE has not saturated inside the sweep: both drops are 0, whatever the INN does.
    result = claims(classic=[0.0702, 0.0600, 0.0530, 0.0480, 0.0430])
    assert result["classic_saturates_at_k"] == 64
    assert result["inn_relative_drop_after_saturation"] == 0.0
    assert claim_failures(result) == {CLAIM_A}


def test_bottleneck_counts_a_classic_error_exactly_10_percent_above_its_best_as_saturated():
    inn = [0.0757, 0.0562, 0.0468, 0.0468, 0.0367]  # flat from k = 16 to 32, then falling
    at_boundary = [0.0702, 0.0493, 0.04642, 0.0431, 0.0422]
    assert at_boundary[2] == CLASSIC_SATURATION_FACTOR * min(at_boundary)
    result = claims(inn=inn, classic=at_boundary)
    assert result["classic_saturates_at_k"] == 16  # <=: the boundary counts
    assert claim_failures(result) == {CLAIM_A}  # the flat step is past the saturation
    just_above = [0.0702, 0.0493, 0.04643, 0.0431, 0.0422]
    result = claims(inn=inn, classic=just_above)
    assert result["classic_saturates_at_k"] == 32
    assert claim_failures(result) == set()


def test_bottleneck_claim_b_fails_when_the_inn_is_above_the_classic_at_the_largest_k():
    assert claim_failures(claims(inn=[0.0757, 0.0562, 0.0468, 0.0445, 0.0430])) == {CLAIM_B}


def test_bottleneck_claim_b_fails_when_the_inn_equals_the_classic_at_the_largest_k():
    assert claim_failures(claims(inn=[0.0757, 0.0562, 0.0468, 0.0445, 0.0428])) == {CLAIM_B}


def test_bottleneck_claim_c_fails_when_the_errors_at_k4_differ_by_more_than_20_percent():
    result = claims(inn=[0.0900, 0.0562, 0.0468, 0.0412, 0.0367])
    assert result["relative_gap_at_smallest_k"] == 0.282
    assert claim_failures(result) == {CLAIM_C}


def test_bottleneck_claim_c_fails_when_the_inn_is_far_below_the_classic_at_the_smallest_k():
    result = claims(inn=[0.0550, 0.0520, 0.0468, 0.0412, 0.0367])  # the gap is absolute
    assert result["relative_gap_at_smallest_k"] == 0.217
    assert claim_failures(result) == {CLAIM_C}


@pytest.mark.parametrize(
    "at_boundary, just_inside", [(0.0726, 0.07259), (0.0484, 0.04841)], ids=["above", "below"]
)
def test_bottleneck_claim_c_fails_when_the_gap_at_k4_is_exactly_20_percent(
    at_boundary, just_inside
):
    classic = [0.0605, 0.0493, 0.0447, 0.0431, 0.0428]
    inn = [at_boundary, 0.0562, 0.0468, 0.0412, 0.0367]
    assert abs(inn[0] - classic[0]) / classic[0] == SMALL_K_MAX_RELATIVE_GAP
    result = claims(inn=inn, classic=classic)
    assert result["relative_gap_at_smallest_k"] == 0.2
    assert claim_failures(result) == {CLAIM_C}  # strict <
    inn[0] = just_inside
    assert claim_failures(claims(inn=inn, classic=classic)) == set()


def test_bottleneck_quick_sweep_with_the_inn_behind_at_k64_fails_a_and_b():
    # --quick (k 4 and 64): the README's "k = 64: 0.077 against 0.065".
    result = claims(inn=[0.0950, 0.0770], classic=[0.0905, 0.0650], ks=[4, 64])
    assert result["classic_saturates_at_k"] == 64
    assert claim_failures(result) == {CLAIM_A, CLAIM_B}


# --- spheres -------------------------------------------------------------------------------------

# The README's run: 100 % / 100 %, every metamer kept and flipped.
SPHERES = {
    "logit_train_accuracy": 1.0,
    "logit_test_accuracy": 1.0,
    "nuisance_classifier_train_accuracy": 1.0,
    "nuisance_classifier_test_accuracy": 0.99995,
    "metamers": 5000,
    "metamers_D_says_inner": 1.0,
    "metamers_oracle_says_outer": 1.0,
    "metamers_D_kept_while_oracle_flipped": 1.0,
    "metamer_median_norm": 443.0,
    "metamer_max_logit_drift": 1.7e-4,
}
LOGIT_CHECK = "logit_accuracy_at_least_0.999"
NUISANCE_CHECK = "nuisance_accuracy_at_least_0.999"
METAMER_CHECK = "metamers_95pct_kept_and_flipped"


def spheres_with(**changes) -> dict:
    return spheres_checks({**SPHERES, **changes})


def test_spheres_readme_figures_pass_every_check():
    checks = spheres_with()
    assert checks == {LOGIT_CHECK: True, NUISANCE_CHECK: True, METAMER_CHECK: True}
    assert all(type(v) is bool for v in checks.values())


def test_spheres_fails_when_the_logit_test_accuracy_is_below_0_999():
    assert failed(spheres_with(logit_test_accuracy=0.99899)) == {LOGIT_CHECK}


def test_spheres_passes_a_logit_test_accuracy_of_exactly_0_999():
    assert failed(spheres_with(logit_test_accuracy=0.999)) == set()  # >=


def test_spheres_fails_when_the_nuisance_classifier_is_below_0_999():
    nuisance = round(1 - 0.2 / 100, 5)  # the experiment's conversion of a 0.2 % test error
    assert failed(spheres_with(nuisance_classifier_test_accuracy=nuisance)) == {NUISANCE_CHECK}


def test_spheres_passes_a_nuisance_classifier_test_error_of_exactly_0_1_percent():
    nuisance = round(1 - 0.1 / 100, 5)
    assert nuisance == SPHERES_MIN_ACCURACY
    assert failed(spheres_with(nuisance_classifier_test_accuracy=nuisance)) == set()  # >=


def test_spheres_fails_when_fewer_than_95_percent_of_metamers_are_kept_and_flipped():
    fraction = 4749 / 5000
    assert failed(spheres_with(metamers_D_kept_while_oracle_flipped=fraction)) == {METAMER_CHECK}


def test_spheres_passes_exactly_95_percent_of_metamers_kept_and_flipped():
    fraction = 4750 / 5000
    assert fraction == SPHERES_MIN_METAMERS_KEPT_AND_FLIPPED
    assert failed(spheres_with(metamers_D_kept_while_oracle_flipped=fraction)) == set()  # >=


# --- firevnet_ice --------------------------------------------------------------------------------


def ice_figures(ce_nuisance: float, ice_nuisance: float) -> dict:
    def run(logit, nuisance):
        return {
            "logit_test_error": logit,
            "nuisance_train_error": 0.0,
            "nuisance_test_error": nuisance,
            "metamers_oracle_sees_logit_source": 0.4,
            "metamers_oracle_sees_nuisance_source": 0.2,
        }

    return {"ce": run(0.58, ce_nuisance), "ice": run(1.14, ice_nuisance)}


ABOVE_CE = "ice_nuisance_error_above_ce"
PLUS_10 = "ice_nuisance_error_at_least_ce_plus_10_points"


def test_firevnet_ice_passes_both_checks_on_the_papers_table_2_figures():
    checks = firevnet_ice_checks(ice_figures(ce_nuisance=0.34, ice_nuisance=27.70))
    assert checks == {ABOVE_CE: True, PLUS_10: True}
    assert all(type(v) is bool for v in checks.values())


def test_firevnet_ice_fails_only_the_10_point_margin_on_the_readme_figures():
    # The README's run: CE 0.26 %, iCE 4.70 %: the direction holds, the margin is 4.4 points.
    assert failed(firevnet_ice_checks(ice_figures(0.26, 4.70))) == {PLUS_10}


def test_firevnet_ice_passes_a_margin_of_exactly_10_points():
    figures = ice_figures(0.26, 10.26)
    assert figures["ice"]["nuisance_test_error"] - figures["ce"]["nuisance_test_error"] == 10.0
    assert failed(firevnet_ice_checks(figures)) == set()  # >=


def test_firevnet_ice_fails_only_the_margin_just_below_10_points():
    assert failed(firevnet_ice_checks(ice_figures(0.26, 10.25))) == {PLUS_10}


def test_firevnet_ice_fails_the_direction_when_ice_equals_ce():
    # Strict >: equal errors are not "above"; the 10-point check fails with it.
    assert failed(firevnet_ice_checks(ice_figures(0.26, 0.26))) == {ABOVE_CE, PLUS_10}


def test_firevnet_ice_fails_the_direction_when_ice_is_below_ce():
    assert failed(firevnet_ice_checks(ice_figures(4.70, 0.26))) == {ABOVE_CE, PLUS_10}


def test_firevnet_ice_direction_never_fails_alone_since_the_margin_implies_it():
    for ce in (0.0, 0.26, 5.0):
        for ice in (0.0, 0.25, 0.26, 0.27, 9.99, 10.26, 30.0):
            checks = firevnet_ice_checks(ice_figures(ce, ice))
            assert not (checks[PLUS_10] and not checks[ABOVE_CE])


# --- racecar_peak --------------------------------------------------------------------------------


def peak_summary(sigma, energy, template, cos, rel_err, accuracy) -> dict:
    return {
        "singular_values_min_max": list(sigma),
        "max_abs_singular_value_minus_1": round(max(abs(s - 1) for s in sigma), 4),
        "class_mean_energy_min": energy[0],
        "class_mean_energy_max": energy[1],
        "template_energy_mean": template,
        "min_principal_cos_with_pca2": cos,
        "rel_err_test_mean": rel_err,
        "test_accuracy_mean": accuracy,
    }


# The README's full run (5 runs).
PEAK = {
    "RR": peak_summary((0.9926, 1.0), (0.9958, 0.9991), 0.85, 0.9967, 0.49, 1.0),
    "Std": peak_summary((1.31, 1.46), (0.0004, 0.009), 0.004, 0.12, 1.0, 0.76),
    "Ort": peak_summary((1.07, 1.13), (0.0006, 0.013), 0.006, 0.15, 0.998, 0.8),
}
RR_SIGMA = "rr_singular_values_within_0.01_of_1"
RR_ENERGY = "rr_class_mean_energy_at_least_0.99"
STD_ENERGY = "std_class_mean_energy_below_0.05"


def peak_with(label: str, key: str, value: float) -> dict:
    figures = copy.deepcopy(PEAK)
    figures[label][key] = value
    return figures


def test_racecar_peak_readme_figures_meet_every_target():
    assert PEAK["RR"]["max_abs_singular_value_minus_1"] == 0.0074
    assert racecar_peak_checks(PEAK) == {RR_SIGMA: True, RR_ENERGY: True, STD_ENERGY: True}
    assert racecar_peak_targets_met(PEAK) is True


@pytest.mark.parametrize(
    "label, key, value, check",
    [
        ("RR", "max_abs_singular_value_minus_1", 0.0101, RR_SIGMA),
        ("RR", "max_abs_singular_value_minus_1", 0.46, RR_SIGMA),
        ("RR", "class_mean_energy_min", 0.9899, RR_ENERGY),
        ("RR", "class_mean_energy_min", 0.5, RR_ENERGY),
        ("Std", "class_mean_energy_max", 0.0501, STD_ENERGY),
        ("Std", "class_mean_energy_max", 0.9, STD_ENERGY),
        # Boundary: Std's energy exactly 0.05 is not below it (strict <).
        ("Std", "class_mean_energy_max", 0.05, STD_ENERGY),
    ],
    ids=[
        "rr_sigma_just_off_1",
        "rr_sigma_like_std",
        "rr_energy_just_below",
        "rr_energy_half",
        "std_energy_just_above",
        "std_energy_like_rr",
        "std_energy_exactly_0.05",
    ],
)
def test_racecar_peak_misses_its_targets_when_one_figure_fails_its_check(label, key, value, check):
    figures = peak_with(label, key, value)
    assert failed(racecar_peak_checks(figures)) == {check}
    assert racecar_peak_targets_met(figures) is False


def test_racecar_peak_meets_its_targets_with_rr_sigma_exactly_0_01_from_1():
    figures = peak_with("RR", "max_abs_singular_value_minus_1", 0.01)
    assert failed(racecar_peak_checks(figures)) == set()  # <=
    assert racecar_peak_targets_met(figures) is True


def test_racecar_peak_meets_its_targets_with_rr_class_mean_energy_exactly_0_99():
    figures = peak_with("RR", "class_mean_energy_min", 0.99)
    assert failed(racecar_peak_checks(figures)) == set()  # >=
    assert racecar_peak_targets_met(figures) is True


# -- abs_robustness -------------------------------------------------------------------------------
FLAGS = (
    "abs_at_least_1.5x_cnn_l2_paper_protocol",
    "abs_at_least_1.5x_cnn_l2_every_attack",
    "abs_and_binary_abs_beat_cnn_in_l0_same_attacks",
    "abs_lower_bound_below_every_attack",
)


def _robustness_figures():
    """The README's full run: ABS 3.05 / 2.00 against the CNN's 1.03 / 0.69 (transfer / all)."""
    return {
        "cnn_mnist": {"median_l2": 0.69, "median_l0": 10.0},
        "binary_cnn_mnist": {"median_l2": 0.44, "median_l0": 9.5},
        "abs_mnist": {"median_l2": 2.00, "with_danskin_gradients_median_l2": 1.40,
                      "median_l0": 462.0, "lower_bound_below_every_attack": True},
        "binary_abs_mnist": {"median_l2": 0.80, "with_danskin_gradients_median_l2": 0.44,
                             "median_l0": 17.5},
        "transfer_l2_median": {"cnn_mnist": 1.03, "abs_mnist": 3.05},
    }  # fmt: skip


def _robustness_failed(figures):
    checks = robustness_checks(figures)
    return {name for name in FLAGS if checks[name] is False}


def test_abs_robustness_passes_on_figures_that_meet_every_claim():
    checks = robustness_checks(_robustness_figures())
    assert _robustness_failed(_robustness_figures()) == set()
    assert checks["abs_over_cnn_l2_paper_protocol"] == pytest.approx(2.0 / 0.69, abs=1e-3)
    assert checks["abs_over_cnn_l2_every_attack"] == pytest.approx(1.40 / 0.69, abs=1e-3)


def test_abs_robustness_l2_counts_the_danskin_attacks_only_in_the_every_attack_flag():
    """The issue's case: ABS 1.03 with Danskin PGD against the CNN's 0.69 is 1.49x, under 1.5,
    while the protocol figure (2.00) passes."""
    figures = _robustness_figures()
    figures["abs_mnist"]["with_danskin_gradients_median_l2"] = 1.03
    assert _robustness_failed(figures) == {"abs_at_least_1.5x_cnn_l2_every_attack"}
    figures["abs_mnist"]["with_danskin_gradients_median_l2"] = 1.5 * 0.69  # exactly 1.5x passes
    assert _robustness_failed(figures) == set()


def test_abs_robustness_every_attack_flag_is_none_without_the_danskin_attacks():
    figures = _robustness_figures()
    del figures["abs_mnist"]["with_danskin_gradients_median_l2"]  # --quick does not run them
    checks = robustness_checks(figures)
    assert checks["abs_at_least_1.5x_cnn_l2_every_attack"] is None
    assert checks["abs_over_cnn_l2_every_attack"] is None


@pytest.mark.parametrize("where, value", [("median", 1.0), ("transfer", 1.5)])
def test_abs_robustness_protocol_flag_needs_both_the_median_and_the_transfer_ratio(where, value):
    figures = _robustness_figures()
    if where == "median":
        figures["abs_mnist"]["median_l2"] = value  # 1.45x
    else:
        figures["transfer_l2_median"]["abs_mnist"] = value  # 1.46x
    assert _robustness_failed(figures) == {"abs_at_least_1.5x_cnn_l2_paper_protocol"}


@pytest.mark.parametrize("model", ["abs_mnist", "binary_abs_mnist"])
def test_abs_robustness_l0_needs_both_abs_variants_strictly_above_the_cnn(model):
    figures = _robustness_figures()
    figures[model]["median_l0"] = 10.0  # a tie is not beating the CNN
    assert _robustness_failed(figures) == {"abs_and_binary_abs_beat_cnn_in_l0_same_attacks"}
    figures[model]["median_l0"] = "inf"  # never fooled counts as the most robust
    figures["cnn_mnist"]["median_l0"] = "inf"
    assert "abs_and_binary_abs_beat_cnn_in_l0_same_attacks" in _robustness_failed(figures)


def test_abs_robustness_fails_when_an_attack_goes_below_the_lower_bound():
    figures = _robustness_figures()
    figures["abs_mnist"]["lower_bound_below_every_attack"] = False
    assert _robustness_failed(figures) == {"abs_lower_bound_below_every_attack"}
