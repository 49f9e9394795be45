"""Tests for elr.noise: realised noise rates, exact asymmetric counts, transition sampling, summary, determinism."""

import json
import math
import re

import numpy as np
import pytest
import torch

from elr import noise

# Upper 1e-6 tail of the chi-square distribution (scipy.stats.chi2.ppf(1 - 1e-6, df)); the draws
# are seeded, so these bounds only guard against a wrong distribution, never against bad luck.
CHI2_1E6 = {3: 30.66, 4: 33.38, 8: 42.70, 9: 44.81}


def _binomial_tol(p, n, sds=5.0):
    return sds * math.sqrt(p * (1 - p) / n)


def _chi_square(observed, expected):
    observed = np.asarray(observed, dtype=float)
    expected = np.asarray(expected, dtype=float)
    return float(((observed - expected) ** 2 / expected).sum())


def _balanced(num_classes, per_class, seed=0):
    labels = np.repeat(np.arange(num_classes), per_class)
    # Interleave the classes so position carries no information about the class.
    return np.random.default_rng(seed).permutation(labels)


# --------------------------------------------------------------------------- symmetric


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_realised_rate_is_rate_times_one_minus_one_over_c(rate):
    C, n = 10, 200_000
    y = _balanced(C, n // C)
    noisy = noise.symmetric(y, rate, C, seed=1)
    expected = rate * (1 - 1 / C)
    realised = float(np.mean(noisy != y))
    assert abs(realised - expected) <= _binomial_tol(expected, n)
    # Distinguishable from the exclude_true rate by many standard deviations.
    assert abs(realised - rate) > _binomial_tol(rate, n, sds=10)


def test_symmetric_per_class_distribution_matches_eq1():
    C, per_class, rate = 10, 20_000, 0.6
    y = _balanced(C, per_class)
    noisy = noise.symmetric(y, rate, C, seed=2)
    for c in range(C):
        counts = np.bincount(noisy[y == c], minlength=C)
        # Eq. 1: P(noisy = c) = 1 - r + r/C, P(noisy = j != c) = r/C.
        expected = np.full(C, rate / C * per_class)
        expected[c] = (1 - rate + rate / C) * per_class
        assert _chi_square(counts, expected) < CHI2_1E6[C - 1]


def test_symmetric_exclude_true_rate_and_uniform_other_classes():
    C, per_class, rate = 10, 20_000, 0.4
    n = C * per_class
    y = _balanced(C, per_class)
    noisy = noise.symmetric(y, rate, C, seed=3, exclude_true=True)
    realised = float(np.mean(noisy != y))
    assert abs(realised - rate) <= _binomial_tol(rate, n)
    for c in range(C):
        flipped_to = noisy[(y == c) & (noisy != c)]
        counts = np.delete(np.bincount(flipped_to, minlength=C), c)
        assert _chi_square(counts, np.full(C - 1, flipped_to.size / (C - 1))) < CHI2_1E6[C - 2]


def test_symmetric_rate_extremes():
    y = _balanced(10, 1000)
    np.testing.assert_array_equal(noise.symmetric(y, 0.0, 10, seed=0), y)
    np.testing.assert_array_equal(noise.symmetric(y, 0, 10, seed=0, exclude_true=True), y)
    # Every label changes, and each lands on one of the other classes.
    all_flipped = noise.symmetric(y, 1.0, 10, seed=0, exclude_true=True)
    assert np.all(all_flipped != y)
    assert all_flipped.min() >= 0 and all_flipped.max() < 10
    # Rate 1 without exclude_true is a uniform relabelling: about 1/C stay put.
    relabelled = noise.symmetric(y, 1.0, 10, seed=0)
    assert abs(np.mean(relabelled == y) - 0.1) <= _binomial_tol(0.1, y.size)


def test_symmetric_two_classes_exclude_true_is_a_swap():
    y = np.array([0, 1] * 500)
    noisy = noise.symmetric(y, 1.0, 2, seed=9, exclude_true=True)
    np.testing.assert_array_equal(noisy, 1 - y)


# --------------------------------------------------------------------------- asymmetric


def test_asymmetric_mapping_tables():
    assert noise.asymmetric_mapping("cifar10") == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    m100 = noise.asymmetric_mapping("cifar100")
    assert len(m100) == 100
    assert m100[0] == 1 and m100[3] == 4 and m100[4] == 0
    assert m100[95] == 96 and m100[99] == 95
    for c, t in m100.items():
        assert t // 5 == c // 5 and t != c
    # A returned dict is a copy: mutating it does not leak into the next call.
    m100[0] = 42
    assert noise.asymmetric_mapping("cifar100")[0] == 1


def test_asymmetric_cifar10_exact_counts_and_targets():
    per_class, rate = 5000, 0.4
    y = _balanced(10, per_class)
    noisy = noise.asymmetric(y, rate, dataset="cifar10", seed=0)
    expected_flips = round(rate * per_class)
    assert expected_flips == 2000
    targets = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    for c in range(10):
        members = noisy[y == c]
        if c in targets:
            assert np.sum(members != c) == expected_flips
            assert set(np.unique(members[members != c])) == {targets[c]}
        else:
            np.testing.assert_array_equal(members, c)
    # Regression for the authors' bug (issue #16): cat <-> dog must both be exactly 40%, not ~24%.
    s = noise.summary(noisy, y)
    assert s["per_class_noise_rate"][3] == pytest.approx(0.4, abs=0)
    assert s["per_class_noise_rate"][5] == pytest.approx(0.4, abs=0)
    assert s["noise_rate"] == pytest.approx(5 * 2000 / 50_000)
    assert s["confusion"][3][5] == 2000 and s["confusion"][5][3] == 2000


def test_asymmetric_cifar100_exact_counts_with_unequal_classes():
    rate = 0.3
    counts = 37 + np.arange(100) % 7  # 37..43 examples: exercises rounding per class
    y = np.random.default_rng(5).permutation(np.repeat(np.arange(100), counts))
    noisy = noise.asymmetric(y, rate, dataset="cifar100", seed=11)
    for c in range(100):
        group_start = 5 * (c // 5)
        target = group_start + (c - group_start + 1) % 5
        members = noisy[y == c]
        changed = members[members != c]
        assert changed.size == round(rate * counts[c])
        assert np.all(changed == target)
    assert np.all(noisy[(y == 4) & (noisy != 4)] == 0)
    assert np.all(noisy[(y == 99) & (noisy != 99)] == 95)


def test_asymmetric_rate_extremes():
    y = _balanced(10, 50)
    np.testing.assert_array_equal(noise.asymmetric(y, 0.0, dataset="cifar10", seed=0), y)
    full = noise.asymmetric(y, 1.0, dataset="cifar10", seed=0)
    mapping = noise.asymmetric_mapping("cifar10")
    expected = np.array([mapping.get(int(v), int(v)) for v in y])
    np.testing.assert_array_equal(full, expected)


def test_asymmetric_selection_is_uniform_over_examples():
    # 20 cats; flipping round(0.4 * 20) = 8 of them, each cat should be chosen ~40% of the time.
    y = np.array([3] * 20 + [0] * 5)
    trials = 1000
    hits = np.zeros(y.size)
    for seed in range(trials):
        hits += noise.asymmetric(y, 0.4, dataset="cifar10", seed=seed) != y
    freq = hits[:20] / trials
    assert np.all(np.abs(freq - 0.4) <= _binomial_tol(0.4, trials))
    assert np.all(hits[20:] == 0)


def test_asymmetric_validation():
    with pytest.raises(ValueError, match="cifar10.*cifar100"):
        noise.asymmetric([0, 1], 0.2, dataset="mnist", seed=0)
    with pytest.raises(ValueError, match="labels"):
        noise.asymmetric([0, 10], 0.2, dataset="cifar10", seed=0)
    with pytest.raises(ValueError, match="labels"):
        noise.asymmetric([0, 100], 0.2, dataset="cifar100", seed=0)
    with pytest.raises(ValueError, match="rate"):
        noise.asymmetric([0, 1], 1.5, dataset="cifar10", seed=0)
    with pytest.raises(ValueError, match="dataset"):
        noise.asymmetric_mapping("svhn")


# --------------------------------------------------------------------------- transition matrix


def test_from_transition_matrix_matches_T():
    T = np.array(
        [
            [0.7, 0.3, 0.0, 0.0],
            [0.0, 0.5, 0.25, 0.25],
            [0.1, 0.0, 0.9, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    per_class = 50_000
    y = _balanced(4, per_class)
    noisy = noise.from_transition_matrix(y, T, seed=4)
    assert noisy.dtype == np.int64
    for i in range(4):
        freq = np.bincount(noisy[y == i], minlength=4) / per_class
        for j in range(4):
            if T[i, j] == 0:
                assert freq[j] == 0  # zero-probability transitions never happen
            else:
                assert abs(freq[j] - T[i, j]) <= _binomial_tol(T[i, j], per_class) + 1e-12


def test_from_transition_matrix_identity_and_symmetric_matrix():
    y = _balanced(5, 2000)
    np.testing.assert_array_equal(noise.from_transition_matrix(y, np.eye(5), seed=0), y)
    # The symmetric helper's T reproduces the Eq. 1 corruption rate when sampled.
    T = noise.transition_matrix("symmetric", 0.5, 5)
    noisy = noise.from_transition_matrix(y, T, seed=1)
    expected = 0.5 * (1 - 1 / 5)
    assert abs(np.mean(noisy != y) - expected) <= _binomial_tol(expected, y.size)


def test_transition_matrix_helpers():
    T = noise.transition_matrix("symmetric", 0.4, 4)
    np.testing.assert_allclose(np.diag(T), 0.6 + 0.1)
    np.testing.assert_allclose(T[0, 1:], 0.1)
    T = noise.transition_matrix("symmetric", 0.4, 5, exclude_true=True)
    np.testing.assert_allclose(np.diag(T), 0.6)
    np.testing.assert_allclose(T[0, 1:], 0.1)
    T = noise.transition_matrix("asymmetric", 0.4, dataset="cifar10")
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    assert T[3, 5] == pytest.approx(0.4) and T[3, 3] == pytest.approx(0.6)
    assert T[9, 1] == pytest.approx(0.4) and T[0, 0] == 1.0 and T[1, 1] == 1.0
    T = noise.transition_matrix("asymmetric", 0.2, dataset="cifar100")
    assert T.shape == (100, 100) and T[99, 95] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="kind"):
        noise.transition_matrix("pairflip", 0.2, 10)
    with pytest.raises(ValueError, match="num_classes"):
        noise.transition_matrix("symmetric", 0.2)
    with pytest.raises(ValueError, match="dataset"):
        noise.transition_matrix("asymmetric", 0.2)


@pytest.mark.parametrize(
    "T",
    [
        [[1.2, -0.2], [0.0, 1.0]],  # negative entry
        [[0.5, 0.4], [0.0, 1.0]],  # row does not sum to 1
        [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]],  # not square
        [[float("nan"), 1.0], [0.0, 1.0]],  # NaN
        [[float("inf"), 0.0], [0.0, 1.0]],  # infinite
        [0.5, 0.5],  # 1-D
        [[1.0]],  # a single class
    ],
)
def test_from_transition_matrix_rejects_bad_T(T):
    with pytest.raises(ValueError, match="T "):
        noise.from_transition_matrix([0, 0], T, seed=0)


def test_from_transition_matrix_rejects_labels_beyond_T():
    with pytest.raises(ValueError, match="T "):
        noise.from_transition_matrix([0, 1, 2], np.eye(2), seed=0)


# --------------------------------------------------------------------------- summary


def test_summary_hand_worked():
    true = [0, 0, 1, 1, 2, 2]
    noisy = [0, 1, 1, 1, 0, 2]
    s = noise.summary(noisy, true)
    assert s == {
        "num_examples": 6,
        "num_classes": 3,
        "num_noisy": 2,
        "noise_rate": 2 / 6,
        "per_class_count": [2, 2, 2],
        "per_class_noise_rate": [0.5, 0.0, 0.5],
        "confusion": [[1, 1, 0], [0, 2, 0], [1, 0, 1]],
    }
    # Plain Python types only, so the dict survives a JSON round trip unchanged.
    assert json.loads(json.dumps(s)) == s


def test_summary_with_num_classes_and_empty_class():
    s = noise.summary(np.array([1, 1]), np.array([0, 1]), num_classes=4)
    assert s["confusion"] == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert s["per_class_noise_rate"] == [1.0, 0.0, None, None]
    assert json.loads(json.dumps(s)) == s


def test_summary_validation():
    with pytest.raises(ValueError, match="same length"):
        noise.summary([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="num_classes"):
        noise.summary([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        noise.summary([], [])


# --------------------------------------------------------------------------- determinism and purity


def _all_noise_fns():
    y = _balanced(10, 300, seed=7)
    T = noise.transition_matrix("symmetric", 0.5, 10)
    return y, [
        lambda s: noise.symmetric(y, 0.5, 10, seed=s),
        lambda s: noise.symmetric(y, 0.5, 10, seed=s, exclude_true=True),
        lambda s: noise.asymmetric(y, 0.5, dataset="cifar10", seed=s),
        lambda s: noise.from_transition_matrix(y, T, seed=s),
    ]


def test_same_seed_same_output_different_seed_differs():
    _, fns = _all_noise_fns()
    for fn in fns:
        a, b, c = fn(17), fn(17), fn(18)
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_independent_of_global_rng_state():
    _, fns = _all_noise_fns()
    for fn in fns:
        first = fn(5)
        np.random.seed(123)
        np.random.rand(10)
        torch.manual_seed(0)
        torch.rand(3)
        np.testing.assert_array_equal(fn(5), first)
        # ... and the global NumPy state is left untouched by our calls.
        state = np.random.get_state()
        fn(5)
        after = np.random.get_state()
        assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_inputs_not_modified_and_outputs_are_new_arrays():
    y = _balanced(10, 100)
    backup = y.copy()
    T = noise.transition_matrix("asymmetric", 0.4, dataset="cifar10")
    T_backup = T.copy()
    outs = [
        noise.symmetric(y, 0.9, 10, seed=0),
        noise.symmetric(y, 0.0, 10, seed=0),
        noise.asymmetric(y, 0.9, dataset="cifar10", seed=0),
        noise.asymmetric(y, 0.0, dataset="cifar10", seed=0),
        noise.from_transition_matrix(y, T, seed=0),
    ]
    np.testing.assert_array_equal(y, backup)
    np.testing.assert_array_equal(T, T_backup)
    for out in outs:
        assert not np.shares_memory(out, y)
    # int32 input is accepted and still gives int64 out.
    assert noise.symmetric(y.astype(np.int32), 0.3, 10, seed=0).dtype == np.int64


# --------------------------------------------------------------------------- input validation


def test_labels_accepts_lists_and_integral_floats():
    from_list = noise.symmetric([0, 1, 2, 3], 0.5, 4, seed=3)
    from_float = noise.symmetric(np.array([0.0, 1.0, 2.0, 3.0]), 0.5, 4, seed=3)
    np.testing.assert_array_equal(from_list, from_float)
    assert from_float.dtype == np.int64
    assert noise.symmetric([], 0.5, 4, seed=0).shape == (0,)


@pytest.mark.parametrize(
    "labels",
    [
        [0.5, 1.0],  # non-integer float
        [[0, 1], [1, 0]],  # 2-D
        [0, -1],  # negative
        [True, False],  # boolean
        ["a", "b"],  # strings
        [0.0, float("nan")],  # NaN
    ],
)
def test_bad_labels_name_the_argument(labels):
    with pytest.raises(ValueError, match="labels"):
        noise.symmetric(labels, 0.2, 4, seed=0)


@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan"), float("inf"), "0.2", None, True])
def test_bad_rate_names_the_argument(rate):
    with pytest.raises(ValueError, match="rate"):
        noise.symmetric([0, 1], rate, 4, seed=0)
    with pytest.raises(ValueError, match="rate"):
        noise.asymmetric([0, 1], rate, dataset="cifar10", seed=0)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, None, 3])
def test_bad_num_classes_names_the_argument(num_classes):
    # 3 is too small for a label of 3.
    with pytest.raises(ValueError, match="num_classes"):
        noise.symmetric([0, 3], 0.2, num_classes, seed=0)


@pytest.mark.parametrize("seed", [None, 1.0, -1, "1", True])
def test_bad_seed_names_the_argument(seed):
    with pytest.raises(ValueError, match="seed"):
        noise.symmetric([0, 1], 0.2, 4, seed=seed)
    with pytest.raises(ValueError, match="seed"):
        noise.asymmetric([0, 1], 0.2, dataset="cifar10", seed=seed)
    with pytest.raises(ValueError, match="seed"):
        noise.from_transition_matrix([0, 1], np.eye(2), seed=seed)


def test_numpy_scalar_arguments_accepted():
    y = np.array([0, 1, 2, 3])
    a = noise.symmetric(y, np.float32(0.5), np.int64(4), seed=np.int64(2))
    b = noise.symmetric(y, 0.5, 4, seed=2)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- the draws themselves


def test_symmetric_draws_follow_the_documented_recipe():
    """One uniform per example decides the flip, then one integer per example the class; the noisy labels
    of stored runs depend on this order, so it is written out here independently."""
    y = _balanced(7, 30)
    for exclude_true in (False, True):
        rng = np.random.default_rng(11)
        flip = rng.random(len(y)) < 0.6
        if exclude_true:
            replacement = (y + rng.integers(1, 7, size=len(y))) % 7  # an offset of 1..6: never the true class
        else:
            replacement = rng.integers(0, 7, size=len(y))
        np.testing.assert_array_equal(noise.symmetric(y, 0.6, 7, seed=11, exclude_true=exclude_true),
                                      np.where(flip, replacement, y))


class _Uniforms:
    """Stands in for numpy's generator: hands out the given uniforms, to reach the ends of a CDF."""

    def __init__(self, u):
        self.u = np.asarray(u, dtype=np.float64)

    def random(self, n):
        assert n == len(self.u)
        return self.u.copy()

    def integers(self, low, high, size):
        return np.full(size, high - 1)  # the replacement class, when a label flips


def _inverse_cdf(row, u):
    """The smallest class j with u < T[0] + ... + T[j], in exact rational arithmetic."""
    from fractions import Fraction

    total, mass = Fraction(0), [Fraction(v) for v in row]
    scale = sum(mass)
    for j, m in enumerate(mass):
        total += m / scale
        if Fraction(u) < total:
            return j
    raise AssertionError("u >= 1")


def test_transition_draws_never_pick_a_zero_probability_class_or_one_beyond_the_matrix(monkeypatch):
    # row 0: seven classes of 1/7 then two empty ones: its float cumulative sum ends at 0.9999999999999998,
    # so a uniform just below 1 would fall past the seventh class; row 1 starts with an empty class
    T = np.eye(9)
    T[0] = [1 / 7] * 7 + [0, 0]
    T[1] = [0, 0.5, 0.5] + [0] * 6
    assert np.cumsum(T[0])[6] < 1.0
    below_one = np.nextafter(1.0, 0.0)
    labels, u = np.array([0, 0, 1, 1, 4]), np.array([below_one, 0.5, 0.0, below_one, 0.3])
    monkeypatch.setattr(noise.np.random, "default_rng", lambda seed: _Uniforms(u))
    got = noise.from_transition_matrix(labels, T, seed=0)
    assert got.tolist() == [_inverse_cdf(T[c], v) for c, v in zip(labels, u)] == [6, 3, 1, 2, 4]


# --------------------------------------------------------------------------- the messages say what is wrong


def test_messages_name_the_argument_and_the_fault():
    cases = [
        (lambda: noise.symmetric([[0, 1], [2]], 0.2, 4, seed=0),
         "labels must be a 1-D array of integer class indices; could not convert"),
        (lambda: noise.symmetric([True, False], 0.2, 4, seed=0),
         "labels must hold integer class indices, got a boolean array"),
        (lambda: noise.symmetric(np.array(["a"]), 0.2, 4, seed=0),
         "labels must hold integer class indices, got dtype <U1"),
        (lambda: noise.symmetric([0, 5], 0.2, 4, seed=0),
         "num_classes must be larger than every label, got num_classes=4 but labels contains 5"),
        (lambda: noise.symmetric([0], 0.2, 4, seed=None),
         "seed must be an int >= 0; None is not accepted because it would give different noise on every call, "
         "and noisy labels must be reproducible"),
        (lambda: noise.symmetric([0], 0.2, 4, seed=1.0), "seed must be an int >= 0, got 1.0 of type float"),
        (lambda: noise.from_transition_matrix([0], [[1, 0], [0]], seed=0),
         "T must be a square (C, C) array of probabilities; could not convert"),
        (lambda: noise.from_transition_matrix([0], [[np.nan, 1], [0, 1]], seed=0),
         "T must be finite, found NaN or infinite entries"),
        (lambda: noise.from_transition_matrix([0], [[1.0]], seed=0),
         "T must describe at least 2 classes, got shape (1, 1)"),
        (lambda: noise.transition_matrix("symmetric", 0.2), "num_classes is required for kind='symmetric'"),
        (lambda: noise.transition_matrix("asymmetric", 0.2, 100, dataset="cifar10"),
         "num_classes must be 10 for dataset 'cifar10' (or None), got 100"),
        (lambda: noise.transition_matrix("asymmetric", 0.2, dataset="cifar10", exclude_true=True),
         "exclude_true applies only to kind='symmetric'"),
        (lambda: noise.summary([0, 5], [0, 1], num_classes=3),
         "num_classes must be larger than every label, got num_classes=3 but noisy contains 5"),
        (lambda: noise.summary([0, 1], [4, 1], num_classes=3),
         "num_classes must be larger than every label, got num_classes=3 but true contains 4"),
        (lambda: noise.summary([0.5], [0]), "noisy must hold integer class indices, found non-integer floats"),
        (lambda: noise.summary([0], [-1]), "true must be non-negative class indices, found -1"),
        (lambda: noise.summary([], []), "num_classes must be given when noisy and true are empty"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value).startswith(message), (str(err.value), message)


def test_dataset_names_ignore_case_and_a_matching_class_count_is_accepted():
    y = _balanced(10, 20)
    np.testing.assert_array_equal(noise.asymmetric(y, 0.4, dataset="CIFAR10", seed=3),
                                  noise.asymmetric(y, 0.4, dataset="cifar10", seed=3))
    np.testing.assert_array_equal(noise.transition_matrix("asymmetric", 0.4, 10, dataset="Cifar10"),
                                  noise.transition_matrix("asymmetric", 0.4, dataset="cifar10"))


def test_summary_of_no_examples():
    out = noise.summary([], [], num_classes=3)
    assert out == {"num_examples": 0, "num_classes": 3, "num_noisy": 0, "noise_rate": None,
                   "per_class_count": [0, 0, 0], "per_class_noise_rate": [None, None, None],
                   "confusion": [[0, 0, 0], [0, 0, 0], [0, 0, 0]]}


def test_rate_zero_never_flips_and_rate_one_always_does_at_the_ends_of_the_uniforms(monkeypatch):
    below_one = np.nextafter(1.0, 0.0)
    monkeypatch.setattr(noise.np.random, "default_rng", lambda seed: _Uniforms([0.0, below_one, 0.5]))
    assert noise.symmetric([0, 1, 2], 0.0, 4, seed=0).tolist() == [0, 1, 2]
    assert noise.symmetric([0, 1, 2], 1.0, 4, seed=0).tolist() == [3, 3, 3]
    assert noise.symmetric([0, 1, 2], 0.5, 4, seed=0).tolist() == [3, 1, 2]  # u < rate flips: 0.5 does not


def test_transition_rows_are_normalised_before_the_draw(monkeypatch):
    """Rows may sum to 1 within 1e-6; each is divided by its own sum: the draw is exactly P(j | i) = T[i, j] / sum."""
    T = np.array([[0.3, 0.3, 0.4 - 9e-7], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # row 0 sums to 1 - 9e-7
    u = np.array([0.3000001, 0.6000004, 0.2999999, 0.6000008])  # within 1e-6 of the normalised boundaries
    labels = np.zeros(4, dtype=np.int64)
    monkeypatch.setattr(noise.np.random, "default_rng", lambda seed: _Uniforms(u))
    got = noise.from_transition_matrix(labels, T, seed=0)
    assert got.tolist() == [_inverse_cdf(T[0], v) for v in u] == [0, 1, 0, 2]


@pytest.mark.parametrize("dataset", [10, None, ["cifar10"]])
def test_a_dataset_that_is_not_a_name_is_refused_by_name(dataset):
    message = rf"^dataset must be one of \['cifar10', 'cifar100'\], got {re.escape(repr(dataset))}$"
    with pytest.raises(ValueError, match=message):
        noise.asymmetric([0, 1], 0.2, dataset=dataset, seed=0)
