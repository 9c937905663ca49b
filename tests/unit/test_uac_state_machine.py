"""Hypothesis walks random sequences of responses, peer requests, timers and API calls per leg.

Asserted throughout: nothing raises except LocalProtocolError from API misuse; a leg that is
still live has no terminal event; no leg has two. At the end, once every deadline has passed
(and established legs were hung up), no leg is left and each dialled leg had exactly one
terminal event carrying its CDR.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sipstack.config import TimerConfig
from sipstack.dial import Credentials
from sipstack.errors import LocalProtocolError, UnknownLegError
from sipstack.events import CallIdAdopted
from sipstack.message import Request, Response
from sipstack.transport import Transport
from tests.fakes import ANSWER_SDP, TERMINAL, FarEnd, Harness, core_config, dial_request

CHALLENGE = 'Digest realm="carrier", nonce="{nonce}", qop="auth"'


@dataclass
class LegModel:
    call_id: str  # current (after any Call-ID adoption)
    from_tag: str
    far: FarEnd


class UacMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(
            config=core_config(session_expires=120, max_ring_time=90.0, timers=TimerConfig(t1=0.5))
        )
        self.legs: list[LegModel] = []
        self.dialled = 0
        self.nonce = 0
        self.adoptions_seen = 0

    # -- helpers ------------------------------------------------------------------------------

    def _leg(self, index: int) -> LegModel:
        """Mostly a live leg (that is where the interesting transitions are)."""
        live = [leg for leg in self.legs if self._is_live(leg)]
        pool = live if live and index % 5 else self.legs
        return pool[index % len(pool)]

    def _is_live(self, leg: LegModel) -> bool:
        try:
            self.h.core.dialog_snapshot(leg.call_id)
        except UnknownLegError:
            return False
        return True

    def _sync(self) -> None:
        self.h.flush()
        adoptions = self.h.events_of(CallIdAdopted)
        for event in adoptions[self.adoptions_seen :]:
            for leg in self.legs:
                if leg.call_id == event.old_call_id:
                    leg.call_id = event.new_call_id
        self.adoptions_seen = len(adoptions)

    def _last_request(self, leg: LegModel, method: str) -> Request | None:
        for sent in reversed(self.h.wire):
            message = sent.message
            if (
                isinstance(message, Request)
                and message.method == method
                and message.from_tag == leg.from_tag
            ):
                return message
        return None

    def _api(self, call: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(LocalProtocolError):  # documented API misuse only
            call(*args)
        self._sync()

    # -- rules --------------------------------------------------------------------------------

    @precondition(lambda self: len(self.legs) < 4)
    @rule(
        ring_timeout=st.sampled_from([None, 5.0, 40.0]),
        max_duration=st.sampled_from([None, 30.0]),
        with_credentials=st.booleans(),
        tcp=st.booleans(),
    )
    def dial(
        self,
        ring_timeout: float | None,
        max_duration: float | None,
        with_credentials: bool,
        tcp: bool,
    ) -> None:
        request = dial_request(
            ring_timeout=ring_timeout,
            max_duration=max_duration,
            credentials=Credentials(username="u", password="p") if with_credentials else None,
            transport=Transport.TCP if tcp else None,
        )
        call_id = self.h.core.dial(request, self.h.now)
        self._sync()
        invite = self.h.last("INVITE")
        self.legs.append(LegModel(call_id, invite.from_tag or "", FarEnd()))
        self.dialled += 1

    @precondition(lambda self: self.legs)
    @rule(
        index=st.integers(0, 50),
        status=st.sampled_from([100, 180, 183, 200, 200, 401, 407, 422, 486, 487, 503]),
        variant=st.integers(0, 4),
    )
    def respond_to_invite(self, index: int, status: int, variant: int) -> None:
        leg = self._leg(index)
        invite = self._last_request(leg, "INVITE")
        if invite is None:
            return
        far = leg.far
        response: Response
        if status == 200:
            if variant == 1:
                response = far.answer(invite, call_id=f"adopted-{leg.from_tag}")
            elif variant == 2:
                response = far.answer(invite, body=b"v=0\r\nbroken\r\n")
            elif variant == 3:
                response = far.answer(invite, tag="another-fork")
            elif variant == 4:
                response = far.answer(invite, headers=[("Session-Expires", "120;refresher=uas")])
            else:
                response = far.answer(invite, headers=[("Session-Expires", "120")])
        elif status in (401, 407):
            self.nonce += variant % 2  # sometimes the same nonce again
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            challenge = CHALLENGE.format(nonce=f"n{self.nonce}")
            response = far.respond(invite, status, headers=[(header, challenge)])
        elif status == 422:
            response = far.respond(invite, 422, headers=[("Min-SE", "300")])
        elif status == 183:
            response = far.respond(invite, 183, body=ANSWER_SDP)
        else:
            response = far.respond(invite, status)
        self.h.deliver(response, transport=Transport.UDP)
        self._sync()

    @precondition(lambda self: self.legs)
    @rule(
        index=st.integers(0, 50),
        method=st.sampled_from(["CANCEL", "BYE", "UPDATE"]),
        status=st.sampled_from([100, 200, 401, 407, 408, 422, 481, 491, 500, 501]),
    )
    def respond_to_request(self, index: int, method: str, status: int) -> None:
        leg = self._leg(index)
        request = self._last_request(leg, method)
        if request is None:
            return
        headers: list[tuple[str, str]] = []
        if status in (401, 407):
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            headers.append((header, CHALLENGE.format(nonce="in-dialog")))
        if status == 422:
            headers.append(("Min-SE", "400"))
        self.h.deliver(leg.far.respond(request, status, headers=headers))
        self._sync()

    @precondition(lambda self: self.legs)
    @rule(
        index=st.integers(0, 50),
        method=st.sampled_from(["BYE", "UPDATE", "INVITE", "OPTIONS", "INFO", "ACK", "REFER"]),
        session_expires=st.sampled_from([None, "60", "120;refresher=uac", "200;refresher=uas"]),
        retransmit=st.booleans(),
    )
    def peer_request(
        self, index: int, method: str, session_expires: str | None, retransmit: bool
    ) -> None:
        leg = self._leg(index)
        invite = self._last_request(leg, "INVITE")
        if invite is None:
            return
        headers = [("Session-Expires", session_expires)] if session_expires else []
        cseq = leg.far.cseq if retransmit else None
        branch = f"z9hG4bKpeer{leg.far.cseq}" if retransmit else None
        request = leg.far.request(
            method, invite, headers=headers, call_id=leg.call_id, cseq=cseq, branch=branch
        )
        self.h.deliver(request)
        self._sync()

    @precondition(lambda self: self.legs)
    @rule(
        index=st.integers(0, 50),
        action=st.sampled_from(["cancel", "bye", "drop", "confirm", "abort", "cleanup"]),
    )
    def api_call(self, index: int, action: str) -> None:
        leg = self._leg(index)
        core = self.h.core
        now = self.h.now
        if action == "cancel":
            self._api(core.cancel, leg.call_id, now)
        elif action == "bye":
            self._api(core.bye, leg.call_id, now)
        elif action == "drop":
            self._api(core.drop, leg.call_id)
        elif action == "confirm":
            self._api(core.confirm_answer, leg.call_id, now)
        elif action == "abort":
            self._api(core.abort_answer, leg.call_id, "pre_ack failed", now)
        else:
            self._api(core.cleanup_if_present, leg.call_id, "normal", now)

    @precondition(lambda self: self.legs)
    @rule(index=st.integers(0, 50))
    def answer_and_confirm(self, index: int) -> None:
        leg = self._leg(index)
        invite = self._last_request(leg, "INVITE")
        if invite is None:
            return
        self.h.deliver(leg.far.answer(invite, headers=[("Session-Expires", "120")]))
        self._sync()
        self._api(self.h.core.confirm_answer, leg.call_id, self.h.now)

    @precondition(lambda self: self.legs)
    @rule(
        index=st.integers(0, 50),
        status=st.sampled_from([183, 200, 401, 422, 486]),
        header=st.sampled_from(
            [
                "Contact",
                "Record-Route",
                "Session-Expires",
                "Min-SE",
                "Reason",
                "WWW-Authenticate",
                "To",
                "Content-Type",
            ]
        ),
        value=st.text(
            alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"),
            max_size=40,
        ),
    )
    def mangled_response(self, index: int, status: int, header: str, value: str) -> None:
        """A response whose header value is nonsense the parser lets through."""
        leg = self._leg(index)
        invite = self._last_request(leg, "INVITE")
        if invite is None:
            return
        response = leg.far.answer(invite) if status == 200 else leg.far.respond(invite, status)
        response.set_header(header, value)
        self.h.deliver(response.to_bytes())
        self._sync()

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 4.0, 16.0, 32.0, 64.0]))
    def advance(self, seconds: float) -> None:
        self.h.advance(seconds)
        self._sync()

    @rule(tcp=st.booleans())
    def lose_connection(self, tcp: bool) -> None:
        transport = Transport.TCP if tcp else Transport.UDP
        self.h.core.connection_lost(transport, ("192.0.2.10", 5060), self.h.now)
        self._sync()

    @rule(data=st.binary(max_size=80))
    def garbage(self, data: bytes) -> None:
        self.h.deliver(data)
        self._sync()

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def at_most_one_terminal_event_per_leg(self) -> None:
        terminals = [e for e in self.h.all_events if isinstance(e, TERMINAL)]
        ids = [e.call_id for e in terminals]
        assert len(ids) == len(set(ids)), ids
        for event in terminals:
            assert event.cdr.call_id == event.call_id
            # A leg we hung up ended (for billing) when our BYE went out, up to Timer F earlier.
            assert event.at - 64 <= event.cdr.ended_at <= event.at
        for leg in self.legs:
            if not self._is_live(leg):
                continue
            assert leg.call_id not in ids, f"live leg {leg.call_id} already has a terminal event"
        assert self.h.core.leg_count + len(terminals) == self.dialled

    def teardown(self) -> None:
        self.h.run_out(limit=100_000)
        self._sync()
        for leg in self.legs:
            if self.h.core.is_established(leg.call_id):
                self.h.core.bye(leg.call_id, self.h.now)
        self.h.run_out(limit=100_000)
        self._sync()
        assert self.h.core.leg_count == 0
        terminals = [e for e in self.h.all_events if isinstance(e, TERMINAL)]
        assert len(terminals) == self.dialled
        assert {e.call_id for e in terminals} == {leg.call_id for leg in self.legs}
        assert self.h.core.next_deadline() is None


UacMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestUacStateMachine = UacMachine.TestCase
