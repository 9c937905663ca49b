"""RFC 3263 server location, sans-IO (sipstack.locate): tables of DNS data in, targets out."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipstack.errors import SipParseError
from sipstack.locate import (
    AddressRecord,
    Answer,
    DnsCache,
    Locator,
    NaptrRecord,
    Query,
    Record,
    RRType,
    ServerTarget,
    SrvRecord,
    srv_order,
)
from sipstack.transport import Transport
from tests.clock import FakeClock

UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS
Zone = dict[tuple[str, RRType], tuple[Record, ...]]


def naptr(order: int, pref: int, service: str, replacement: str, flags: str = "s") -> NaptrRecord:
    return NaptrRecord(
        order=order, preference=pref, flags=flags, service=service, replacement=replacement
    )


def srv(priority: int, weight: int, port: int, target: str) -> SrvRecord:
    return SrvRecord(priority=priority, weight=weight, port=port, target=target)


def a(*addresses: str) -> tuple[Record, ...]:
    return tuple(AddressRecord(x) for x in addresses)


class FakeDns:
    """Answers from a zone table and records each question asked."""

    def __init__(self, zone: Zone, ttl: float = 60) -> None:
        self.zone = zone
        self.ttl = ttl
        self.asked: list[Query] = []

    def run(self, locator: Locator, now: float) -> list[ServerTarget]:
        while (query := locator.pending) is not None:
            self.asked.append(query)
            locator.feed(Answer(self.zone.get((query.name, query.rrtype), ()), self.ttl), now)
        return list(locator.result.targets)


ZONE: Zone = {
    ("example.com", RRType.NAPTR): (
        naptr(20, 10, "SIP+D2U", "_sip._udp.example.com."),
        naptr(10, 20, "SIP+D2T", "_sip._tcp.example.com."),
        naptr(10, 10, "SIPS+D2T", "_sips._tcp.example.com."),
        naptr(5, 10, "SIP+D2S", "_sip._sctp.example.com."),  # SCTP: not ours
        naptr(1, 10, "SIP+D2U", "ignored.example.com.", flags="a"),
    ),
    ("_sips._tcp.example.com", RRType.SRV): (srv(10, 0, 5061, "tls.example.com."),),
    ("_sip._tcp.example.com", RRType.SRV): (srv(10, 0, 5060, "tcp.example.com."),),
    ("_sip._udp.example.com", RRType.SRV): (
        srv(20, 0, 5080, "backup.example.com."),
        srv(10, 0, 5070, "udp.example.com."),
    ),
    ("tls.example.com", RRType.A): a("192.0.2.1"),
    ("tcp.example.com", RRType.A): a("192.0.2.2"),
    ("udp.example.com", RRType.A): a("192.0.2.3"),
    ("udp.example.com", RRType.AAAA): a("2001:db8::3"),
    ("backup.example.com", RRType.A): a("192.0.2.4"),
    ("plain.example.com", RRType.A): a("192.0.2.9"),
}


def locate(uri: str, zone: Zone = ZONE, **kwargs: object) -> tuple[list[ServerTarget], FakeDns]:
    dns = FakeDns(zone)
    locator = Locator(uri, 0.0, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]
    return dns.run(locator, 0.0), dns


def test_naptr_order_and_preference_then_srv_priority_then_addresses() -> None:
    targets, dns = locate("sip:+15551234567@example.com")
    assert [(t.address, t.transport) for t in targets] == [
        (("192.0.2.1", 5061), TLS),
        (("192.0.2.2", 5060), TCP),
        (("192.0.2.3", 5070), UDP),
        (("2001:db8::3", 5070), UDP),
        (("192.0.2.4", 5080), UDP),
    ]
    assert {t.domain for t in targets} == {"example.com"}
    assert dns.asked[0] == Query("example.com", RRType.NAPTR)
    assert Query("_sip._sctp.example.com", RRType.SRV) not in dns.asked


def test_sips_takes_only_sips_d2t() -> None:
    targets, _ = locate("sips:alice@example.com")
    assert [(t.address, t.transport) for t in targets] == [(("192.0.2.1", 5061), TLS)]


def test_supported_transports_filter_naptr() -> None:
    targets, _ = locate("sip:example.com", supported=(UDP,))
    assert [t.transport for t in targets] == [UDP, UDP, UDP]


def test_no_naptr_queries_srv_per_transport() -> None:
    zone: Zone = {
        ("_sip._tcp.b.example", RRType.SRV): (srv(1, 0, 5062, "t.b.example"),),
        ("t.b.example", RRType.A): a("192.0.2.20"),
    }
    targets, dns = locate("sip:b.example", zone)
    assert [q for q in dns.asked if q.rrtype is RRType.SRV] == [
        Query("_sip._udp.b.example", RRType.SRV),
        Query("_sip._tcp.b.example", RRType.SRV),
    ]
    assert [(t.address, t.transport) for t in targets] == [(("192.0.2.20", 5062), TCP)]


def test_no_srv_falls_back_to_a_with_the_default_port() -> None:
    targets, _ = locate("sip:plain.example.com")
    assert [(t.address, t.transport) for t in targets] == [(("192.0.2.9", 5060), UDP)]
    targets, _ = locate("sips:plain.example.com")
    assert [(t.address, t.transport) for t in targets] == [(("192.0.2.9", 5061), TLS)]


def test_transport_param_skips_naptr() -> None:
    targets, dns = locate("sip:example.com;transport=tcp")
    assert dns.asked[0] == Query("_sip._tcp.example.com", RRType.SRV)
    assert [(t.address, t.transport) for t in targets] == [(("192.0.2.2", 5060), TCP)]


def test_explicit_port_skips_naptr_and_srv() -> None:
    targets, dns = locate("sip:udp.example.com:5099")
    assert [q.rrtype for q in dns.asked] == [RRType.A, RRType.AAAA]
    assert [t.address for t in targets] == [("192.0.2.3", 5099), ("2001:db8::3", 5099)]
    targets, _ = locate("sip:tcp.example.com:6000;transport=tcp")
    assert [(t.address, t.transport) for t in targets] == [(("192.0.2.2", 6000), TCP)]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:192.0.2.7", (("192.0.2.7", 5060), UDP)),
        ("sip:192.0.2.7:5070;transport=tcp", (("192.0.2.7", 5070), TCP)),
        ("sips:192.0.2.7", (("192.0.2.7", 5061), TLS)),
        ("sip:[2001:db8::7]:5080", (("2001:db8::7", 5080), UDP)),
    ],
)
def test_numeric_ip_skips_dns(uri: str, expected: tuple[tuple[str, int], Transport]) -> None:
    targets, dns = locate(uri)
    assert dns.asked == []
    assert [(t.address, t.transport) for t in targets] == [expected]


def test_srv_dot_target_means_no_service() -> None:
    zone: Zone = {("_sip._udp.c.example", RRType.SRV): (srv(0, 0, 0, "."),)}
    targets, dns = locate("sip:c.example;transport=udp", zone)
    assert targets == []
    assert Query("c.example", RRType.A) not in dns.asked  # SRV existed: no A fallback


def test_srv_weights_follow_rfc_2782_with_a_seeded_rng() -> None:
    records = [srv(10, 60, 1, "a"), srv(10, 30, 2, "b"), srv(10, 10, 3, "c"), srv(20, 0, 4, "d")]
    rng = random.Random(2782)
    firsts = Counter(srv_order(records, rng)[0].target for _ in range(10_000))
    assert abs(firsts["a"] / 10_000 - 0.6) < 0.03
    assert abs(firsts["b"] / 10_000 - 0.3) < 0.03
    assert abs(firsts["c"] / 10_000 - 0.1) < 0.02
    assert firsts["d"] == 0  # a lower priority is never first
    assert all(srv_order(records, rng)[-1].target == "d" for _ in range(100))
    assert srv_order(records, random.Random(5)) == srv_order(records, random.Random(5))


def test_zero_weights_are_still_all_listed() -> None:
    records = [srv(1, 0, 1, "x"), srv(1, 0, 2, "y"), srv(1, 5, 3, "z")]
    for seed in range(50):
        assert sorted(r.target for r in srv_order(records, random.Random(seed))) == ["x", "y", "z"]


def test_the_cache_answers_until_the_ttl_runs_out() -> None:
    clock = FakeClock(1000.0)
    cache = DnsCache()
    dns = FakeDns(ZONE, ttl=30)
    first = dns.run(
        Locator("sip:example.com", clock.now, rng=random.Random(1), cache=cache), clock.now
    )
    asked = len(dns.asked)
    result_locator = Locator(
        "sip:example.com", clock.advance(29), rng=random.Random(1), cache=cache
    )
    assert result_locator.done and list(result_locator.result.targets) == first
    assert result_locator.result.expires_at == pytest.approx(1030.0)
    assert len(dns.asked) == asked  # nothing asked: all from cache
    clock.advance(1)
    again = Locator("sip:example.com", clock.now, rng=random.Random(1), cache=cache)
    assert again.pending == Query("example.com", RRType.NAPTR)


def test_cache_bounds_and_zero_ttl() -> None:
    cache = DnsCache(max_entries=2)
    for i in range(3):
        cache.put(Query(f"n{i}", RRType.A), Answer(a("192.0.2.1"), 10), 0)
    assert len(cache) == 2 and cache.get(Query("n0", RRType.A), 0) is None
    cache.put(Query("z", RRType.A), Answer(a("192.0.2.1"), 0), 0)
    assert cache.get(Query("z", RRType.A), 0) is None


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="transport tls is not supported"):
        Locator("sips:example.com", 0, rng=random.Random(), supported=(UDP,))
    with pytest.raises(SipParseError, match="unsupported transport"):
        Locator("sip:example.com;transport=sctp", 0, rng=random.Random())
    with pytest.raises(SipParseError, match="sip: or sips:"):
        Locator("tel:+15551234567", 0, rng=random.Random())
    with pytest.raises(ValueError, match="negative"):
        Answer((), -1)
    with pytest.raises(ValueError, match="address families"):
        Locator("sip:example.com", 0, rng=random.Random(), families=(RRType.SRV,))
    locator = Locator("sip:example.com", 0, rng=random.Random())
    with pytest.raises(RuntimeError, match="not done, waiting for"):
        locator.result  # noqa: B018


def test_sips_is_never_downgraded_when_tls_is_not_supported() -> None:
    with pytest.raises(ValueError, match="transport tls is not supported"):
        Locator("sips:192.0.2.7", 0, rng=random.Random(), supported=(UDP, TCP))


@given(
    st.lists(
        st.builds(srv, st.integers(0, 3), st.integers(0, 100), st.integers(1, 65535),
                  st.sampled_from(["a.example", "b.example", "c.example", "d.example"])),
        max_size=12,
    ),
    st.integers(0, 2**32),
)  # fmt: skip
def test_srv_order_is_a_permutation_by_ascending_priority(
    records: list[SrvRecord], seed: int
) -> None:
    ordered = srv_order(records, random.Random(seed))
    assert sorted(ordered, key=repr) == sorted(records, key=repr)
    assert [r.priority for r in ordered] == sorted(r.priority for r in records)
