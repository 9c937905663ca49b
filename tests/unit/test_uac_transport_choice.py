"""RFC 3261 §18.1.1: a request over 1300 bytes (path MTU unknown) must not go over UDP; it
goes over TCP unless the trunk is UDP only."""

from __future__ import annotations

import pytest

from sipstack.transport import Transport, transport_for_request
from tests.fakes import Harness, core_config

BIG_IDENTITY = "x" * 1400  # an RFC 8224 Identity alone pushes the INVITE past 1300 bytes


def test_a_small_invite_stays_on_udp() -> None:
    h = Harness()
    h.dial()
    [sent] = h.sent_requests("INVITE")
    assert len(sent.out.data) <= 1300
    assert sent.out.transport is Transport.UDP


def test_an_invite_over_1300_bytes_goes_over_tcp() -> None:
    h = Harness()
    h.dial(identity_header=BIG_IDENTITY)
    [sent] = h.sent_requests("INVITE")
    assert len(sent.out.data) > 1300
    assert sent.out.transport is Transport.TCP
    invite = sent.request
    assert (invite.header("via") or "").startswith("SIP/2.0/TCP ")
    assert ";transport=tcp" in (invite.header("contact") or "")


@pytest.mark.parametrize("where", ["request", "config"])
def test_a_udp_only_trunk_keeps_a_large_invite_on_udp(where: str) -> None:
    if where == "config":
        h = Harness(config=core_config(udp_only=True))
        h.dial(identity_header=BIG_IDENTITY)
    else:
        h = Harness()
        h.dial(identity_header=BIG_IDENTITY, udp_only=True)
    [sent] = h.sent_requests("INVITE")
    assert sent.out.transport is Transport.UDP


def test_transport_for_request_rules() -> None:
    assert transport_for_request(Transport.UDP, 1300) is Transport.UDP
    assert transport_for_request(Transport.UDP, 1301) is Transport.TCP
    assert transport_for_request(Transport.UDP, 1301, udp_only=True) is Transport.UDP
    assert transport_for_request(Transport.UDP, 1301, path_mtu=9000) is Transport.UDP
    assert transport_for_request(Transport.UDP, 1400, path_mtu=1500) is Transport.TCP
    assert transport_for_request(Transport.TLS, 5000) is Transport.TLS
    assert transport_for_request(Transport.TCP, 100) is Transport.TCP
