"""CSeq, Session-Expires, Min-SE, Privacy and Identity values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from sipstack.errors import SipParseError
from sipstack.headers import CSeq, Identity, MinSE, Privacy, SessionExpires
from tests.uri_header_strategies import cseqs, session_expires


@pytest.mark.parametrize(
    ("text", "number", "method"),
    [
        ("1 INVITE", 1, "INVITE"),
        ("  4711\tBYE  ", 4711, "BYE"),
        ("0 ACK", 0, "ACK"),
        ("2147483647 UPDATE", 2**31 - 1, "UPDATE"),
        ("8 invite", 8, "invite"),  # methods are case-sensitive: kept as sent
        ("3 X-CUSTOM.1", 3, "X-CUSTOM.1"),
    ],
)
def test_cseq_parse(text: str, number: int, method: str) -> None:
    assert CSeq.parse(text) == CSeq(number, method)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "CSeq: empty value"),
        ("INVITE", "sequence number 'INVITE' is not a number"),
        ("-1 INVITE", "sequence number '-1' is not a number"),
        ("2147483648 INVITE", "sequence number 2147483648 exceeds 2**31-1"),
        ("99999999999 INVITE", "exceeds 2**31-1"),  # RFC 4475 §3.1.2.19 style overflow
        ("1", "CSeq: missing method"),
        ("1 INVITE extra", "unexpected text after the method"),
        ("1 INV@TE", "method 'INV@TE' is not a token"),
        ("\u0661 INVITE", "is not a number"),  # Arabic-Indic digits are not DIGIT
    ],
)
def test_cseq_errors(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        CSeq.parse(text)
    assert fragment in str(caught.value)


def test_cseq_render() -> None:
    assert CSeq(2, "BYE").render() == "2 BYE" == str(CSeq(2, "BYE"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1800", SessionExpires(1800)),
        ("1800;refresher=uac", SessionExpires(1800, "uac")),
        (" 90 ; refresher = UAS ", SessionExpires(90, "uas")),
        ("600;x=1;refresher=uas;flag", SessionExpires(600, "uas", (("x", "1"), ("flag", None)))),
        ("4294967295", SessionExpires(2**32 - 1)),
    ],
)
def test_session_expires_parse(text: str, expected: SessionExpires) -> None:
    assert SessionExpires.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "Session-Expires: missing delta-seconds"),
        (";refresher=uac", "Session-Expires: missing delta-seconds"),
        ("abc", "Session-Expires: interval 'abc' is not a number of seconds"),
        ("4294967296", "exceeds 2**32-1"),
        ("1" * 5000, "exceeds 2**32-1"),
        ("1800;refresher=proxy", "refresher 'proxy' is not uac or uas"),
        ("1800;refresher", "refresher '' is not uac or uas"),
        ("1800 refresher=uac", "is not a number of seconds"),
    ],
)
def test_session_expires_errors(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        SessionExpires.parse(text)
    assert fragment in str(caught.value)


def test_session_expires_render() -> None:
    assert SessionExpires(1800, "uac").render() == "1800;refresher=uac"
    assert str(SessionExpires(90)) == "90"
    assert SessionExpires(120, None, (("x", None),)).render() == "120;x"


def test_min_se() -> None:
    assert MinSE.parse(" 90 ") == MinSE(90)
    assert MinSE.parse("120;ext=1") == MinSE(120, (("ext", "1"),))
    assert MinSE(90).render() == "90" == str(MinSE(90))
    with pytest.raises(SipParseError, match="Min-SE: interval 'x' is not a number of seconds"):
        MinSE.parse("x")


def test_privacy() -> None:
    privacy = Privacy.parse("id; Header ;user")
    assert privacy.tokens == ("id", "Header", "user")
    assert "header" in privacy and "ID" in privacy and "session" not in privacy
    assert privacy.render() == "id;Header;user"
    assert Privacy.parse("id, history").tokens == ("id", "history")
    assert Privacy.parse("none").is_none and not privacy.is_none
    for bad, fragment in [
        ("", "Privacy: empty value"),
        ("id;;user", "'' is not a priv-value token"),
        ("id user", "'id user' is not a priv-value token"),
    ]:
        with pytest.raises(SipParseError) as caught:
            Privacy.parse(bad)
        assert fragment in str(caught.value)


PASSPORT = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0"
    ".eyJhdHRlc3QiOiJBIn0.c2lnbmF0dXJl"
)


def test_identity_is_kept_verbatim_with_readable_params() -> None:
    text = f'{PASSPORT};info=<https://cert.example.org/cert.pem;v=1>;alg=ES256;ppt="shaken"'
    identity = Identity.parse(f"  {text} ")
    assert identity.render() == text == str(identity)
    assert identity.digest == PASSPORT
    assert identity.info == "https://cert.example.org/cert.pem;v=1"
    assert identity.alg == "ES256" and identity.ppt == "shaken"
    bare = Identity.parse(PASSPORT)
    assert bare.info is None and bare.alg is None and bare.ppt is None
    legacy = Identity.parse('"ZYNBbHC00VMZr2kZt6VmCvPonWJMGvQTBDqghoWeLxJfzB2a1pxAr3VgrB0SsSAa"')
    assert legacy.digest.startswith('"ZYNB')


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "Identity: missing signed-identity-digest"),
        (";info=<https://x>", "Identity: missing signed-identity-digest"),
        ("abc def;info=<https://x>", "digest 'abc def' is not base64url text"),
        (f"{PASSPORT};info=<https://x", "Identity: malformed parameter"),
        (f"{PASSPORT};alg=a/b", "Identity: alg 'a/b' is not a token"),
    ],
)
def test_identity_errors(text: str, fragment: str) -> None:
    with pytest.raises(SipParseError) as caught:
        Identity.parse(text)
    assert fragment in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(cseqs)
def test_cseq_round_trip(value: CSeq) -> None:
    assert CSeq.parse(value.render()) == value


@settings(max_examples=300, deadline=None)
@given(session_expires)
def test_session_expires_round_trip(value: SessionExpires) -> None:
    assert SessionExpires.parse(value.render()) == value
