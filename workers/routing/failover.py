"""Trunk-group failover in the worker: a leg's end decides its outcome and the next trunk,
and a failed-over call is handed to that trunk's dial queue as a new attempt.

The pinned worker of trunk A cannot dial on trunk B, so the next attempt is the same dial
message on `dial.B.json` with `attempt` + 1 and A in `tried`: B's worker stores it as a new
leg (its id derived from (B, correlation_id)) with its own CDR and terminal event. The
hand-over is published after the failed leg's terminal event is stored (the legs table keeps
one live leg per correlation_id, so B's leg must find A's ended): a crash in between loses
the next attempt, and the terminal event's `next_trunk` tells the scheduler to look.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sipstack.cdr import CdrRecord
from sipstack.outcome import LocalCause
from workers.config.trunks import TrunkConfig
from workers.contract.dial_message import DialMessage, InvalidDialRequest, phone_number
from workers.routing.groups import Attempt, TrunkGroup, next_trunk
from workers.routing.outcomes import far_reason, leg_outcome, local_cause
from workers.runtime.book import LegContext, LegEnd

log = logging.getLogger(__name__)

Health = Callable[[str], bool]  # False: the trunk is down (TrunkHealthBoard.is_up)
Publish = Callable[[str, bytes], None]  # (trunk, JSON body) onto dial.<trunk>.json


def always_up(_trunk: str) -> bool:
    return True


class Failover:
    """One worker's routing: check a message's route, decide each leg's end, hand over."""

    def __init__(
        self, trunk: TrunkConfig, groups: Mapping[str, TrunkGroup], publish: Publish, *,
        health: Health = always_up, rng: random.Random | None = None,
    ) -> None:
        self.trunk = trunk
        self.groups = groups
        self._publish = publish
        self._health = health
        self._rng = rng or random.Random()
        self.handed_over = 0

    def check_route(self, message: DialMessage) -> None:
        """InvalidDialRequest when the message's route is not a group holding this trunk."""
        if not message.route:
            return
        group = self.groups.get(message.route)
        if group is None:
            known = ", ".join(sorted(self.groups)) or "none"
            raise InvalidDialRequest(
                {"route": f"no trunk group {message.route!r} (groups defined: {known})"})
        if message.trunk not in group.trunks:
            raise InvalidDialRequest(
                {"route": f"group {message.route!r} does not hold trunk {message.trunk!r}"})

    def end(self, context: LegContext, record: CdrRecord, cause: LocalCause | None) -> LegEnd:
        """The leg's outcome, and the group's next trunk when the outcome allows one."""
        rules = self.trunk.outcome_rules
        outcome = leg_outcome(record, rules, cause)
        group = self.groups.get(context.route) if context.route else None
        if group is None or context.request is None:
            return LegEnd(outcome)
        status = record.final_status_code
        attempt = Attempt(
            trunk=self.trunk.name, status=status if status is None or status >= 200 else None,
            rang=record.first_provisional_at is not None,
            cause=cause or local_cause(record), reason=far_reason(record),
        )
        chosen = next_trunk(group, (*context.tried, self.trunk.name), attempt, self._health,
                            self._rng, {self.trunk.name: rules})
        return LegEnd(outcome, chosen)

    def hand_over(self, contexts: Sequence[LegContext]) -> None:
        """Publish the next attempt of every ended leg that has a next trunk (recorder
        thread, after the legs' terminal events are stored)."""
        for context in contexts:
            if context.next_trunk is None or context.request is None:
                continue
            body = json.dumps(self.next_message(context), separators=(",", ":")).encode()
            try:
                self._publish(context.next_trunk, body)
                self.handed_over += 1
            except Exception:
                log.exception("handing %s over to trunk %s failed", context.correlation_id,
                              context.next_trunk)

    def next_message(self, context: LegContext) -> dict[str, Any]:
        """The dial message for the next trunk: the stored one, re-addressed."""
        assert context.request is not None and context.next_trunk is not None
        message = dict(context.request)
        # a next hop the message named was for this trunk; the next trunk uses its own proxy
        message.pop("signaling_addr", None)
        message.pop("transport", None)
        message.update(trunk=context.next_trunk, to=self._original_to(str(message["to"])),
                       attempt=context.attempt + 1,
                       tried=[*context.tried, self.trunk.name])
        return message

    def _original_to(self, request_uri: str) -> str:
        """A phone number this trunk put at its own domain goes back to being a number, so
        the next trunk puts it at its domain; a URI the scheduler gave stays as it is."""
        scheme, _, rest = request_uri.partition(":")
        user = rest.partition("@")[0]
        if scheme in ("sip", "sips") and phone_number(user) == user and (
            self.trunk.request_uri(user) == request_uri
        ):
            return user
        return request_uri
