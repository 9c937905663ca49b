"""Client transactions (RFC 3261 §17.1 with RFC 6026) as `(state, input) -> (actions, next)` tables.

The two tables below are the whole protocol logic; `TransactionLayer` only carries the actions
out (send, arm or stop a timer, tell the transaction user). An input a state does not accept
is counted in `CoreStats.unexpected_inputs` and dropped, never acted upon.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from sipstack.config import TimerConfig
from sipstack.core_output import CoreStats, Outgoing
from sipstack.timers import TimerHandle, TimerHeap
from sipstack.transport import Address, Transport

if TYPE_CHECKING:
    from sipstack.message import Response


class TxState(Enum):
    IDLE = "idle"
    CALLING = "calling"  # INVITE sent, nothing heard
    TRYING = "trying"  # non-INVITE sent, nothing heard
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"  # RFC 6026: INVITE got a 2xx, absorbing retransmitted 2xx
    # An INVITE whose leg ended before its final response: no more retransmissions, but a
    # final response arriving within 64*T1 still gets its ACK (§17.1.1.3) or goes up (2xx).
    DETACHED = "detached"
    TERMINATED = "terminated"


class TxInput(Enum):
    START = "start"
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_K = "K"
    TIMER_M = "M"
    TRANSPORT_ERROR = "transport error"
    DETACH = "the TU stopped waiting"


class TxAction(Enum):
    TRANSMIT = "transmit the request"
    RETRANSMIT = "retransmit the request (counted)"
    ARM_RETRANSMIT = "arm Timer A/E at T1 (unreliable transports only)"
    BACKOFF_INVITE = "re-arm Timer A at twice its interval"
    BACKOFF_NON_INVITE = "re-arm Timer E at min(2 * interval, T2)"
    RETRANSMIT_AT_T2 = "re-arm Timer E at T2"
    ARM_TIMEOUT = "arm Timer B/F at 64*T1"
    STOP_TIMERS = "stop the retransmit and timeout timers"
    ARM_D = "arm Timer D (32 s unreliable, 0 reliable)"
    ARM_K = "arm Timer K (T4 unreliable, 0 reliable)"
    ARM_M = "arm Timer M at 64*T1"
    SEND_ACK = "send (or resend) the ACK for a non-2xx final response"
    REPORT_RESPONSE = "pass the response to the transaction user"
    REPORT_TIMEOUT = "tell the transaction user the request timed out"
    REPORT_TRANSPORT_ERROR = "tell the transaction user the transport failed"
    ABSORB = "drop a retransmitted response (counted)"


Step = tuple[tuple[TxAction, ...], TxState]

_S = TxState
_I = TxInput
_A = TxAction

INVITE_TABLE: dict[tuple[TxState, TxInput], Step] = {
    (_S.IDLE, _I.START): ((_A.TRANSMIT, _A.ARM_RETRANSMIT, _A.ARM_TIMEOUT), _S.CALLING),
    (_S.CALLING, _I.TIMER_A): ((_A.RETRANSMIT, _A.BACKOFF_INVITE), _S.CALLING),
    (_S.CALLING, _I.TIMER_B): ((_A.STOP_TIMERS, _A.REPORT_TIMEOUT), _S.TERMINATED),
    (_S.CALLING, _I.PROVISIONAL): ((_A.STOP_TIMERS, _A.REPORT_RESPONSE), _S.PROCEEDING),
    (_S.CALLING, _I.SUCCESS): ((_A.STOP_TIMERS, _A.ARM_M, _A.REPORT_RESPONSE), _S.ACCEPTED),
    (_S.CALLING, _I.FAILURE): (
        (_A.STOP_TIMERS, _A.SEND_ACK, _A.ARM_D, _A.REPORT_RESPONSE),
        _S.COMPLETED,
    ),
    (_S.CALLING, _I.TRANSPORT_ERROR): (
        (_A.STOP_TIMERS, _A.REPORT_TRANSPORT_ERROR),
        _S.TERMINATED,
    ),
    (_S.PROCEEDING, _I.PROVISIONAL): ((_A.REPORT_RESPONSE,), _S.PROCEEDING),
    (_S.PROCEEDING, _I.SUCCESS): ((_A.ARM_M, _A.REPORT_RESPONSE), _S.ACCEPTED),
    (_S.PROCEEDING, _I.FAILURE): ((_A.SEND_ACK, _A.ARM_D, _A.REPORT_RESPONSE), _S.COMPLETED),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
    (_S.CALLING, _I.DETACH): ((_A.STOP_TIMERS, _A.ARM_TIMEOUT), _S.DETACHED),
    (_S.PROCEEDING, _I.DETACH): ((_A.STOP_TIMERS, _A.ARM_TIMEOUT), _S.DETACHED),
    (_S.DETACHED, _I.PROVISIONAL): ((), _S.DETACHED),
    (_S.DETACHED, _I.SUCCESS): ((_A.STOP_TIMERS, _A.ARM_M, _A.REPORT_RESPONSE), _S.ACCEPTED),
    (_S.DETACHED, _I.FAILURE): ((_A.STOP_TIMERS, _A.SEND_ACK, _A.ARM_D), _S.COMPLETED),
    (_S.DETACHED, _I.TIMER_B): ((), _S.TERMINATED),
    (_S.DETACHED, _I.TRANSPORT_ERROR): ((_A.STOP_TIMERS,), _S.TERMINATED),
    (_S.COMPLETED, _I.FAILURE): ((_A.ABSORB, _A.SEND_ACK), _S.COMPLETED),
    # A 2xx from another fork after a failure: the TU must ACK and BYE it, not ignore it.
    (_S.COMPLETED, _I.SUCCESS): ((_A.REPORT_RESPONSE,), _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_D): ((), _S.TERMINATED),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): ((_A.STOP_TIMERS,), _S.TERMINATED),
    # RFC 6026 §8.4: every 2xx (retransmission or another fork) goes up to the TU.
    (_S.ACCEPTED, _I.SUCCESS): ((_A.REPORT_RESPONSE,), _S.ACCEPTED),
    (_S.ACCEPTED, _I.TIMER_M): ((), _S.TERMINATED),
    (_S.ACCEPTED, _I.TRANSPORT_ERROR): ((_A.STOP_TIMERS,), _S.TERMINATED),
}

_NON_INVITE_FINAL: Step = ((_A.STOP_TIMERS, _A.ARM_K, _A.REPORT_RESPONSE), _S.COMPLETED)
_NON_INVITE_TIMEOUT: Step = ((_A.STOP_TIMERS, _A.REPORT_TIMEOUT), _S.TERMINATED)
_NON_INVITE_BROKEN: Step = ((_A.STOP_TIMERS, _A.REPORT_TRANSPORT_ERROR), _S.TERMINATED)

NON_INVITE_TABLE: dict[tuple[TxState, TxInput], Step] = {
    (_S.IDLE, _I.START): ((_A.TRANSMIT, _A.ARM_RETRANSMIT, _A.ARM_TIMEOUT), _S.TRYING),
    (_S.TRYING, _I.TIMER_E): ((_A.RETRANSMIT, _A.BACKOFF_NON_INVITE), _S.TRYING),
    (_S.TRYING, _I.TIMER_F): _NON_INVITE_TIMEOUT,
    (_S.TRYING, _I.PROVISIONAL): ((_A.REPORT_RESPONSE,), _S.PROCEEDING),
    (_S.TRYING, _I.SUCCESS): _NON_INVITE_FINAL,
    (_S.TRYING, _I.FAILURE): _NON_INVITE_FINAL,
    (_S.TRYING, _I.TRANSPORT_ERROR): _NON_INVITE_BROKEN,
    (_S.PROCEEDING, _I.TIMER_E): ((_A.RETRANSMIT, _A.RETRANSMIT_AT_T2), _S.PROCEEDING),
    (_S.PROCEEDING, _I.TIMER_F): _NON_INVITE_TIMEOUT,
    (_S.PROCEEDING, _I.PROVISIONAL): ((_A.REPORT_RESPONSE,), _S.PROCEEDING),
    (_S.PROCEEDING, _I.SUCCESS): _NON_INVITE_FINAL,
    (_S.PROCEEDING, _I.FAILURE): _NON_INVITE_FINAL,
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): _NON_INVITE_BROKEN,
    (_S.COMPLETED, _I.SUCCESS): ((_A.ABSORB,), _S.COMPLETED),
    (_S.COMPLETED, _I.FAILURE): ((_A.ABSORB,), _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_K): ((), _S.TERMINATED),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): ((_A.STOP_TIMERS,), _S.TERMINATED),
}


_NO_RETRANSMISSION_STATES = frozenset({TxState.COMPLETED, TxState.ACCEPTED, TxState.DETACHED})


def input_for_status(status_code: int) -> TxInput:
    if status_code < 200:
        return TxInput.PROVISIONAL
    if status_code < 300:
        return TxInput.SUCCESS
    return TxInput.FAILURE


class TransactionUser(Protocol):
    """The layer above (the UAC core): told about responses, timeouts and broken transports."""

    def on_transaction_response(
        self, transaction: ClientTransaction, response: Response, source: Address, now: float
    ) -> None: ...

    def on_transaction_timeout(self, transaction: ClientTransaction, now: float) -> None: ...

    def on_transaction_transport_error(
        self, transaction: ClientTransaction, now: float
    ) -> None: ...

    def build_failure_ack(self, transaction: ClientTransaction, response: Response) -> bytes:
        """The ACK for a non-2xx final response to this INVITE (RFC 3261 §17.1.1.3)."""
        ...


class ClientTransaction:
    """One request we sent and its retransmission/timeout state; `owner` is the TU's object."""

    __slots__ = (
        "ack_data",
        "address",
        "branch",
        "data",
        "deadline_timer",
        "interval",
        "method",
        "owner",
        "retransmit_timer",
        "state",
        "table",
        "transport",
    )

    def __init__(
        self,
        *,
        method: str,
        branch: str,
        data: bytes,
        transport: Transport,
        address: Address,
        owner: Any,
    ) -> None:
        self.method = method
        self.branch = branch
        self.data = data
        self.transport = transport
        self.address = address
        self.owner = owner
        self.state = TxState.IDLE
        self.table = INVITE_TABLE if method == "INVITE" else NON_INVITE_TABLE
        self.interval = 0.0
        self.retransmit_timer: TimerHandle | None = None
        self.deadline_timer: TimerHandle | None = None
        self.ack_data: bytes | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.branch, self.method)

    @property
    def is_invite(self) -> bool:
        return self.table is INVITE_TABLE

    @property
    def reliable(self) -> bool:
        return self.transport.is_connection_oriented

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.method} {self.branch} {self.state.value}>"


class TransactionLayer:
    """Every client transaction of the core, matched by (top Via branch, CSeq method)."""

    __slots__ = (
        "_by_key",
        "_detached",
        "_heap",
        "_outgoing",
        "_stats",
        "_timers",
        "_user",
        "max_detached",
    )

    def __init__(
        self,
        *,
        timers: TimerConfig,
        heap: TimerHeap,
        user: TransactionUser,
        outgoing: list[Outgoing],
        stats: CoreStats,
        max_detached: int = 10_000,
    ) -> None:
        self._timers = timers
        self._heap = heap
        self._user = user
        self._outgoing = outgoing
        self._stats = stats
        self._by_key: dict[tuple[str, str], ClientTransaction] = {}
        # Detached INVITEs in the order they were detached, at most `max_detached` of them:
        # the oldest is forgotten (its late final goes unanswered) rather than memory grow.
        self._detached: dict[tuple[str, str], ClientTransaction] = {}
        self.max_detached = max_detached

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Any:
        return iter(list(self._by_key.values()))

    def start(
        self,
        *,
        method: str,
        branch: str,
        data: bytes,
        transport: Transport,
        address: Address,
        owner: Any,
        now: float,
    ) -> ClientTransaction:
        key = (branch, method)
        if key in self._by_key:
            raise ValueError(f"a {method} transaction with branch {branch} already exists")
        transaction = ClientTransaction(
            method=method,
            branch=branch,
            data=data,
            transport=transport,
            address=address,
            owner=owner,
        )
        self._by_key[key] = transaction
        self.feed(transaction, TxInput.START, now)
        return transaction

    def adopt_proceeding_invite(
        self, *, branch: str, transport: Transport, address: Address, owner: Any
    ) -> ClientTransaction:
        """Register an INVITE another (dead) process sent, so its final response gets its ACK.

        The transaction starts in Proceeding: no retransmission and no Timer B are ours to run.
        """
        transaction = ClientTransaction(
            method="INVITE",
            branch=branch,
            data=b"",
            transport=transport,
            address=address,
            owner=owner,
        )
        transaction.state = TxState.PROCEEDING
        self._by_key[transaction.key] = transaction
        return transaction

    def find(self, branch: str, method: str) -> ClientTransaction | None:
        return self._by_key.get((branch, method))

    def receive_response(
        self, transaction: ClientTransaction, response: Response, source: Address, now: float
    ) -> None:
        self.feed(transaction, input_for_status(response.status_code), now, response, source)

    def using(self, transport: Transport, address: Address) -> list[ClientTransaction]:
        """Every live transaction that sends over `transport` to `address`."""
        return [
            tx
            for tx in self._by_key.values()
            if tx.transport is transport and tx.address == address
        ]

    def transport_failed(self, transport: Transport, address: Address, now: float) -> int:
        """Feed TRANSPORT_ERROR to every live transaction using that connection; return count."""
        return self.fail(self.using(transport, address), now)

    def fail(self, transactions: list[ClientTransaction], now: float) -> int:
        """Feed TRANSPORT_ERROR to each of these still live; return how many there were.

        Taking the list lets the TU pick the transactions of a broken connection before it
        sends anything new to the same address (which must not fail with them).
        """
        failed = 0
        for transaction in transactions:
            # Checked one by one: the TU may end others of the list while it hears of one.
            if transaction.state is not TxState.TERMINATED:
                failed += 1
                self.feed(transaction, TxInput.TRANSPORT_ERROR, now)
        return failed

    def detach(self, transaction: ClientTransaction, now: float) -> bool:
        """The TU no longer waits for this INVITE: stop retransmitting, keep ACKing finals."""
        if not self.feed(transaction, TxInput.DETACH, now):
            return False
        detached = self._detached
        while len(detached) >= self.max_detached:
            self.abandon(detached.pop(next(iter(detached))))
        detached[transaction.key] = transaction
        return True

    def abandon(self, transaction: ClientTransaction) -> None:
        """Forget a transaction without telling anyone (its owner is gone)."""
        self._stop_timers(transaction)
        transaction.state = TxState.TERMINATED
        self._by_key.pop(transaction.key, None)
        self._detached.pop(transaction.key, None)

    def feed(
        self,
        transaction: ClientTransaction,
        event: TxInput,
        now: float,
        response: Response | None = None,
        source: Address | None = None,
    ) -> bool:
        """Apply one input; False (and counted) when the state does not accept it."""
        step = transaction.table.get((transaction.state, event))
        if step is None:
            self._stats.unexpected_inputs += 1
            return False
        actions, next_state = step
        if transaction.state is TxState.DETACHED and next_state is not TxState.DETACHED:
            self._detached.pop(transaction.key, None)  # answered or timed out: not waiting
        transaction.state = next_state
        follow_up: TxInput | None = None
        for action in actions:
            follow_up = self._perform(action, transaction, now, response, source) or follow_up
        if next_state in _NO_RETRANSMISSION_STATES:
            transaction.data = b""  # never retransmitted again: do not hold it for Timer D/K/M
        if next_state is TxState.TERMINATED:
            self._stop_timers(transaction)
            if self._by_key.get(transaction.key) is transaction:
                del self._by_key[transaction.key]
        elif follow_up is not None and transaction.state is next_state:
            # A zero-length Timer D/K (reliable transport) fires right after its step.
            self.feed(transaction, follow_up, now)
        return True

    def _perform(
        self,
        action: TxAction,
        tx: ClientTransaction,
        now: float,
        response: Response | None,
        source: Address | None,
    ) -> TxInput | None:
        """Carry out one action; return a timer input that is due at once, if any."""
        timers = self._timers
        if action is TxAction.TRANSMIT:
            self._outgoing.append(Outgoing(tx.data, tx.transport, tx.address))
        elif action is TxAction.RETRANSMIT:
            self._stats.retransmissions += 1
            self._outgoing.append(Outgoing(tx.data, tx.transport, tx.address))
        elif action is TxAction.ARM_RETRANSMIT:
            if not tx.reliable:
                self._arm_retransmit(tx, timers.t1, now)
        elif action is TxAction.BACKOFF_INVITE:
            self._arm_retransmit(tx, tx.interval * 2, now)
        elif action is TxAction.BACKOFF_NON_INVITE:
            self._arm_retransmit(tx, min(tx.interval * 2, timers.t2), now)
        elif action is TxAction.RETRANSMIT_AT_T2:
            self._arm_retransmit(tx, timers.t2, now)
        elif action is TxAction.ARM_TIMEOUT:
            timeout = TxInput.TIMER_B if tx.is_invite else TxInput.TIMER_F
            return self._arm_deadline(tx, timers.timer_b, timeout, now)
        elif action is TxAction.STOP_TIMERS:
            self._stop_timers(tx)
        elif action is TxAction.ARM_D:
            return self._arm_deadline(tx, timers.timer_d(tx.reliable), TxInput.TIMER_D, now)
        elif action is TxAction.ARM_K:
            return self._arm_deadline(tx, timers.timer_k(tx.reliable), TxInput.TIMER_K, now)
        elif action is TxAction.ARM_M:
            return self._arm_deadline(tx, timers.timer_b, TxInput.TIMER_M, now)
        elif action is TxAction.SEND_ACK:
            if tx.ack_data is None and response is not None:
                tx.ack_data = self._user.build_failure_ack(tx, response)
            if tx.ack_data is not None:
                self._outgoing.append(Outgoing(tx.ack_data, tx.transport, tx.address))
        elif action is TxAction.REPORT_RESPONSE:
            if response is not None:
                self._user.on_transaction_response(tx, response, source or tx.address, now)
        elif action is TxAction.REPORT_TIMEOUT:
            self._user.on_transaction_timeout(tx, now)
        elif action is TxAction.REPORT_TRANSPORT_ERROR:
            self._user.on_transaction_transport_error(tx, now)
        elif action is TxAction.ABSORB:
            self._stats.absorbed_retransmissions += 1
        return None

    def _arm_retransmit(self, tx: ClientTransaction, interval: float, now: float) -> None:
        tx.interval = interval
        tx.retransmit_timer = self._heap.schedule(now + interval, self._on_retransmit_timer, tx)

    def _arm_deadline(
        self, tx: ClientTransaction, delay: float, event: TxInput, now: float
    ) -> TxInput | None:
        if tx.deadline_timer is not None:
            tx.deadline_timer.cancel()
            tx.deadline_timer = None
        if delay <= 0:
            return event
        tx.deadline_timer = self._heap.schedule(now + delay, self._on_deadline_timer, (tx, event))
        return None

    def _stop_timers(self, tx: ClientTransaction) -> None:
        if tx.retransmit_timer is not None:
            tx.retransmit_timer.cancel()
            tx.retransmit_timer = None
        if tx.deadline_timer is not None:
            tx.deadline_timer.cancel()
            tx.deadline_timer = None

    def _on_retransmit_timer(self, tx: ClientTransaction, now: float) -> None:
        tx.retransmit_timer = None
        self.feed(tx, TxInput.TIMER_A if tx.is_invite else TxInput.TIMER_E, now)

    def _on_deadline_timer(self, arg: tuple[ClientTransaction, TxInput], now: float) -> None:
        tx, event = arg
        tx.deadline_timer = None
        self.feed(tx, event, now)
