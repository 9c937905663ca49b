"""Any text given to a header parser yields a model or SipParseError, and models re-parse equal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipstack.errors import SipParseError
from sipstack.headers import (
    Contact,
    CSeq,
    Diversion,
    HistoryInfoEntry,
    Identity,
    MinSE,
    NameAddr,
    PAssertedIdentity,
    Privacy,
    ReferTo,
    SessionExpires,
    Via,
    split_header_values,
)
from sipstack.target import dial_target_from_refer_to, parse_hostport
from tests.uri_header_strategies import (
    cseqs,
    display_names,
    fuzz_text,
    mutated,
    name_addrs,
    session_expires,
    vias,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Each parser with valid samples of its own syntax, which mutated() then damages.
PARSERS: dict[str, tuple[Callable[[str], object], st.SearchStrategy[str]]] = {
    "NameAddr": (NameAddr.parse, name_addrs.map(str)),
    "Contact": (Contact.parse, name_addrs.map(str)),
    "ReferTo": (ReferTo.parse, name_addrs.map(str)),
    "PAssertedIdentity": (PAssertedIdentity.parse, name_addrs.map(str)),
    "Via": (Via.parse, vias().map(str)),
    "CSeq": (CSeq.parse, cseqs.map(str)),
    "SessionExpires": (SessionExpires.parse, session_expires.map(str)),
    "MinSE": (MinSE.parse, st.integers(0, 2**32).map(str)),
    "Privacy": (Privacy.parse, st.sampled_from(["id", "header;user", "none", "id;history"])),
    "Identity": (Identity.parse, st.just("aGVsbG8.d29ybGQ.c2ln;info=<https://a/b;c>;ppt=shaken")),
    "HistoryInfoEntry": (HistoryInfoEntry.parse, name_addrs.map(lambda v: f"{v};index=1.2")),
    "Diversion": (
        Diversion.parse,
        st.tuples(name_addrs, display_names).map(lambda v: f'{v[0]};reason="{v[1]}";counter=1'),
    ),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_parse_gives_a_model_or_sip_parse_error(name: str, data: st.DataObject) -> None:
    parse, valid = PARSERS[name]
    text = data.draw(st.one_of(fuzz_text, mutated(valid)), label="text")
    try:
        value = parse(text)
    except SipParseError as exc:
        assert str(exc), "errors carry a message"
        return
    rendered = value.render()  # type: ignore[attr-defined]
    assert parse(rendered) == value, f"re-parse of {rendered!r} differs"


@FUZZ
@given(st.one_of(fuzz_text, mutated(st.lists(name_addrs.map(str)).map(", ".join))))
def test_list_helpers_give_values_or_sip_parse_error(text: str) -> None:
    for parse_all in (split_header_values, NameAddr.parse_all, Via.parse_all, Contact.parse_all):
        with contextlib.suppress(SipParseError):
            parse_all(text)


@FUZZ
@given(st.one_of(fuzz_text, mutated(name_addrs.map(str))))
def test_target_helpers_give_values_or_sip_parse_error(text: str) -> None:
    for parse in (dial_target_from_refer_to, lambda t: parse_hostport(t, 5060)):
        with contextlib.suppress(SipParseError):
            parse(text)
