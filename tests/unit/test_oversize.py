"""The shell's RFC 3261 §18.1.1 helpers: which messages move to TCP and how the Via changes."""

from __future__ import annotations

from sipstack.message import parse_message
from workers.signaling.oversize import too_big_for_udp, top_via_branch, via_over_tcp


def request(extra: str = "", via: str = "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport",
            start: str = "INVITE sip:bob@10.0.0.2 SIP/2.0") -> bytes:
    return (f"{start}\r\n{via}\r\nMax-Forwards: 70\r\nFrom: <sip:a@10.0.0.1>;tag=1\r\n"
            f"To: <sip:bob@10.0.0.2>\r\nCall-ID: c1@10.0.0.1\r\nCSeq: 1 INVITE\r\n{extra}"
            "Content-Length: 4\r\n\r\nv=0\n").encode()


def test_only_requests_over_1300_bytes_are_too_big() -> None:
    small = request()
    big = request("Identity: " + "x" * 1300 + "\r\n")
    assert not too_big_for_udp(small) and too_big_for_udp(big)
    response = b"SIP/2.0 200 OK\r\n" + big.split(b"\r\n", 1)[1]
    assert not too_big_for_udp(response)  # responses follow the request's Via (§18.2.2)


def test_the_top_via_says_tcp_with_its_parameters_and_the_rest_is_untouched() -> None:
    big = request("Identity: " + "x" * 1300 + "\r\n")
    moved = via_over_tcp(big, "10.0.0.1:5070")
    parsed = parse_message(moved)
    assert parsed.header("via") == "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKabc;rport"
    assert moved.replace(b"SIP/2.0/TCP 10.0.0.1:5070", b"SIP/2.0/UDP 10.0.0.1:5060") == big
    assert parsed.body == b"v=0\n"


def test_branch_of_the_top_udp_via_compact_form_too() -> None:
    assert top_via_branch(request()) == b"z9hG4bKabc"
    compact = request(via="v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKxyz")
    assert top_via_branch(compact) == b"z9hG4bKxyz"
    assert top_via_branch(request(via="Via: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKt")) is None
