"""Known answers for the statistics ``cdss-train evaluate`` prints (``training.evaluate``): each
against an independent computation (scikit-learn, a closed form, or the behaviour the method
promises, checked by simulation), not against itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from training.evaluate import (
    bootstrap_auc, brier, calibration, calibration_curve, delong, net_benefit)
from training.metrics import auc


def _binormal(rng, n_positive: int, n_negative: int, separation: float, correlation: float = 0.0):
    """Labels and two correlated scores of equal expected AUC (binormal model)."""
    labels = np.r_[np.ones(n_positive, int), np.zeros(n_negative, int)]
    shared = rng.normal(size=len(labels))
    noise = rng.normal(size=(2, len(labels)))
    a, b = (np.sqrt(correlation) * shared + np.sqrt(1 - correlation) * noise[k]
            + separation * labels for k in (0, 1))
    return labels, a, b


def test_auc_equals_scikit_learns_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 60)
        scores = rng.integers(0, 6, 60) / 5          # many ties
        if labels.min() == labels.max():
            continue
        assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_delong_variance_matches_the_closed_form_for_one_score_against_a_constant():
    """A score against a constant (AUC 0.5 for every case, no variance): DeLong's variance of
    the difference is the single AUC's DeLong variance, V10 / m + V01 / n with the placement
    values computed here by hand from their definition."""
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    a = np.array([0.9, 0.6, 0.4, 0.5, 0.3, 0.2, 0.6])
    constant = np.zeros_like(a)
    x, y = a[labels == 1], a[labels == 0]
    v10 = np.array([np.mean([1.0 if xi > yj else 0.5 if xi == yj else 0.0 for yj in y])
                    for xi in x])
    v01 = np.array([np.mean([1.0 if xi > yj else 0.5 if xi == yj else 0.0 for xi in x])
                    for yj in y])
    variance = v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(y)
    z, p = delong(labels, a, constant)
    assert z == pytest.approx((v10.mean() - 0.5) / np.sqrt(variance))
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)))


def test_delong_holds_its_level_and_finds_a_real_difference():
    """Under the null (two correlated scores of equal AUC) p < 0.05 in about 5 % of 400
    samples; with one score better by about 0.11 AUC it rejects in most samples."""
    rng = np.random.default_rng(1)
    null = [delong(*_binormal(rng, 60, 90, 1.0, correlation=0.6))[1] for _ in range(400)]
    assert 0.025 <= np.mean(np.array(null) < 0.05) <= 0.08
    rejected = []
    for _ in range(100):                      # AUC about 0.87 against 0.76
        labels, a, b = _binormal(rng, 60, 90, 1.0, correlation=0.6)
        rejected.append(delong(labels, a + 0.6 * labels, b)[1] < 0.05)
    assert np.mean(rejected) > 0.6


def test_delong_variance_is_the_sampling_variance_of_the_auc_difference():
    """Its estimate (from z) matches the spread of the AUC difference over 300 samples."""
    rng = np.random.default_rng(2)
    differences, estimates = [], []
    for _ in range(300):
        labels, a, b = _binormal(rng, 80, 120, 1.0, correlation=0.5)
        b = b + 0.3 * labels                       # a true difference, so z is never 0
        z, _ = delong(labels, a, b)
        difference = auc(labels, a) - auc(labels, b)
        differences.append(difference)
        estimates.append((difference / z) ** 2)
    assert np.mean(estimates) == pytest.approx(np.var(differences, ddof=1), rel=0.2)


def test_bootstrap_interval_has_the_hanley_mcneil_width_and_covers():
    """Its 95 % interval is about 2 x 1.96 Hanley-McNeil standard errors wide (their 1982
    formula), and covers the population AUC in about 95 % of samples."""
    rng = np.random.default_rng(3)
    population = stats.norm.cdf(1.0 / np.sqrt(2))    # binormal AUC at separation 1
    covered, ratios = [], []
    for _ in range(60):
        labels, a, _ = _binormal(rng, 70, 100, 1.0)
        low, high = bootstrap_auc(labels, a, seed=int(rng.integers(1 << 30)), resamples=400)
        area, m, n = auc(labels, a), 70, 100
        q1, q2 = area / (2 - area), 2 * area ** 2 / (1 + area)
        se = np.sqrt((area * (1 - area) + (m - 1) * (q1 - area ** 2)
                      + (n - 1) * (q2 - area ** 2)) / (m * n))
        ratios.append((high - low) / (2 * 1.96 * se))
        covered.append(low <= population <= high)
    assert np.median(ratios) == pytest.approx(1.0, abs=0.15)
    assert np.mean(covered) >= 0.85


def test_brier_equals_scikit_learns_and_its_known_values():
    rng = np.random.default_rng(4)
    labels, scores = rng.integers(0, 2, 200), rng.random(200)
    assert brier(labels, scores) == pytest.approx(brier_score_loss(labels, scores))
    assert brier(np.array([0, 1, 1, 0]), np.full(4, 0.5)) == 0.25
    assert brier(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


def test_net_benefit_of_treating_everyone_is_the_decision_curves_treat_all_line():
    """Vickers & Elkin (2006): treat all = prevalence - (1 - prevalence) pt / (1 - pt); treat
    none = 0; a perfect model = prevalence at every threshold."""
    labels = np.array([1] * 30 + [0] * 70)
    for pt in (0.05, 0.2, 0.5):
        assert net_benefit(labels, np.ones(100), pt) == pytest.approx(0.3 - 0.7 * pt / (1 - pt))
        assert net_benefit(labels, np.zeros(100), pt) == 0.0
        assert net_benefit(labels, labels.astype(float), pt) == pytest.approx(0.3)


def test_calibration_of_calibrated_predictions_lies_on_the_diagonal():
    """Outcomes drawn with the predicted probability: each decile's observed rate is within
    3 binomial standard errors of its mean prediction."""
    rng = np.random.default_rng(5)
    scores = rng.beta(2, 3, 5000)
    labels = (rng.random(5000) < scores).astype(int)
    for row in calibration(labels, scores):
        p = row["mean_predicted"]
        assert abs(row["observed"] - p) <= 3 * np.sqrt(p * (1 - p) / row["cases"])


def test_the_calibration_curve_is_the_diagonal_for_calibrated_and_steeper_for_timid_ones():
    """Outcomes drawn with p: the fitted curve stays within 0.03 of the diagonal. Predictions
    pulled halfway to 0.5 (too timid): the curve lies below the diagonal at low p and above it
    at high p."""
    rng = np.random.default_rng(6)
    scores = rng.beta(2, 2, 20000)
    labels = (rng.random(20000) < scores).astype(int)
    grid, curve = calibration_curve(labels, scores)
    inner = (grid > 0.1) & (grid < 0.9)
    assert np.max(np.abs(curve - grid)[inner]) < 0.03
    timid = 0.5 + (scores - 0.5) / 2
    grid, curve = calibration_curve(labels, timid)
    assert curve[0] < grid[0] - 0.05 and curve[-1] > grid[-1] + 0.05
