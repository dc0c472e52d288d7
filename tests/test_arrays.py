"""unique_ints: np.unique's answer for integer arrays, by sort (numpy's hash path is slow on distinct keys)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hashgnn.arrays import repeat_rows, unique_ints

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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=30))
def test_repeat_rows_matches_a_loop_over_rows(counts: list[int]) -> None:
    expected = [r for r, c in enumerate(counts) for _ in range(c)]
    out = repeat_rows(np.array(counts, dtype=np.int64))
    assert out.dtype == np.int64
    assert out.tolist() == expected


def test_repeat_rows_gives_a_csr_matrix_row_of_every_entry() -> None:
    import scipy.sparse as sp

    m = sp.random(40, 30, density=0.2, format="csr", random_state=0)
    coo = m.tocoo()
    rows = repeat_rows(np.diff(m.indptr), np.int32)
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(rows, coo.row)
    np.testing.assert_array_equal(m.indices, coo.col)
