"""Worker liveness and crash recovery: heartbeats, finding dead owners, ending their legs.

Each worker process has an owner id `<node name>#<instance>`, written on the legs it claims,
and a heartbeat key `{prefix}:workers:<node name>` holding its instance, refreshed every
third of the TTL. An owner is dead when its node's key names another instance (the node was
restarted) or has been missing for a whole TTL, seen twice (a Redis restart empties every key
at once; live workers write theirs again well within the TTL).

A live worker of the same trunk (the restarted one or a sibling) adopts the dead owner's legs
in one UPDATE, so only one rescuer acts, re-tags the dead owner's unpublished outbox rows as
its own (they go out first, in order), and ends each leg from its stored dialog state: BYE
when answered, CANCEL while ringing. Each gets a terminal event and a CDR with hangup_by
`local` and the reason. Legs that never sent an INVITE are failed without SIP.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy.orm import Session

from models import recovery_ops
from models.enums import LegState
from sipstack.dialog import DialogSnapshot
from sipstack.transport import Transport
from sipstack.uri import format_hostport
from workers.config.settings import Settings
from workers.events.stream import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)

OWNER_SEPARATOR = "#"


def new_instance_id() -> str:
    return uuid.uuid4().hex[:12]


def owner_id(node: str, instance: str) -> str:
    return f"{node}{OWNER_SEPARATOR}{instance}"


def split_owner(owner: str) -> tuple[str, str]:
    node, _, instance = owner.rpartition(OWNER_SEPARATOR)
    return (node, instance) if node else (owner, "")


class WorkerNameInUse(RuntimeError):
    """Another live worker already runs under this node name."""


class Heartbeat:
    """The liveness key of one worker, refreshed by a thread; `on_beat` rides along (the
    concurrency lease renewal)."""

    def __init__(
        self,
        client: redis.Redis[Any],
        settings: Settings,
        *,
        node: str,
        instance: str,
        trunk: str,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self._redis = client
        self._settings = settings
        self.node = node
        self.instance = instance
        self.trunk = trunk
        self.key = heartbeat_key(settings, node)
        self.interval = settings.heartbeat_ttl / 3
        self._on_beat = on_beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0

    def _value(self) -> str:
        return json.dumps({
            "instance": self.instance, "trunk": self.trunk, "pid": os.getpid(),
            "host": socket.gethostname(), "at": time.time(), "beat": self.beats,
        })

    def take_over(self, *, poll: float = 0.2) -> None:
        """Write our key; if another instance's key is there, wait to see whether that one is
        still beating (WorkerNameInUse) or dead (its key is then ours)."""
        first = self._redis.get(self.key)
        if first is not None and _instance_of(first) != self.instance:
            deadline = time.monotonic() + self.interval + 1.0
            while time.monotonic() < deadline:
                time.sleep(poll)
                current = self._redis.get(self.key)
                if current is None:
                    break
                if current != first:
                    raise WorkerNameInUse(
                        f"a worker named {self.node!r} is already running "
                        f"(instance {_instance_of(current)}); give this one another --name"
                    )
        self.beat()

    def beat(self) -> None:
        self.beats += 1
        self._redis.set(self.key, self._value(), px=int(self._settings.heartbeat_ttl * 1000))

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except REDIS_UNAVAILABLE as error:
                log.warning("heartbeat not written: %s", error.__class__.__name__)
            if self._on_beat is not None:
                try:
                    self._on_beat()
                except Exception as error:
                    log.warning("heartbeat companion failed: %s", error)

    def stop(self, *, remove: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if remove:
            try:
                current = self._redis.get(self.key)
                if current is not None and _instance_of(current) == self.instance:
                    self._redis.delete(self.key)
            except REDIS_UNAVAILABLE:
                pass


def heartbeat_key(settings: Settings, node: str) -> str:
    return settings.key("workers", node)


def _instance_of(raw: bytes | str) -> str:
    try:
        return str(json.loads(raw).get("instance", ""))
    except (ValueError, AttributeError):
        return ""


class OwnerWatch:
    """Decides which leg owners are dead, without being fooled by a restarted Redis."""

    def __init__(
        self, client: redis.Redis[Any], settings: Settings,
        *, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._settings = settings
        self._clock = clock
        self._missing_since: dict[str, float] = {}

    def dead(self, owners: Sequence[str]) -> list[str]:
        """The owners that are dead now (raises when Redis cannot be asked)."""
        if not owners:
            return []
        nodes = [split_owner(owner) for owner in owners]
        values = self._redis.mget([heartbeat_key(self._settings, node) for node, _ in nodes])
        now = self._clock()
        dead: list[str] = []
        for owner, (_node, instance), raw in zip(owners, nodes, values, strict=True):
            if raw is not None:
                self._missing_since.pop(owner, None)
                if _instance_of(raw) != instance:
                    dead.append(owner)  # its node runs again as another instance
                continue
            first = self._missing_since.setdefault(owner, now)
            if now - first >= self._settings.heartbeat_ttl:
                dead.append(owner)
        for owner in list(self._missing_since):
            if owner not in owners:
                del self._missing_since[owner]
        return dead

    def forget(self, owner: str) -> None:
        self._missing_since.pop(owner, None)


# --- dialog state stored with the events ---------------------------------------------------------


def snapshot_to_json(snapshot: DialogSnapshot) -> dict[str, Any]:
    return {
        "call_id": snapshot.call_id,
        "local_tag": snapshot.local_tag,
        "remote_tag": snapshot.remote_tag,
        "local_cseq": snapshot.local_cseq,
        "remote_target": snapshot.remote_target,
        "route_set": list(snapshot.route_set),
        "transport": snapshot.transport.value,
        "peer_address": [snapshot.peer_address[0], snapshot.peer_address[1]],
        "from_header": snapshot.from_header,
        "to_header": snapshot.to_header,
        "invite_branch": snapshot.invite_branch,
        "invite_via": snapshot.invite_via,
        "invite_cseq": snapshot.invite_cseq,
        "request_uri": snapshot.request_uri,
        "state": snapshot.state,
        "correlation_id": snapshot.correlation_id,
        "scenario": snapshot.scenario,
        "trunk": snapshot.trunk,
        "started_at": snapshot.started_at,
        "answered_at": snapshot.answered_at,
    }


def snapshot_from_json(data: Mapping[str, Any]) -> DialogSnapshot:
    host, port = data["peer_address"]
    return DialogSnapshot(
        call_id=data["call_id"],
        local_tag=data["local_tag"],
        remote_tag=data.get("remote_tag") or "",
        local_cseq=int(data["local_cseq"]),
        remote_target=data["remote_target"],
        route_set=tuple(data.get("route_set") or ()),
        transport=Transport(data["transport"]),
        peer_address=(str(host), int(port)),
        from_header=data["from_header"],
        to_header=data["to_header"],
        invite_branch=data.get("invite_branch") or "",
        invite_via=data.get("invite_via") or "",
        invite_cseq=int(data.get("invite_cseq") or 1),
        request_uri=data["request_uri"],
        state=data["state"],
        correlation_id=data.get("correlation_id") or "",
        scenario=data.get("scenario") or "",
        trunk=data.get("trunk") or "",
        started_at=data.get("started_at"),
        answered_at=data.get("answered_at"),
    )


def dialog_columns(snapshot: DialogSnapshot) -> dict[str, Any]:
    """The legs columns that hold dialog state (for people reading the table)."""
    peer = format_hostport(*snapshot.peer_address)
    return {
        "call_id": snapshot.call_id,
        "local_tag": snapshot.local_tag,
        "remote_tag": snapshot.remote_tag or None,
        "local_cseq": snapshot.local_cseq,
        "invite_branch": snapshot.invite_branch or None,
        "remote_target": snapshot.remote_target,
        "route_set": list(snapshot.route_set),
        "transport": snapshot.transport,
        "peer_addr": peer,
    }


def recovery_cseq(snapshot: DialogSnapshot, now: float) -> DialogSnapshot:
    """Raise the stored CSeq past in-dialog requests sent after the snapshot was stored.

    Session refreshes (RFC 4028, at least every 45 s) do not store a new snapshot; a BYE
    with a CSeq below one the peer has seen would be refused with 500 (RFC 3261 §12.2.2),
    while a gap is allowed.
    """
    answered = snapshot.answered_at if snapshot.answered_at is not None else now
    margin = 10 + int(max(0.0, now - answered) / 45.0) * 2
    return dataclasses.replace(snapshot, local_cseq=snapshot.local_cseq + margin)


# --- database side of recovery ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecoveredLeg:
    leg_id: str
    trunk: str
    correlation_id: str
    scenario: str
    state: LegState
    call_id: str | None
    request_uri: str
    request: Mapping[str, Any]
    last_seq: int
    snapshot: DialogSnapshot | None
    claimed_at: float | None
    invited_at: float | None
    first_provisional_at: float | None
    answered_at: float | None


def adopt(session: Session, dead: str, rescuer: str) -> list[RecoveredLeg]:
    """Take over a dead owner's live legs and its unpublished outbox rows, in one transaction
    (models.recovery_ops.adopt); each leg with its last event seq and its latest stored
    dialog state."""
    recovered = []
    for adopted in recovery_ops.adopt(session, dead, rescuer):
        leg, key = adopted.leg, str(adopted.leg.id)
        snapshot = None
        if adopted.dialog is not None:
            try:
                snapshot = snapshot_from_json(adopted.dialog)
            except (KeyError, ValueError, TypeError) as error:
                log.error("leg %s: stored dialog state unreadable: %s", key, error)
        recovered.append(RecoveredLeg(
            leg_id=key, trunk=leg.trunk, correlation_id=leg.correlation_id,
            scenario=str(leg.scenario.value), state=leg.state, call_id=leg.call_id,
            request_uri=leg.request_uri, request=dict(leg.request or {}),
            last_seq=adopted.last_seq, snapshot=snapshot,
            claimed_at=_epoch(leg.claimed_at), invited_at=_epoch(leg.invited_at),
            first_provisional_at=_epoch(leg.first_provisional_at),
            answered_at=_epoch(leg.answered_at),
        ))
    return recovered


live_owners = recovery_ops.live_owners
queued_legs = recovery_ops.queued_legs


def _epoch(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


class BrokerResetWatch:
    """Notices that the broker's Redis lost its data (restarted empty) so queued legs get
    their dial messages again. The marker key is written once per broker life; whoever
    writes it (SET NX) re-publishes, so one worker of the trunk does it."""

    def __init__(self, broker: redis.Redis[Any], settings: Settings, trunk: str) -> None:
        self._redis = broker
        self.key = settings.key("broker-epoch", trunk)

    def reset_detected(self) -> bool:
        """True once per broker life (and at the very first start): re-publish queued legs."""
        return bool(self._redis.set(self.key, str(time.time()), nx=True))
