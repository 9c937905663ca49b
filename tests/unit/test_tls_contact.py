"""Advertise only what we listen on (RFC 3261 §8.1.1.8, §18.2.1): no TLS listener, no TLS
Contact on port 5061 where nothing listens: the dial is refused and says why; with a TLS
listener its address is the Contact and Via. A big INVITE (§18.1.1) moves to TCP only when
there is a TCP address to name."""

from __future__ import annotations

import pytest

from sipstack.errors import LocalProtocolError
from sipstack.transport import Transport
from tests.fakes import Harness, core_config

UDP_ONLY_LISTENER = {Transport.UDP: ("192.0.2.1", 5060)}


def test_dialing_tls_without_a_tls_listener_is_refused_with_a_clear_error() -> None:
    h = Harness(config=core_config(local_addresses=UDP_ONLY_LISTENER))
    with pytest.raises(LocalProtocolError, match="no TLS listener"):
        h.dial(request_uri="sips:+15550001@carrier.example", signaling_addr="192.0.2.10")
    assert h.sent_requests("INVITE") == []
    with pytest.raises(LocalProtocolError, match="no TLS listener"):
        h.dial(signaling_addr="192.0.2.10", transport=Transport.TLS)
    assert h.core.leg_count == 0


def test_a_tls_listener_is_what_the_contact_and_via_name() -> None:
    h = Harness(config=core_config(local_addresses={
        **UDP_ONLY_LISTENER, Transport.TLS: ("192.0.2.1", 5071),
    }))  # fmt: skip
    h.dial(request_uri="sips:+15550001@carrier.example", signaling_addr="192.0.2.10")
    invite = h.last("INVITE")
    assert (invite.header("via") or "").startswith("SIP/2.0/TLS 192.0.2.1:5071;branch=")
    assert invite.header("contact") == "<sips:outbound@192.0.2.1:5071>"


def test_a_big_invite_stays_on_udp_without_a_tcp_address_to_name() -> None:
    h = Harness(config=core_config(local_addresses=UDP_ONLY_LISTENER))
    h.dial(identity_header="x" * 1400)
    [sent] = h.sent_requests("INVITE")
    assert len(sent.out.data) > 1300 and sent.out.transport is Transport.UDP
    assert ":5060;transport=tcp" not in (sent.request.header("contact") or "")


def test_with_connection_reuse_a_tls_dial_without_a_listener_goes_out_with_alias() -> None:
    h = Harness(config=core_config(local_addresses=UDP_ONLY_LISTENER, tls_connection_reuse=True))
    h.dial(request_uri="sips:+15550001@carrier.example", signaling_addr="192.0.2.10")
    [sent] = h.sent_requests("INVITE")
    assert sent.out.transport is Transport.TLS
    assert (sent.request.header("via") or "").endswith(";rport;alias")
