"""The scheduler's side: store a queued leg, put its dial on `dial.<trunk>`, follow its events.

    from workers.client import enqueue_dial
    queued = enqueue_dial("carrier-a", "sip:+15550123@carrier.example", correlation_id="c-42")

Enqueueing twice with the same correlation_id while the leg lives dials once: the leg row is
found again, and a repeated message loses the atomic claim in the worker.

A campaign queues many dials at once with `DialClient.enqueue_dials`: each chunk of legs is
stored in one transaction and goes out as one `outbound.dial_batch` message, which the worker
takes with one limits check and one claim (the per-message cost of Celery, the broker and
the database is paid once per chunk instead of once per call).
"""

from __future__ import annotations

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
from models.dial_fields import DialFields, InvalidDialRequest, validate_dial_fields
from models.enums import LegState
from models.legs import Leg
from models.repository import Repository
from workers.celery.app import DIAL_BATCH_TASK, DIAL_TASK, create_app, dial_queue_name
from workers.config.settings import ConfigError, Settings, TrunkConfig, resolve_trunks
from workers.events.stream import REDIS_UNAVAILABLE, EventReader, ReceivedEvent, StreamEvent

_PUBLISH_RETRY = {"max_retries": 5, "interval_start": 0.1, "interval_step": 0.5, "interval_max": 2}


@dataclass(frozen=True, slots=True)
class QueuedDial:
    leg_id: str
    correlation_id: str
    trunk: str
    created: bool  # False: a live leg with this correlation_id already existed
    state: str  # the leg's state when enqueue_dial returned
    published: bool  # a dial message was put on the queue by this call
    stream_position: str = "0-0"  # the trunk stream's last entry before the dial was queued


class DialClient:
    """Holds the connections a scheduler process needs; safe to share between threads."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        repository: Repository | None = None,
        app: Celery | None = None,
        trunks: Mapping[str, TrunkConfig] | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.repository = repository or Repository.from_url(self.settings.database_url)
        self.app = app or create_app(self.settings)
        self.redis: redis.Redis[Any] = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        self._trunks = trunks
        self._trunks_source = "the trunks given to DialClient"

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

    def request_uri(self, trunk: str, to: str) -> str:
        """`to` itself when it is a URI; a bare number needs the trunk's configured domain.

        The trunk must exist either way: no worker serves an unknown trunk's queue, so a dial
        queued for it would wait forever."""
        config = self.trunk_config(trunk)
        if to.strip().lower().startswith(("sip:", "sips:", "tel:")):
            return to.strip()
        return config.request_uri(to)

    def enqueue_dial(
        self,
        trunk: str,
        to: str,
        *,
        correlation_id: str | None = None,
        scenario: str = "campaign",
        **fields: Any,
    ) -> QueuedDial:
        """Store the leg (validated; InvalidDialRequest names bad fields) and queue its dial."""
        values = {
            **fields,
            "correlation_id": correlation_id or str(uuid.uuid4()),
            "trunk": trunk,
            "request_uri": self.request_uri(trunk, to),
            "scenario": scenario,
        }
        leg, created = self.repository.create_leg(values)
        position = self._stream_position(trunk)
        published = False
        # A queued leg gets a message even when it already existed: the first message may
        # have been lost (a broker restart); an extra one loses the claim and does nothing.
        if leg.state == LegState.QUEUED:
            self.publish_dial(str(leg.id), trunk, leg.correlation_id)
            published = True
        return QueuedDial(
            leg_id=str(leg.id), correlation_id=leg.correlation_id, trunk=trunk,
            created=created, state=str(leg.state.value), published=published,
            stream_position=position,
        )

    def enqueue_dials(
        self, trunk: str, dials: Iterable[Mapping[str, Any]], *, chunk_size: int = 50
    ) -> list[QueuedDial]:
        """Queue many dials of one trunk, `chunk_size` legs per transaction and per message.

        Each dial is a mapping with `to` and optionally `correlation_id`, `scenario` and any
        other dial field. Every dial is validated before anything is stored; an invalid one
        raises InvalidDialRequest naming its position and its bad fields. Same idempotency
        as `enqueue_dial`: a live leg with the same correlation_id is found, not dialed again.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        prepared = [self._dial_fields(trunk, index, dial) for index, dial in enumerate(dials)]
        position = self._stream_position(trunk)
        queued: list[QueuedDial] = []
        for start in range(0, len(prepared), chunk_size):
            stored = self.repository.run(operations.insert_legs, prepared[start:start + chunk_size])
            waiting = [(str(leg.id), leg.correlation_id) for leg, _ in stored
                       if leg.state == LegState.QUEUED]
            if waiting:
                self.publish_dial_batch(trunk, waiting)
            published = {leg_id for leg_id, _ in waiting}
            queued.extend(
                QueuedDial(
                    leg_id=str(leg.id), correlation_id=leg.correlation_id, trunk=trunk,
                    created=created, state=str(leg.state.value),
                    published=str(leg.id) in published, stream_position=position,
                )
                for leg, created in stored
            )
        return queued

    def _dial_fields(self, trunk: str, index: int, dial: Mapping[str, Any]) -> DialFields:
        if "to" not in dial:
            raise InvalidDialRequest({f"dials[{index}].to": "missing"})
        values = {name: value for name, value in dial.items() if name != "to"}
        values.update(
            correlation_id=dial.get("correlation_id") or str(uuid.uuid4()), trunk=trunk,
            request_uri=self.request_uri(trunk, str(dial["to"])),
            scenario=dial.get("scenario", "campaign"),
        )
        try:
            return validate_dial_fields(values)
        except InvalidDialRequest as error:
            raise InvalidDialRequest(
                {f"dials[{index}].{name}": problem for name, problem in error.errors.items()}
            ) from None

    def publish_dial_batch(self, trunk: str, legs: Sequence[tuple[str, str]]) -> None:
        """One `dial_batch` message for (leg_id, correlation_id) pairs of queued legs."""
        self.app.send_task(
            DIAL_BATCH_TASK,
            kwargs={"trunk": trunk, "legs": [list(leg) for leg in legs],
                    "enqueued_at": time.time()},
            queue=dial_queue_name(trunk),
            routing_key=dial_queue_name(trunk),
            retry=True,
            retry_policy=_PUBLISH_RETRY,
            ignore_result=True,
        )

    def publish_dial(self, leg_id: str, trunk: str, correlation_id: str) -> None:
        self.app.send_task(
            DIAL_TASK,
            kwargs={
                "leg_id": leg_id, "trunk": trunk, "correlation_id": correlation_id,
                "enqueued_at": time.time(),
            },
            queue=dial_queue_name(trunk),
            routing_key=dial_queue_name(trunk),
            retry=True,
            retry_policy=_PUBLISH_RETRY,
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
        self.repository.engine.dispose()


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
