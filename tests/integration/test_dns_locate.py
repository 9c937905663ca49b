"""RFC 3263 location against a real DNS server: dnsmasq on loopback, dnspython, the sans-IO
locator and its TTL cache under a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipstack.locate import Query, RRType
from sipstack.transport import Transport
from tests.clock import FakeClock
from tests.dnsmasq import Dnsmasq
from tests.sipp.harness import free_ports
from workers.dns_locate import DnsLocator, DnsLookupError

D = "carrier.test"
UDP, TCP = Transport.UDP, Transport.TCP
RECORDS = [
    f"--naptr-record={D},20,10,s,SIP+D2U,,_sip._udp.{D}",
    f"--naptr-record={D},10,10,s,SIP+D2T,,_sip._tcp.{D}",
    f"--naptr-record={D},5,10,s,SIP+D2S,,_sip._sctp.{D}",
    f"--srv-host=_sip._tcp.{D},tcp1.{D},5070,10,0",
    f"--srv-host=_sip._udp.{D},udp1.{D},5080,10,60",
    f"--srv-host=_sip._udp.{D},udp2.{D},5081,10,30",
    f"--srv-host=_sip._udp.{D},udp3.{D},5082,10,10",
    f"--srv-host=_sip._udp.{D},backup.{D},5090,20,0",
    f"--host-record=tcp1.{D},127.0.0.11",
    f"--host-record=udp1.{D},127.0.0.21,::1",
    f"--host-record=udp2.{D},127.0.0.22",
    f"--host-record=udp3.{D},127.0.0.23",
    f"--host-record=backup.{D},127.0.0.29",
    f"--host-record=plain.{D},127.0.0.30",
]


class CountingLocator(DnsLocator):
    """Records every question that reached the server."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.asked: list[Query] = []

    def query(self, query: Query):  # type: ignore[no-untyped-def]
        self.asked.append(query)
        return super().query(query)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Dnsmasq]:
    dnsmasq = Dnsmasq(tmp_path, D, RECORDS, ttl=5).start()
    try:
        yield dnsmasq
    finally:
        dnsmasq.stop()


def test_naptr_srv_a_chain(server: Dnsmasq) -> None:
    locator = CountingLocator(server.nameserver, rng=random.Random(7), clock=FakeClock())
    result = locator.locate(f"sip:+15551234567@{D}")
    targets = [(t.address, t.transport) for t in result.targets]
    assert targets[0] == (("127.0.0.11", 5070), TCP)  # NAPTR order 10 (D2S skipped)
    udp = targets[1:]
    assert {t for t, _ in udp[:-1]} == {
        ("127.0.0.21", 5080),
        ("::1", 5080),
        ("127.0.0.22", 5081),
        ("127.0.0.23", 5082),
    }
    assert udp[-1] == (("127.0.0.29", 5090), UDP)  # priority 20 last
    assert {t.domain for t in result.targets} == {D}
    assert locator.asked[:2] == [Query(D, RRType.NAPTR), Query(f"_sip._tcp.{D}", RRType.SRV)]
    assert Query(f"_sip._sctp.{D}", RRType.SRV) not in locator.asked
    assert result.expires_at == pytest.approx(FakeClock().now + 5)


def test_srv_weights_distribution_with_a_seeded_rng(server: Dnsmasq) -> None:
    clock = FakeClock()
    locator = CountingLocator(server.nameserver, rng=random.Random(2782), clock=clock)
    firsts: Counter[str] = Counter()
    for _ in range(3000):  # answers come from the cache after the first round
        result = locator.locate(f"sip:{D};transport=udp")
        firsts[result.targets[0].address[0]] += 1
        assert result.targets[-1].address == ("127.0.0.29", 5090)
    assert len(locator.asked) == 1 + 4 * 2  # SRV, then A and AAAA of 4 targets, once each
    share = {ip: n / 3000 for ip, n in firsts.items()}
    # udp1 (weight 60) is first 60% of the time, but its A record comes before its AAAA.
    assert share["127.0.0.21"] == pytest.approx(0.6, abs=0.03)
    assert share["127.0.0.22"] == pytest.approx(0.3, abs=0.03)
    assert share["127.0.0.23"] == pytest.approx(0.1, abs=0.02)
    assert "127.0.0.29" not in share
    again = CountingLocator(server.nameserver, rng=random.Random(2782), clock=clock)
    assert (
        again.locate(f"sip:{D};transport=udp").targets
        == DnsLocator(server.nameserver, rng=random.Random(2782), clock=clock)
        .locate(f"sip:{D};transport=udp")
        .targets
    )


def test_ttl_expiry_picks_up_changed_records(server: Dnsmasq) -> None:
    clock = FakeClock()
    locator = CountingLocator(server.nameserver, rng=random.Random(1), clock=clock)
    uri = f"sip:{D};transport=tcp"
    assert [t.address for t in locator.locate(uri).targets] == [("127.0.0.11", 5070)]
    server.restart(
        [f"--srv-host=_sip._tcp.{D},tcp2.{D},5075,10,0", f"--host-record=tcp2.{D},127.0.0.12"]
    )
    # Fresh look-ups already see the change, but the cache keeps the old answer for its TTL.
    fresh = DnsLocator(server.nameserver, rng=random.Random(1), clock=clock)
    assert [t.address for t in fresh.locate(uri).targets] == [("127.0.0.12", 5075)]
    asked = len(locator.asked)
    clock.advance(4.9)
    assert [t.address for t in locator.locate(uri).targets] == [("127.0.0.11", 5070)]
    assert len(locator.asked) == asked
    clock.advance(0.1)
    assert [t.address for t in locator.locate(uri).targets] == [("127.0.0.12", 5075)]
    assert locator.asked[asked] == Query(f"_sip._tcp.{D}", RRType.SRV)


def test_explicit_port_skips_naptr_and_srv(server: Dnsmasq) -> None:
    locator = CountingLocator(server.nameserver, rng=random.Random(1), clock=FakeClock())
    result = locator.locate(f"sip:udp1.{D}:5999")
    assert [(t.address, t.transport) for t in result.targets] == [
        (("127.0.0.21", 5999), UDP),
        (("::1", 5999), UDP),
    ]
    assert [q.rrtype for q in locator.asked] == [RRType.A, RRType.AAAA]


def test_no_srv_falls_back_to_a_on_the_default_port(server: Dnsmasq) -> None:
    locator = CountingLocator(server.nameserver, rng=random.Random(1), clock=FakeClock())
    result = locator.locate(f"sip:plain.{D}")
    assert [(t.address, t.transport) for t in result.targets] == [(("127.0.0.30", 5060), UDP)]
    assert [q.rrtype for q in locator.asked] == [
        RRType.NAPTR,
        RRType.SRV,
        RRType.SRV,
        RRType.A,
        RRType.AAAA,
    ]


def test_numeric_ip_skips_dns() -> None:
    # Nothing listens at this nameserver: any question would fail with DnsLookupError.
    locator = CountingLocator(f"127.0.0.1:{free_ports()}", timeout=0.5, clock=FakeClock())
    result = locator.locate("sip:127.0.0.5:5070;transport=tcp")
    assert [(t.address, t.transport) for t in result.targets] == [(("127.0.0.5", 5070), TCP)]
    assert locator.asked == []


def test_a_dead_server_raises_naming_the_question() -> None:
    locator = DnsLocator(f"127.0.0.1:{free_ports()}", timeout=0.3, clock=FakeClock())
    with pytest.raises(DnsLookupError, match=f"NAPTR {D}"):
        locator.locate(f"sip:{D}")


def test_asyncio_resolution(server: Dnsmasq) -> None:
    locator = DnsLocator(server.nameserver, rng=random.Random(7), clock=FakeClock())
    result = asyncio.run(locator.alocate(f"sip:{D};transport=tcp"))
    assert [t.address for t in result.targets] == [("127.0.0.11", 5070)]


def test_bad_nameserver_is_named() -> None:
    with pytest.raises(ValueError, match="port"):
        DnsLocator("127.0.0.1:notaport")


def test_negative_answers_are_cached_for_the_soa_minimum() -> None:
    # dnsmasq's --local answers carry no SOA, so this path is checked on a built response.
    import dns.message
    import dns.rrset

    from workers.dns_locate import _negative_ttl

    response = dns.message.make_response(dns.message.make_query("nope.carrier.test.", "A"))
    assert _negative_ttl(response, 30.0) == 30.0  # no SOA: the configured default
    response.authority.append(
        dns.rrset.from_text(
            "carrier.test.", 300, "IN", "SOA", "ns.carrier.test. h.carrier.test. 1 60 60 600 12"
        )
    )
    assert _negative_ttl(response, 30.0) == 12.0  # min(SOA TTL 300, minimum 12)
