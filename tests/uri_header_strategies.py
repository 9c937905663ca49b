"""Hypothesis strategies for SIP URIs and header models (shared by the uri/headers tests)."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from sipstack.headers import CSeq, NameAddr, SessionExpires, Via
from sipstack.uri import SipUri, TelUri

TOKEN_ALPHABET = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=10)
# Any text a caller may put in a URI component: escaping must carry it through unchanged.
component_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
# Display names: anything printable (controls cannot be sent and are replaced on render).
display_names = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=16)

_labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(_labels, min_size=1, max_size=3).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(1, 65535)

uri_params = st.lists(
    st.tuples(component_text.filter(bool), st.none() | component_text), max_size=3
).map(tuple)
uri_headers = st.lists(st.tuples(component_text.filter(bool), component_text), max_size=3).map(
    tuple
)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(component_text)
    password = draw(st.none() | component_text) if user else None
    return SipUri(
        host=draw(hosts),
        user=user,
        scheme=draw(st.sampled_from(["sip", "sips"])),
        password=password,
        port=draw(ports),
        params=draw(uri_params),
        headers=draw(uri_headers),
    )


tel_numbers = st.from_regex(r"\+[0-9][0-9\-.]{0,14}|[0-9*#]{1,8}", fullmatch=True)
tel_uris = st.builds(TelUri, number=tel_numbers, params=uri_params)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


header_param_values = st.none() | tokens | display_names.map(_quoted)
header_params = st.lists(st.tuples(tokens, header_param_values), max_size=3).map(tuple)

name_addrs = st.builds(
    NameAddr,
    uri=st.one_of(sip_uris(), tel_uris),
    display_name=display_names,
    params=header_params,
)

_VIA_KNOWN = {"branch", "rport", "received", "maddr", "ttl"}


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params: list[tuple[str, str | None]] = [("branch", "z9hG4bK" + draw(tokens))]
    rport = draw(st.sampled_from(["absent", "flag", "value"]))
    if rport == "flag":
        params.append(("rport", None))
    elif rport == "value":
        params.append(("rport", str(draw(st.integers(1, 65535)))))
    if draw(st.booleans()):
        params.append(("received", draw(st.one_of(ipv4, ipv6))))
    if draw(st.booleans()):
        params.append(("ttl", str(draw(st.integers(0, 255)))))
    others = draw(
        st.lists(
            st.tuples(tokens.filter(lambda n: n.lower() not in _VIA_KNOWN), header_param_values),
            max_size=2,
        )
    )
    return Via(
        transport=draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])),
        host=draw(hosts),
        port=draw(ports),
        params=(*params, *others),
    )


cseqs = st.builds(CSeq, number=st.integers(0, 2**31 - 1), method=tokens)
session_expires = st.builds(
    SessionExpires,
    delta=st.integers(0, 2**32 - 1),
    refresher=st.sampled_from([None, "uac", "uas"]),
    params=st.lists(
        st.tuples(tokens.filter(lambda n: n.lower() != "refresher"), header_param_values),
        max_size=2,
    ).map(tuple),
)

# Text built from the characters that drive the parsers, so fuzzing reaches their inner branches.
SIP_ALPHABET = 'sipSIPtel:/2.0UDPTLS@[]:;=,<>"\\?&%+-*#abf01239 \t\r\n\x00\xe9'
sip_like_text = st.text(SIP_ALPHABET, max_size=60)
fuzz_text = st.one_of(st.text(max_size=60), sip_like_text)


@st.composite
def mutated(draw: st.DrawFn, valid_texts: st.SearchStrategy[str]) -> str:
    """A valid value with a few characters inserted, deleted or replaced."""
    text = draw(valid_texts)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(SIP_ALPHABET))
        if action == "insert":
            text = text[:position] + char + text[position:]
        elif action == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position] + char + text[position + 1 :]
    return text
