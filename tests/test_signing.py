"""Signed approval decisions and approver chains, without a server."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.test_policy import PENDING
from tether.errors import ApprovalError, PolicyError
from tether.governance.approvals import ApprovalDecision, check_binding, parse_chain
from tether.governance.signing import public_hex, sign_decision, verify_decision

KEY = Ed25519PrivateKey.generate()
TRUSTED = [public_hex(KEY)]


def _decision(**changes: object) -> ApprovalDecision:
    base = ApprovalDecision.for_request(PENDING, "user:alice", True, "ok", nonce="n-1")
    return base.model_copy(update=changes)


def test_a_signed_decision_verifies_and_binds_to_its_request() -> None:
    signed = sign_decision(_decision(), KEY)
    assert verify_decision(signed, TRUSTED) == ""
    check_binding(PENDING, signed)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "apr-2"),
        ("workflow_id", "wf-other"),
        ("run_id", "run-2"),
        ("step", 4),
        ("args_digest", "sha256:def"),
        ("policy_version", "sha256:ffff"),
        ("approver", "user:dave"),
        ("approve", False),
        ("comment", "changed"),
        ("issued_at", "2030-01-01T00:00:00+00:00"),
        ("nonce", "n-2"),
    ],
)
def test_changing_any_signed_field_breaks_the_signature(field: str, value: object) -> None:
    tampered = sign_decision(_decision(), KEY).model_copy(update={field: value})
    assert "does not verify" in verify_decision(tampered, TRUSTED)


def test_unsigned_and_untrusted_decisions_are_refused() -> None:
    assert "not signed" in verify_decision(_decision(), TRUSTED)
    stranger = sign_decision(_decision(), Ed25519PrivateKey.generate())
    assert "do not trust" in verify_decision(stranger, TRUSTED)
    assert "does not verify" in verify_decision(
        sign_decision(_decision(), KEY).model_copy(update={"signature": "zz"}), TRUSTED
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("step", 9), ("args_digest", "sha256:other"), ("policy_version", "sha256:old")],
)
def test_a_decision_for_another_step_or_arguments_does_not_bind(field: str, value: object) -> None:
    with pytest.raises(ApprovalError, match=field):
        check_binding(PENDING, _decision(**{field: value}))


def test_the_same_person_cannot_fill_a_quorum_twice() -> None:
    pending = PENDING.model_copy(update={"quorum": 2, "approved_by": ["user:alice"]})
    with pytest.raises(ApprovalError, match="distinct people"):
        check_binding(pending, _decision())


@pytest.mark.parametrize(
    ("field", "chain"),
    [
        ("role:ap-approver", [("role:ap-approver", 1)]),
        ("role:treasury#2", [("role:treasury", 2)]),
        ("role:a#2>role:b>role:c#3", [("role:a", 2), ("role:b", 1), ("role:c", 3)]),
    ],
)
def test_approver_chains_parse(field: str, chain: list[tuple[str, int]]) -> None:
    assert parse_chain(field) == chain


@pytest.mark.parametrize("field", ["", "role:a>", "role:a#0", "role:a#x", "role:a#100", "a b"])
def test_bad_approver_chains_name_the_value(field: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_chain(field)
    assert repr(field) in str(raised.value)
