"""RFC 3261 §18.1.1 on the wire, decided in the core (sipstack.transport.transport_for_request):
which requests move to TCP, how their Via and Contact read, and that the rest of the
transaction (CANCEL, the ACK of a failure) and the dialog follow the INVITE there."""

from __future__ import annotations

import re

from sipstack.transport import Transport
from tests.fakes import FarEnd, Harness, establish

BIG_IDENTITY = "x" * 1300


def test_only_requests_over_1300_bytes_are_too_big() -> None:
    small, big = Harness(), Harness()
    small.dial()
    big.dial(identity_header=BIG_IDENTITY)
    [small_invite] = small.sent_requests("INVITE")
    [big_invite] = big.sent_requests("INVITE")
    assert len(small_invite.out.data) <= 1300 and small_invite.out.transport is Transport.UDP
    assert len(big_invite.out.data) > 1300 and big_invite.out.transport is Transport.TCP


def test_the_top_via_says_tcp_with_its_parameters_and_the_body_is_untouched() -> None:
    small, big = Harness(), Harness()
    small.dial()
    big.dial(identity_header=BIG_IDENTITY)
    invite = big.last("INVITE")
    via = invite.header("via") or ""
    assert re.fullmatch(r"SIP/2\.0/TCP 192\.0\.2\.1:5060;branch=z9hG4bK\w+;rport;alias", via), via
    assert invite.body.startswith(b"v=0\r\n")
    assert int(invite.header("content-length") or -1) == len(invite.body)
    assert small.last("INVITE").body.split(b"\r\n")[2:] == invite.body.split(b"\r\n")[2:]


def test_the_cancel_and_failure_ack_follow_the_invite_to_tcp_with_the_same_via() -> None:
    h, far = Harness(), FarEnd()
    call_id = h.dial(identity_header=BIG_IDENTITY)
    invite = h.last("INVITE")
    h.deliver(far.respond(invite, 180), transport=Transport.TCP)
    h.core.cancel(call_id, h.clock.now)
    h.flush()
    [cancel] = h.sent_requests("CANCEL")
    assert cancel.out.transport is Transport.TCP
    assert cancel.request.header("via") == invite.header("via")
    h.deliver(far.respond(cancel.request, 200), transport=Transport.TCP)
    h.deliver(far.respond(invite, 487), transport=Transport.TCP)
    [ack] = h.sent_requests("ACK")
    assert ack.out.transport is Transport.TCP and ack.request.header("via") == invite.header("via")
    assert all(s.out.transport is Transport.TCP for s in h.wire)


def _long_route_set(count: int = 6) -> tuple[str, ...]:
    return tuple(f"<sip:192.0.2.10;lr;hop={i}-{'r' * 200}>" for i in range(count))


def test_an_in_dialog_request_over_1300_bytes_goes_over_tcp_with_a_tcp_via() -> None:
    # A small INVITE (UDP leg) whose 200 brings a long route set: the BYE is too big for UDP.
    h, far = Harness(), FarEnd(record_route=_long_route_set())
    call_id, _ = establish(h, far)
    assert h.sent_requests("INVITE")[0].out.transport is Transport.UDP
    h.core.bye(call_id, h.clock.now)
    h.flush()
    [bye] = h.sent_requests("BYE")
    assert len(bye.out.data) > 1300 and bye.out.transport is Transport.TCP
    assert (bye.request.header("via") or "").startswith("SIP/2.0/TCP 192.0.2.1:5060;branch=")
    assert bye.out.address == h.sent_requests("INVITE")[0].out.address


def test_a_udp_only_leg_keeps_a_big_in_dialog_request_on_udp() -> None:
    h, far = Harness(), FarEnd(record_route=_long_route_set())
    call_id, _ = establish(h, far, udp_only=True)
    h.core.bye(call_id, h.clock.now)
    h.flush()
    [bye] = h.sent_requests("BYE")
    assert len(bye.out.data) > 1300 and bye.out.transport is Transport.UDP
