"""RFC 9162 Merkle tree hashing, proofs and proof verification — pure functions.

Hashes are raw 32-byte SHA-256 digests in and out. A leaf is ``SHA-256(0x00 || data)``,
an interior node ``SHA-256(0x01 || left || right)`` and the root of the empty tree
``SHA-256("")`` (RFC 9162 §2.1.1).

Proof construction works over any *node source*: a function ``node(level, index)`` that
returns the hash of the perfect subtree covering leaves ``[index·2^level,
(index+1)·2^level)``. The list-based functions (``inclusion_proof(leaf_hashes, i)``)
build one from a list; the ledger builds one from its on-disk index. Verification needs
no storage at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from audit.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeSource = Callable[[int, int], bytes]
"""``node(level, index)``: hash of the perfect subtree of ``2**level`` leaves at ``index``."""

NodeVisitor = Callable[[int, int, bytes], None]
"""``visit(level, index, hash)``: called for each interior node a :class:`CompactRange`
completes while appending."""


def leaf_hash(data: bytes) -> bytes:
    """Hash of a leaf: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an interior node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (``size >= 2``)."""
    return 1 << ((size - 1).bit_length() - 1)


def subtree_root(node: NodeSource, begin: int, end: int) -> bytes:
    """Root of leaves ``[begin, end)``, where ``begin`` is a multiple of a power of two
    that is at least ``end - begin`` (every range RFC 9162's recursion visits is)."""
    if end <= begin:
        raise ValueError("empty range has no subtree root")
    parts: list[bytes] = []
    position = begin
    remaining = end - begin
    while remaining:
        level = remaining.bit_length() - 1
        parts.append(node(level, position >> level))
        position += 1 << level
        remaining -= 1 << level
    result = parts[-1]
    for left in reversed(parts[:-1]):
        result = node_hash(left, result)
    return result


def root_from(node: NodeSource, size: int) -> bytes:
    """Root of the tree of the first ``size`` leaves."""
    return EMPTY_ROOT if size == 0 else subtree_root(node, 0, size)


def inclusion_proof_from(node: NodeSource, index: int, size: int) -> list[bytes]:
    """Audit path for leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    begin, end = 0, size
    while end - begin > 1:
        k = _split(end - begin)
        if index < begin + k:
            path.append(subtree_root(node, begin + k, end))
            end = begin + k
        else:
            path.append(subtree_root(node, begin, begin + k))
            begin += k
    path.reverse()
    return path


def consistency_proof_from(node: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof between tree sizes ``old_size`` and ``new_size`` (§2.1.4.1)."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == new_size:
        return []
    proof: list[bytes] = []
    begin, end, m, complete = 0, new_size, old_size, True
    while m != end - begin:
        k = _split(end - begin)
        if m <= k:
            proof.append(subtree_root(node, begin + k, end))
            end = begin + k
        else:
            proof.append(subtree_root(node, begin, begin + k))
            begin += k
            m -= k
            complete = False
    if not complete:
        proof.append(subtree_root(node, begin, end))
    proof.reverse()
    return proof


def list_node_source(leaf_hashes: Sequence[bytes]) -> NodeSource:
    """A node source over an in-memory list of leaf hashes (O(2^level) per node)."""

    def node(level: int, index: int) -> bytes:
        begin = index << level
        if level == 0:
            return leaf_hashes[begin]
        half = 1 << (level - 1)
        return node_hash(node(level - 1, begin // half), node(level - 1, begin // half + 1))

    return node


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash of the given leaf hashes."""
    return CompactRange.of(leaf_hashes).root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for ``leaf_hashes[index]`` in the tree of all ``leaf_hashes``."""
    return inclusion_proof_from(list_node_source(leaf_hashes), index, len(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the tree of ``leaf_hashes[:old_size]`` is a prefix of the whole tree."""
    return consistency_proof_from(list_node_source(leaf_hashes), old_size, len(leaf_hashes))


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes")


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index`` (RFC 9162 §2.1.3.2)."""
    _check_hash(leaf, "leaf hash")
    if not 0 <= index < size:
        raise ProofError(f"index {index} is beyond tree size {size}")
    fn, sn, result = index, size - 1, leaf
    for element in proof:
        _check_hash(element, "proof element")
        if sn == 0:
            raise ProofError("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the tree is deep")
    return result


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows ``leaf`` at ``index`` under
    ``root_hash`` for a tree of ``size`` leaves."""
    _check_hash(root_hash, "root")
    if root_from_inclusion_proof(leaf, index, size, proof) != root_hash:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows the tree of ``old_size`` with
    ``old_root`` is a prefix of the tree of ``new_size`` with ``new_root`` (§2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"size {new_size} cannot extend size {old_size}")
    if old_size == 0:
        # RFC 9162 defines PROOF(m, D[n]) for 0 < m <= n: every tree extends the empty one.
        raise ProofError("a consistency proof must start from a non-empty tree")
    if old_size == new_size:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes but different roots")
        return
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for element in proof:
        _check_hash(element, "proof element")
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for element in path[1:]:
        if sn == 0:
            raise ProofError("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(element, fr)
            sr = node_hash(element, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the tree is deep")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")


class CompactRange:
    """The hashes that summarise leaves ``[begin, end)``: the fewest perfect subtrees
    covering the range, left to right. O(log n) memory for any number of leaves.

    Appending a leaf or an aligned subtree merges siblings as it goes, so a range from 0
    yields the tree root at any size, and ranges that meet can be joined
    (``CompactRange(0, a)`` + leaves ``[a, b)`` + ``CompactRange(b, n)`` = root of ``n``).
    """

    __slots__ = ("begin", "end", "_levels", "_hashes")

    def __init__(self, begin: int = 0) -> None:
        self.begin = begin
        self.end = begin
        self._levels: list[int] = []
        self._hashes: list[bytes] = []

    @classmethod
    def of(cls, leaf_hashes: Sequence[bytes], begin: int = 0) -> CompactRange:
        compact = cls(begin)
        for leaf in leaf_hashes:
            compact.append(leaf)
        return compact

    @property
    def hashes(self) -> list[tuple[int, bytes]]:
        """``(level, hash)`` of each subtree, left to right."""
        return list(zip(self._levels, self._hashes, strict=True))

    def append(self, leaf: bytes, visit: NodeVisitor | None = None) -> None:
        """Append one leaf hash; ``visit(level, index, hash)`` sees every node it completes."""
        self.append_subtree(0, leaf, visit)

    def append_subtree(
        self, level: int, subtree_hash: bytes, visit: NodeVisitor | None = None
    ) -> None:
        """Append the root of a perfect subtree of ``2**level`` leaves starting at ``end``."""
        if self.end % (1 << level):
            raise ProofError(f"a level-{level} subtree cannot start at leaf {self.end}")
        self.end += 1 << level
        levels, hashes = self._levels, self._hashes
        index = self.end >> level  # one past the new node's index
        while levels and levels[-1] == level and not index & 1:
            subtree_hash = node_hash(hashes.pop(), subtree_hash)
            levels.pop()
            level += 1
            index >>= 1
            if visit is not None:
                visit(level, index - 1, subtree_hash)
        levels.append(level)
        hashes.append(subtree_hash)

    def extend(self, other: CompactRange) -> None:
        """Join ``other``, which must start where this range ends."""
        if other.begin != self.end:
            raise ProofError(
                f"range starting at {other.begin} cannot follow one ending at {self.end}"
            )
        for level, subtree_hash in other.hashes:
            self.append_subtree(level, subtree_hash)

    def root(self) -> bytes:
        """Root of the tree ``[0, end)``; only for ranges that start at leaf 0."""
        if self.begin != 0:
            raise ProofError("only a range starting at leaf 0 has a tree root")
        if not self._hashes:
            return EMPTY_ROOT
        result = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            result = node_hash(left, result)
        return result

    def copy(self) -> CompactRange:
        twin = CompactRange(self.begin)
        twin.end = self.end
        twin._levels = list(self._levels)
        twin._hashes = list(self._hashes)
        return twin


def decompose(begin: int, end: int) -> list[tuple[int, int]]:
    """The ``(level, index)`` of the perfect subtrees that make up ``[begin, end)``,
    left to right — the nodes a :class:`CompactRange` of that range holds."""
    nodes: list[tuple[int, int]] = []
    position = begin
    while position < end:
        level = (position & -position).bit_length() - 1 if position else end.bit_length()
        while position + (1 << level) > end:
            level -= 1
        nodes.append((level, position >> level))
        position += 1 << level
    return nodes
