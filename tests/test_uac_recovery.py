"""Crash recovery from a DialogSnapshot, lost connections, drop() and cleanup_if_present()."""

from __future__ import annotations

import pytest

from sipstack.cdr import Disposition, HangupBy, HangupReason
from sipstack.dialog import DialogSnapshot
from sipstack.errors import LocalProtocolError
from sipstack.events import LegCancelled, LegEnded, LegFailed
from sipstack.transport import Transport
from tests.fakes import TRUNK, FarEnd, Harness, establish


def test_snapshot_of_an_established_leg_lets_another_core_bye_it() -> None:
    owner = Harness(seed=1)
    far = FarEnd(record_route=("<sip:edge.example.com;lr>",))
    call_id, invite = establish(owner, far)
    snapshot = owner.core.dialog_snapshot(call_id)
    assert snapshot.state == "established"
    assert snapshot.local_tag == invite.from_tag and snapshot.remote_tag == far.tag
    assert snapshot.remote_target == "sip:callee@192.0.2.10:5060"
    assert snapshot.route_set == ("<sip:edge.example.com;lr>",)
    assert snapshot.invite_branch == invite.via_branch
    assert snapshot.invite_via == invite.header("via")
    assert snapshot.local_cseq == 1 and snapshot.transport is Transport.UDP

    heir = Harness(seed=2)
    heir.clock.now = owner.now + 100
    assert heir.core.end_recovered(snapshot, heir.now) == call_id
    heir.flush()
    bye = heir.last("BYE")
    assert bye.call_id == call_id
    assert bye.cseq == (2, "BYE")
    assert bye.header("from") == invite.header("from")
    assert bye.to_tag == far.tag
    assert bye.uri == "sip:callee@192.0.2.10:5060"
    assert bye.headers_all("route") == ["<sip:edge.example.com;lr>"]
    assert "recovery" in (bye.header("reason") or "")
    assert heir.sent_requests("BYE")[0].out.address == ("edge.example.com", 5060)
    heir.deliver(far.respond(bye, 200))
    ended = heir.terminal(call_id)
    assert isinstance(ended, LegEnded)
    assert ended.reason.startswith("recovered leg")
    assert ended.cdr.hangup_by is HangupBy.LOCAL
    assert ended.cdr.started_at == owner.all_events[0].at
    assert ended.cdr.disposition is Disposition.ANSWERED
    assert ended.cdr.correlation_id == "corr-1"


def test_snapshot_of_a_ringing_leg_lets_another_core_cancel_it() -> None:
    owner = Harness(seed=1)
    far = FarEnd()
    call_id = owner.dial()
    invite = owner.last("INVITE")
    owner.deliver(far.respond(invite, 180))
    snapshot = owner.core.dialog_snapshot(call_id)
    assert snapshot.state == "ringing"

    heir = Harness(seed=2)
    heir.core.end_recovered(snapshot, heir.now)
    heir.flush()
    cancel = heir.last("CANCEL")
    assert cancel.header("via") == invite.header("via")
    assert cancel.cseq == (1, "CANCEL") and cancel.uri == invite.uri
    assert cancel.header("to") == invite.header("to")
    heir.deliver(far.respond(cancel, 200))
    heir.deliver(far.respond(invite, 487))
    ack = heir.last("ACK")
    assert ack.via_branch == invite.via_branch
    cancelled = heir.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    assert cancelled.reason.startswith("recovered leg")
    assert cancelled.cdr.disposition is Disposition.CANCELLED


def test_end_recovered_rejects_bad_snapshots() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    snapshot = h.core.dialog_snapshot(call_id)
    with pytest.raises(LocalProtocolError, match="live here"):
        h.core.end_recovered(snapshot, h.now)
    other = Harness()
    bad = DialogSnapshot(**{**_fields(snapshot), "state": "weird"})
    with pytest.raises(LocalProtocolError, match="state"):
        other.core.end_recovered(bad, other.now)
    assert other.core.leg_count == 0


def _fields(snapshot: DialogSnapshot) -> dict[str, object]:
    return {name: getattr(snapshot, name) for name in snapshot.__dataclass_fields__}


def test_lost_connection_fails_ringing_legs_and_ends_established_ones() -> None:
    h = Harness()
    far = FarEnd(contact="<sip:callee@192.0.2.10:5060;transport=tcp>")
    up, _ = establish(h, far, transport=Transport.TCP)
    ringing = h.dial(transport=Transport.TCP)
    h.deliver(far.respond(h.last("INVITE"), 180))
    elsewhere = h.dial(signaling_addr="192.0.2.99:5060", transport=Transport.TCP)
    h.core.connection_lost(Transport.TCP, TRUNK, h.now)
    h.flush()
    failed = h.terminal(ringing)
    assert isinstance(failed, LegFailed)
    assert failed.cdr.error == "connection lost"
    ended = h.terminal(up)
    assert isinstance(ended, LegEnded)
    assert ended.cdr.hangup_by is HangupBy.LOCAL
    assert ended.cdr.hangup_reason is HangupReason.ERROR
    assert ended.cdr.error == "connection lost"
    assert h.core.leg_count == 1 and h.core.dialog_snapshot(elsewhere).state == "calling"


def test_drop_forgets_a_leg_silently_but_still_reports_it() -> None:
    h = Harness()
    far = FarEnd()
    call_id = h.dial()
    invite = h.last("INVITE")
    h.core.cancel(call_id, h.now)
    assert h.core.drop(call_id)
    assert not h.core.drop(call_id)
    assert h.flush() == []
    cancelled = h.terminal(call_id)
    assert isinstance(cancelled, LegCancelled)
    h.advance(40)
    assert len(h.sent_requests("INVITE")) == 1  # no retransmission for a dropped leg
    assert h.sent_requests("CANCEL") == []
    h.deliver(far.answer(invite))  # a late answer is never left half-open
    assert [s.request.method for s in h.wire[-2:]] == ["ACK", "BYE"]
    assert h.core.stats.orphan_answers == 1


def test_cleanup_if_present_ends_with_the_given_reason_class() -> None:
    h = Harness()
    far = FarEnd()
    call_id, _ = establish(h, far)
    h.core.cleanup_if_present("absent", "normal", h.now)
    with pytest.raises(LocalProtocolError, match="reason_class"):
        h.core.cleanup_if_present(call_id, "bogus", h.now)
    h.core.cleanup_if_present(call_id, "user_hangup", h.now)
    h.core.cleanup_if_present(call_id, "user_hangup", h.now)
    assert h.flush() == []
    ended = h.terminal(call_id)
    assert ended.cdr.hangup_reason is HangupReason.USER_HANGUP
    assert ended.cdr.hangup_by is HangupBy.REMOTE
    assert h.core.leg_count == 0
