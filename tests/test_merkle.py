"""RFC 6962 Merkle tree: proofs verify for every leaf and size; any change breaks them."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from tether.verification import merkle


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_known_vectors() -> None:
    # RFC 6962: the empty tree hashes to SHA-256 of nothing; one leaf is its leaf hash.
    assert merkle.root([]) == hashlib.sha256(b"").digest()
    one = merkle.leaf_hash(b"")
    assert one.hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle.root([one]) == one
    two = _leaves(2)
    assert merkle.root(two) == merkle.node_hash(two[0], two[1])
    three = _leaves(3)
    assert merkle.root(three) == merkle.node_hash(merkle.node_hash(three[0], three[1]), three[2])


def test_every_inclusion_and_consistency_proof_up_to_40() -> None:
    for n in range(1, 41):
        leaves = _leaves(n)
        root = merkle.root(leaves)
        for i in range(n):
            proof = merkle.inclusion_proof(leaves, i)
            assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
            assert not merkle.verify_inclusion(merkle.leaf_hash(b"x"), i, n, proof, root)
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(leaves, m)
            assert merkle.verify_consistency(m, n, proof, merkle.root(leaves[:m]), root)


@given(
    n=st.integers(min_value=2, max_value=300),
    data=st.data(),
)
def test_tampered_proofs_fail(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    root = merkle.root(leaves)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle.inclusion_proof(leaves, i)
    assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
    if proof:
        j = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = [*proof]
        bad[j] = hashlib.sha256(bad[j]).digest()
        assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)
    other = (i + 1) % n
    assert (
        not merkle.verify_inclusion(leaves[i], other, n, proof, root) or leaves[i] == leaves[other]
    )
    m = data.draw(st.integers(min_value=1, max_value=n - 1))
    cproof = merkle.consistency_proof(leaves, m)
    old_root = merkle.root(leaves[:m])
    assert merkle.verify_consistency(m, n, cproof, old_root, root)
    # A tree that rewrote any of the first m leaves is not an extension of the old one.
    k = data.draw(st.integers(min_value=0, max_value=m - 1))
    rewritten = [*leaves]
    rewritten[k] = merkle.leaf_hash(b"forged")
    assert not merkle.verify_consistency(m, n, cproof, old_root, merkle.root(rewritten))
