"""RFC 3263 look-ups over real DNS with dnspython, feeding the sans-IO `sipstack.locate`.

dnspython's resolver is used without its cache (`cache=None`, its default): the only cache
is `sipstack.locate.DnsCache`, which keeps each answer for its TTL and no longer. Empty
answers (NXDOMAIN, no data) are cached for the SOA minimum of the authority section (RFC
2308 §5), else for `negative_ttl`. A server that fails (timeout, SERVFAIL, REFUSED) raises
`DnsLookupError` naming the question: no answer is invented for it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.message
import dns.rdatatype
import dns.resolver

from sipstack.locate import (
    DEFAULT_FAMILIES,
    DEFAULT_TRANSPORTS,
    AddressRecord,
    Answer,
    DnsCache,
    LocateResult,
    Locator,
    NaptrRecord,
    Query,
    Record,
    RRType,
    SrvRecord,
)
from sipstack.target import parse_hostport
from sipstack.transport import Transport
from sipstack.uri import SipUri


class DnsLookupError(RuntimeError):
    """The DNS server gave no usable answer to one question."""


def _record(rdata: object) -> Record:
    if rdata.rdtype == dns.rdatatype.NAPTR:  # type: ignore[attr-defined]
        return NaptrRecord(
            order=rdata.order,  # type: ignore[attr-defined]
            preference=rdata.preference,  # type: ignore[attr-defined]
            flags=rdata.flags.decode(),  # type: ignore[attr-defined]
            service=rdata.service.decode(),  # type: ignore[attr-defined]
            regexp=rdata.regexp.decode(),  # type: ignore[attr-defined]
            replacement=rdata.replacement.to_text(),  # type: ignore[attr-defined]
        )
    if rdata.rdtype == dns.rdatatype.SRV:  # type: ignore[attr-defined]
        return SrvRecord(
            priority=rdata.priority,  # type: ignore[attr-defined]
            weight=rdata.weight,  # type: ignore[attr-defined]
            port=rdata.port,  # type: ignore[attr-defined]
            target=rdata.target.to_text(),  # type: ignore[attr-defined]
        )
    return AddressRecord(rdata.address)  # type: ignore[attr-defined]


def _answer_of(answer: dns.resolver.Answer) -> Answer:
    assert answer.rrset is not None  # resolve() raises NoAnswer rather than return none
    return Answer(tuple(_record(r) for r in answer), float(answer.rrset.ttl))


def _negative_ttl(response: dns.message.Message | None, default: float) -> float:
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return float(min(rrset.ttl, rrset[0].minimum))
    return default


class DnsLocator:
    """Resolves SIP URIs to ordered targets against one resolver configuration.

    `nameserver` ("ip" or "ip:port"; None: the system's resolv.conf). `clock` gives `now`
    for the cache (time.time in production, a fake clock in tests).
    """

    def __init__(
        self,
        nameserver: str | None = None,
        *,
        timeout: float = 2.0,
        negative_ttl: float = 30.0,
        cache: DnsCache | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        supported: Sequence[Transport] = DEFAULT_TRANSPORTS,
        families: Sequence[RRType] = DEFAULT_FAMILIES,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"DNS timeout must be positive, not {timeout}")
        self._sync = dns.resolver.Resolver(configure=nameserver is None)
        self._async = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            host, port = parse_hostport(nameserver, 53)
            for resolver in (self._sync, self._async):
                resolver.nameservers = [host]
                resolver.port = port
        for resolver in (self._sync, self._async):
            resolver.lifetime = timeout
            resolver.cache = None  # the TTL cache is sipstack's; none here
        self.negative_ttl = negative_ttl
        self.cache = cache if cache is not None else DnsCache()
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._supported = tuple(supported)
        self._families = tuple(families)

    def locator(self, uri: SipUri | str) -> Locator:
        return Locator(
            uri,
            self._clock(),
            rng=self._rng,
            cache=self.cache,
            supported=self._supported,
            families=self._families,
        )

    def query(self, query: Query) -> Answer:
        """One blocking look-up (for CLIs and checks; the worker loop uses `aquery`)."""
        try:
            answer = self._sync.resolve(query.name + ".", query.rrtype.value, search=False)
        except dns.exception.DNSException as error:
            return self._without_records(query, error)
        return _answer_of(answer)

    async def aquery(self, query: Query) -> Answer:
        try:
            answer = await self._async.resolve(query.name + ".", query.rrtype.value, search=False)
        except dns.exception.DNSException as error:
            return self._without_records(query, error)
        return _answer_of(answer)

    def _without_records(self, query: Query, error: dns.exception.DNSException) -> Answer:
        """An empty answer for NXDOMAIN / no data; DnsLookupError for a failed server."""
        if isinstance(error, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
            return Answer((), _negative_ttl(_response_of(error), self.negative_ttl))
        raise DnsLookupError(f"DNS {query.rrtype} {query.name}: {error}") from error

    def locate(self, uri: SipUri | str) -> LocateResult:
        locator = self.locator(uri)
        while (query := locator.pending) is not None:
            locator.feed(self.query(query), self._clock())
        return locator.result

    async def alocate(self, uri: SipUri | str) -> LocateResult:
        locator = self.locator(uri)
        while (query := locator.pending) is not None:
            locator.feed(await self.aquery(query), self._clock())
        return locator.result


def _response_of(error: dns.exception.DNSException) -> dns.message.Message | None:
    if isinstance(error, dns.resolver.NoAnswer):
        response = error.response()  # type: ignore[no-untyped-call]
        return response if isinstance(response, dns.message.Message) else None
    if isinstance(error, dns.resolver.NXDOMAIN):
        responses = list(error.responses().values())  # type: ignore[no-untyped-call]
        return responses[0] if responses and isinstance(responses[0], dns.message.Message) else None
    return None
