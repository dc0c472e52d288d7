"""Per-user splits and the validation carve-out: properties against a slow per-user reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgnn.data import Interactions, carve_validation
from hashgnn.data.dataset import interactions_matrix
from hashgnn.data.split import held_out_counts, split_per_user
from hashgnn.errors import ConfigError


def expected_held_out(n: int, fraction: float) -> int:
    """The documented rule, written the slow obvious way."""
    return max(0, min(math.floor(n * fraction + 0.5), n - 1))


interactions = st.integers(min_value=1, max_value=12).flatmap(
    lambda n_users: st.lists(st.integers(0, n_users - 1), min_size=1, max_size=80).map(
        lambda users: (n_users, np.array(users, dtype=np.int64))
    )
)


@settings(max_examples=60, deadline=None)
@given(data=interactions, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_random_split_per_user_counts_and_reproducible(data, fraction: float, seed: int) -> None:
    n_users, users = data
    is_test = split_per_user(users, n_users, "random", fraction, seed)
    for u in range(n_users):
        n = int((users == u).sum())
        assert int(is_test[users == u].sum()) == expected_held_out(n, fraction)
        if n:
            assert (~is_test[users == u]).any()  # every user keeps one in train
    assert np.array_equal(is_test, split_per_user(users, n_users, "random", fraction, seed))


@settings(max_examples=60, deadline=None)
@given(data=interactions, fraction=st.floats(0.05, 0.95), times=st.randoms(use_true_random=False))
def test_temporal_split_takes_the_latest(data, fraction: float, times) -> None:
    n_users, users = data
    time = np.array([times.randint(0, 5) for _ in users], dtype=np.float64)  # ties on purpose
    is_test = split_per_user(users, n_users, "temporal", fraction, time=time)
    for u in range(n_users):
        idx = np.flatnonzero(users == u)
        # reference: stable sort by time (ties by input order), the last k are test
        order = idx[np.argsort(time[idx], kind="stable")]
        k = expected_held_out(len(idx), fraction)
        want = np.zeros(len(users), bool)
        want[order[len(order) - k :]] = True
        assert np.array_equal(is_test[idx], want[idx])


@settings(max_examples=60, deadline=None)
@given(data=interactions, with_time=st.booleans())
def test_leave_last_one_out(data, with_time: bool) -> None:
    n_users, users = data
    time = np.arange(len(users))[::-1].astype(float) if with_time else None  # reversed row order
    is_test = split_per_user(users, n_users, "loo", time=time)
    for u in range(n_users):
        idx = np.flatnonzero(users == u)
        if len(idx) < 2:
            assert not is_test[idx].any()
        else:
            last = idx[0] if with_time else idx[-1]  # latest time is the first row when reversed
            assert is_test[idx].tolist() == (idx == last).tolist()


def test_held_out_counts_rule() -> None:
    counts = np.array([0, 1, 2, 3, 4, 5, 10])
    assert held_out_counts(counts, 0.2).tolist() == [expected_held_out(n, 0.2) for n in counts]
    assert held_out_counts(counts, 0.2).tolist() == [0, 0, 0, 1, 1, 1, 2]


def random_interactions(seed: int, n_users: int = 40, n_items: int = 30) -> Interactions:
    rng = np.random.default_rng(seed)
    m = n_users * 8
    users, items = rng.integers(0, n_users, m), rng.integers(0, n_items, m)
    train = interactions_matrix(users, items, n_users, n_items)
    test = interactions_matrix(users[:20], (items[:20] + 1) % n_items, n_users, n_items)
    return Interactions(name="rand", train=train, test=test, meta={"k": 1})


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_carve_validation(fraction: float) -> None:
    data = random_interactions(0)
    carved = carve_validation(data, fraction, seed=7)
    # disjoint, union is the old train, the test split is untouched
    assert carved.train.multiply(carved.valid).nnz == 0
    assert (carved.train + carved.valid != data.train).nnz == 0
    assert (carved.test != data.test).nnz == 0
    per_user_train = np.diff(data.train.indptr)
    per_user_valid = np.diff(carved.valid.indptr)
    assert per_user_valid.tolist() == [expected_held_out(int(n), fraction) for n in per_user_train]
    assert np.all(np.diff(carved.train.indptr)[per_user_train > 0] >= 1)
    assert carved.valid.dtype == np.float32 and carved.valid.has_sorted_indices
    assert carved.meta["valid_fraction"] == fraction and data.valid is None  # input unchanged
    again = carve_validation(data, fraction, seed=7)
    assert (again.valid != carved.valid).nnz == 0
    other = carve_validation(data, fraction, seed=8)
    assert (other.valid != carved.valid).nnz > 0
    assert carved.stats()["n_valid"] == carved.valid.nnz


def test_carve_validation_edge_cases() -> None:
    data = random_interactions(1)
    assert carve_validation(data, 0.0, seed=1) is data
    with pytest.raises(ConfigError, match="valid_fraction must be between 0 and 1"):
        carve_validation(data, 1.0, seed=1)
    with pytest.raises(ConfigError, match="already has a validation split"):
        carve_validation(carve_validation(data, 0.2, seed=1), 0.2, seed=1)
    one_each = Interactions(
        name="one", train=interactions_matrix(np.arange(3), np.arange(3), 3, 3), test=interactions_matrix([], [], 3, 3)
    )
    carved = carve_validation(one_each, 0.5, seed=0)
    assert carved.valid.nnz == 0 and carved.train.nnz == 3


def test_split_counts_at_scale() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 100_000, 1_000_000)
    is_test = split_per_user(users, 100_000, "random", 0.2, 1)
    counts = np.bincount(users, minlength=100_000)
    assert np.array_equal(np.bincount(users[is_test], minlength=100_000), held_out_counts(counts, 0.2))
