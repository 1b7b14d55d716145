"""audit.merkle agrees with a direct transcription of RFC 9162 §2.1, and its verifiers
refuse every proof that is not exactly the right one."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import merkle
from audit.errors import ProofError

# ---------------------------------------------------------------- the RFC, word for word


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_split(n: int) -> int:
    """The largest power of two smaller than ``n``."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes (§2.1.1)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = ref_split(n)
    return ref_node(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (§2.1.3.1)."""
    n = len(leaves)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return ref_path(m, leaves[:k]) + [ref_mth(leaves[k:])]
    return ref_path(m - k, leaves[k:]) + [ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (§2.1.4.1)."""
    n = len(leaves)
    if m == n:
        return [] if complete else [ref_mth(leaves)]
    k = ref_split(n)
    if m <= k:
        return ref_subproof(m, leaves[:k], complete) + [ref_mth(leaves[k:])]
    return ref_subproof(m - k, leaves[k:], False) + [ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n])."""
    return ref_subproof(m, leaves, True)


def ref_shape(m: int, n: int) -> list[bool]:
    """Which side each sibling of PATH(m, D[n]) is on (True: left), top-down."""
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return [False, *ref_shape(m, k)]
    return [True, *ref_shape(m - k, n - k)]


def make_leaves(count: int, salt: int = 0) -> list[bytes]:
    return [ref_leaf(b"entry %d/%d" % (salt, i)) for i in range(count)]


def flip(value: bytes, bit: int) -> bytes:
    bit %= len(value) * 8
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


sizes = st.integers(min_value=1, max_value=130)
FAST = settings(max_examples=150, deadline=None)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[list[bytes], int]:
    size = draw(sizes)
    return make_leaves(size, draw(st.integers(0, 3))), draw(st.integers(0, size - 1))


@st.composite
def tree_and_old_size(draw: st.DrawFn) -> tuple[list[bytes], int]:
    size = draw(sizes)
    return make_leaves(size, draw(st.integers(0, 3))), draw(st.integers(1, size))


# ---------------------------------------------------------------- hashing and construction


def test_hashes_are_domain_separated_sha256() -> None:
    assert merkle.leaf_hash(b"abc") == ref_leaf(b"abc")
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == ref_node(b"a" * 32, b"b" * 32)
    assert merkle.leaf_hash(b"\x01" + b"a" * 32 + b"b" * 32) != ref_node(b"a" * 32, b"b" * 32)
    assert merkle.root([]) == merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()


@FAST
@given(size=st.integers(0, 300), salt=st.integers(0, 3))
def test_root_is_the_rfc_tree_hash(size: int, salt: int) -> None:
    leaves = make_leaves(size, salt)
    assert merkle.root(leaves) == ref_mth(leaves)
    assert merkle.root_from(merkle.list_node_source(leaves), size) == ref_mth(leaves)


@FAST
@given(case=tree_and_index())
def test_inclusion_proof_is_the_rfc_audit_path(case: tuple[list[bytes], int]) -> None:
    leaves, index = case
    proof = merkle.inclusion_proof(leaves, index)
    assert proof == ref_path(index, leaves)
    merkle.verify_inclusion(leaves[index], index, len(leaves), proof, ref_mth(leaves))
    root = merkle.root_from_inclusion_proof(leaves[index], index, len(leaves), proof)
    assert root == ref_mth(leaves)


@FAST
@given(case=tree_and_old_size())
def test_consistency_proof_is_the_rfc_proof(case: tuple[list[bytes], int]) -> None:
    leaves, old_size = case
    proof = merkle.consistency_proof(leaves, old_size)
    assert proof == ref_proof(old_size, leaves)
    merkle.verify_consistency(
        old_size, len(leaves), ref_mth(leaves[:old_size]), ref_mth(leaves), proof
    )


@FAST
@given(size=sizes, begin_level=st.data())
def test_subtree_root_of_any_aligned_range(size: int, begin_level: st.DataObject) -> None:
    leaves = make_leaves(size)
    level = begin_level.draw(st.integers(0, size.bit_length() - 1))
    index = begin_level.draw(st.integers(0, (size >> level) - 1))
    begin = index << level
    end = begin_level.draw(st.integers(begin + 1, min(size, begin + (1 << level))))
    node = merkle.list_node_source(leaves)
    assert merkle.subtree_root(node, begin, end) == ref_mth(leaves[begin:end])
    if end - begin == 1 << level:
        assert node(level, index) == ref_mth(leaves[begin:end])


def test_proofs_of_what_is_not_in_the_tree_are_refused() -> None:
    leaves = make_leaves(5)
    for index in (-1, 5, 99):
        with pytest.raises(ProofError, match="not in a tree of size 5"):
            merkle.inclusion_proof(leaves, index)
    for old_size in (0, 6):
        with pytest.raises(ProofError, match="no consistency proof"):
            merkle.consistency_proof(leaves, old_size)
    with pytest.raises(ValueError, match="empty range"):
        merkle.subtree_root(merkle.list_node_source(leaves), 3, 3)


# ---------------------------------------------------------------- inclusion: refusals


@FAST
@given(case=tree_and_index(), bit=st.integers(0, 255), data=st.data())
def test_inclusion_refuses_any_flipped_bit(
    case: tuple[list[bytes], int], bit: int, data: st.DataObject
) -> None:
    leaves, index = case
    size, root = len(leaves), ref_mth(leaves)
    proof = ref_path(index, leaves)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(flip(leaves[index], bit), index, size, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[index], index, size, proof, flip(root, bit))
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:position], flip(proof[position], bit), *proof[position + 1 :]]
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, size, bad, root)


@FAST
@given(case=tree_and_index(), other=st.integers(0, 200))
def test_inclusion_refuses_another_index(case: tuple[list[bytes], int], other: int) -> None:
    leaves, index = case
    if other == index:
        other = index + 1
    proof = ref_path(index, leaves)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[index], other, len(leaves), proof, ref_mth(leaves))
    # Nor does the leaf that really is at the other index borrow this proof.
    if other < len(leaves):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[other], other, len(leaves), proof, ref_mth(leaves))


@FAST
@given(case=tree_and_index(), other_size=st.integers(1, 200))
def test_inclusion_refuses_another_tree_size(
    case: tuple[list[bytes], int], other_size: int
) -> None:
    leaves, index = case
    size = len(leaves)
    if other_size == size:
        other_size = size + 1
    proof = ref_path(index, leaves)
    more = make_leaves(max(size, other_size), 9)
    other_tree = [*leaves, *more][:other_size]
    if index < other_size:
        # Against the real root of a tree of that size, the proof never holds.
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, other_size, proof, ref_mth(other_tree))
    # Against this tree's own root, only the size decides the shape of the path: the
    # proof holds exactly when both sizes give the path the same shape (which is why
    # size and root must come together from a signed checkpoint).
    same_shape = index < other_size and ref_shape(index, other_size) == ref_shape(index, size)
    try:
        merkle.verify_inclusion(leaves[index], index, other_size, proof, ref_mth(leaves))
    except ProofError:
        assert not same_shape
    else:
        assert same_shape


@FAST
@given(case=tree_and_index(), extra=st.binary(min_size=32, max_size=32), data=st.data())
def test_inclusion_refuses_truncated_and_extended_proofs(
    case: tuple[list[bytes], int], extra: bytes, data: st.DataObject
) -> None:
    leaves, index = case
    size, root = len(leaves), ref_mth(leaves)
    proof = ref_path(index, leaves)
    if proof:
        cut = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, size, proof[:cut], root)
    for longer in ([*proof, extra], [extra, *proof], [*proof, *proof]):
        if longer != proof:
            with pytest.raises(ProofError):
                merkle.verify_inclusion(leaves[index], index, size, longer, root)


def test_inclusion_refuses_malformed_arguments() -> None:
    leaves = make_leaves(6)
    proof, root = ref_path(2, leaves), ref_mth(leaves)
    merkle.verify_inclusion(leaves[2], 2, 6, proof, root)
    bad_calls = [
        (leaves[2][:31], 2, 6, proof, root),
        (leaves[2], 2, 6, [proof[0][:31], *proof[1:]], root),
        (leaves[2], 2, 6, [proof[0] + b"\x00", *proof[1:]], root),
        (leaves[2], 2, 6, proof, root[:16]),
        (leaves[2], -1, 6, proof, root),
        (leaves[2], 6, 6, proof, root),
        (leaves[2], 0, 0, [], merkle.EMPTY_ROOT),
        (leaves[2].hex(), 2, 6, proof, root),
    ]
    for arguments in bad_calls:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*arguments)  # type: ignore[arg-type]


# ---------------------------------------------------------------- consistency: refusals


@FAST
@given(case=tree_and_old_size(), bit=st.integers(0, 255), data=st.data())
def test_consistency_refuses_any_flipped_bit(
    case: tuple[list[bytes], int], bit: int, data: st.DataObject
) -> None:
    leaves, old_size = case
    size = len(leaves)
    old_root, new_root = ref_mth(leaves[:old_size]), ref_mth(leaves)
    proof = ref_proof(old_size, leaves)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old_size, size, flip(old_root, bit), new_root, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old_size, size, old_root, flip(new_root, bit), proof)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:position], flip(proof[position], bit), *proof[position + 1 :]]
        with pytest.raises(ProofError):
            merkle.verify_consistency(old_size, size, old_root, new_root, bad)


@FAST
@given(case=tree_and_old_size(), sizes_=st.tuples(st.integers(1, 200), st.integers(1, 200)))
def test_consistency_refuses_other_sizes(
    case: tuple[list[bytes], int], sizes_: tuple[int, int]
) -> None:
    leaves, old_size = case
    size = len(leaves)
    other_old, other_new = sorted(sizes_)
    if (other_old, other_new) == (old_size, size) or (other_old == other_new and old_size == size):
        other_new += 1
    proof = ref_proof(old_size, leaves)
    whole = [*leaves, *make_leaves(max(other_new - size, 0), 9)]
    with pytest.raises(ProofError):
        merkle.verify_consistency(
            other_old, other_new, ref_mth(whole[:other_old]), ref_mth(whole[:other_new]), proof
        )


@FAST
@given(case=tree_and_old_size(), extra=st.binary(min_size=32, max_size=32), data=st.data())
def test_consistency_refuses_truncated_and_extended_proofs(
    case: tuple[list[bytes], int], extra: bytes, data: st.DataObject
) -> None:
    leaves, old_size = case
    size = len(leaves)
    old_root, new_root = ref_mth(leaves[:old_size]), ref_mth(leaves)
    proof = ref_proof(old_size, leaves)
    if proof:
        cut = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            merkle.verify_consistency(old_size, size, old_root, new_root, proof[:cut])
    for longer in ([*proof, extra], [extra, *proof]):
        with pytest.raises(ProofError):
            merkle.verify_consistency(old_size, size, old_root, new_root, longer)


def test_consistency_refuses_impossible_sizes_and_malformed_hashes() -> None:
    leaves = make_leaves(7)
    roots = {n: ref_mth(leaves[:n]) for n in range(8)}
    proof = ref_proof(3, leaves)
    merkle.verify_consistency(3, 7, roots[3], roots[7], proof)
    merkle.verify_consistency(7, 7, roots[7], roots[7], [])
    bad_calls = [
        (0, 7, roots[0], roots[7], proof),  # nothing is proved about the empty tree
        (0, 0, roots[0], roots[0], []),
        (7, 3, roots[7], roots[3], proof),  # shrinking
        (-1, 7, roots[3], roots[7], proof),
        (7, 7, roots[7], roots[7], proof),  # equal sizes take an empty proof
        (7, 7, roots[7], roots[6], []),  # ...and equal roots
        (3, 7, roots[3], roots[7], []),
        (3, 7, roots[3][:31], roots[7], proof),
        (3, 7, roots[3], roots[7] + b"\x00", proof),
        (3, 7, roots[3], roots[7], [proof[0][:31], *proof[1:]]),
    ]
    for arguments in bad_calls:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*arguments)


# ---------------------------------------------------------------- compact ranges


@FAST
@given(size=st.integers(0, 300), data=st.data())
def test_compact_range_holds_the_decomposition_of_its_range(size: int, data: st.DataObject) -> None:
    leaves = make_leaves(size)
    begin = data.draw(st.integers(0, size))
    compact = merkle.CompactRange.of(leaves[begin:], begin)
    assert (compact.begin, compact.end) == (begin, size)
    expected = [
        (level, ref_mth(leaves[index << level : (index + 1) << level]))
        for level, index in merkle.decompose(begin, size)
    ]
    assert compact.hashes == expected


@FAST
@given(begin=st.integers(0, 5000), length=st.integers(0, 5000))
def test_decompose_is_the_fewest_aligned_perfect_subtrees(begin: int, length: int) -> None:
    end = begin + length
    nodes = merkle.decompose(begin, end)
    position = begin
    for level, index in nodes:
        assert index << level == position  # aligned, contiguous, left to right
        position += 1 << level
    assert position == end
    for (left_level, left_index), (right_level, _) in zip(nodes, nodes[1:], strict=False):
        # Two siblings side by side would have been one node of the level above.
        assert not (left_level == right_level and left_index % 2 == 0)
    levels = [level for level, _ in nodes]
    # Strictly rising from the left edge, then strictly falling to the right edge.
    assert any(
        levels[:cut] == sorted(set(levels[:cut]))
        and levels[cut:] == sorted(set(levels[cut:]), reverse=True)
        for cut in range(len(levels) + 1)
    )
    if begin == 0:
        assert len(nodes) == bin(end).count("1")


@FAST
@given(size=st.integers(0, 300), data=st.data())
def test_joined_ranges_give_the_root_of_the_concatenation(size: int, data: st.DataObject) -> None:
    leaves = make_leaves(size)
    a = data.draw(st.integers(0, size))
    b = data.draw(st.integers(a, size))
    joined = merkle.CompactRange.of(leaves[:a])
    middle = merkle.CompactRange.of(leaves[a:b], a)
    joined.extend(middle)
    right = merkle.CompactRange(b)
    for level, index in merkle.decompose(b, size):
        right.append_subtree(level, ref_mth(leaves[index << level : (index + 1) << level]))
    joined.extend(right)
    assert joined.end == size
    assert joined.root() == ref_mth(leaves)
    # Extending never changes the range it was extended with.
    assert (middle.begin, middle.end) == (a, b)


@FAST
@given(size=st.integers(1, 300), cut=st.data())
def test_copy_is_independent_and_every_prefix_root_is_right(size: int, cut: st.DataObject) -> None:
    leaves = make_leaves(size)
    at = cut.draw(st.integers(0, size))
    compact = merkle.CompactRange.of(leaves[:at])
    frozen = compact.copy()
    for leaf in leaves[at:]:
        compact.append(leaf)
    assert frozen.root() == ref_mth(leaves[:at])
    assert compact.root() == ref_mth(leaves)


@FAST
@given(size=st.integers(0, 300))
def test_visitor_sees_every_completed_node_once_with_its_hash(size: int) -> None:
    leaves = make_leaves(size)
    seen: list[tuple[int, int, bytes]] = []
    compact = merkle.CompactRange()
    for leaf in leaves:
        compact.append(leaf, lambda level, index, value: seen.append((level, index, value)))
    expected = {
        (level, index) for level in range(1, size.bit_length()) for index in range(size >> level)
    }
    assert sorted((level, index) for level, index, _ in seen) == sorted(expected)
    for level, index, value in seen:
        assert value == ref_mth(leaves[index << level : (index + 1) << level])


def test_compact_range_refuses_what_does_not_fit() -> None:
    leaves = make_leaves(8)
    compact = merkle.CompactRange.of(leaves[:3])
    with pytest.raises(ProofError, match="cannot start at leaf 3"):
        compact.append_subtree(1, ref_mth(leaves[3:5]))
    assert (compact.end, compact.root()) == (3, ref_mth(leaves[:3]))  # unchanged
    with pytest.raises(ProofError, match="cannot follow"):
        compact.extend(merkle.CompactRange.of(leaves[4:6], 4))
    with pytest.raises(ProofError, match="cannot follow"):
        compact.extend(merkle.CompactRange.of(leaves[2:6], 2))
    assert compact.end == 3
    with pytest.raises(ProofError, match="starting at leaf 0"):
        merkle.CompactRange.of(leaves[2:5], 2).root()
    assert merkle.CompactRange().root() == merkle.EMPTY_ROOT
