"""A second opinion on our wire format: one real call against SIPp over UDP, captured on `lo`
with tshark, must decode without a single malformed SIP packet."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import AnswerReceived, DialogEstablished, LegEnded, LegEvent
from sipstack.transport import Transport
from sipstack.uac import UacCore
from tests.sipp.harness import LOOPBACK, Sipp, free_ports
from tests.waiting import wait_until

TSHARK = shutil.which("tshark")
CAPTURE_PROBE = b"\x00outbound capture probe"  # no SIP dissector takes a NUL first byte
# Wireshark flags a header line without a colon as malformed.
MALFORMED_CONTROL = b"OPTIONS sip:control@127.0.0.1 SIP/2.0\r\nNo colon in this line\r\n\r\n"

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(90)]


@contextmanager
def capture(port: int, pcap: Path) -> Iterator[None]:
    """tshark capturing `udp port <port>` on lo into `pcap` for the duration of the block."""
    assert TSHARK is not None, "tshark is not installed"
    log = pcap.with_suffix(".log")
    with log.open("wb") as err:
        process = subprocess.Popen(
            [TSHARK, "-i", "lo", "-f", f"udp port {port}", "-w", str(pcap)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        # "Capturing on" comes some milliseconds before packets are really taken, so probe:
        # the capture is live once a probe datagram has made the file grow.
        wait_until(
            lambda: (pcap.exists() and pcap.stat().st_size > 0) or process.poll() is not None,
            15,
            "tshark to write its file header",
        )
        assert process.poll() is None, f"tshark exited: {log.read_text(errors='replace')}"
        empty_size = pcap.stat().st_size
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prober:

            def probe_captured() -> bool:
                prober.sendto(CAPTURE_PROBE, (LOOPBACK, port))
                return pcap.stat().st_size > empty_size or process.poll() is not None

            wait_until(probe_captured, 15, "tshark to capture a probe datagram")
        assert process.poll() is None, f"tshark exited: {log.read_text(errors='replace')}"
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # stop cleanly: the last packets are written
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def read_pcap(
    pcap: Path, display_filter: str, *fields: str, partial: bool = False
) -> list[list[str]]:
    """Rows of `fields` for every packet of `pcap` matching `display_filter`; `partial`
    reads a file still being written (a packet cut short at its end is not an error)."""
    assert TSHARK is not None
    args = [TSHARK, "-r", str(pcap), "-Y", display_filter]
    if fields:
        args += ["-T", "fields", "-E", "separator=|"]
        for name in fields:
            args += ["-e", name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert partial or done.returncode == 0, done.stderr
    return [line.split("|") for line in done.stdout.splitlines() if line.strip()]


def run_call(core: UacCore, sock: socket.socket, request: DialRequest) -> list[LegEvent]:
    """Drive one call through the core over a plain UDP socket: answer it, then hang up."""
    call_id = core.dial(request, time.time())
    lifecycle: list[LegEvent] = []
    deadline = time.monotonic() + 20
    while not any(isinstance(event, LegEnded) for event in lifecycle):
        assert time.monotonic() < deadline, f"the call did not end: {lifecycle}"
        for out in core.outgoing():
            sock.sendto(out.data, out.address)
        for event in core.events():
            if isinstance(event, AnswerReceived):
                core.confirm_answer(event.call_id, time.time())
            elif isinstance(event, LegEvent):
                lifecycle.append(event)
                if isinstance(event, DialogEstablished):
                    core.bye(event.call_id, time.time())
        for out in core.outgoing():  # what the events' handling produced (ACK, BYE)
            sock.sendto(out.data, out.address)
        wake = core.next_deadline()
        sock.settimeout(0.2 if wake is None else min(0.2, max(0.0, wake - time.time())))
        try:
            data, source = sock.recvfrom(65535)
        except TimeoutError:
            core.handle_timer(time.time())
            continue
        core.receive(data, (source[0], source[1]), Transport.UDP, time.time())
    for out in core.outgoing():  # whatever the end produced (nothing is expected)
        sock.sendto(out.data, out.address)
    assert all(event.call_id == call_id for event in lifecycle)
    return lifecycle


def test_one_call_against_sipp_decodes_cleanly_in_tshark(tmp_path: Path) -> None:
    port = free_ports(1)
    pcap = tmp_path / "call.pcap"
    with capture(port, pcap):
        sipp = Sipp(scenario="uas", port=port, transport="udp", workdir=tmp_path / "sipp")
        sipp.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((LOOPBACK, 0))
                local = sock.getsockname()
                core = UacCore(
                    CoreConfig(
                        local_addresses={Transport.UDP: (local[0], local[1])},
                        session_expires=1800,
                    )
                )
                target = f"127.0.0.1:{port}"
                request = DialRequest(
                    target=DialTarget(
                        request_uri=f"sip:+15550001@{target};user=phone", signaling_addr=target
                    ),
                    caller_display_name='Wire "Check"',
                    correlation_id="wire-check",
                    trunk="wire",
                )
                lifecycle = run_call(core, sock, request)
            result = sipp.wait(timeout=20)
        finally:
            sipp.stop()
        # A control: one malformed datagram, last on the wire. Once tshark shows it in the
        # file, everything before it is there too, and the filter is shown to bite.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(MALFORMED_CONTROL, (LOOPBACK, port))
        wait_until(
            lambda: (
                read_pcap(pcap, "sip && _ws.malformed", "sip.Method", partial=True) == [["OPTIONS"]]
            ),
            15,
            "the control datagram to reach the capture file",
        )
    assert [event.state for event in lifecycle] == [
        "invited",
        "provisional",
        "established",
        "ended",
    ]
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()

    assert read_pcap(pcap, "sip && _ws.malformed", "sip.Method") == [["OPTIONS"]]  # ours: none
    assert read_pcap(pcap, "_ws.expert.severity == error") == []
    requests = read_pcap(pcap, "sip.Method", "sip.Method", "sip.CSeq.method", "sip.Call-ID")
    assert [row[:2] for row in requests] == [
        ["INVITE", "INVITE"],
        ["ACK", "ACK"],
        ["BYE", "BYE"],
        ["OPTIONS", ""],  # the control
    ], requests
    assert len({row[2] for row in requests[:3]}) == 1  # one dialog
    statuses = read_pcap(pcap, "sip.Status-Code", "sip.Status-Code", "sip.CSeq.method")
    assert ["180", "INVITE"] in statuses and ["200", "INVITE"] in statuses
    assert ["200", "BYE"] in statuses
    offer = read_pcap(pcap, 'sip.Method == "INVITE" && sdp', "sdp.media", "sdp.owner")
    assert offer and offer[0][0].startswith("audio 10000 RTP/AVP 8 0 9 111 101"), offer
    decoded = read_pcap(
        pcap, 'sip.Method == "INVITE"', "sip.from.tag", "sip.Via.branch", "sip.Session-Expires"
    )
    assert decoded and all(decoded[0]), decoded  # From tag, Via branch and Session-Expires read
