"""RFC 3263 server location, sans-IO: which (address, port, transport) to try, in what order.

`Locator` walks RFC 3263 §4 for one SIP URI. It never touches the network: `pending` is the
DNS question it needs answered next (NAPTR, SRV, A or AAAA), `feed` takes the answer, and
once `done`, `result` is the ordered target list with the time it expires. Answers go into a
`DnsCache` that honours each RRset's TTL against the `now` passed in (never kept longer),
so a shared cache answers later resolutions without any question being asked.

Rules (RFC 3263 §4.1, §4.2, RFC 2782):
- A numeric IP host skips DNS: the URI's transport (`;transport=`, else TLS for sips:,
  else UDP) and its port or the transport's default port.
- An explicit port skips NAPTR and SRV: A/AAAA of the host with that port.
- `;transport=` skips NAPTR: SRV of `_sip(s)._<proto>.host`.
- Otherwise NAPTR: records with flag "s" and a service we support (SIP+D2U udp, SIP+D2T tcp,
  SIPS+D2T tls; a sips: URI takes only SIPS+D2T; SIP+D2S is SCTP, which we do not have), by
  order then preference; their replacements are SRV names. No usable NAPTR: SRV queries for
  each supported transport (`_sips._tcp` for sips:, `_sip._udp` and `_sip._tcp` for sip:).
- SRV: ascending priority, RFC 2782 weighted random order within one priority (the random
  source is injected); a target of "." means "no service here".
- No SRV records at all: A/AAAA of the host with the default port of the default transport.

Every SRV target and transport found is kept, in order, so failover can walk the list.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sipstack.target import uri_transport
from sipstack.transport import Address, Transport
from sipstack.uri import SipUri, shorten


class RRType(StrEnum):
    NAPTR = "NAPTR"
    SRV = "SRV"
    A = "A"
    AAAA = "AAAA"


@dataclass(frozen=True, slots=True)
class Query:
    name: str  # lower case, no trailing dot
    rrtype: RRType


@dataclass(frozen=True, slots=True, kw_only=True)
class NaptrRecord:
    order: int
    preference: int
    flags: str
    service: str
    regexp: str = ""
    replacement: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class AddressRecord:
    address: str


Record = NaptrRecord | SrvRecord | AddressRecord


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one RRset (empty: no such name or no such type) and its TTL in seconds.

    For an empty answer the TTL is the negative-caching time (RFC 2308); 0 caches nothing.
    """

    records: tuple[Record, ...]
    ttl: float

    def __post_init__(self) -> None:
        if self.ttl < 0:
            raise ValueError(f"DNS answer TTL {self.ttl} is negative")


@dataclass(frozen=True, slots=True)
class ServerTarget:
    """One place to send the request. `domain` is the URI's host: the name a TLS certificate
    must carry (RFC 5922 §4), not the SRV target's."""

    address: Address
    transport: Transport
    domain: str


@dataclass(frozen=True, slots=True)
class LocateResult:
    targets: tuple[ServerTarget, ...]
    expires_at: float  # the earliest expiry of any answer used; inf when DNS was skipped


def normalize_name(name: str) -> str:
    return name.rstrip(".").lower()


class DnsCache:
    """Answers by (name, type) until their TTL runs out at the `now` given; bounded (LRU)."""

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries <= 0:
            raise ValueError(f"DnsCache max_entries must be positive, not {max_entries}")
        self._max_entries = max_entries
        self._entries: OrderedDict[Query, tuple[Answer, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: Query, now: float) -> Answer | None:
        """The cached answer with its remaining TTL, or None when absent or expired."""
        entry = self._entries.get(query)
        if entry is None:
            return None
        answer, expires_at = entry
        if now >= expires_at:
            del self._entries[query]
            return None
        self._entries.move_to_end(query)
        return Answer(answer.records, expires_at - now)

    def put(self, query: Query, answer: Answer, now: float) -> None:
        if answer.ttl <= 0:
            self._entries.pop(query, None)
            return
        self._entries[query] = (answer, now + answer.ttl)
        self._entries.move_to_end(query)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


# NAPTR services of RFC 3263 §4.1 and the transport each means; SCTP (D2S) is recognised
# but we have no SCTP transport, so it maps to None and is skipped.
_NAPTR_SERVICES: dict[str, Transport | None] = {
    "sip+d2u": Transport.UDP,
    "sip+d2t": Transport.TCP,
    "sips+d2t": Transport.TLS,
    "sip+d2s": None,
    "sips+d2s": None,
}
_SRV_PREFIX: dict[Transport, str] = {
    Transport.UDP: "_sip._udp",
    Transport.TCP: "_sip._tcp",
    Transport.TLS: "_sips._tcp",
}
DEFAULT_TRANSPORTS: tuple[Transport, ...] = (Transport.UDP, Transport.TCP, Transport.TLS)
DEFAULT_FAMILIES: tuple[RRType, ...] = (RRType.A, RRType.AAAA)

_Walk = Generator[Query, Answer, list[ServerTarget]]


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def srv_order(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority; within a priority, repeatedly pick a record with
    probability weight / (sum of remaining weights), zero weights first in the running sum
    so they are chosen only rarely (and in turn when all weights are zero)."""
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        # An RRset has no order: sort it, so one seed gives one order whatever the server sent.
        remaining = sorted(
            (r for r in records if r.priority == priority),
            key=lambda r: (r.weight != 0, r.target, r.port, r.weight),
        )
        while remaining:
            total = sum(r.weight for r in remaining)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


def naptr_candidates(
    records: Sequence[Record], *, secure: bool, supported: Sequence[Transport]
) -> list[tuple[str, Transport]]:
    """(SRV name, transport) from NAPTR records, by order then preference (RFC 3403 §4.1)."""
    usable: list[tuple[int, int, str, Transport]] = []
    for record in records:
        if not isinstance(record, NaptrRecord) or record.flags.lower() != "s":
            continue
        transport = _NAPTR_SERVICES.get(record.service.lower())
        if transport is None or transport not in supported:
            continue
        if secure and transport is not Transport.TLS:
            continue  # RFC 3263 §4.1: a sips: URI only considers SIPS+D2T
        replacement = normalize_name(record.replacement)
        if not replacement:
            continue  # "." (or empty): no replacement, nothing to look up
        usable.append((record.order, record.preference, replacement, transport))
    usable.sort(key=lambda item: (item[0], item[1]))
    seen: set[tuple[str, Transport]] = set()
    candidates: list[tuple[str, Transport]] = []
    for _, _, name, transport in usable:
        if (name, transport) not in seen:
            seen.add((name, transport))
            candidates.append((name, transport))
    return candidates


class Locator:
    """One RFC 3263 resolution of `uri`, driven by the caller's DNS I/O."""

    __slots__ = ("_cache", "_expires_at", "_pending", "_result", "_walk")

    def __init__(
        self,
        uri: SipUri | str,
        now: float,
        *,
        rng: random.Random,
        cache: DnsCache | None = None,
        supported: Sequence[Transport] = DEFAULT_TRANSPORTS,
        families: Sequence[RRType] = DEFAULT_FAMILIES,
    ) -> None:
        target = SipUri.parse(uri) if isinstance(uri, str) else uri
        if not supported:
            raise ValueError("locate: no supported transport given")
        bad = [f for f in families if f not in (RRType.A, RRType.AAAA)]
        if bad or not families:
            raise ValueError(f"locate: address families must be A and/or AAAA, not {bad}")
        self._cache = cache if cache is not None else DnsCache()
        self._expires_at = float("inf")
        self._pending: Query | None = None
        self._result: LocateResult | None = None
        self._walk = _walk(target, rng, tuple(supported), tuple(families))
        self._advance(None, now)

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def pending(self) -> Query | None:
        """The question to ask next; None once done."""
        return self._pending

    @property
    def result(self) -> LocateResult:
        if self._result is None:
            raise RuntimeError(f"locate: not done, waiting for {self._pending}")
        return self._result

    def feed(self, answer: Answer, now: float) -> None:
        """The answer to `pending` (empty records for NXDOMAIN / no data)."""
        query = self._pending
        if query is None:
            raise RuntimeError("locate: an answer fed after the resolution was done")
        self._cache.put(query, answer, now)
        self._advance(answer, now)

    def _advance(self, answer: Answer | None, now: float) -> None:
        try:
            query = next(self._walk) if answer is None else self._send(answer, now)
            while True:
                cached = self._cache.get(query, now)
                if cached is None:
                    self._pending = query
                    return
                query = self._send(cached, now)
        except StopIteration as stop:
            self._pending = None
            self._result = LocateResult(tuple(stop.value), self._expires_at)

    def _send(self, answer: Answer, now: float) -> Query:
        self._expires_at = min(self._expires_at, now + answer.ttl)
        return self._walk.send(answer)


def _walk(
    uri: SipUri,
    rng: random.Random,
    supported: tuple[Transport, ...],
    families: tuple[RRType, ...],
) -> _Walk:
    host = normalize_name(uri.host)
    explicit = uri_transport(uri)
    if explicit is not None and explicit not in supported:
        raise ValueError(
            f"locate {shorten(uri.render(), 60)}: transport {explicit} is not supported here"
        )
    fallback = explicit or (Transport.TLS if uri.is_secure else Transport.UDP)
    if fallback not in supported:  # a sip: URI with no UDP here (sips: demands TLS above)
        fallback = supported[0]
    if is_ip_literal(host):
        return [ServerTarget((host, uri.port or fallback.default_port), fallback, host)]
    if uri.port is not None:
        addresses = yield from _addresses(host, families)
        return [ServerTarget((a, uri.port), fallback, host) for a in addresses]
    if explicit is not None:
        candidates = [(f"{_SRV_PREFIX[explicit]}.{host}", explicit)]
    else:
        naptr = yield Query(host, RRType.NAPTR)
        candidates = naptr_candidates(naptr.records, secure=uri.is_secure, supported=supported)
        if not candidates:
            wanted = (Transport.TLS,) if uri.is_secure else (Transport.UDP, Transport.TCP)
            candidates = [(f"{_SRV_PREFIX[t]}.{host}", t) for t in supported if t in wanted]
    targets: list[ServerTarget] = []
    any_srv = False
    for name, transport in candidates:
        answer = yield Query(name, RRType.SRV)
        records = [r for r in answer.records if isinstance(r, SrvRecord)]
        any_srv = any_srv or bool(records)
        for srv in srv_order(records, rng):
            srv_target = normalize_name(srv.target)
            if not srv_target:
                continue  # RFC 2782: "." means the service is decidedly not available
            addresses = yield from _addresses(srv_target, families)
            targets += [ServerTarget((a, srv.port), transport, host) for a in addresses]
    if not any_srv:
        addresses = yield from _addresses(host, families)
        targets = [ServerTarget((a, fallback.default_port), fallback, host) for a in addresses]
    return targets


def _addresses(name: str, families: tuple[RRType, ...]) -> Generator[Query, Answer, list[str]]:
    if is_ip_literal(name):
        return [name]
    found: list[str] = []
    for family in families:
        answer = yield Query(name, family)
        found += [r.address for r in answer.records if isinstance(r, AddressRecord)]
    return found
