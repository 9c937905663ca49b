"""Digest authentication: RFC test vectors, tolerant parsing, answering, verifying, nc counting."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.auth import (
    DigestAlgorithm,
    DigestChallenge,
    DigestCredentials,
    DigestSession,
    build_authorization,
    build_credentials,
    choose_challenge,
    compute_response,
    hashed_username,
    parse_authorization,
    parse_challenge,
    verify_authorization,
)
from sipstack.errors import LocalProtocolError, SipParseError


def counting_bytes(count: int) -> bytes:
    """A deterministic random_bytes: 0, 1, 2, ..."""
    return bytes(range(count))


# --- test vectors -----------------------------------------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = parse_authorization(
        build_authorization(
            challenge,
            username="Mufasa",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nc=1,
            cnonce="0a4f113b",
        )
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert (creds.qop, creds.nc, creds.cnonce) == ("auth", 1, "0a4f113b")
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"


RFC7616_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, response: str) -> None:
    challenge = parse_challenge(RFC7616_CHALLENGE.format(algorithm=algorithm))
    header = build_authorization(
        challenge,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        nc=1,
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    creds = parse_authorization(header)
    assert creds.response == response
    assert f"algorithm={algorithm}" in header
    assert "qop=auth," in header and "nc=00000001" in header
    assert verify_authorization(creds, password="Circle of Life", method="GET")


def test_sha512_256_is_the_fips_180_4_function_not_truncated_sha512() -> None:
    # FIPS 180-4 example (SHA-512/256 of "abc"); hashlib has no sha512_256 attribute, so the
    # stack goes through hashlib.new, which this pins down.
    expected = "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    assert DigestAlgorithm.SHA_512_256.hexdigest("abc") == expected
    assert hashlib.sha512(b"abc").hexdigest()[:64] != expected


def test_rfc7616_section_3_9_2_userhash_example_inputs() -> None:
    # The hash and response printed in §3.9.2 do not follow from the RFC's own formulas (the
    # example is known to be wrong), so they are derived here step by step with hashlib instead.
    def sha512_256(text: str) -> str:
        return hashlib.new("sha512_256", text.encode("utf-8")).hexdigest()

    username, realm, password = "J\u00e4s\u00f8n Doe", "api@example.org", "Secret, or not?"
    nonce = "5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK"
    cnonce = "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v"
    challenge = parse_challenge(
        f'Digest realm="{realm}", qop="auth", algorithm=SHA-512-256, nonce="{nonce}", '
        'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true'
    )
    creds = parse_authorization(
        build_authorization(
            challenge,
            username=username,
            password=password,
            method="GET",
            uri="/doe.json",
            nc=1,
            cnonce=cnonce,
        )
    )
    ha1 = sha512_256(f"{username}:{realm}:{password}")
    ha2 = sha512_256("GET:/doe.json")
    assert creds.userhash
    assert creds.username == sha512_256(f"{username}:{realm}")
    assert creds.response == sha512_256(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
    assert verify_authorization(creds, password=password, method="GET", username=username)


# --- parsing challenges -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Digest realm="sip.example.com", nonce="abc"',
            DigestChallenge(realm="sip.example.com", nonce="abc"),
        ),
        # case of scheme, names and algorithm; spacing; unquoted qop; stale in capitals
        (
            'DIGEST  REALM = "r" ,NONCE="n",  Algorithm = sha-256, QOP=auth, Stale=TRUE',
            DigestChallenge(
                realm="r", nonce="n", algorithm=DigestAlgorithm.SHA_256, qop=("auth",), stale=True
            ),
        ),
        # escapes inside quoted strings; empty list elements; unknown parameters ignored
        (
            r'Digest realm="a\"b\\c", , nonce="x,y", domain="sip:a sip:b", charset=UTF-8,',
            DigestChallenge(realm='a"b\\c', nonce="x,y"),
        ),
        # qop list with spaces and case; -sess algorithm; userhash; stale other than true
        (
            'Digest realm="r", nonce="n", qop=" Auth , AUTH-INT ", algorithm=MD5-SESS, '
            "userhash=true, stale=no",
            DigestChallenge(
                realm="r",
                nonce="n",
                qop=("auth", "auth-int"),
                algorithm=DigestAlgorithm.MD5_SESS,
                userhash=True,
            ),
        ),
        # an unquoted base64 nonce (wrong, but sent by real servers)
        (
            "Digest realm=r, nonce=ab/c+d==, opaque=o",
            DigestChallenge(realm="r", nonce="ab/c+d==", opaque="o"),
        ),
        (
            'Digest realm="r", nonce="n", algorithm=SHA-512-256-sess',
            DigestChallenge(realm="r", nonce="n", algorithm=DigestAlgorithm.SHA_512_256_SESS),
        ),
    ],
)
def test_parse_challenge(header: str, expected: DigestChallenge) -> None:
    assert parse_challenge(header) == expected


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('Basic realm="r"', "expected the Digest scheme"),
        ("", "expected the Digest scheme"),
        ("Digest", "no parameters"),
        ('Digestrealm="r"', "expected the Digest scheme"),
        ('Digest nonce="n"', "missing realm"),
        ('Digest realm="r"', "missing nonce"),
        ('Digest realm="r", nonce="n', "quoted string"),
        ('Digest realm="r", realm="s", nonce="n"', "'realm' given twice"),
        ('Digest realm="r", nonce="n", algorithm=AKAv1-MD5', "unsupported algorithm"),
        ('Digest realm="r", nonce="n", stale', "'stale' has no value"),
        ('Digest realm="r", nonce="n", opaque=', "'opaque' has no value"),
        ('Digest realm="r" nonce="n"', "expected ','"),
        ('Digest realm="r", nonce="n", qop="auth int"', "qop option"),
        ('Digest realm="r\r\nX-Injected: 1", nonce="n"', "line break"),
        ('Digest realm="\ud800", nonce="n"', "not valid Unicode"),
    ],
)
def test_malformed_challenge_raises_parse_error(header: str, message: str) -> None:
    with pytest.raises(SipParseError, match="digest") as raised:
        parse_challenge(header)
    assert message in str(raised.value)


def test_render_writes_what_the_carrier_simulator_issues() -> None:
    challenge = DigestChallenge(
        realm='a "b"',
        nonce="n1",
        opaque="o",
        algorithm=DigestAlgorithm.SHA_256,
        qop=("auth", "auth-int"),
        stale=True,
    )
    assert challenge.render() == (
        r'Digest realm="a \"b\"", nonce="n1", opaque="o", algorithm=SHA-256, '
        'qop="auth,auth-int", stale=true'
    )


# --- answering --------------------------------------------------------------------------------

ALL_ALGORITHMS = list(DigestAlgorithm)


def answer(challenge: DigestChallenge, **overrides: object) -> DigestCredentials:
    arguments: dict[str, object] = {
        "username": "alice",
        "password": "s3cret",
        "method": "INVITE",
        "uri": "sip:bob@example.com",
        "body": b"v=0\r\n",
        "nc": 1,
        "random_bytes": counting_bytes,
    }
    arguments.update(overrides)
    return build_credentials(challenge, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(("auth",), "auth"), (("auth-int", "auth"), "auth"), (("auth-int",), "auth-int"), ((), None)],
)
def test_qop_choice(offered: tuple[str, ...], chosen: str | None) -> None:
    creds = answer(DigestChallenge(realm="r", nonce="n", qop=offered))
    assert creds.qop == chosen


def test_unsupported_qop_only_is_a_parse_error() -> None:
    with pytest.raises(SipParseError, match="no supported qop among auth-conf"):
        answer(DigestChallenge(realm="r", nonce="n", qop=("auth-conf",)))


def test_auth_int_covers_the_body() -> None:
    creds = answer(DigestChallenge(realm="r", nonce="n", qop=("auth-int",)), body=b"v=0\r\n")
    assert verify_authorization(creds, password="s3cret", method="INVITE", body=b"v=0\r\n")
    assert not verify_authorization(creds, password="s3cret", method="INVITE", body=b"v=1\r\n")


def test_auth_ignores_the_body() -> None:
    creds = answer(DigestChallenge(realm="r", nonce="n", qop=("auth",)), body=b"v=0\r\n")
    assert verify_authorization(creds, password="s3cret", method="INVITE", body=b"other")


def test_no_qop_is_the_rfc2069_form_without_cnonce_or_nc() -> None:
    challenge = DigestChallenge(realm="r", nonce="n")
    header = build_authorization(
        challenge, username="alice", password="pw", method="BYE", uri="sip:b@h", nc=3
    )
    assert "cnonce=" not in header and "nc=" not in header and "qop=" not in header
    expected = hashlib.md5(
        (
            hashlib.md5(b"alice:r:pw").hexdigest() + ":n:" + hashlib.md5(b"BYE:sip:b@h").hexdigest()
        ).encode()
    ).hexdigest()
    assert parse_authorization(header).response == expected


def test_sess_algorithms_send_a_cnonce_even_without_qop() -> None:
    creds = answer(DigestChallenge(realm="r", nonce="n", algorithm=DigestAlgorithm.MD5_SESS))
    assert creds.cnonce == bytes(range(16)).hex()
    plain = answer(DigestChallenge(realm="r", nonce="n"))
    assert creds.response != plain.response
    assert verify_authorization(creds, password="s3cret", method="INVITE")


def test_cnonce_comes_from_random_bytes_and_nc_is_eight_hex_digits() -> None:
    header = build_authorization(
        DigestChallenge(realm="r", nonce="n", qop=("auth",)),
        username="u",
        password="p",
        method="REGISTER",
        uri="sip:r",
        nc=255,
        random_bytes=lambda n: b"\xab" * n,
    )
    assert f'cnonce="{"ab" * 16}"' in header
    assert "nc=000000ff" in header


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nc": 0}, "nc 0"),
        ({"nc": 2**32}, "nc 4294967296"),
        ({"method": "IN VITE"}, "method"),
        ({"uri": "sip:a\r\nX: y"}, "uri contains a line break"),
        ({"username": "a\nb"}, "username contains a line break"),
    ],
)
def test_bad_local_arguments_raise_local_protocol_error(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        answer(DigestChallenge(realm="r", nonce="n", qop=("auth",)), **overrides)


@pytest.mark.parametrize(
    ("algorithm", "qop", "userhash"),
    list(itertools.product(ALL_ALGORITHMS, [("auth",), ("auth-int",), ()], [False, True])),
)
def test_build_parse_verify(
    algorithm: DigestAlgorithm, qop: tuple[str, ...], userhash: bool
) -> None:
    challenge = DigestChallenge(
        realm="sip.example.com",
        nonce="n0nce",
        opaque="op",
        algorithm=algorithm,
        qop=qop,
        userhash=userhash,
    )
    creds = parse_authorization(answer(challenge).render())
    assert creds.algorithm is algorithm and creds.userhash is userhash
    assert len(creds.response) == (32 if algorithm.value.startswith("MD5") else 64)
    good = {"password": "s3cret", "method": "INVITE", "body": b"v=0\r\n", "username": "alice"}
    assert verify_authorization(creds, **good)  # type: ignore[arg-type]
    for wrong in ({"password": "guess"}, {"method": "BYE"}, {"username": "mallory"}):
        assert not verify_authorization(creds, **{**good, **wrong})  # type: ignore[arg-type]
    if userhash:
        assert creds.username == hashed_username(algorithm, "alice", "sip.example.com")


def test_userhash_verification_needs_the_username() -> None:
    creds = answer(DigestChallenge(realm="r", nonce="n", qop=("auth",), userhash=True))
    with pytest.raises(LocalProtocolError, match="expected username"):
        verify_authorization(creds, password="s3cret", method="INVITE")


def test_verify_rejects_tampered_fields() -> None:
    creds = answer(DigestChallenge(realm="r", nonce="n", qop=("auth",)))
    for change in (
        {"nonce": "other"},
        {"nc": 2},
        {"cnonce": "x"},
        {"uri": "sip:x@y"},
        {"realm": "q"},
        {"response": "é" * 32},
        {"nc": None},
    ):
        tampered = dataclasses.replace(creds, **change)
        assert not verify_authorization(tampered, password="s3cret", method="INVITE")
    assert verify_authorization(creds, password="s3cret", method="INVITE")


def test_compute_response_needs_cnonce_for_sess() -> None:
    with pytest.raises(LocalProtocolError, match="needs a cnonce"):
        compute_response(
            algorithm=DigestAlgorithm.SHA_256_SESS,
            username="u",
            realm="r",
            password="p",
            nonce="n",
            method="INVITE",
            uri="sip:a",
            qop=None,
            nc=None,
            cnonce=None,
        )


# --- parsing credentials ----------------------------------------------------------------------


def test_parse_authorization_extended_username() -> None:
    creds = parse_authorization(
        'Digest username*=UTF-8\'\'J%C3%A4s%C3%B8n%20Doe, realm="r", nonce="n", '
        'uri="/", response="abc"'
    )
    assert creds.username == "J\u00e4s\u00f8n Doe"
    assert (creds.qop, creds.nc, creds.cnonce, creds.algorithm) == (
        None,
        None,
        None,
        DigestAlgorithm.MD5,
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('Digest realm="r", nonce="n", uri="/", response="x"', "missing username"),
        ('Digest username="u", nonce="n", uri="/", response="x"', "missing realm"),
        ('Digest username="u", realm="r", nonce="n", response="x"', "missing uri"),
        ('Digest username="u", realm="r", nonce="n", uri="/"', "missing response"),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="x", qop=auth, '
            'cnonce="c"',
            "missing nc",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="x", qop=auth, nc=1',
            "missing cnonce",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="x", qop=auth, '
            'cnonce="c", nc=0000000g',
            "nc '0000000g' is not 8 hex digits",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="/", response="x", qop=auth-conf, '
            'cnonce="c", nc=00000001',
            "unsupported qop",
        ),
        (
            'Digest username="u", username*=UTF-8\'\'u, realm="r", nonce="n", uri="/", '
            'response="x"',
            "both username and username*",
        ),
        (
            'Digest username*=latin-1\'\'u, realm="r", nonce="n", uri="/", response="x"',
            "username*",
        ),
        (
            'Digest username*=UTF-8\'\'%ff, realm="r", nonce="n", uri="/", response="x"',
            "not UTF-8",
        ),
    ],
)
def test_malformed_credentials_raise_parse_error(header: str, message: str) -> None:
    with pytest.raises(SipParseError, match="digest") as raised:
        parse_authorization(header)
    assert message in str(raised.value)


# --- choosing among challenges ----------------------------------------------------------------


def test_choose_challenge_takes_the_first_supported() -> None:
    values = [
        'Digest realm="r", nonce="1", algorithm=AKAv1-MD5',
        "Basic realm=r",
        'Digest realm="r", nonce="2", qop="auth-conf"',
        'Digest realm="r", nonce="3", algorithm=SHA-256',
        'Digest realm="r", nonce="4", algorithm=MD5',
    ]
    assert choose_challenge(values).nonce == "3"


def test_choose_challenge_filters_by_realm() -> None:
    values = ['Digest realm="a", nonce="1"', 'Digest realm="b", nonce="2"']
    assert choose_challenge(values, realm="b").nonce == "2"


def test_choose_challenge_explains_why_none_fits() -> None:
    with pytest.raises(SipParseError, match="no usable digest challenge") as raised:
        choose_challenge(['Digest realm="a", nonce="1"', "Basic x=y"], realm="b")
    assert "realm 'a' is not 'b'" in str(raised.value)
    assert "Digest scheme" in str(raised.value)
    with pytest.raises(SipParseError, match="none given"):
        choose_challenge([])


# --- nc counting ------------------------------------------------------------------------------


def test_session_counts_nc_per_nonce() -> None:
    session = DigestSession("alice", "pw", random_bytes=counting_bytes)
    first = DigestChallenge(realm="r", nonce="n1", qop=("auth",))
    second = DigestChallenge(realm="r", nonce="n2", qop=("auth",))

    def nc_of(header: str) -> int | None:
        return parse_authorization(header).nc

    assert nc_of(session.authorize(first, method="INVITE", uri="sip:b@h")) == 1
    assert nc_of(session.authorize(first, method="BYE", uri="sip:b@h")) == 2
    assert nc_of(session.authorize(second, method="INVITE", uri="sip:b@h")) == 1
    assert nc_of(session.authorize(first, method="BYE", uri="sip:b@h")) == 3
    assert session.nonce_count("n1") == 3 and session.nonce_count("n2") == 1
    assert session.nonce_count("never") == 0
    creds = parse_authorization(session.authorize(second, method="BYE", uri="sip:b@h"))
    assert verify_authorization(creds, password="pw", method="BYE", username="alice")


def test_session_forgets_the_least_recently_used_nonces() -> None:
    session = DigestSession("alice", "pw", max_nonces=2)
    for nonce in ("a", "b", "a", "c"):
        session.authorize(DigestChallenge(realm="r", nonce=nonce), method="BYE", uri="sip:x")
    assert (session.nonce_count("a"), session.nonce_count("b"), session.nonce_count("c")) == (
        2,
        0,
        1,
    )


def test_session_can_answer() -> None:
    anywhere = DigestSession("alice", "pw")
    only_r = DigestSession("alice", "pw", realm="r")
    assert anywhere.can_answer(DigestChallenge(realm="x", nonce="n"))
    assert only_r.can_answer(DigestChallenge(realm="r", nonce="n"))
    assert not only_r.can_answer(DigestChallenge(realm="x", nonce="n"))
    assert not anywhere.can_answer(DigestChallenge(realm="r", nonce="n", qop=("auth-conf",)))


# --- properties -------------------------------------------------------------------------------

_LOWER_TOKEN = "abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
quoted_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30)
challenges = st.builds(
    DigestChallenge,
    realm=quoted_text,
    nonce=quoted_text,
    opaque=st.none() | quoted_text,
    algorithm=st.sampled_from(ALL_ALGORITHMS),
    qop=st.lists(st.text(_LOWER_TOKEN, min_size=1, max_size=8), max_size=3).map(tuple),
    stale=st.booleans(),
    userhash=st.booleans(),
)


@given(challenges)
def test_challenge_round_trips(challenge: DigestChallenge) -> None:
    assert parse_challenge(challenge.render()) == challenge


credentials = st.builds(
    DigestCredentials,
    username=quoted_text,
    realm=quoted_text,
    nonce=quoted_text,
    uri=quoted_text,
    response=st.text("0123456789abcdef", max_size=64),
    algorithm=st.sampled_from(ALL_ALGORITHMS),
    cnonce=quoted_text,
    opaque=st.none() | quoted_text,
    qop=st.sampled_from(["auth", "auth-int"]),
    nc=st.integers(min_value=0, max_value=2**32 - 1),
    userhash=st.booleans(),
)


@given(credentials)
def test_credentials_round_trip(creds: DigestCredentials) -> None:
    assert parse_authorization(creds.render()) == creds


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_parse_error(header: str) -> None:
    for parse in (parse_challenge, parse_authorization):
        with contextlib.suppress(SipParseError):
            parse(header)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            [
                "Digest ",
                "realm",
                "nonce",
                "qop",
                "algorithm",
                "=",
                '"',
                "\\",
                ",",
                " ",
                "auth",
                "SHA-256",
                "x",
                "uri",
                "response",
                "nc",
                "00000001",
                "username*",
                "UTF-8''%C3",
            ]
        ),
        max_size=25,
    )
)
def test_digest_shaped_noise_parses_or_raises_parse_error(pieces: list[str]) -> None:
    header = "".join(pieces)
    try:
        challenge = parse_challenge(header)
    except SipParseError:
        pass
    else:
        with contextlib.suppress(SipParseError):
            build_authorization(
                challenge, username="u", password="p", method="INVITE", uri="sip:x", nc=1
            )
    try:
        creds = parse_authorization(header)
    except SipParseError:
        return
    if not creds.userhash:
        verify_authorization(creds, password="p", method="INVITE")
