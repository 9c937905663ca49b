"""sipstack.message: parsing, header access, editing, rendering and the errors bad bytes get."""

from __future__ import annotations

import pytest

from sipstack.errors import SipParseError
from sipstack.message import (
    COMPACT_FORMS,
    REASON_PHRASES,
    ParseLimits,
    Request,
    Response,
    canonical_name,
    make_response,
    parse_message,
    split_values,
)

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


def crlf(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def ok_200(*extra: str, body: bytes = SDP) -> bytes:
    return crlf(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc;rport=5060;received=192.0.2.10",
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKproxy",
        'From: "Campaign, Inc" <sip:+15551230000@trunk.example.com;tag=uri-tag>;tag=ours',
        "To: <sip:+15559870000@carrier.example.net>;tag=theirs",
        "Call-ID: 3848276298@192.0.2.10",
        "CSeq: 1 INVITE",
        "Contact: <sip:callee@198.51.100.7:5060;transport=udp>",
        *extra,
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        body=body,
    )


def bye(*extra: str, start: str = "BYE sip:caller@192.0.2.10:5060 SIP/2.0") -> bytes:
    return crlf(
        start,
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKbye",
        "Max-Forwards: 70",
        "From: <sip:+15559870000@carrier.example.net>;tag=theirs",
        "To: <sip:+15551230000@trunk.example.com>;tag=ours",
        "Call-ID: 3848276298@192.0.2.10",
        "CSeq: 20 BYE",
        *extra,
        "Content-Length: 0",
    )


# ---- parsing and reading -----------------------------------------------------------------


def test_response_fields_and_fast_accessors() -> None:
    message = parse_message(ok_200())
    assert isinstance(message, Response)
    assert (message.status_code, message.reason) == (200, "OK")
    assert message.call_id == "3848276298@192.0.2.10"
    assert message.cseq == (1, "INVITE")
    assert message.via_branch == "z9hG4bKabc"
    assert message.from_tag == "ours"  # the ;tag inside <...> belongs to the URI
    assert message.to_tag == "theirs"
    assert message.body == SDP


def test_request_fields() -> None:
    message = parse_message(bye('Reason: Q.850;cause=16;text="Normal, clearing"'))
    assert isinstance(message, Request)
    assert (message.method, message.uri) == ("BYE", "sip:caller@192.0.2.10:5060")
    assert message.cseq == (20, "BYE")
    assert message.header("reason") == 'Q.850;cause=16;text="Normal, clearing"'
    assert message.body == b""


# Via, From, To, Call-ID and Content-Length are in every message: see the next test.
OPTIONAL_COMPACT_FORMS = sorted(
    (compact, full)
    for compact, full in COMPACT_FORMS.items()
    if full not in ("via", "from", "to", "call-id", "content-length")
)


@pytest.mark.parametrize(("compact", "full"), OPTIONAL_COMPACT_FORMS)
def test_compact_forms_answer_to_their_full_names(compact: str, full: str) -> None:
    message = parse_message(bye(f"{compact.upper()}: value-{compact}"))
    assert message.header(full) == f"value-{compact}"
    assert message.header(full.upper()) == f"value-{compact}"
    assert message.header(compact) == f"value-{compact}"
    assert message.has_header(full)


def test_required_headers_in_compact_form() -> None:
    message = parse_message(
        crlf(
            "SIP/2.0 180 Ringing",
            "v: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKc",
            "f: <sip:a@example.com>;tag=f1",
            "t: <sip:b@example.com>;tag=t1",
            "i: compact@192.0.2.10",
            "CSeq: 7 INVITE",
            "l: 0",
        )
    )
    assert message.header("Via") == "SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKc"
    assert (message.via_branch, message.from_tag, message.to_tag) == ("z9hG4bKc", "f1", "t1")
    assert message.call_id == message.header("CALL-ID") == "compact@192.0.2.10"
    assert message.header("Content-Length") == "0"


def test_header_is_case_insensitive_and_returns_the_first_line_as_written() -> None:
    message = parse_message(
        ok_200("Record-Route: <sip:p1;lr>, <sip:p2;lr>", "record-route: <sip:p3;lr>")
    )
    assert message.header("RECORD-ROUTE") == "<sip:p1;lr>, <sip:p2;lr>"
    assert message.header("x-missing") is None
    assert not message.has_header("x-missing")
    assert message.headers_all("x-missing") == []


def test_headers_all_splits_commas_but_not_inside_quotes_or_brackets() -> None:
    message = parse_message(
        ok_200(
            'P-Asserted-Identity: "Doe, John" <sip:+1555@example.com;x=a,b>, <tel:+1555>',
            "Record-Route: <sip:p1;lr>,<sip:p2;lr>",
            "Record-Route: <sip:p3;lr>",
            "Allow: INVITE, ACK ,, BYE",
        )
    )
    assert message.headers_all("p-asserted-identity") == [
        '"Doe, John" <sip:+1555@example.com;x=a,b>',
        "<tel:+1555>",
    ]
    assert message.headers_all("record-route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert message.headers_all("allow") == ["INVITE", "ACK", "BYE"]
    assert message.headers_all("via") == [
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc;rport=5060;received=192.0.2.10",
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKproxy",
    ]


def test_headers_all_keeps_headers_whose_commas_are_not_separators() -> None:
    message = parse_message(
        ok_200(
            "Date: Sat, 13 Nov 2010 23:29:00 GMT",
            'WWW-Authenticate: Digest realm="a", nonce="b", qop="auth"',
            "Subject: lunch, then a call",
        )
    )
    assert message.headers_all("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert message.headers_all("www-authenticate") == ['Digest realm="a", nonce="b", qop="auth"']
    assert message.headers_all("subject") == ["lunch, then a call"]


@pytest.mark.parametrize(
    ("value", "elements"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        ("single", ["single"]),
        ("  ", []),
        ("a,,b,", ["a", "b"]),
        ('"x, \\"y\\", z" <sip:a>, b', ['"x, \\"y\\", z" <sip:a>', "b"]),
        ("<sip:a;p=1,2>, <sip:b>", ["<sip:a;p=1,2>", "<sip:b>"]),
        ('"unterminated, quote', ['"unterminated, quote']),
        ("<unterminated, bracket", ["<unterminated, bracket"]),
        ("a\\, b", ["a\\", "b"]),
    ],
)
def test_split_values(value: str, elements: list[str]) -> None:
    assert split_values(value) == elements


def test_canonical_name() -> None:
    assert canonical_name(" Call-ID ") == "call-id"
    assert canonical_name("I") == "call-id"
    assert canonical_name("q") == "q"
    assert canonical_name("X-Custom") == "x-custom"


def test_folded_lines_are_joined_with_one_space() -> None:
    message = parse_message(
        bye("Subject: first part", "  second part", "\tthird part", "X-Empty:", " filled later")
    )
    assert message.header("subject") == "first part second part third part"
    assert message.header("x-empty") == "filled later"


def test_spaces_around_the_colon_and_the_value_are_not_part_of_it() -> None:
    message = parse_message(bye("X-Spaced  \t:  \t value with  inner  spaces \t "))
    assert message.header("x-spaced") == "value with  inner  spaces"
    assert ("X-Spaced", "value with  inner  spaces") in message.headers


def test_bare_lf_line_ends_are_accepted() -> None:
    head, _, body = ok_200().partition(b"\r\n\r\n")
    message = parse_message(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert message.cseq == (1, "INVITE")
    assert message.header("content-type") == "application/sdp"
    assert message.body == SDP
    mixed = bye("Subject: a\nX-After-Bare-LF: c")
    assert parse_message(mixed).header("x-after-bare-lf") == "c"


def test_empty_lines_before_the_start_line_are_skipped_and_counted() -> None:
    message = parse_message(b"\r\n\r\n" + bye())
    assert message.call_id == "3848276298@192.0.2.10"
    with pytest.raises(SipParseError, match=r"^line 9 \(CSeq\)"):
        parse_message(b"\r\n\r\n" + bye().replace(b"CSeq: 20 BYE", b"CSeq: 20 ACK"))


def test_without_content_length_the_body_is_the_rest_of_the_datagram() -> None:
    data = ok_200().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert parse_message(data).body == SDP


def test_content_length_shorter_than_the_datagram_cuts_the_body() -> None:
    message = parse_message(ok_200(body=SDP) + b"trailing garbage")
    assert message.body == SDP


def test_repeated_equal_content_length_is_fine() -> None:
    message = parse_message(bye("l: 0"))
    assert message.body == b""


def test_parsed_headers_list_is_in_wire_order_with_names_as_written() -> None:
    message = parse_message(bye("x-lower: a", "X-UPPER: b"))
    names = [name for name, _ in message.headers]
    assert names == [
        "Via",
        "Max-Forwards",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "x-lower",
        "X-UPPER",
        "Content-Length",
    ]


# ---- editing -------------------------------------------------------------------------------


def test_add_set_and_remove_headers_update_lookups() -> None:
    message = parse_message(ok_200())
    message.add_header("Via", "SIP/2.0/TCP 192.0.2.99;branch=z9hG4bKnew", first=True)
    assert message.via_branch == "z9hG4bKnew"
    message.add_header("Supported", "timer")
    message.add_header("k", "100rel")
    assert message.headers_all("supported") == ["timer", "100rel"]
    message.set_header("Supported", "replaces")
    assert message.headers_all("supported") == ["replaces"]
    message.set_header("To", "<sip:b@example.com>;tag=changed")
    assert message.to_tag == "changed"
    assert message.remove_header("via") == 3
    assert message.via_branch is None
    assert message.remove_header("via") == 0
    message.set_header("X-New", "appended")
    assert message.headers[-1] == ("X-New", "appended")


def test_set_header_keeps_the_position_of_the_first_line() -> None:
    message = Request("OPTIONS", "sip:a@example.com", [("A", "1"), ("B", "2"), ("a", "3")])
    message.set_header("a", "9")
    assert message.headers == [("a", "9"), ("B", "2")]


def test_lookups_follow_headers_appended_to_the_list_directly() -> None:
    message = Request("OPTIONS", "sip:a@example.com", [("Call-ID", "one")])
    assert message.call_id == "one"
    message.headers.insert(0, ("Call-ID", "zero"))
    assert message.call_id == "zero"
    message.headers = [("i", "replaced")]
    assert message.call_id == "replaced"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Bad Name", "v"),
        ("", "v"),
        ("X:Y", "v"),
        ("X", "a\r\nInjected: 1"),
        ("X", "a\nb"),
        ("X", "nul\x00"),
    ],
)
def test_add_and_set_header_refuse_injection(name: str, value: str) -> None:
    message = Request("OPTIONS", "sip:a@example.com")
    with pytest.raises(ValueError, match="header"):
        message.add_header(name, value)
    with pytest.raises(ValueError, match="header"):
        message.set_header(name, value)
    assert message.headers == []


# ---- rendering -----------------------------------------------------------------------------


def test_render_writes_a_correct_content_length_whatever_the_headers_say() -> None:
    message = Request(
        "INFO",
        "sip:a@example.com",
        [("Call-ID", "x"), ("Content-Length", "999"), ("l", "5"), ("CONTENT-LENGTH", "1")],
        b"twelve bytes",
    )
    rendered = bytes(message)
    assert rendered == message.to_bytes()
    assert rendered == (
        b"INFO sip:a@example.com SIP/2.0\r\nCall-ID: x\r\nContent-Length: 12\r\n\r\ntwelve bytes"
    )


def test_render_of_a_parsed_message_keeps_every_header_and_the_body() -> None:
    data = ok_200("X-Extra: a, b")
    assert bytes(parse_message(data)) == data


def test_response_reason_defaults() -> None:
    assert Response(486).reason == REASON_PHRASES[486] == "Busy Here"
    assert Response(299).reason == "Unknown"
    assert bytes(Response(183, "Session Progress")).startswith(b"SIP/2.0 183 Session Progress\r\n")


@pytest.mark.parametrize(
    "message",
    [
        Request("INVITE", "sip:a@example.com", [("Subject", "a\r\nInjected: yes")]),
        Request("INVITE", "sip:a@example.com", [("Subject", "nul \x00")]),
        Request("INVITE", "sip:a@example.com", [("Bad Name", "x")]),
        Request("INVITE", "sip:a@example.com", [("Subject", "lone surrogate \ud800")]),
        Request("BAD METHOD", "sip:a@example.com"),
        Request("INVITE", "sip:a@example.com SIP/2.0\r\nInjected: yes"),
        Request("INVITE", ""),
        Response(99),
        Response(700),
        Response(200, "OK\r\nInjected: yes"),
    ],
    ids=[
        "crlf-in-value",
        "nul-in-value",
        "bad-name",
        "surrogate",
        "bad-method",
        "space-in-uri",
        "empty-uri",
        "status-99",
        "status-700",
        "crlf-in-reason",
    ],
)
def test_render_refuses_what_would_not_parse_back(message: Request | Response) -> None:
    with pytest.raises(ValueError):
        message.to_bytes()


def test_equality_ignores_content_length_and_compact_spelling() -> None:
    built = Request("BYE", "sip:a@example.com", [("i", "x"), ("v", "SIP/2.0/UDP h;branch=b")])
    spelled = Request(
        "BYE",
        "sip:a@example.com",
        [("Call-ID", "x"), ("Via", "SIP/2.0/UDP h;branch=b"), ("l", "0")],
    )
    assert built == spelled
    assert built != Request("BYE", "sip:a@example.com", [("Call-ID", "x")])
    assert built != Request("BYE", "sip:b@example.com", built.headers)
    assert Response(200, "OK", [], b"a") != Response(200, "OK", [], b"b")
    assert built != Response(200)


# ---- make_response -------------------------------------------------------------------------


def test_make_response_copies_the_transaction_headers_and_adds_the_to_tag() -> None:
    request = parse_message(
        crlf(
            "UPDATE sip:caller@192.0.2.10 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1",
            "Via: SIP/2.0/UDP 198.51.100.8;branch=z9hG4bK2",
            "Max-Forwards: 70",
            "f: <sip:b@example.net>;tag=theirs",
            "t: <sip:a@example.com>",
            "i: upd@198.51.100.7",
            "CSeq: 5 UPDATE",
            "Session-Expires: 1800",
            "Content-Length: 0",
        )
    )
    assert isinstance(request, Request)
    response = make_response(request, 200, to_tag="mine", headers=[("Require", "timer")])
    assert response.reason == "OK"
    assert response.headers == [
        ("Via", "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1"),
        ("Via", "SIP/2.0/UDP 198.51.100.8;branch=z9hG4bK2"),
        ("From", "<sip:b@example.net>;tag=theirs"),
        ("To", "<sip:a@example.com>;tag=mine"),
        ("Call-ID", "upd@198.51.100.7"),
        ("CSeq", "5 UPDATE"),
        ("Require", "timer"),
    ]
    assert parse_message(bytes(response)) == response


def test_make_response_keeps_an_existing_to_tag() -> None:
    request = parse_message(bye())
    assert isinstance(request, Request)
    response = make_response(request, 481, "Gone Away", to_tag="other")
    assert response.to_tag == "ours"
    assert response.reason == "Gone Away"


# ---- what malformed bytes get --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "no empty line"),
        (b"\r\n\r\n", "no empty line"),
        (bye().replace(b"\r\n\r\n", b"\r\n"), "no empty line"),
        (bye(start="BYE sip:a@example.com SIP/2.0 extra"), r"^line 1: request line"),
        (bye(start="BYE sip:a@example.com"), r"^line 1: request line"),
        (bye(start="BYE\tsip:a@example.com\tSIP/2.0"), r"^line 1: request line"),
        (
            bye(start="B(E sip:a@example.com SIP/2.0"),
            r"^line 1: request method 'B\(E' is not a token",
        ),
        (bye(start="BYE sip:a@example.com SIP/3.0"), r"^line 1: unsupported SIP version 'SIP/3.0'"),
        (bye(start='BYE sip:"a"@example.com SIP/2.0'), r"^line 1: request URI"),
        (bye(start="BYE nocolon SIP/2.0"), r"^line 1: request URI 'nocolon'"),
        (bye(start="BYE sip:ü@example.com SIP/2.0"), r"^line 1: request URI"),
        (ok_200().replace(b"SIP/2.0 200 OK", b"SIP/2.0 2000 OK"), r"^line 1: status code"),
        (ok_200().replace(b"SIP/2.0 200 OK", b"SIP/2.0 099 OK"), r"^line 1: status code"),
        (ok_200().replace(b"SIP/2.0 200 OK", b"SIP/2.0 7xx OK"), r"^line 1: status code"),
        (ok_200().replace(b"SIP/2.0 200 OK", b"SIP/2.0 20"), r"^line 1: status code '20'"),
        (ok_200().replace(b"SIP/2.0 200 OK", b"SIP/1.0 200 OK"), r"^line 1: unsupported SIP"),
        (bye(" continuation"), r"^line 7 \(CSeq\): CSeq '20 BYE continuation'"),
        (bye("NoColonHere"), r"^line 8: 'NoColonHere' is not a 'Name: value' header"),
        (bye("Bad Name: x"), r"^line 8: header name 'Bad Name' is not a token"),
        (bye("Via"), r"^line 8: 'Via' is not a 'Name: value' header"),
        (b"BYE sip:a@example.com SIP/2.0\r\n folded: first\r\n\r\n", r"^line 2: continuation line"),
        (bye("Call-ID: second@example.com"), r"^line 8 \(Call-ID\): header appears more than once"),
        (bye("t: <sip:x@example.com>"), r"^line 8 \(To\): header appears more than once"),
        (
            bye().replace(b"Call-ID: 3848276298@192.0.2.10", b"Call-ID:  "),
            r"^line 6 \(Call-ID\): empty",
        ),
        (bye().replace(b"CSeq: 20 BYE", b"CSeq: BYE"), r"^line 7 \(CSeq\): CSeq 'BYE' is not"),
        (bye().replace(b"CSeq: 20 BYE", b"CSeq: 2147483648 BYE"), r"^line 7 \(CSeq\).*2\*\*31-1"),
        (bye().replace(b"CSeq: 20 BYE", b"CSeq: " + b"9" * 5000 + b" BYE"), r"^line 7 \(CSeq\)"),
        (bye().replace(b"CSeq: 20 BYE", b"CSeq: \xd9\xa1 BYE"), r"^line 7 \(CSeq\)"),
        (bye().replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), r"^line 3 \(Max-Forwards\)"),
        (bye().replace(b"Max-Forwards: 70", b"Max-Forwards: -1"), r"^line 3 \(Max-Forwards\)"),
        (
            bye().replace(b"Content-Length: 0", b"Content-Length: abc"),
            r"^line 8 \(Content-Length\)",
        ),
        (bye().replace(b"Content-Length: 0", b"Content-Length: -1"), r"^line 8 \(Content-Length\)"),
        (
            bye().replace(b"Content-Length: 0", b"Content-Length: 1"),
            r"^line 8 \(Content-Length\): 1 is larger",
        ),
        (
            bye().replace(b"Content-Length: 0", b"Content-Length: " + b"9" * 5000),
            r"^line 8 \(Content-Length\).*larger",
        ),
        (
            bye().replace(b"Content-Length: 0", b"Content-Length: \xc2\xb2"),
            r"^line 8 \(Content-Length\).*not a non-negative",
        ),
        (bye("l: 1"), r"^line 9 \(Content-Length\): conflicting values \['0', '1'\]"),
        (
            bye().replace(b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKbye\r\n", b""),
            r"missing required header\(s\): Via$",
        ),
        (
            bye().replace(
                b"Via: SIP/2.0/UDP 198.51.100.7:5060;", b"Via: SIP/2.0/UDP 198.51.100.7:5060;;"
            ),
            r"^line 2 \(Via\)",
        ),
        (bye("Via: garbage"), r"^line 8 \(Via\): 'garbage' is not valid"),
        (
            bye().replace(b"From: <sip:+15559870000", b"From: <sip: +15559870000"),
            r"^line 4 \(From\)",
        ),
        (bye().replace(b"To: <sip:", b'To: "open <sip:'), r"^line 5 \(To\)"),
        (bye().replace(b"To: <sip:", b"To: sip:a@b?x=1;tag=2 <sip:"), r"^line 5 \(To\)"),
        (bye("Retry-After: soon"), r"^line 8 \(Retry-After\): 'soon' does not start"),
        (bye("Subject: X").replace(b"X", b"caf\xc3"), r"^line 8: header bytes are not UTF-8"),
        (bye("Subject: X").replace(b"X", b"\xff"), r"^line 8: header bytes are not UTF-8"),
        (bye("Subject: a\x00b"), r"^line 8: NUL byte"),
        (bye("Subject: a\rb"), r"^line 8: carriage return not followed by line feed"),
    ],
)
def test_malformed_messages_get_sip_parse_error_naming_what_and_where(
    data: bytes, error: str
) -> None:
    with pytest.raises(SipParseError, match=error):
        parse_message(data)


def test_huge_numbers_with_leading_zeros_are_read_not_refused() -> None:
    data = bye().replace(b"Max-Forwards: 70", b"Max-Forwards: " + b"0" * 5000 + b"1")
    assert parse_message(data).header("max-forwards") == "0" * 5000 + "1"


def test_limits_bound_size_header_count_and_line_length() -> None:
    limits = ParseLimits(max_message_bytes=2000, max_headers=10, max_line_length=200)
    parse_message(bye(), limits=limits)
    with pytest.raises(SipParseError, match="message of 2001 bytes exceeds the 2000 limit"):
        parse_message(bye().ljust(2001, b"x"), limits=limits)
    with pytest.raises(SipParseError, match="11 header fields exceed the 10-header limit"):
        parse_message(bye("A: 1", "B: 2", "C: 3", "D: 4"), limits=limits)
    folded = bye("A: 1", *[" more"] * 20)
    assert parse_message(folded, limits=limits).header("a") == "1" + " more" * 20
    with pytest.raises(SipParseError, match=r"line 8: 204 characters exceed the 200-character"):
        parse_message(bye("Subject: " + "x" * 195), limits=limits)


def test_default_limits_refuse_oversized_datagrams() -> None:
    with pytest.raises(SipParseError, match="exceeds the 65535 limit"):
        parse_message(bye() + b"x" * 65_535)


def hostile(**replaced: str) -> bytes:
    headers = {
        "Via": "SIP/2.0/UDP h;branch=z9hG4bKx",
        "From": "<sip:a@b>;tag=1",
        "To": "<sip:c@d>",
        "Call-ID": "x",
        "CSeq": "1 BYE",
    }
    headers.update(replaced)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"BYE sip:a@b SIP/2.0\r\n{lines}\r\n".encode()


N = 8000
HOSTILE = {
    "display-words": hostile(From="a " * N + "x"),
    "display-words-then-bracket": hostile(From="a " * N + "<sip:a@b"),
    "backslashes": hostile(From='"' + "\\" * N),
    "escaped-quotes": hostile(From='"' + '\\"' * N),
    "many-params": hostile(From="<sip:a@b>" + ";x" * N + " ?"),
    "spaced-params": hostile(To="<sip:a@b>" + " ; x = y" * (N // 4) + ";"),
    "via-params": hostile(Via="SIP/2.0/UDP h" + ";branch=z" * (N // 4) + ";;"),
    "via-list": hostile(Via="SIP/2.0/UDP h, " * (N // 8) + ","),
    "via-spaces": hostile(Via="SIP" + " " * N + "/"),
    "cseq-spaces": hostile(CSeq="1" + " " * N + "B"),
    "uri": f"BYE sip:{'a' * N} {'b' * N} SIP/2.0\r\n\r\n".encode(),
    "folds": b"BYE sip:a@b SIP/2.0\r\nX: y\r\n" + b" z\r\n" * 5000 + b"\r\n",
    "bare-crs": b"\r\r\r\n" * 15000,
}
ROOMY = ParseLimits(max_message_bytes=200_000, max_headers=100_000, max_line_length=200_000)


@pytest.mark.timeout(60)  # a guard against catastrophic regex backtracking, not a speed goal
@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_shapes_end_in_an_answer_not_a_hang(data: bytes) -> None:
    try:
        parse_message(data, limits=ROOMY)
    except SipParseError as exc:
        assert str(exc).startswith(("line ", "missing", "message"))
    elements = split_values(data.decode("latin-1"))
    assert all(element and element == element.strip(" \t") for element in elements)


def test_a_peer_inventing_header_names_cannot_grow_the_name_cache_without_end() -> None:
    from sipstack import message as module

    for batch in range(3):
        names = [f"X-Invented-{batch}-{number}" for number in range(2000)]
        data = bye(*(f"{name}: {number}" for number, name in enumerate(names)))
        parsed = parse_message(data, limits=ROOMY)
        assert parsed.header(names[-1]) == "1999"
    assert len(module._KEY_OF_NAME) <= module._KEY_CACHE_SIZE
    assert parse_message(bye("X-Never-Seen-Before: yes")).header("x-never-seen-before") == "yes"


@pytest.mark.parametrize("call_id", ["caf\u00e9@192.0.2.10", "\u2603-1@example.com"])
def test_a_non_ascii_call_id_is_rejected_naming_the_header(call_id: str) -> None:
    data = bye().replace(b"Call-ID: 3848276298@192.0.2.10", f"Call-ID: {call_id}".encode())
    with pytest.raises(SipParseError, match=r"^line 6 \(Call-ID\): "):
        parse_message(data)
