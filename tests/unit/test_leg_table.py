"""The leg's phase table (sipstack.leg.LEG_TABLE): every (phase, input) pair either moves as
listed or is a LocalProtocolError; an ended leg accepts nothing."""

from __future__ import annotations

import itertools

import pytest

from sipstack.errors import LocalProtocolError
from sipstack.leg import LEG_TABLE, Leg, LegInput, LegPhase
from sipstack.transport import Transport


def _leg_in(phase: LegPhase) -> Leg:
    leg = Leg(
        call_id="c@h", credentials=None, max_duration=None, correlation_id="k",
        scenario="campaign", trunk="t", transport=Transport.UDP, address=("192.0.2.1", 5060),
        via_prefix="SIP/2.0/UDP 192.0.2.2:5060", request_uri="sip:a@h", from_header="<sip:b@h>",
        from_tag="f", from_uri="sip:b@h", to_header="<sip:a@h>", to_uri="sip:a@h",
        started_at=0.0,
    )  # fmt: skip
    leg._phase = phase
    return leg


@pytest.mark.parametrize(("phase", "event"), list(itertools.product(LegPhase, LegInput)))
def test_every_phase_input_pair_follows_the_table(phase: LegPhase, event: LegInput) -> None:
    leg = _leg_in(phase)
    expected = LEG_TABLE.get((phase, event))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            leg.advance(event)
        assert leg.state is phase and not leg.ended
        return
    assert leg.advance(event) is expected and leg.state is expected
    assert leg.ended is (event is LegInput.FINISHED)
    for again in LegInput:
        if leg.ended:
            with pytest.raises(LocalProtocolError):
                leg.advance(again)
