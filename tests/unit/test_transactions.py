"""Client transactions (RFC 3261 §17.1, RFC 6026): every state, every timer, exact intervals."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from sipstack.config import TimerConfig
from sipstack.core_output import CoreStats, Outgoing
from sipstack.message import Request, Response, make_response
from sipstack.timers import TimerHeap
from sipstack.transactions import (
    INVITE_TABLE,
    NON_INVITE_TABLE,
    ClientTransaction,
    TransactionLayer,
    TxInput,
    TxState,
)
from sipstack.transport import Address, Transport

PEER: Address = ("192.0.2.10", 5060)
BRANCH = "z9hG4bKtest1"


def _request(method: str) -> Request:
    return Request(
        method,
        "sip:bob@example.com",
        [
            ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={BRANCH};rport"),
            ("From", "<sip:alice@example.com>;tag=a1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "call-1"),
            ("CSeq", f"1 {method}"),
        ],
    )


class RecordingUser:
    def __init__(self) -> None:
        self.responses: list[tuple[int, float]] = []
        self.timeouts: list[float] = []
        self.transport_errors: list[float] = []
        self.acks_built = 0

    def on_transaction_response(
        self, transaction: ClientTransaction, response: Response, source: Address, now: float
    ) -> None:
        self.responses.append((response.status_code, now))

    def on_transaction_timeout(self, transaction: ClientTransaction, now: float) -> None:
        self.timeouts.append(now)

    def on_transaction_transport_error(self, transaction: ClientTransaction, now: float) -> None:
        self.transport_errors.append(now)

    def build_failure_ack(self, transaction: ClientTransaction, response: Response) -> bytes:
        self.acks_built += 1
        return f"ACK {transaction.branch} {response.status_code}".encode()


class Rig:
    def __init__(self, method: str = "INVITE", transport: Transport = Transport.UDP, **timers: Any):
        self.heap = TimerHeap()
        self.outgoing: list[Outgoing] = []
        self.stats = CoreStats()
        self.user = RecordingUser()
        self.now = 0.0
        self.method = method
        self.layer = TransactionLayer(
            timers=TimerConfig(**timers),
            heap=self.heap,
            user=self.user,
            outgoing=self.outgoing,
            stats=self.stats,
        )
        self.request = _request(method)
        self.tx = self.layer.start(
            method=method,
            branch=BRANCH,
            data=self.request.to_bytes(),
            transport=transport,
            address=PEER,
            owner=None,
            now=self.now,
        )

    def run_until(self, end: float) -> list[tuple[float, bytes]]:
        """Fire timers up to `end`; return (time, data) of everything sent meanwhile."""
        sent: list[tuple[float, bytes]] = []
        while (deadline := self.heap.next_deadline()) is not None and deadline <= end:
            self.now = deadline
            before = len(self.outgoing)
            self.heap.run_due(deadline)
            sent.extend((deadline, out.data) for out in self.outgoing[before:])
        self.now = end
        return sent

    def respond(self, status: int) -> None:
        response = make_response(self.request, status, to_tag=None if status == 100 else "t1")
        self.layer.receive_response(self.tx, response, PEER, self.now)


def test_invite_udp_timer_a_doubles_without_cap_until_timer_b() -> None:
    rig = Rig()
    assert [out.data for out in rig.outgoing] == [rig.request.to_bytes()]
    retransmits = rig.run_until(100)
    assert [when for when, _ in retransmits] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data == rig.request.to_bytes() for _, data in retransmits)
    assert rig.user.timeouts == [32.0]
    assert rig.tx.state is TxState.TERMINATED
    assert len(rig.layer) == 0
    assert rig.stats.retransmissions == 6


def test_invite_timer_b_follows_t1() -> None:
    rig = Rig(t1=0.1, t2=4.0)
    retransmits = rig.run_until(100)
    assert [round(when, 6) for when, _ in retransmits] == [0.1, 0.3, 0.7, 1.5, 3.1, 6.3]
    assert rig.user.timeouts == [pytest.approx(6.4)]


def test_invite_over_tcp_never_retransmits() -> None:
    rig = Rig(transport=Transport.TCP)
    assert rig.run_until(100) == []
    assert rig.user.timeouts == [32.0]


def test_provisional_stops_retransmissions_and_timer_b() -> None:
    rig = Rig()
    rig.run_until(0.7)
    rig.respond(180)
    assert rig.tx.state is TxState.PROCEEDING
    assert rig.run_until(500) == []
    assert rig.user.timeouts == []
    assert rig.user.responses == [(180, 0.7)]


def test_failure_is_acked_in_the_transaction_and_retransmissions_reacked() -> None:
    rig = Rig()
    rig.respond(100)
    rig.respond(486)
    assert rig.tx.state is TxState.COMPLETED
    ack = f"ACK {BRANCH} 486".encode()
    assert rig.outgoing[-1].data == ack
    rig.now = 5.0
    rig.respond(486)  # the UAS did not get our ACK
    assert rig.outgoing[-1].data == ack
    assert rig.user.acks_built == 1  # the same ACK bytes each time
    assert [code for code, _ in rig.user.responses] == [100, 486]
    assert rig.stats.absorbed_retransmissions == 1
    rig.run_until(31.9)
    assert rig.tx.state is TxState.COMPLETED
    rig.run_until(32.0)  # Timer D = 32 s over UDP, from the first final response (t=0)
    assert rig.tx.state is TxState.TERMINATED
    assert len(rig.layer) == 0


def test_failure_over_tcp_terminates_at_once() -> None:
    rig = Rig(transport=Transport.TCP)
    rig.respond(603)
    assert rig.tx.state is TxState.TERMINATED
    assert rig.outgoing[-1].data == f"ACK {BRANCH} 603".encode()
    assert rig.user.responses == [(603, 0.0)]


def test_success_enters_accepted_and_timer_m_ends_it() -> None:
    rig = Rig()
    rig.run_until(1.0)
    rig.respond(200)
    assert rig.tx.state is TxState.ACCEPTED
    assert rig.tx.data == b""  # nothing will be retransmitted: the request is not kept
    rig.now = 2.0
    rig.respond(200)  # RFC 6026: retransmitted 2xx go to the TU (which re-ACKs)
    assert [code for code, _ in rig.user.responses] == [200, 200]
    rig.respond(180)
    assert rig.stats.unexpected_inputs == 1
    assert rig.run_until(32.9) == []
    assert rig.tx.state is TxState.ACCEPTED
    rig.run_until(33.0)  # Timer M = 64*T1 after the first 2xx at t=1
    assert rig.tx.state is TxState.TERMINATED


def test_non_invite_timer_e_caps_at_t2_until_timer_f() -> None:
    rig = Rig("BYE")
    retransmits = rig.run_until(100)
    expected = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [when for when, _ in retransmits] == expected
    assert rig.user.timeouts == [32.0]
    assert rig.tx.state is TxState.TERMINATED


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    rig = Rig("BYE")
    rig.run_until(0.6)
    rig.respond(100)
    assert rig.tx.state is TxState.PROCEEDING
    retransmits = rig.run_until(20)
    assert [when for when, _ in retransmits] == [1.5, 5.5, 9.5, 13.5, 17.5]


def test_non_invite_final_then_timer_k() -> None:
    rig = Rig("BYE")
    rig.respond(200)
    assert rig.tx.state is TxState.COMPLETED
    rig.now = 1.0
    rig.respond(200)
    assert rig.user.responses == [(200, 0.0)]
    assert rig.stats.absorbed_retransmissions == 1
    assert rig.run_until(4.9) == []
    assert rig.tx.state is TxState.COMPLETED
    rig.run_until(5.0)  # Timer K = T4
    assert rig.tx.state is TxState.TERMINATED


def test_non_invite_over_tcp_timer_k_is_zero() -> None:
    rig = Rig("BYE", transport=Transport.TCP)
    rig.respond(481)
    assert rig.tx.state is TxState.TERMINATED
    assert rig.user.responses == [(481, 0.0)]


def test_transport_error_is_reported_once() -> None:
    rig = Rig("INVITE", transport=Transport.TCP)
    assert rig.layer.transport_failed(Transport.TCP, PEER, 3.0) == 1
    assert rig.user.transport_errors == [3.0]
    assert rig.tx.state is TxState.TERMINATED
    assert rig.layer.transport_failed(Transport.TCP, PEER, 4.0) == 0


def test_a_second_transaction_with_the_same_key_is_refused() -> None:
    rig = Rig()
    with pytest.raises(ValueError, match="already exists"):
        rig.layer.start(
            method="INVITE",
            branch=BRANCH,
            data=b"x",
            transport=Transport.UDP,
            address=PEER,
            owner=None,
            now=0.0,
        )


def test_detached_invite_stops_retransmitting_but_still_acks_a_late_failure() -> None:
    rig = Rig()
    rig.run_until(0.7)
    assert rig.layer.detach(rig.tx, rig.now)
    assert rig.tx.state is TxState.DETACHED
    assert rig.run_until(20) == []  # no Timer A any more
    rig.respond(487)
    assert rig.outgoing[-1].data == f"ACK {BRANCH} 487".encode()
    assert rig.user.responses == []  # nobody waits for it
    assert rig.tx.state is TxState.COMPLETED
    assert rig.user.timeouts == []


def test_detached_invite_reports_a_late_2xx_and_lingers_64_t1_at_most() -> None:
    rig = Rig()
    rig.respond(180)
    rig.now = 3.0
    rig.layer.detach(rig.tx, rig.now)
    rig.respond(200)
    assert rig.user.responses == [(180, 0.0), (200, 3.0)]  # the TU ACKs and BYEs it
    assert rig.tx.state is TxState.ACCEPTED
    quiet = Rig()
    quiet.layer.detach(quiet.tx, 1.0)
    quiet.run_until(32.9)
    assert quiet.tx.state is TxState.DETACHED
    quiet.run_until(33.0)
    assert quiet.tx.state is TxState.TERMINATED and len(quiet.layer) == 0
    assert quiet.user.timeouts == []


def test_2xx_after_a_failure_goes_up_to_the_tu() -> None:
    """A 2xx from another fork after a non-2xx must not be dropped: the TU ends that call."""
    rig = Rig()
    rig.respond(486)
    rig.respond(200)
    assert [status for status, _ in rig.user.responses] == [486, 200]
    assert rig.tx.state is TxState.COMPLETED


_RESPONSE_FOR = {TxInput.PROVISIONAL: 180, TxInput.SUCCESS: 200, TxInput.FAILURE: 486}


@pytest.mark.parametrize(
    ("method", "state", "event"),
    [
        (method, state, event)
        for method in ("INVITE", "BYE")
        for state, event in itertools.product(TxState, TxInput)
    ],
)
def test_every_state_input_pair_follows_the_table(
    method: str, state: TxState, event: TxInput
) -> None:
    table = INVITE_TABLE if method == "INVITE" else NON_INVITE_TABLE
    rig = Rig(method)
    rig.tx.state = state
    status = _RESPONSE_FOR.get(event)
    response = None
    if status is not None:
        response = make_response(rig.request, status, to_tag="t1")
    before = rig.stats.unexpected_inputs
    accepted = rig.layer.feed(rig.tx, event, 1.0, response, PEER)
    step = table.get((state, event))
    if step is None:
        assert not accepted
        assert rig.tx.state is state
        assert rig.stats.unexpected_inputs == before + 1
    else:
        assert accepted
        assert rig.tx.state is step[1]
        assert rig.stats.unexpected_inputs == before
