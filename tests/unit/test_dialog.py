"""Dialog state (RFC 3261 §12): route sets, loose and strict routing, targets, CSeq order."""

from __future__ import annotations

from sipstack.dialog import Dialog, NextHop
from sipstack.message import Response
from sipstack.transport import Transport

FALLBACK = NextHop(address=("192.0.2.10", 5060), transport=Transport.UDP)


def _answer(*extra: tuple[str, str]) -> Response:
    return Response(
        200,
        "OK",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"),
            ("From", "<sip:a@example.com>;tag=local"),
            ("To", "<sip:b@example.com>;tag=remote"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
            *extra,
        ],
    )


def _dialog(response: Response) -> Dialog:
    return Dialog.from_answer(
        response,
        call_id="c1",
        local_header="<sip:a@example.com>;tag=local",
        remote_header_without_tag="<sip:b@example.com>",
        invite_cseq=1,
        fallback_target="sip:b@example.com",
        fallback_hop=FALLBACK,
    )


def test_route_set_is_the_record_route_reversed_and_loose_routing_keeps_the_target() -> None:
    dialog = _dialog(
        _answer(
            ("Record-Route", "<sip:p3.example.com;lr>, <sip:p2.example.com;lr>"),
            ("Record-Route", "<sip:p1.example.com:5070;lr;transport=tcp>"),
            ("Contact", "<sip:b@198.51.100.7:5062>"),
        )
    )
    assert dialog.route_set == (
        "<sip:p1.example.com:5070;lr;transport=tcp>",
        "<sip:p2.example.com;lr>",
        "<sip:p3.example.com;lr>",
    )
    assert not dialog.strict_route
    assert dialog.remote_header == "<sip:b@example.com>;tag=remote"
    uri, routes = dialog.request_uri_and_routes()
    assert uri == "sip:b@198.51.100.7:5062" and routes == dialog.route_set
    assert dialog.next_hop == NextHop(address=("p1.example.com", 5070), transport=Transport.TCP)


def test_strict_routing_moves_the_target_to_the_end_of_the_route() -> None:
    dialog = _dialog(
        _answer(
            ("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com>"),
            ("Contact", "<sip:b@198.51.100.7>"),
        )
    )
    assert dialog.strict_route
    uri, routes = dialog.request_uri_and_routes()
    assert uri == "sip:p1.example.com"
    assert routes == ("<sip:p2.example.com;lr>", "<sip:b@198.51.100.7>")
    assert dialog.next_hop.address == ("p1.example.com", 5060)


def test_without_route_set_the_next_hop_is_the_contact_and_sips_means_tls() -> None:
    dialog = _dialog(_answer(("Contact", "<sips:b@198.51.100.7>")))
    assert dialog.next_hop == NextHop(address=("198.51.100.7", 5061), transport=Transport.TLS)
    dialog = _dialog(_answer(("Contact", "<sip:b@host.example;maddr=198.51.100.9>")))
    assert dialog.next_hop.address == ("198.51.100.9", 5060)


def test_missing_or_unusable_contact_falls_back() -> None:
    assert _dialog(_answer()).remote_target == "sip:b@example.com"
    dialog = _dialog(_answer(("Contact", "<tel:+15550001>")))
    assert dialog.remote_target == "tel:+15550001"
    assert dialog.next_hop == FALLBACK
    assert _dialog(_answer(("Contact", "garbage <<"))).remote_target == "sip:b@example.com"


def test_target_refresh_and_request_building() -> None:
    dialog = _dialog(_answer(("Contact", "<sip:b@198.51.100.7>")))
    dialog.update_remote_target("<sip:b@198.51.100.8:5080>;expires=60", FALLBACK)
    assert dialog.remote_target == "sip:b@198.51.100.8:5080"
    assert dialog.next_hop.address == ("198.51.100.8", 5080)
    number = dialog.next_cseq()
    request = dialog.build_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKx", cseq=number)
    assert request.uri == "sip:b@198.51.100.8:5080"
    assert request.cseq == (2, "BYE")
    assert request.header("to") == "<sip:b@example.com>;tag=remote"
    assert request.header("from") == "<sip:a@example.com>;tag=local"


def test_remote_cseq_must_not_go_backwards() -> None:
    dialog = _dialog(_answer())
    assert dialog.accepts_remote_cseq(5)
    assert dialog.accepts_remote_cseq(5)  # a retransmission is not out of order
    assert dialog.accepts_remote_cseq(9)
    assert not dialog.accepts_remote_cseq(7)
