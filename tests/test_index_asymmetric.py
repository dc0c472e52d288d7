"""AsymmetricIndex: real queries against packed +-1 item codes, checked against a numpy brute force.

The reference scores every item as ``q @ sign_codes.T`` in float64 and sorts by (score desc, id
asc) after removing each query's exclusions; the index must return the same ids wherever scores
differ by more than float32 rounding, and the same scores everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgnn.codes.packing import pack_codes
from hashgnn.errors import HashgnnError
from hashgnn.index import AsymmetricIndex


def brute_force(
    q: np.ndarray, signs: np.ndarray, ids: np.ndarray, k: int, exclude: list[set[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), -inf / -1 padded: score desc, then id asc."""
    s = q.astype(np.float64) @ signs.astype(np.float64).T
    out_s = np.full((len(q), k), -np.inf)
    out_i = np.full((len(q), k), -1, np.int64)
    for u in range(len(q)):
        keep = [j for j in range(len(ids)) if int(ids[j]) not in exclude[u]]
        order = sorted(keep, key=lambda j: (-s[u, j], ids[j]))[:k]
        out_s[u, : len(order)] = s[u, order]
        out_i[u, : len(order)] = ids[order]
    return out_s, out_i


@given(
    n=st.integers(1, 300),
    nq=st.integers(1, 12),
    bits=st.integers(1, 80),
    k=st.integers(1, 40),
    density=st.sampled_from([0.0, 0.1, 0.5]),
    integer_queries=st.booleans(),
    with_ids=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_asymmetric_index_matches_brute_force(
    n: int, nq: int, bits: int, k: int, density: float, integer_queries: bool, with_ids: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random((n, bits)) < 0.5, -1.0, 1.0)
    # integer queries make exact ties common: they must go to the lower id, as in the reference
    q = (
        rng.integers(-2, 3, (nq, bits)).astype(np.float32)
        if integer_queries
        else rng.standard_normal((nq, bits)).astype(np.float32)
    )
    ids = rng.permutation(10 * n)[:n].astype(np.int64) if with_ids else np.arange(n, dtype=np.int64)
    ex = sp.random(nq, int(ids.max()) + 1, density=density, random_state=seed, format="csr")
    exclude = [set(ex.indices[ex.indptr[u] : ex.indptr[u + 1]].tolist()) for u in range(nq)]
    index = AsymmetricIndex(bits)
    index.add(pack_codes(signs), ids if with_ids else None)
    got_s, got_i = index.search(q, k, exclude=ex)
    ref_s, ref_i = brute_force(q, signs, ids, k, exclude)
    assert got_s.shape == got_i.shape == (nq, k) and got_s.dtype == np.float32
    np.testing.assert_allclose(got_s, ref_s, rtol=1e-5, atol=1e-4)
    # ids agree wherever the score is not tied (within rounding) with a neighbour's
    for u in range(nq):
        for j in range(k):
            near = np.isclose(ref_s[u], ref_s[u, j], rtol=1e-5, atol=1e-4)
            if near.sum() == 1 or integer_queries:  # integer scores are exact: ties by lower id
                assert got_i[u, j] == ref_i[u, j]


def test_a_code_is_scored_as_plus_minus_one_per_bit_in_packbits_order() -> None:
    # bit 1 -> +1, bit 0 -> -1, most significant bit of byte 0 first (numpy.packbits), pad bits ignored
    codes = np.array([[0b10000000, 0b10000000], [0b01000000, 0b00000000]], np.uint8)  # 9 bits
    index = AsymmetricIndex(9)
    index.add(codes)
    q = np.zeros((1, 9), np.float32)
    q[0, 0] = 5.0  # item 0's first bit is 1, item 1's is 0
    q[0, 8] = 1.0  # the ninth bit: item 0 has it, item 1 not
    s, i = index.search(q, 2)
    assert i.tolist() == [[0, 1]] and s.tolist() == [[6.0, -6.0]]
    assert index.bytes_per_item == 2 and len(index) == 2


def test_errors_name_what_is_wrong() -> None:
    index = AsymmetricIndex(16)
    with pytest.raises(HashgnnError, match="uint8"):
        index.add(np.zeros((3, 2), np.int64))
    index.add(np.zeros((3, 2), np.uint8))
    with pytest.raises(HashgnnError, match=r"shape \(n, 16\)"):
        index.search(np.zeros((1, 8), np.float32), 2)
    with pytest.raises(HashgnnError, match="floating-point"):
        index.search(np.zeros((1, 16), np.int64), 2)
    with pytest.raises(HashgnnError, match="positive integer"):
        index.search(np.zeros((1, 16), np.float32), 0)
    s, i = index.search(np.ones((1, 16), np.float32), 5)  # more than there are: padded
    assert i.tolist() == [[0, 1, 2, -1, -1]] and np.isneginf(s[0, 3:]).all()
