"""The scheduler's side in Python: build dial messages, publish them, follow their events.

    from workers.client import enqueue_dial
    queued = enqueue_dial("carrier-a", "sip:+15550123@carrier.example", correlation_id="c-42")

A thin convenience over the queue contract (docs/dial-message.md, docs/client.md): it builds
a `DialMessage` (validated here; InvalidDialRequest names each bad field) and publishes it as
plain JSON on `dial.<trunk>.json`, exactly what any other scheduler publishes. Enqueueing
needs no database: the worker stores the leg. The leg's id is known at once (derived from
trunk and correlation_id), so `follow` and `cdr_for_leg` work from the returned `QueuedDial`.
Publishing the same correlation_id again dials once: the worker finds the leg it stored.

`enqueue_dials` publishes up to `chunk_size` messages as one JSON array (one message for the
broker, one transaction, one limits check and one claim in the worker).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from models import operations
from models.cdrs import Cdr
from models.legs import Leg
from models.repository import Repository
from workers.celery.app import DIAL_BATCH_TASK, DIAL_TASK, create_app, dial_queue_name
from workers.config.settings import ConfigError, Settings, TrunkConfig, resolve_trunks
from workers.contract.dial_message import (
    DialMessage,
    InvalidDialRequest,
    message_leg_id,
    parse_dial_message,
)
from workers.contract.queues import PUBLISH_RETRY, publish_dial_body
from workers.events.stream import REDIS_UNAVAILABLE, EventReader, ReceivedEvent, StreamEvent


@dataclass(frozen=True, slots=True)
class QueuedDial:
    """A published dial message. `leg_id` is the leg the worker stores for it."""

    leg_id: str
    correlation_id: str
    trunk: str
    message: DialMessage
    stream_position: str = "0-0"  # the trunk stream's last entry before the dial was queued


class DialClient:
    """Holds the connections a scheduler process needs; safe to share between threads.

    Enqueueing uses only the broker (and Redis for the stream position). The database is
    opened on first use by what reads it: `cdr_for_leg`, `leg`, cancel and hang-up (which
    look up the leg's owner worker).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        repository: Repository | None = None,
        app: Celery | None = None,
        trunks: Mapping[str, TrunkConfig] | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._repository = repository
        self.app = app or create_app(self.settings)
        self.redis: redis.Redis[Any] = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        self._trunks = trunks
        self._trunks_source = "the trunks given to DialClient"

    @property
    def repository(self) -> Repository:
        if self._repository is None:
            self._repository = Repository.from_url(self.settings.database_url)
        return self._repository

    def trunk_config(self, trunk: str) -> TrunkConfig:
        """The trunk's table; ConfigError naming the trunk and the trunks file if none."""
        if self._trunks is None:
            loaded = resolve_trunks(self.settings)
            self._trunks, self._trunks_source = loaded.trunks, loaded.path
        found = self._trunks.get(trunk)
        if found is None:
            known = ", ".join(sorted(self._trunks)) or "none"
            raise ConfigError(
                f"unknown trunk {trunk!r}: {self._trunks_source} has no [trunks.{trunk}] table "
                f"(trunks defined: {known})"
            )
        return found

    def dial_message(
        self, trunk: str, to: str, *, correlation_id: str | None = None, **fields: Any
    ) -> DialMessage:
        """The validated message (a missing correlation_id becomes a UUID). A client that
        knows the trunks (a trunks file, or trunks given) refuses a trunk they lack: no worker
        serves an unknown trunk's queue, so its dial would wait forever."""
        if self._trunks is not None or self.settings.trunks_file:
            self.trunk_config(trunk)
        return parse_dial_message({
            **fields, "version": 1, "trunk": trunk, "to": to,
            "correlation_id": correlation_id or str(uuid.uuid4()),
        })

    def enqueue_dial(
        self,
        trunk: str,
        to: str,
        *,
        correlation_id: str | None = None,
        scenario: str = "campaign",
        **fields: Any,
    ) -> QueuedDial:
        """Validate and publish one dial message; any dial message field is a keyword
        (`not_after`, `caller_user`, `codecs`, ...). A bare number is fine: the worker
        puts it at its trunk's domain."""
        message = self.dial_message(trunk, to, correlation_id=correlation_id,
                                    scenario=scenario, **fields)
        position = self._stream_position(trunk)
        self.publish_messages(trunk, [message])
        return _queued(message, position)

    def enqueue_dials(
        self, trunk: str, dials: Iterable[Mapping[str, Any]], *, chunk_size: int = 50
    ) -> list[QueuedDial]:
        """Publish many dials of one trunk, `chunk_size` messages to a JSON array body.

        Each dial is a mapping with `to` and optionally `correlation_id` and any other dial
        message field. Every dial is validated before anything is published; an invalid one
        raises InvalidDialRequest naming its position and its bad fields.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        prepared = [self._indexed_message(trunk, index, dial) for index, dial in enumerate(dials)]
        position = self._stream_position(trunk)
        for start in range(0, len(prepared), chunk_size):
            self.publish_messages(trunk, prepared[start:start + chunk_size])
        return [_queued(message, position) for message in prepared]

    def _indexed_message(self, trunk: str, index: int, dial: Mapping[str, Any]) -> DialMessage:
        if "to" not in dial:
            raise InvalidDialRequest({f"dials[{index}].to": "missing"})
        values = {name: value for name, value in dial.items() if name != "to"}
        try:
            return self.dial_message(trunk, str(dial["to"]), **values)
        except InvalidDialRequest as error:
            raise InvalidDialRequest(
                {f"dials[{index}].{name}": problem for name, problem in error.errors.items()}
            ) from None

    def publish_messages(self, trunk: str, messages: Sequence[DialMessage]) -> None:
        """One body on `dial.<trunk>.json`: the message itself, or an array of several."""
        payload: Any = [m.to_json() for m in messages]
        body = json.dumps(payload[0] if len(payload) == 1 else payload,
                          separators=(",", ":")).encode()
        self.publish_raw(trunk, body)

    def publish_raw(self, trunk: str, body: bytes) -> None:
        """Publish bytes as they are (content type application/json) to the trunk's message
        queue, declaring the queue first so a broker that drops unroutable messages keeps it."""
        publish_dial_body(self.app, trunk, body)

    def create_consumer_group(self, trunk: str, group: str, position: str = "$") -> bool:
        """Create `group` on the trunk's events stream at `position` ("$": only what comes
        next, "0": everything kept) before enqueueing, so no event is missed; False when the
        group existed already (it keeps its position)."""
        try:
            self.redis.xgroup_create(self.settings.events_stream(trunk), group, id=position,
                                     mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" in str(error):
                return False
            raise
        return True

    def publish_dial_batch(self, trunk: str, legs: Sequence[tuple[str, str]]) -> None:
        """One leg-id `dial_batch` task for legs already stored (recovery, tests); new dials
        go as dial messages (`enqueue_dial`)."""
        self.app.send_task(
            DIAL_BATCH_TASK,
            kwargs={"trunk": trunk, "legs": [list(leg) for leg in legs],
                    "enqueued_at": time.time()},
            queue=dial_queue_name(trunk),
            routing_key=dial_queue_name(trunk),
            retry=True,
            retry_policy=PUBLISH_RETRY,
            ignore_result=True,
        )

    def publish_dial(self, leg_id: str, trunk: str, correlation_id: str) -> None:
        """One leg-id `dial` task for a leg already stored (see publish_dial_batch)."""
        self.app.send_task(
            DIAL_TASK,
            kwargs={
                "leg_id": leg_id, "trunk": trunk, "correlation_id": correlation_id,
                "enqueued_at": time.time(),
            },
            queue=dial_queue_name(trunk),
            routing_key=dial_queue_name(trunk),
            retry=True,
            retry_policy=PUBLISH_RETRY,
            ignore_result=True,
        )

    def _stream_position(self, trunk: str) -> str:
        try:
            entries = self.redis.xrevrange(self.settings.events_stream(trunk), count=1)
        except REDIS_UNAVAILABLE:
            return "0-0"
        if not entries:
            return "0-0"
        entry_id = entries[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def follow(
        self, queued: QueuedDial, *, timeout: float, poll_ms: int = 500
    ) -> Iterator[StreamEvent]:
        """The leg's events as they arrive, repeats dropped, until its terminal event.

        Raises TimeoutError when no terminal event came within `timeout` seconds.
        """
        reader = EventReader(self.redis, self.settings, [queued.trunk])
        reader.seek(queued.stream_position)
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            try:
                batch: list[ReceivedEvent] = reader.read(block_ms=poll_ms)
            except REDIS_UNAVAILABLE:
                time.sleep(0.2)
                continue
            for item in batch:
                event = item.event
                if event.leg_id != queued.leg_id or event.event_id in seen:
                    continue
                seen.add(event.event_id)
                yield event
                if event.terminal:
                    return
        raise TimeoutError(f"no terminal event for leg {queued.leg_id} within {timeout:.0f} s")

    def cdr_for_leg(self, leg_id: str) -> Cdr | None:
        return self.repository.run(operations.cdr_for_leg, leg_id)

    def leg(self, leg_id: str) -> Leg | None:
        return self.repository.get_leg(leg_id)

    def close(self) -> None:
        self.redis.close()
        if self._repository is not None:
            self._repository.engine.dispose()


def _queued(message: DialMessage, position: str) -> QueuedDial:
    return QueuedDial(
        leg_id=str(message_leg_id(message.trunk, message.correlation_id)),
        correlation_id=message.correlation_id, trunk=message.trunk, message=message,
        stream_position=position,
    )


_default: DialClient | None = None
_default_lock = threading.Lock()


def default_client() -> DialClient:
    """One client per process, built from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = DialClient()
        return _default


def enqueue_dial(
    trunk: str,
    to: str,
    *,
    correlation_id: str | None = None,
    scenario: str = "campaign",
    client: DialClient | None = None,
    **fields: Any,
) -> QueuedDial:
    """Queue one dial (see DialClient.enqueue_dial); uses the process's default client."""
    return (client or default_client()).enqueue_dial(
        trunk, to, correlation_id=correlation_id, scenario=scenario, **fields
    )
