import numpy as np
import pytest
import torch

from bayesmicro.evaluate.calibration import (calibration_report, coverage, credible_interval, ece,
                                             reliability_bins, reliability_plot)
from tests.common import assert_close


def test_ece_equal_mass_bins_by_hand():
    p = torch.tensor([0.9, 0.8, 0.6, 0.3])
    # Symmetrised: predictions 0.9 0.8 0.6 0.3 (won) and 0.1 0.2 0.4 0.7 (lost); sorted into 2 bins of 4:
    # [0.1 0.2 0.3 0.4] with outcomes [0 0 1 0] and [0.6 0.7 0.8 0.9] with outcomes [1 0 1 1].
    expected = 0.5 * abs(0.25 - 0.25) + 0.5 * abs(0.75 - 0.75)
    assert ece(p, n_bins=2) == pytest.approx(expected)
    bins = reliability_bins(p, n_bins=4)
    assert_close(bins["predicted"], [0.15, 0.35, 0.65, 0.85])
    assert_close(bins["observed"], [0.0, 0.5, 0.5, 1.0])
    assert ece(p, n_bins=4) == pytest.approx(0.25 * (0.15 + 0.15 + 0.15 + 0.15))


def test_ece_separates_calibrated_from_overconfident_predictions():
    g = torch.Generator().manual_seed(0)
    true_p = torch.rand(20000, generator=g)
    a_wins = torch.rand(20000, generator=g) < true_p
    prob_chosen = torch.where(a_wins, true_p, 1 - true_p)  # the calibrated model's P(chosen ≻ rejected)
    sharp = torch.sigmoid(3 * torch.logit(prob_chosen))  # overconfident
    assert ece(prob_chosen) < 0.01
    assert ece(sharp) > 0.08


def test_credible_interval_and_coverage():
    draws = torch.arange(101, dtype=torch.float64).unsqueeze(1).repeat(1, 3) / 100  # 0.00 … 1.00 in every column
    lower, upper = credible_interval(draws, level=0.9)
    assert_close(lower, [0.05] * 3)
    assert_close(upper, [0.95] * 3)
    assert coverage(lower, upper, torch.tensor([0.5, 0.04, 0.95])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="level"):
        credible_interval(draws, level=1.5)


def test_report_per_group_equals_report_on_the_subset():
    g = torch.Generator().manual_seed(1)
    draws = torch.rand(50, 30, generator=g)
    truth = torch.rand(30, generator=g)
    group = np.array(["a", "b", "c"] * 10)
    report = calibration_report(draws, group, truth, level=0.8, n_bins=4)
    for name in ("a", "b", "c"):
        mask = torch.from_numpy(group == name)
        sub = calibration_report(draws[:, mask], None, truth[mask], level=0.8, n_bins=4)
        for key in ("ece", "brier", "nll", "coverage", "n"):
            assert report["by_group"][name][key] == pytest.approx(sub[key])
    lower, upper = credible_interval(draws, 0.8)
    assert report["coverage"] == pytest.approx(coverage(lower, upper, truth))
    assert "coverage" not in calibration_report(draws.mean(0))


def test_reliability_plot_writes_a_png(tmp_path):
    p = torch.rand(200, generator=torch.Generator().manual_seed(2))
    path = reliability_plot(p, tmp_path / "rel.png", np.array(["x", "y"] * 100))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
