"""REGISTER client (sipstack.register) under a fake clock, against an in-test registrar."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipstack.auth import parse_authorization, verify_authorization
from sipstack.dial import Credentials
from sipstack.errors import LocalProtocolError
from sipstack.message import Request, make_response, parse_message
from sipstack.register import (
    REFRESH_LEAD,
    TRANSITIONS,
    Registered,
    Registration,
    RegistrationConfig,
    RegistrationFailed,
    RegState,
    Unregistered,
    backoff_delay,
    refresh_delay,
)
from sipstack.transport import Transport
from tests.clock import FakeClock

REGISTRAR = ("192.0.2.10", 5060)
CONTACT = "sip:trunk1@198.51.100.7:5060"
CHALLENGE = 'Digest realm="carrier.test", nonce="abc123", algorithm=MD5, qop="auth"'


def config(**changes: object) -> RegistrationConfig:
    values: dict[str, object] = {
        "registrar": "sip:carrier.test",
        "aor": "sip:trunk1@carrier.test",
        "contact": CONTACT,
        "address": REGISTRAR,
        "via_sent_by": "198.51.100.7:5060",
        "credentials": Credentials(username="trunk1", password="s3cret"),
        "expires": 600,
        "retry_base": 30.0,
        "retry_max": 600.0,
    }
    values.update(changes)
    return RegistrationConfig(**values)  # type: ignore[arg-type]


class Registrar:
    """Takes what the client sent and answers it."""

    def __init__(self, reg: Registration, clock: FakeClock) -> None:
        self.reg = reg
        self.clock = clock

    def request(self) -> Request:
        out = self.reg.outgoing()
        assert len(out) == 1, out
        assert out[0].address == REGISTRAR and out[0].transport is Transport.UDP
        message = parse_message(out[0].data)
        assert isinstance(message, Request) and message.method == "REGISTER"
        return message

    def answer(self, request: Request, code: int, *headers: tuple[str, str]) -> None:
        response = make_response(request, code, to_tag="reg1", headers=headers)
        self.reg.receive(response.to_bytes(), REGISTRAR, self.clock.now)


def run_until(reg: Registration, clock: FakeClock, until: float) -> None:
    """Fire every deadline up to `until` (Timer K of finished transactions among them)."""
    while (deadline := reg.next_deadline()) is not None and deadline <= until:
        clock.now = max(clock.now, deadline)
        reg.handle_timer(clock.now)
    clock.now = until


def started(clock: FakeClock, **changes: object) -> tuple[Registration, Registrar]:
    reg = Registration(config(**changes), rng=random.Random(3))
    reg.start(clock.now)
    return reg, Registrar(reg, clock)


def test_challenge_then_200_registers_and_refreshes_half_way() -> None:
    clock = FakeClock()
    reg, registrar = started(clock)
    first = registrar.request()
    assert first.header("Expires") == "600"
    assert first.header("Contact") == f"<{CONTACT}>"
    assert first.header("Authorization") is None
    registrar.answer(first, 401, ("WWW-Authenticate", CHALLENGE))
    second = registrar.request()
    assert second.cseq == (first.cseq[0] + 1, "REGISTER")
    assert second.call_id == first.call_id and second.from_tag == first.from_tag
    assert second.via_branch != first.via_branch
    creds = parse_authorization(second.header("Authorization") or "")
    assert creds.uri == "sip:carrier.test" and creds.nc == 1
    assert verify_authorization(creds, password="s3cret", method="REGISTER", username="trunk1")
    registrar.answer(second, 200, ("Contact", f"<{CONTACT}>;expires=120"))
    assert reg.state is RegState.REGISTERED
    [event] = reg.events()
    assert event == Registered(
        aor="sip:trunk1@carrier.test", expires=120, refresh_at=clock.now + 88, at=clock.now
    )
    granted_at = clock.now
    run_until(reg, clock, granted_at + 87.9)  # max(60, 120 - 32) = 88
    assert reg.outgoing() == []
    run_until(reg, clock, granted_at + 88)
    refresh = registrar.request()
    assert refresh.cseq[0] == second.cseq[0] + 1
    assert parse_authorization(refresh.header("Authorization") or "").nc == 2  # same nonce
    assert reg.state is RegState.REGISTERING


@pytest.mark.parametrize(
    ("expires", "delay"), [(3600, 3600 - REFRESH_LEAD), (120, 88.0), (60, 30.0), (10, 5.0)]
)
def test_refresh_delay(expires: int, delay: float) -> None:
    assert refresh_delay(expires) == delay


def test_retransmits_on_timer_e_then_fails_on_timer_f_and_backs_off() -> None:
    clock = FakeClock()
    reg, registrar = started(clock, credentials=None)
    registrar.request()
    sent_at = [0.0]
    start = clock.now
    while reg.state is RegState.REGISTERING:
        deadline = reg.next_deadline()
        assert deadline is not None
        clock.now = deadline
        reg.handle_timer(clock.now)
        if reg.outgoing():
            sent_at.append(clock.now - start)
    assert sent_at[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]  # E doubles up to T2 = 4 s
    assert clock.now - start == pytest.approx(32.0)  # Timer F = 64 * T1
    [failed] = reg.events()
    assert isinstance(failed, RegistrationFailed) and failed.status is None
    assert "Timer F" in failed.reason
    assert reg.state is RegState.BACKING_OFF
    assert 15.0 <= failed.retry_at - clock.now <= 30.0  # type: ignore[operator]


def test_failures_back_off_exponentially_then_success_resets() -> None:
    clock = FakeClock()
    reg, registrar = started(clock, credentials=None)
    waits = []
    for _ in range(6):
        registrar.answer(registrar.request(), 503)
        [failed] = reg.events()
        assert isinstance(failed, RegistrationFailed) and failed.status == 503
        assert failed.retry_at is not None
        waits.append(failed.retry_at - clock.now)
        clock.now = failed.retry_at
        reg.handle_timer(clock.now)
    ceilings = [30, 60, 120, 240, 480, 600]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    registrar.answer(registrar.request(), 200, ("Expires", "300"))
    assert reg.failures == 0 and reg.granted == 300


def test_backoff_delay_is_bounded_and_named() -> None:
    rng = random.Random(1)
    assert all(backoff_delay(n, 30, 1800, rng) <= 1800 for n in range(1, 100))
    with pytest.raises(ValueError, match="at least 1"):
        backoff_delay(0, 30, 1800, rng)


def test_423_raises_expires_to_min_expires() -> None:
    clock = FakeClock()
    reg, registrar = started(clock, credentials=None, expires=60)
    registrar.answer(registrar.request(), 423, ("Min-Expires", "1800"))
    retry = registrar.request()
    assert retry.header("Expires") == "1800"
    registrar.answer(retry, 200, ("Contact", f"<{CONTACT}>;expires=1800"))
    assert reg.granted == 1800
    [event] = reg.events()
    assert isinstance(event, Registered)
    run_until(reg, clock, event.refresh_at)  # and it stays raised for refreshes
    assert registrar.request().header("Expires") == "1800"


def test_423_without_a_larger_min_expires_is_a_failure() -> None:
    clock = FakeClock()
    reg, registrar = started(clock, credentials=None, expires=600)
    registrar.answer(registrar.request(), 423, ("Min-Expires", "300"))
    [failed] = reg.events()
    assert isinstance(failed, RegistrationFailed) and "Min-Expires '300'" in failed.reason


def test_rejected_credentials_fail_instead_of_looping() -> None:
    clock = FakeClock()
    reg, registrar = started(clock)
    registrar.answer(registrar.request(), 401, ("WWW-Authenticate", CHALLENGE))
    registrar.answer(registrar.request(), 401, ("WWW-Authenticate", CHALLENGE))
    [failed] = reg.events()
    assert isinstance(failed, RegistrationFailed) and "rejected" in failed.reason
    assert reg.state is RegState.BACKING_OFF


def test_stale_nonce_is_answered_again() -> None:
    clock = FakeClock()
    _, registrar = started(clock)
    registrar.answer(registrar.request(), 401, ("WWW-Authenticate", CHALLENGE))
    stale = CHALLENGE.replace("abc123", "def456") + ", stale=true"
    registrar.answer(registrar.request(), 401, ("WWW-Authenticate", stale))
    third = registrar.request()
    assert parse_authorization(third.header("Authorization") or "").nonce == "def456"


def test_a_200_without_our_contact_is_a_failure() -> None:
    clock = FakeClock()
    reg, registrar = started(clock, credentials=None)
    registrar.answer(registrar.request(), 200, ("Contact", "<sip:other@192.0.2.99>;expires=60"))
    [failed] = reg.events()
    assert isinstance(failed, RegistrationFailed) and "our Contact" in failed.reason


def test_stop_unregisters_with_expires_zero() -> None:
    clock = FakeClock()
    reg, registrar = started(clock, credentials=None)
    registrar.answer(registrar.request(), 200, ("Expires", "600"))
    reg.events()
    reg.stop(clock.now)
    unregister = registrar.request()
    assert unregister.header("Expires") == "0"
    registrar.answer(unregister, 200)
    assert reg.events() == [Unregistered(aor="sip:trunk1@carrier.test", status=200, at=clock.now)]
    assert reg.state is RegState.STOPPED
    run_until(reg, clock, clock.now + 5)  # Timer K of the last REGISTER
    assert reg.next_deadline() is None and reg.outgoing() == []


def test_stray_and_bad_bytes_are_counted_not_raised() -> None:
    clock = FakeClock()
    reg, registrar = started(clock, credentials=None)
    request = registrar.request()
    reg.receive(b"garbage\r\n\r\n", REGISTRAR, clock.now)
    other = make_response(request, 200)
    other.set_header("Via", "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKother")
    reg.receive(other.to_bytes(), REGISTRAR, clock.now)
    assert reg.stats.parse_errors == 1 and reg.stats.stray_responses == 1
    assert reg.state is RegState.REGISTERING


def test_misuse_is_a_local_protocol_error() -> None:
    clock = FakeClock()
    reg, _ = started(clock)
    with pytest.raises(LocalProtocolError, match="start in state registering"):
        reg.start(clock.now)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aor": "tel:+15551234567"}, "aor"),
        ({"registrar": "nonsense"}, "registrar"),
        ({"expires": 0}, "expires"),
        ({"retry_base": 0.0}, "retry_base"),
    ],
)
def test_bad_config_is_named(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**changes)


def test_every_state_is_reachable_in_the_table() -> None:
    reached = {RegState.IDLE} | set(TRANSITIONS.values())
    assert reached == set(RegState)


_RESPONSES = [
    (100, ()),
    (200, ()),
    (200, (("Contact", f"<{CONTACT}>;expires=30"),)),
    (401, (("WWW-Authenticate", CHALLENGE),)),
    (407, (("Proxy-Authenticate", CHALLENGE),)),
    (401, (("WWW-Authenticate", CHALLENGE + ", stale=true"),)),
    (423, (("Min-Expires", "900"),)),
    (423, (("Min-Expires", "5"),)),
    (403, ()),
    (503, ()),
]


@settings(max_examples=200)
@given(st.lists(st.one_of(st.integers(0, len(_RESPONSES) - 1), st.sampled_from(["timer", "stop"]))))
def test_any_sequence_of_answers_and_timers_keeps_the_binding_alive(steps: list[int | str]) -> None:
    """Invariants under any registrar behaviour: nothing raises, a live binding always has
    something scheduled, retries are in the future, and after stop nothing more is sent."""
    clock = FakeClock()
    reg = Registration(config(), rng=random.Random(0))
    reg.start(clock.now)
    last: Request | None = None
    for step in steps:
        for out in reg.outgoing():
            message = parse_message(out.data)
            assert isinstance(message, Request)
            last = message
        if step == "stop":
            reg.stop(clock.now)
        elif step == "timer":
            deadline = reg.next_deadline()
            if deadline is not None:
                clock.now = max(clock.now, deadline)
                reg.handle_timer(clock.now)
        elif last is not None:
            assert isinstance(step, int)  # not "stop" nor "timer": an index into _RESPONSES
            code, headers = _RESPONSES[step]
            response = make_response(last, code, to_tag="r", headers=headers)
            reg.receive(response.to_bytes(), REGISTRAR, clock.now)
        for event in reg.events():
            if isinstance(event, RegistrationFailed) and event.retry_at is not None:
                assert event.retry_at > event.at
        if reg.state is not RegState.STOPPED:
            assert reg.next_deadline() is not None, reg.state
    if reg.state is RegState.STOPPED:
        reg.outgoing()
        run_until(reg, clock, clock.now + 3600)
        assert reg.outgoing() == [] and reg.next_deadline() is None
