"""`outbound call` run as a real process against SIPp far ends over UDP, TCP and TLS."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.sipp.harness import (  # noqa: F401  (sip_peers, test_pki: fixtures)
    SipPeer,
    SipPeerFactory,
    TestPki,
    requires_sipp,
    requires_stunnel,
    sip_peers,
    test_pki,
)

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(90), requires_sipp]

TRANSPORTS = ["udp", "tcp", pytest.param("tls", marks=requires_stunnel)]


@dataclass
class CallRun:
    exit_code: int
    events: list[dict[str, Any]]
    cdr: dict[str, Any]
    stderr: str

    @property
    def states(self) -> list[str]:
        return [event["state"] for event in self.events]

    def explain(self) -> str:
        return f"exit {self.exit_code}\nevents {self.events}\ncdr {self.cdr}\n{self.stderr[-3000:]}"


def place_call(
    peer: SipPeer, pki: TestPki, *options: str, user: str = "service", target: str = ""
) -> CallRun:
    """`outbound call` to `target` (default: `user` at the peer) through the peer as proxy."""
    scheme = "sips" if peer.transport == "tls" else "sip"
    args = [
        sys.executable, "-m", "cli.main", "call", target or f"{scheme}:{user}@{peer.address}",
        "--proxy", peer.address, "--transport", peer.transport, "--bind", "127.0.0.1:0",
        "--tls-ca", str(pki.ca_file), "--json", *options,
    ]  # fmt: skip
    completed = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    events = [line for line in lines if line["type"] == "event"]
    cdrs = [line for line in lines if line["type"] == "cdr"]
    assert len(cdrs) == 1 and lines[-1]["type"] == "cdr", completed.stdout + completed.stderr
    return CallRun(completed.returncode, events, cdrs[0], completed.stderr)


def assert_sipp_happy(peer: SipPeer, run: CallRun, timeout: float = 20.0) -> None:
    result = peer.wait(timeout)
    assert result.exit_code == 0 and result.successful_calls == 1, (
        result.explain() + "\n" + run.explain()
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_answered_call_ended_by_a_remote_bye_with_reason(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start(
        "uas_answer_remote_bye.xml",
        transport,
        keys={"reason_cause": "21"},
        extra_args=("-d", "300"),
    )
    run = place_call(peer, test_pki, "--hold", "30")
    assert run.exit_code == 0, run.explain()
    assert run.states[0] == "invited"
    assert run.states[-2:] == ["established", "ended"]
    assert {e["status_code"] for e in run.events if e["state"] == "provisional"} == {100, 180}
    cdr = run.cdr
    assert cdr["disposition"] == "answered" and cdr["final_status_code"] == 200
    assert cdr["hangup_by"] == "remote"
    assert (cdr["reason_protocol"], cdr["reason_cause"]) == ("Q.850", 21)
    assert cdr["reason_text"] == "far end hangs up"
    assert cdr["hangup_reason"] == "user_hangup"
    assert cdr["codec"] == "PCMA"
    assert cdr["answered_at"] >= cdr["first_provisional_at"] >= cdr["started_at"]
    assert cdr["ended_at"] - cdr["answered_at"] >= 0.3  # the far end's hold
    answered_for = cdr["ended_at"] - cdr["answered_at"]
    assert cdr["billsec"] == math.floor(answered_for + 0.5)  # nearest second, halves up
    assert cdr["duration_ms"] >= 300
    assert_sipp_happy(peer, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_answered_call_hung_up_by_us_after_hold(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer.xml", transport)
    run = place_call(peer, test_pki, "--hold", "0.2")
    assert run.exit_code == 0, run.explain()
    assert run.cdr["hangup_by"] == "local" and run.cdr["hangup_reason"] == "normal"
    assert run.cdr["ended_at"] - run.cdr["answered_at"] >= 0.2
    assert_sipp_happy(peer, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_busy_is_acked_and_reported_as_busy(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_busy.xml", transport)
    run = place_call(peer, test_pki)
    assert run.exit_code == 1
    assert run.states[-1] == "failed"
    assert run.events[-1]["status_code"] == 486
    assert run.cdr["disposition"] == "busy" and run.cdr["final_status_code"] == 486
    assert run.cdr["answered_at"] is None and run.cdr["billsec"] == 0
    assert_sipp_happy(peer, run)  # the scenario requires the ACK of the 486


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ringing_call_cancelled_by_us(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_ring_cancel.xml", transport)
    run = place_call(peer, test_pki, "--cancel-after", "0.3")
    assert run.exit_code == 1
    assert run.states[-1] == "cancelled"
    assert run.cdr["disposition"] == "cancelled" and run.cdr["final_status_code"] == 487
    assert_sipp_happy(peer, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_asked_before_any_1xx_waits_for_the_first_provisional(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    # The far end stays silent for 300 ms before its 180: a CANCEL
    # sent before that 180 would reach it during its pause and fail its call.
    peer = sip_peers.start("uas_early_cancel.xml", transport, extra_args=("-d", "300"))
    run = place_call(peer, test_pki, "--cancel-after", "0")
    assert run.states[-1] == "cancelled", run.explain()
    assert run.cdr["first_provisional_at"] - run.cdr["started_at"] >= 0.29
    assert_sipp_happy(peer, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ring_timeout_cancels_and_reports_no_answer(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_ring_cancel.xml", transport)
    run = place_call(peer, test_pki, "--ring-timeout", "0.5")
    assert run.exit_code == 1
    assert run.cdr["disposition"] == "no_answer", run.explain()
    assert run.cdr["ended_at"] - run.cdr["started_at"] >= 0.5
    assert_sipp_happy(peer, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_401_challenge_is_answered_with_a_digest_sipp_verifies(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_auth_401.xml", transport)
    run = place_call(peer, test_pki, "--auth-user", "alice", "--auth-password", "secret")
    assert run.exit_code == 0, run.explain()
    assert run.cdr["disposition"] == "answered"
    assert_sipp_happy(peer, run)


def _digest_params(header_value: str) -> dict[str, str]:
    return {
        match[0].lower(): match[1] if match[1] else match[2]
        for match in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', header_value)
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_407_challenge_is_answered_with_a_correct_proxy_authorization(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_auth_407.xml", transport)
    run = place_call(peer, test_pki, "--auth-user", "alice", "--auth-password", "secret")
    assert run.exit_code == 0, run.explain()
    result = peer.wait(20)
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    found = re.findall(r"^Proxy-Authorization:\s*Digest\s+(.*)$", result.messages, re.M | re.I)
    assert len(found) >= 1, result.messages
    params = _digest_params(found[0])
    ha1 = hashlib.md5(b"alice:sipp.proxy:secret").hexdigest()
    ha2 = hashlib.md5(f"INVITE:{params['uri']}".encode()).hexdigest()
    if "qop" in params:
        expected = hashlib.md5(
            f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}".encode()
        ).hexdigest()
    else:
        expected = hashlib.md5(f"{ha1}:{params['nonce']}:{ha2}".encode()).hexdigest()
    assert params["response"] == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ack_and_bye_follow_the_contact_and_the_reversed_record_route(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_record_route.xml", transport)
    run = place_call(peer, test_pki, "--hold", "0.1")
    assert run.exit_code == 0, run.explain()
    assert run.cdr["hangup_by"] == "local"
    assert_sipp_happy(peer, run)  # the scenario checks Request-URI, Route order and CSeq


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_early_media_183_with_sdp_then_answer(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_early_media.xml", transport)
    run = place_call(peer, test_pki, "--hold", "0.1")
    assert run.exit_code == 0, run.explain()
    assert 183 in [e["status_code"] for e in run.events if e["state"] == "provisional"]
    assert run.cdr["first_provisional_at"] is not None
    assert_sipp_happy(peer, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_retransmitted_200_is_acked_again(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    # -nr: without it SIPp takes our second (identical, as RFC 3261 wants) ACK for a
    # retransmission of the first and replays its 200, a ping-pong that never reaches recv #2.
    peer = sip_peers.start("uas_retransmit_200.xml", transport, extra_args=("-nr",))
    run = place_call(peer, test_pki, "--hold", "0.5")
    assert run.exit_code == 0, run.explain()
    assert run.states.count("established") == 1
    result = peer.wait(20)
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    acks = re.findall(r"^ACK sip", result.messages, re.M)
    assert len(acks) == 2, result.messages


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_200_with_unusable_sdp_is_acked_then_byed(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_bad_sdp.xml", transport)
    run = place_call(peer, test_pki, "--hold", "30")
    assert run.exit_code == 1, run.explain()
    assert run.cdr["error"], run.explain()
    assert run.cdr["hangup_by"] == "local"
    assert_sipp_happy(peer, run)  # ACK, then BYE, then our 200 came


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_session_timer_with_uac_refresher_is_refreshed_by_update(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    # The far end picks a 2 s interval with us as refresher: one UPDATE is due after 1 s, the
    # next after 2 s, so a 1.6 s call sees exactly one (a second would fail the scenario).
    peer = sip_peers.start("uas_session_timer.xml", transport, keys={"session_expires": "2"})
    run = place_call(peer, test_pki, "--session-expires", "90", "--hold", "1.6")
    assert run.exit_code == 0, run.explain()
    assert run.cdr["hangup_by"] == "local" and run.cdr["hangup_reason"] == "normal"
    result = peer.wait(20)
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    invite = re.search(r"^INVITE .*?\r?\n\r?\n", result.messages, re.M | re.S)
    assert invite and re.search(r"^Session-Expires: *90\b", invite.group(0), re.M | re.I)


@requires_stunnel
def test_tls_peer_with_a_certificate_from_another_ca_is_refused(
    sip_peers: SipPeerFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    peer = sip_peers.start("uas_answer.xml", "tls")
    stranger = TestPki.create(tmp_path / "other-ca")
    run = place_call(peer, stranger)
    assert run.exit_code == 1
    assert run.states == ["invited", "failed"]
    assert run.cdr["error"] == "connection lost"
    assert "certificate verify failed" in run.stderr
    assert peer.sipp.result().successful_calls == 0


def test_human_readable_output_names_each_event_and_the_cdr(
    sip_peers: SipPeerFactory,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer.xml", "udp")
    completed = subprocess.run(
        [
            sys.executable, "-m", "cli.main", "call", f"sip:service@{peer.address}",
            "--proxy", peer.address, "--bind", "127.0.0.1:0", "--hold", "0.1",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == [
        "invited", "provisional", "provisional", "established", "ended",
    ]  # fmt: skip
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} established +200 answered codec=PCMA", lines[3])
    assert lines[-1].startswith("CDR answered: final=200 ")
    assert "hangup=normal by local" in lines[-1]
    assert peer.wait(10).successful_calls == 1


def test_caller_identity_and_srtp_offer_reach_the_far_end(
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer.xml", "udp")
    run = place_call(
        peer, test_pki, "--from-user", "+15550001", "--from-display", 'Ålice "Q"', "--srtp",
        "--hold", "0.1",
    )  # fmt: skip
    assert run.exit_code == 0, run.explain()
    assert run.cdr["from_uri"] == "sip:+15550001@127.0.0.1"
    assert run.cdr["srtp"] is False  # the far end answered plain RTP/AVP
    result = peer.wait(10)
    invite = result.messages.split("INVITE sip:", 1)[1]
    assert re.search(r'^From: "Ålice \\"Q\\"" <sip:\+15550001@127\.0\.0\.1>;tag=', invite, re.M)
    assert re.search(r"^m=audio \d+ RTP/SAVP ", invite, re.M)
    assert re.search(r"^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:[A-Za-z0-9+/]{40}", invite, re.M)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_with_no_1xx_yet_stays_queued_until_the_180(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    # RFC 3261 §9.1: the far end is silent for 1 s before its 180 (a CANCEL during the pause
    # aborts its call); the CANCEL, asked for at once, may only follow the 180.
    peer = sip_peers.start("uas_cancel_no_ring.xml", transport)
    run = place_call(peer, test_pki, "--cancel-after", "0")
    assert run.states[-1] == "cancelled", run.explain()
    assert run.cdr["final_status_code"] == 487
    result = peer.wait(20)
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    log = result.message_log()
    ringing_sent = next(
        when for when, way, line in log if way == "sent" and line.startswith("SIP/2.0 180")
    )  # fmt: skip
    cancel_received = next(
        when for when, way, line in log if way == "received" and line.startswith("CANCEL ")
    )  # fmt: skip
    assert cancel_received >= ringing_sent
    assert cancel_received - run.cdr["started_at"] >= 1.0 - 0.001


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_tel_target_is_dialled_through_the_proxy(
    transport: str,
    sip_peers: SipPeerFactory,  # noqa: F811
    test_pki: TestPki,  # noqa: F811
) -> None:
    peer = sip_peers.start("uas_answer.xml", transport)
    run = place_call(peer, test_pki, "--hold", "0.1", target="tel:+1-555-1234")
    assert run.exit_code == 0, run.explain()
    assert run.cdr["to_uri"] == "tel:+1-555-1234" and run.cdr["disposition"] == "answered"
    result = peer.wait(20)
    assert result.exit_code == 0 and result.successful_calls == 1, result.explain()
    invite = result.messages.split("INVITE tel:", 1)[1]
    assert invite.split("\n", 1)[0].strip() == "+1-555-1234 SIP/2.0"  # the number kept as is
    assert re.search(r"^To: *<tel:\+1-555-1234>", invite, re.M)
    contact = "sips:" if transport == "tls" else "sip:"
    assert re.search(rf"^Contact: *<{contact}", invite, re.M), invite
