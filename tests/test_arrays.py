"""unique_ints: np.unique's answer for integer arrays, by sort (numpy's hash path is slow on distinct keys)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hashgnn.arrays import unique_ints

INT_TYPES = st.sampled_from([np.int32, np.int64, np.uint8, np.uint32])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_unique_ints_equals_numpy_unique(data: st.DataObject) -> None:
    dtype = data.draw(INT_TYPES)
    a = data.draw(arrays(dtype, st.integers(0, 300)))
    if data.draw(st.booleans()):
        a = np.sort(a)  # the already-sorted paths: strictly increasing, or sorted with repeats
    got = unique_ints(a)
    want = np.unique(a)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_unique_ints_never_returns_the_callers_array() -> None:
    a = np.arange(5, dtype=np.int64)  # strictly increasing: returned without a sort
    out = unique_ints(a)
    out[0] = 99
    assert a[0] == 0


def test_unique_ints_flattens_like_numpy() -> None:
    a = np.array([[3, 1], [3, 2]], dtype=np.int64)
    np.testing.assert_array_equal(unique_ints(a), [1, 2, 3])
