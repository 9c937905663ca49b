"""A real `outbound worker` seen from outside: its /metrics after calls to SIPp, its JSON log
lines about a call, Flower's view (remote control and task events), and a TLS trunk."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.sipp.harness import (  # noqa: F401  (test_pki, sip_peers: fixtures)
    SipPeerFactory,
    TestPki,
    requires_sipp,
    requires_stunnel,
    sip_peers,
    test_pki,
)
from tests.worker_stack import Stack
from tests.workers_harness import WorkerProcess, free_port, wait_for
from workers.celery.app import create_app, dial_queue_name
from workers.client import DialClient
from workers.coordination.control import hangup

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp, pytest.mark.timeout(180)]


def start_worker(stack: Stack, name: str, *args: str) -> WorkerProcess:
    worker = WorkerProcess(
        trunk=stack.trunk, trunks_file=stack.trunks_file, name=name, env=stack.env,
        log_dir=stack.tmp_path, extra_args=("--sip-port", "0", *args),
    ).start()
    stack.workers.append(worker)
    stack.wait_worker_ready(worker)
    return worker


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels without trunk) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "trunk"))
            samples[(sample.name, labels)] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_calls_a_worker_placed(stack: Stack) -> None:
    calls = 6
    carrier = stack.sipp("uas_answer_remote_bye.xml", calls, hold_ms=300, reason_cause="16")
    stack.configure_trunk(carrier)
    port = free_port()
    start_worker(stack, "w1@metrics", "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    before = scrape(port)
    assert value(before, "outbound_dials_started_total") == 0
    assert value(before, "outbound_active_legs") == 0
    assert value(before, "outbound_sip_retransmissions_total") == 0  # exported before any call

    queued = stack.enqueue(calls)
    stack.wait_cdrs([q.leg_id for q in queued], timeout=60)
    result = carrier.wait(timeout=30)
    assert result.successful_calls == calls, result.explain()

    def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape(port)
        done = (value(samples, "outbound_active_legs") == 0
                and value(samples, "outbound_cdr_write_backlog") == 0)
        return samples if done else None

    samples = wait_for(settled, 20, "no live legs and no unwritten events")
    assert value(samples, "outbound_dials_total", disposition="answered") == calls
    assert sum(v for (name, _), v in samples.items() if name == "outbound_dials_total") == calls
    assert value(samples, "outbound_dials_started_total") == calls
    assert value(samples, "outbound_sip_requests_total", direction="out", method="INVITE") >= calls
    assert value(samples, "outbound_sip_requests_total", direction="out", method="ACK") >= calls
    assert value(samples, "outbound_sip_requests_total", direction="in", method="BYE") >= calls
    assert value(samples, "outbound_sip_responses_total", direction="in", method="INVITE",
                 status="200") >= calls
    assert value(samples, "outbound_sip_responses_total", direction="in", method="INVITE",
                 status="180") >= calls
    assert value(samples, "outbound_sip_responses_total", direction="out", method="BYE",
                 status="200") >= calls
    # every INVITE we sent reached SIPp: the first of each call, and any retransmission
    invites = value(samples, "outbound_sip_requests_total", direction="out", method="INVITE")
    invites_again = result.message_count(0, "INVITE", "Retrans")
    assert invites == calls + invites_again
    assert value(samples, "outbound_sip_retransmissions_total") >= invites_again
    assert value(samples, "outbound_sip_parse_errors_total") == 0
    assert value(samples, "outbound_queue_wait_seconds_count") == calls
    assert value(samples, "outbound_event_publish_backlog") == 0
    assert value(samples, "outbound_calls_per_second") > 0  # the window is 10 s


def test_json_log_lines_about_a_call_carry_its_call_id_correlation_id_and_trunk(
    stack: Stack,
) -> None:
    carrier = stack.sipp("uas_answer.xml", 1)  # answers, waits for our BYE
    stack.configure_trunk(carrier)
    client = stack.client
    assert isinstance(client, DialClient)
    worker = start_worker(stack, "w1@logs", "--log-format", "json", "--log-level", "DEBUG")
    (queued,) = stack.enqueue(1, prefix="logs")
    stack.wait_states([queued.leg_id], {"established"}, timeout=30)
    assert hangup(client, correlation_id=queued.correlation_id).result == "sent"
    cdrs = stack.wait_cdrs([queued.leg_id], timeout=30)
    call_id = cdrs[queued.leg_id][7]
    assert worker.terminate(timeout=60) == 0  # the writer thread empties its queue at exit

    entries = []
    for line in worker.log().splitlines():
        if re.fullmatch(r"worker: Warm shutdown \(MainProcess\)", line):
            continue  # Celery prints this one from its signal handler, past logging
        if line.strip():
            entries.append(json.loads(line))  # every other line is JSON, Celery's too
    keys = (call_id, queued.correlation_id, queued.leg_id)
    about_the_call = [entry for entry in entries
                      if any(key in json.dumps(entry) for key in keys)]
    assert len(about_the_call) >= 4, about_the_call
    for entry in about_the_call:
        assert (entry.get("call_id"), entry.get("correlation_id"), entry.get("trunk")) == (
            call_id, queued.correlation_id, stack.trunk), entry
    messages = [str(entry["message"]) for entry in about_the_call]
    assert any(m.startswith("INVITE sent to sip:") for m in messages), messages
    assert any(m.startswith("established") for m in messages), messages
    assert "hangup asked: sent (BYE sent)" in messages
    (ended,) = [e for e in about_the_call if str(e["message"]).startswith("call ended")]
    assert (ended["level"], ended["disposition"], ended["hangup_by"]) == (
        "info", "answered", "local")
    assert ended["leg_id"] == queued.leg_id


def test_flower_sees_the_worker_its_queue_and_its_tasks(stack: Stack) -> None:
    carrier = stack.sipp("uas_answer_remote_bye.xml", 1, hold_ms=100, reason_cause="16")
    stack.configure_trunk(carrier)
    node = "w1@flower"
    app = create_app(stack.settings)
    events: list[dict[str, Any]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": events.append})
        listening = threading.Thread(target=receiver.capture,
                                     kwargs={"limit": None, "timeout": None}, daemon=True)
        listening.start()
        try:
            start_worker(stack, node)
            # The runtime is up before Celery's consumer (and its control channel) is.
            replies = wait_for(lambda: app.control.ping(destination=[node], timeout=1), 20,
                               f"{node} to answer a ping")
            assert replies == [{node: {"ok": "pong"}}]
            queues = app.control.inspect(destination=[node], timeout=5).active_queues() or {}
            assert dial_queue_name(stack.trunk) in {q["name"] for q in queues.get(node, [])}
            # Dial messages (dial.<trunk>.json) are not Celery tasks, Flower does not list
            # them; the leg-id tasks the worker sends itself (limits retries) it does.
            leg, _ = stack.repository.create_leg({
                "correlation_id": "flower-1", "trunk": stack.trunk,
                "to": f"sip:+15550001@{stack.proxy}"})
            assert stack.client is not None
            stack.client.publish_dial(str(leg.id), stack.trunk, "flower-1")
            stack.wait_cdrs([str(leg.id)], timeout=30)

            def seen(kind: str) -> list[dict[str, Any]]:
                return [e for e in events if e.get("type") == kind]

            wait_for(lambda: seen("task-succeeded") and seen("worker-heartbeat"), 20,
                     "task-succeeded and worker-heartbeat events")
        finally:
            receiver.should_stop = True
            listening.join(timeout=10)
    assert {e["hostname"] for e in seen("worker-heartbeat")} == {node}
    assert [e["hostname"] for e in seen("task-succeeded")] == [node]
    sent = seen("task-sent")
    assert [e["name"] for e in sent] == ["outbound.dial"]  # the scheduler's send, too
    received = seen("task-received")
    assert [e["name"] for e in received] == ["outbound.dial"]


def contact_of_first_invite(messages: str) -> str:
    match = re.search(r"^INVITE .*?^Contact: *<([^>]+)>", messages, re.M | re.S)
    assert match, messages[-3000:]
    return match.group(1)


@requires_stunnel
def test_a_tls_trunk_verifies_the_carrier_and_advertises_a_real_tls_listener(
    stack: Stack, sip_peers: SipPeerFactory, test_pki: TestPki  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer_remote_bye.xml", "tls", calls=1,
                           keys={"reason_cause": "16"}, extra_args=("-d", "300"))
    stack.trunks_file.write_text(
        f'[trunks.{stack.trunk}]\nproxy = "{peer.address}"\ntransport = "tls"\n'
        f'tls_ca_file = "{test_pki.ca_file}"\n'
        f'tls_cert_file = "{test_pki.cert_file}"\ntls_key_file = "{test_pki.key_file}"\n'
    )
    stack.proxy = peer.address
    stack.settings = stack.settings.model_copy(update={"trunks_file": str(stack.trunks_file)})
    stack.client = DialClient(stack.settings, repository=stack.repository)
    worker = start_worker(stack, "w1@tls")
    (queued,) = stack.enqueue(1, prefix="tls")
    cdrs = stack.wait_cdrs([queued.leg_id], timeout=30)
    assert cdrs[queued.leg_id][2:4] == ("answered", "remote"), worker.log()[-3000:]
    result = peer.wait(timeout=30)
    assert result.successful_calls == 1, result.explain()

    contact = contact_of_first_invite(result.messages)
    match = re.fullmatch(r"sips:[^@]+@127\.0\.0\.1:(\d+)(;.*)?", contact)
    assert match, contact
    listener = int(match.group(1))
    assert f"tls 127.0.0.1:{listener}" in worker.log()
    verifying = ssl.create_default_context(cafile=str(test_pki.ca_file))
    with socket.create_connection(("127.0.0.1", listener), timeout=5) as raw, \
            verifying.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() is not None  # the handshake with our certificate succeeded
