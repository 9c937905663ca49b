"""Leg states and the transitions between them, as data (the CDR enums live in sipstack.cdr)."""

from __future__ import annotations

from enum import StrEnum


class LegState(StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    INVITING = "inviting"
    RINGING = "ringing"
    EARLY = "early"
    ESTABLISHED = "established"
    TERMINATING = "terminating"
    ENDED = "ended"
    FAILED = "failed"


TERMINAL_STATES: frozenset[LegState] = frozenset({LegState.ENDED, LegState.FAILED})
LIVE_STATES: frozenset[LegState] = frozenset(set(LegState) - TERMINAL_STATES)
# The states in which a worker holds SIP state for the leg (what crash recovery must end).
SIGNALING_STATES: frozenset[LegState] = frozenset(LIVE_STATES - {LegState.QUEUED})

_PROGRESS = (LegState.RINGING, LegState.EARLY)
_TERMINAL = (LegState.ENDED, LegState.FAILED)

# new state -> the states a leg may be in for the transition to apply. A transition from any
# other state is ignored (reported as not applied), so a late or repeated write can never move
# a leg backwards or out of a terminal state. Claiming is not here: it has its own statement.
ALLOWED_PREDECESSORS: dict[LegState, frozenset[LegState]] = {
    LegState.INVITING: frozenset({LegState.CLAIMED, LegState.INVITING}),
    LegState.RINGING: frozenset({LegState.INVITING, *_PROGRESS}),
    LegState.EARLY: frozenset({LegState.INVITING, *_PROGRESS}),
    LegState.ESTABLISHED: frozenset({LegState.INVITING, *_PROGRESS, LegState.ESTABLISHED}),
    LegState.TERMINATING: frozenset(
        {LegState.INVITING, *_PROGRESS, LegState.ESTABLISHED, LegState.TERMINATING}
    ),
    LegState.ENDED: frozenset(LIVE_STATES),
    LegState.FAILED: frozenset(LIVE_STATES),
}

# Which timestamp column a state's `at` fills. Set once: a later repeat keeps the first value.
STATE_TIMESTAMP: dict[LegState, str] = {
    LegState.CLAIMED: "claimed_at",
    LegState.INVITING: "invited_at",
    LegState.RINGING: "first_provisional_at",
    LegState.EARLY: "first_provisional_at",
    LegState.ESTABLISHED: "answered_at",
    LegState.ENDED: "ended_at",
    LegState.FAILED: "ended_at",
}

# sipstack lifecycle event state -> leg state (LegCancelled ends the leg: the CDR says why).
LEG_STATE_FOR_EVENT: dict[str, LegState] = {
    "invited": LegState.INVITING,
    "provisional": LegState.RINGING,
    "early_media": LegState.EARLY,
    "established": LegState.ESTABLISHED,
    "failed": LegState.FAILED,
    "cancelled": LegState.ENDED,
    "ended": LegState.ENDED,
}


def leg_state_for_event(event_state: str, *, has_sdp: bool = False) -> LegState:
    """The leg state a sipstack lifecycle event moves to (a 1xx with SDP is early media)."""
    if event_state == "provisional" and has_sdp:
        return LegState.EARLY
    try:
        return LEG_STATE_FOR_EVENT[event_state]
    except KeyError:
        raise ValueError(f"unknown lifecycle event state {event_state!r}") from None
