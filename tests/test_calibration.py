"""Score calibration: Platt/isotonic fits (offline) lower ECE, the applied maps (online) round-trip
exactly through YAML, typed errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import yaml

from introroute.errors import ConfigError, DataError
from introroute.evaluation.metrics import ECE_BINS, brier, ece
from introroute.fitting.calibration import MIN_SAMPLES, ece_before_after, fit_calibrator
from introroute.router.calibration import ScoreCalibrator

METHODS = ["platt", "isotonic"]
GRID = np.linspace(0.0, 1.0, 1001)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident scores: p = sigmoid(2 * logit(true p)); outcomes drawn from the true p."""
    rng = np.random.default_rng(seed)
    true_p = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < true_p).astype(float)
    return 1 / (1 + np.exp(-2 * _logit(true_p))), y


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, np.ndarray]:
    return _miscalibrated(4000, seed=0)


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    return _miscalibrated(4000, seed=1)


@pytest.mark.parametrize("method", METHODS)
def test_fit_reduces_ece_on_held_out_scores(method, train, held_out):
    calibrator = fit_calibrator(*train, method)
    assert isinstance(calibrator, ScoreCalibrator) and calibrator.method == method
    p, y = held_out
    result = ece_before_after(p, y, calibrator)
    assert result["n"] == len(y) and result["n_bins"] == ECE_BINS  # the project's one ECE binning
    assert result["ece_before"] == ece(y, p)  # the metrics module's ECE, not a copy
    assert result["ece_before"] > 0.08
    assert result["ece_after"] < result["ece_before"] / 2
    assert brier(y, calibrator.predict(p)) < brier(y, p)  # calibration also improves the Brier score


def test_platt_recovers_the_distortion(train):
    config = fit_calibrator(*train, "platt").to_config()
    assert config.keys() == {"method", "a", "b"} and config["method"] == "platt"
    assert config["a"] == pytest.approx(0.5, abs=0.05)  # undoes p = sigmoid(2 * logit(true p))
    assert config["b"] == pytest.approx(0.0, abs=0.1)


def test_isotonic_matches_sklearn_and_stores_thresholds(train):
    from sklearn.isotonic import IsotonicRegression

    calibrator = fit_calibrator(*train, "isotonic")
    config = calibrator.to_config()
    assert config.keys() == {"method", "x", "y"} and len(config["x"]) == len(config["y"]) >= 2
    reference = IsotonicRegression(out_of_bounds="clip").fit(*train)
    np.testing.assert_allclose(calibrator.predict(GRID), reference.predict(GRID), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_config_round_trip_through_yaml_predicts_identically(method, train):
    calibrator = fit_calibrator(*train, method)
    stored = yaml.safe_load(yaml.safe_dump({"calibration": calibrator.to_config()}))["calibration"]
    assert all(isinstance(v, str | float | list) for v in stored.values())  # plain YAML types
    restored = ScoreCalibrator.from_config(stored)
    probes = np.r_[GRID, -0.5, 1.5, 1e-12, 1 - 1e-12]
    assert np.array_equal(restored.predict(probes), calibrator.predict(probes))
    assert restored.to_config() == calibrator.to_config()


@pytest.mark.parametrize("method", METHODS)
def test_predictions_are_monotone_and_within_unit_interval(method, train):
    out = fit_calibrator(*train, method).predict(GRID)
    assert (np.diff(out) >= 0).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    "config",
    [
        {"method": "platt", "a": 60.0, "b": 40.0},
        {"method": "platt", "a": 60.0, "b": -40.0},
        {"method": "isotonic", "x": [0.2, 0.8], "y": [0.1, 0.9]},
    ],
)
def test_extreme_parameters_and_inputs_are_clipped_without_warnings(config):
    calibrator = ScoreCalibrator.from_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp/log at p = 0 or 1
        out = calibrator.predict(np.array([-1.0, 0.0, 0.1, 0.5, 0.9, 1.0, 2.0]))
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert (np.diff(out) >= 0).all()
    assert calibrator.predict(0.5).shape == ()  # a scalar in, a 0-d array out


def test_isotonic_is_constant_beyond_its_thresholds():
    calibrator = ScoreCalibrator.from_config({"method": "isotonic", "x": [0.2, 0.8], "y": [0.1, 0.9]})
    assert calibrator.predict([0.0, 0.2, 0.5, 0.8, 1.0]).tolist() == pytest.approx([0.1, 0.1, 0.5, 0.9, 0.9])


@pytest.mark.parametrize("method", METHODS)
def test_unlabelled_rows_are_dropped(method, train):
    p, y = train
    with_gaps = fit_calibrator(np.r_[p, 0.3, 0.9], np.r_[y, np.nan, np.nan], method)
    assert with_gaps.to_config() == fit_calibrator(p, y, method).to_config()
    assert ece_before_after(np.r_[p, 0.5], np.r_[y, np.nan], with_gaps)["n"] == len(y)


def test_backwards_scores_calibrate_to_the_base_rate(train):
    p, y = train
    with pytest.warns(UserWarning, match="rank outcomes backwards"):
        config = fit_calibrator(1 - p, y, "platt").to_config()
    assert config["a"] == 0.0 and config["b"] == pytest.approx(math.log(y.mean() / (1 - y.mean())))


@pytest.mark.parametrize(
    ("p", "y", "message"),
    [
        (np.linspace(0, 1, 50), np.ones(50), r"needs both outcomes, but the labels are all successes \(1\)"),
        (np.linspace(0, 1, 50), np.zeros(50), r"labels are all failures \(0\)"),
        (np.linspace(0, 1, 50), np.full(50, np.nan), f"at least {MIN_SAMPLES} labelled rows, got 0"),
        (np.linspace(0, 1, 10), np.arange(10) % 2, f"at least {MIN_SAMPLES} labelled rows, got 10"),
        (np.full(50, 0.4), np.arange(50) % 2, "all scores are equal"),
        (np.linspace(0, 1, 50), np.arange(49) % 2, r"one 1-D shape, got \(50,\) and \(49,\)"),
        (np.ones((25, 2)) / 2, np.ones((25, 2)), r"one 1-D shape, got \(25, 2\)"),
        (np.linspace(0, 1, 50), np.arange(50) % 3, "labels must be 0/1"),
        (np.linspace(0, 2, 50), np.arange(50) % 2, r"within \[0, 1\]"),
        (np.r_[np.nan, np.linspace(0, 1, 49)], np.arange(50) % 2, "finite probabilities"),
        (["a"] * 50, np.arange(50) % 2, "must be numeric"),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_bad_training_data_raises_data_error(method, p, y, message):
    with pytest.raises(DataError, match=message):
        fit_calibrator(p, y, method)


def test_unknown_method_raises_a_config_error():
    with pytest.raises(ConfigError, match="'platt' or 'isotonic'"):
        fit_calibrator(*_miscalibrated(100, seed=2), "beta")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "platt", "a": 1.0}, r"method 'platt' takes exactly \['a', 'b'\]; missing \['b'\]"),
        ({"method": "platt", "a": -1.0, "b": 0.0}, "a: Input should be greater than or equal to 0"),
        ({"method": "platt", "a": float("inf"), "b": 0.0}, "a: Input should be a finite number"),
        (
            {"method": "isotonic", "x": [0.5, 0.5], "y": [0.1, 0.2]},
            "x: Value error, must be strictly increasing",
        ),
        ({"method": "isotonic", "x": [0.1, 0.5], "y": [0.3, 0.2]}, "y: Value error, must be non-decreasing"),
        ({"method": "isotonic", "x": [0.5], "y": [0.2]}, "same length >= 2, got 1 and 1"),
        (
            {"method": "isotonic", "x": [0.1, 0.5], "y": [0.2, 1.5]},
            "y.1: Input should be less than or equal to 1",
        ),
        ({"method": "platt", "a": 1.0, "b": 0.0, "c": 1}, "c: Extra inputs are not permitted"),
        ({"method": "beta"}, "method: Input should be 'platt' or 'isotonic'"),
    ],
)
def test_invalid_stored_parameters_raise_config_error_naming_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        ScoreCalibrator.from_config(config)
