"""Digest end to end in the core: SHA-256 and SHA-512-256 challenges answered and verified by a
real far end (the carrier simulator's authenticator, or sipstack.auth.verify_authorization)."""

from __future__ import annotations

import random

import pytest

from carrier.auth import DigestAuthenticator
from carrier.config import CarrierConfig
from carrier.core import CarrierCore
from sipstack.auth import (
    QOP_AUTH,
    DigestAlgorithm,
    DigestChallenge,
    parse_authorization,
    verify_authorization,
)
from sipstack.cdr import Disposition
from sipstack.dial import Credentials
from sipstack.events import LegEnded
from sipstack.transport import Transport
from tests.fakes import LOCAL, TRUNK, FarEnd, Harness, dial_request

STRONG = [DigestAlgorithm.SHA_256, DigestAlgorithm.SHA_512_256]
REALM = "carrier.example"


def pipe(h: Harness, carrier: CarrierCore) -> None:
    """Carry every pending message both ways until both sides are quiet."""
    while True:
        to_carrier = h.flush()
        for sent in to_carrier:
            assert sent.out.address == TRUNK
            carrier.receive(sent.out.data, LOCAL, sent.out.transport, h.now)
        from_carrier = carrier.outgoing()
        for out in from_carrier:
            h.core.receive(out.data, TRUNK, Transport.UDP, h.now)
        if not to_carrier and not from_carrier:
            return


@pytest.mark.parametrize("algorithm", STRONG, ids=str)
def test_the_carrier_simulator_accepts_our_answer_to_its_challenge(
    algorithm: DigestAlgorithm,
) -> None:
    h = Harness()
    config = CarrierConfig(challenge=True, ring=0.0, local_address=TRUNK, realm=REALM)
    authenticator = DigestAuthenticator(
        realm=REALM, username="outbound", password="s3cret", algorithm=algorithm
    )
    carrier = CarrierCore(config, rng=random.Random(3), authenticator=authenticator)
    call_id = h.core.dial(
        dial_request(credentials=Credentials(username="outbound", password="s3cret")), h.now
    )
    pipe(h, carrier)
    assert carrier.stats.challenged == 1 and carrier.stats.auth_failed == 0
    first, second = h.sent_requests("INVITE")
    assert first.request.header("authorization") is None
    creds = parse_authorization(second.request.header("authorization") or "")
    assert creds.algorithm is algorithm
    assert len(creds.response) == 64  # a 256-bit digest, not MD5's 128
    assert creds.qop == QOP_AUTH and creds.nc == 1
    assert carrier.stats.calls == 1 and carrier.stats.answered == 1
    assert h.core.confirm_answer(call_id, h.now)
    h.core.bye(call_id, h.now)
    pipe(h, carrier)
    ended = h.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.disposition is Disposition.ANSWERED and ended.cdr.error is None
    assert carrier.stats.caller_hangups == 1 and carrier.active_calls == 0


@pytest.mark.parametrize("algorithm", STRONG, ids=str)
def test_a_proxy_challenge_is_answered_on_the_invite_and_every_later_request(
    algorithm: DigestAlgorithm,
) -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial(credentials=Credentials(username="alice", password="pw", realm=REALM))
    challenge = DigestChallenge(
        realm=REALM, nonce="n-407", opaque="op", algorithm=algorithm, qop=(QOP_AUTH,)
    )
    h.deliver(
        far.respond(h.last("INVITE"), 407, headers=[("Proxy-Authenticate", challenge.render())])
    )
    invite = h.last("INVITE")
    creds = parse_authorization(invite.header("proxy-authorization") or "")
    assert (creds.algorithm, creds.realm, creds.nonce, creds.opaque) == (
        algorithm,
        REALM,
        "n-407",
        "op",
    )
    assert creds.uri == invite.uri and creds.nc == 1
    assert verify_authorization(creds, password="pw", method="INVITE", username="alice")
    assert not verify_authorization(creds, password="wrong", method="INVITE")
    h.deliver(far.answer(invite))
    assert h.core.confirm_answer(call_id, h.now)
    h.core.bye(call_id, h.now)
    h.flush()
    bye = h.last("BYE")
    bye_creds = parse_authorization(bye.header("proxy-authorization") or "")
    assert bye_creds.algorithm is algorithm and bye_creds.nc == 2  # same nonce, next count
    assert bye_creds.cnonce != creds.cnonce
    assert verify_authorization(bye_creds, password="pw", method="BYE", username="alice")
    h.deliver(far.respond(bye, 200))
    assert isinstance(h.terminal(call_id), LegEnded)
