"""2xx answers no live leg waits for: ours are ACKed and BYEd (a fork, a dropped leg), others
dropped; the bounded memory of the INVITEs we sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipstack.dialog import Dialog, NextHop
from sipstack.message import Response
from sipstack.reason import (
    LocalHangup,
    reason_for_local_hangup,
)
from sipstack.transport import Address, Transport
from sipstack.uri import format_hostport

if TYPE_CHECKING:
    from sipstack.uac import UacCore


class StrayAnswers:
    __slots__ = ("_core",)

    def __init__(self, core: UacCore) -> None:
        self._core = core

    def _end_orphan_answer(
        self, response: Response, transport: Transport, source: Address, now: float
    ) -> None:
        """ACK and BYE a 2xx to an INVITE that has no live leg (another fork, a dropped leg).

        Never leaves a callee half-connected; retransmissions of that 2xx get the same ACK.
        """
        call_id = response.call_id or ""
        key = (call_id, response.to_tag or "")
        known = self._core.shared._orphan_acks.get(key)
        if known is not None:
            self._core.shared.stats.absorbed_retransmissions += 1
            self._core.shared._send(*known)
            return
        if len(self._core.shared._orphan_acks) >= self._core.shared.config.max_remembered:
            self._core.shared.stats.dropped_answers += (
                1  # a flood: never let it grow memory or BYEs
            )
            return
        local_header = response.header("from")
        remote_header = response.header("to")
        if not call_id or local_header is None or remote_header is None:
            self._core.shared.stats.stray_responses += 1
            return
        invite_cseq = response.cseq[0]
        hop = NextHop(address=source, transport=transport)
        dialog = Dialog.from_answer(
            response,
            call_id=call_id,
            local_header=local_header,
            remote_header_without_tag=remote_header,
            invite_cseq=invite_cseq,
            fallback_target=f"sip:{format_hostport(*source)}",
            fallback_hop=hop,
        )
        hop = dialog.next_hop
        ack = dialog.build_request(
            "ACK",
            via=self._core.shared._via_for(hop.transport, self._core.shared._ids.branch()),
            cseq=invite_cseq,
        ).to_bytes()
        self._core.shared._send(ack, hop.transport, hop.address)
        branch = self._core.shared._ids.branch()
        reason = reason_for_local_hangup(LocalHangup.NORMAL).render()
        bye = dialog.build_request(
            "BYE",
            via=self._core.shared._via_for(hop.transport, branch),
            cseq=invite_cseq + 1,
            extra_headers=[("Reason", reason), ("User-Agent", self._core.shared.config.user_agent)],
        ).to_bytes()
        self._core.shared._transactions.start(
            method="BYE",
            branch=branch,
            data=bye,
            transport=hop.transport,
            address=hop.address,
            owner=None,
            now=now,
        )
        self._core.shared.stats.orphan_answers += 1
        self._core.shared._orphan_acks[key] = (ack, hop.transport, hop.address)
        self._core.shared._schedule(
            now + self._core.shared._timer_config.timer_b, self._forget_orphan, key
        )

    def _forget_orphan(self, key: tuple[str, str], now: float) -> None:
        self._core.shared._orphan_acks.pop(key, None)

    def _remember_invite(self, call_id: str, from_tag: str, cseq: int, now: float) -> None:
        """Note an INVITE we sent, so a late 2xx to it (or a fork's) is still ours to end."""
        invites = self._core.shared._sent_invites
        # Expiry is monotonic in insertion order: the expired ones are at the front.
        while invites:
            oldest = next(iter(invites))
            if invites[oldest] > now and len(invites) < self._core.shared.config.max_remembered:
                break
            del invites[oldest]
        invites.pop((call_id, from_tag, cseq), None)
        invites[(call_id, from_tag, cseq)] = (
            now + self._core.shared.config.max_ring_time + self._core.shared._timer_config.timer_b
        )

    def _sent_this_invite(self, response: Response, now: float) -> bool:
        """Whether a response's Call-ID, From tag and CSeq name an INVITE we sent."""
        key = (response.call_id or "", response.from_tag or "", response.cseq[0])
        until = self._core.shared._sent_invites.get(key)
        return until is not None and now < until
