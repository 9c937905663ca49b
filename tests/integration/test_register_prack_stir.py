"""End to end through `outbound worker` (issue 12 items 6-8): a far end that requires 100rel
(SIPp: 421 to an INVITE without it, then reliable 180 and 183 with SDP that must be PRACKed),
INVITEs signed with STIR/SHAKEN and verified by an independent verifier (joserfc), and a trunk
that must REGISTER first (Kamailio as registrar with digest auth, relaying INVITEs only from a
registered user)."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.sipp.harness import Sipp, free_ports, requires_sipp
from tests.sipp.kamailio import KAMAILIO, registrar
from tests.stir_verify import VerificationFailed, make_stir_files, tampered, verify_identity
from tests.worker_stack import Stack, assert_complete_event_history
from tests.workers_harness import PYTHON, REPO_ROOT, wait_for
from workers.signaling.registrations import read_statuses

pytestmark = [pytest.mark.services, pytest.mark.sipp, requires_sipp]
X5U = "https://certs.example/shaken.pem"
_SEPARATOR = re.compile(r"^-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n", re.M)


def stir_keys(tmp_path: Path, attest: str = "B") -> tuple[str, bytes]:
    key_file, cert_file = make_stir_files(tmp_path)
    toml = (f'stir_key_file = "{key_file}"\nstir_cert_file = "{cert_file}"\n'
            f'stir_x5u = "{X5U}"\nstir_attest = "{attest}"\n'
            "udp_only = true\n")  # a signed INVITE is over 1300 bytes; SIPp listens on UDP
    return toml, cert_file.read_bytes()


def received_invites(far_end: Sipp) -> list[tuple[float, str]]:
    """(when SIPp got it, the message) of every INVITE in SIPp's message log."""
    text = far_end.result().messages
    parts = _SEPARATOR.split(text)
    found = []
    for stamp, body in zip(parts[1::2], parts[2::2], strict=False):
        if "message received" not in body.split("\n", 1)[0]:
            continue
        message = body.split("\n\n", 1)[-1]
        if message.startswith("INVITE "):
            when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
            found.append((when, message))
    return found


def header(message: str, name: str) -> str | None:
    match = re.search(rf"^{name}:\s*(.*?)\s*$", message, re.M | re.I)
    return None if match is None else match.group(1)


def check_signed_invites(far_end: Sipp, cert_pem: bytes, attests: dict[str, str]) -> int:
    """Every INVITE the far end got verifies, fresh at its arrival, with the attestation its
    destination number was dialled with; a tampered copy does not; each call has its own
    origid. Returns how many INVITEs were checked."""
    invites = received_invites(far_end)
    assert invites, "SIPp logged no INVITE"
    origids: dict[str, set[str]] = {}
    for when, message in invites:
        identity = header(message, "Identity")
        assert identity is not None, f"INVITE without Identity:\n{message[:800]}"
        claims = verify_identity(identity, cert_pem, x5u=X5U, now=when)
        [dest] = claims["dest"]["tn"]
        assert claims["attest"] == attests[dest], (dest, claims)
        assert claims["orig"] == {"tn": "15550100"}
        origids.setdefault(str(claims["origid"]), set()).add(header(message, "Call-ID") or "")
        with pytest.raises(VerificationFailed):
            verify_identity(tampered(identity), cert_pem, x5u=X5U, now=when)
    assert all(len(call_ids) == 1 for call_ids in origids.values()), origids
    return len(invites)


def dial(stack: Stack, attests: dict[str, str], *, own: tuple[str, ...] = ()) -> list[str]:
    """One dial per number of `attests`; those in `own` name their attestation themselves."""
    assert stack.client is not None
    leg_ids = []
    for index, number in enumerate(attests):
        fields = {"stir_attest": attests[number]} if number in own else {}
        leg_ids.append(stack.client.enqueue_dial(
            stack.trunk, f"sip:+{number}@{stack.proxy}", correlation_id=f"c-{index}",
            **fields,
        ).leg_id)
    return leg_ids


def check_calls(stack: Stack, leg_ids: list[str]) -> None:
    """All answered, one CDR each, and each leg's history: invited, invited again after the
    421, early media once, established, one terminal event."""
    cdrs = stack.wait_cdrs(leg_ids, timeout=60)
    assert len(cdrs) == len(leg_ids)
    assert {cdrs[leg][2] for leg in leg_ids} == {"answered"}, cdrs
    legs = stack.settled_events(leg_ids)
    assert_complete_event_history(legs, leg_ids)
    for leg in leg_ids:
        states = [event.state for event in legs[leg]]
        assert states.count("invited") == 2, states
        retried = [e for e in legs[leg] if e.state == "invited"][1]
        assert retried.status_code == 421 and "100rel" in retried.reason
        assert states.count("early_media") == 1, states
        assert states.index("early_media") < states.index("established") < len(states) - 1


def test_a_far_end_requiring_100rel_takes_signed_calls(stack: Stack, tmp_path: Path) -> None:
    attests = {f"1555000{n:04d}": "B" for n in range(4)}
    attests["15550000003"] = "A"  # this dial asks for full attestation itself
    far_end = stack.sipp("uas_421_prack.xml", len(attests), hold_ms=300)
    keys, cert_pem = stir_keys(tmp_path, attest="B")
    stack.configure_trunk(far_end, keys)
    leg_ids = dial(stack, attests, own=("15550000003",))
    stack.start_worker("w1@prack")
    check_calls(stack, leg_ids)
    result = far_end.wait(timeout=30)
    assert result.successful_calls == len(attests) and result.failed_calls == 0, result.explain()
    assert check_signed_invites(far_end, cert_pem, attests) == 2 * len(attests)


requires_kamailio = pytest.mark.skipif(not Path(KAMAILIO).exists(), reason="no kamailio")


def registration_of(stack: Stack) -> dict[str, str]:
    statuses = read_statuses(stack.redis, stack.settings, stack.trunk)
    return next(iter(statuses.values()), {})


def trunks_check(stack: Stack) -> str:
    """`outbound trunks check --json`: its registration field for the trunk."""
    done = subprocess.run(
        [str(PYTHON), "-m", "cli.main", "trunks", "check", "--trunks", str(stack.trunks_file),
         "--json", "--timeout", "2", "--bind", "127.0.0.1"],
        cwd=REPO_ROOT, env={**os.environ, **stack.env}, capture_output=True, text=True,
        timeout=30, check=False,
    )
    [line] = done.stdout.splitlines()
    return str(json.loads(line).get("registration", f"none in {line}"))


@requires_kamailio
def test_a_trunk_that_must_register_and_requires_100rel_takes_signed_calls(
    stack: Stack, tmp_path: Path
) -> None:
    attests = {f"1555010{n:04d}": "C" for n in range(6)}
    far_end = stack.sipp("uas_421_prack.xml", len(attests), hold_ms=300)
    proxy = registrar(free_ports(1), f"127.0.0.1:{far_end.port}", tmp_path / "kamailio",
                      user="acme", password="s3cret").start()
    try:
        keys, cert_pem = stir_keys(tmp_path, attest="C")
        stack.configure_trunk(proxy.port, keys + (
            'register = true\nregister_expires = 10\n'  # refreshed after 5 s
            'credentials = { username = "acme", password = "s3cret" }\n'))
        worker = stack.start_worker("w1@register")
        assert registration_of(stack).get("registered") == "1", registration_of(stack)
        assert registration_of(stack)["aor"] == "sip:acme@127.0.0.1"
        leg_ids = dial(stack, attests)
        check_calls(stack, leg_ids)
        result = far_end.wait(timeout=30)
        assert result.successful_calls == len(attests), result.explain()
        assert check_signed_invites(far_end, cert_pem, attests) == 2 * len(attests)
        wait_for(lambda: worker.log().count("registered for 10 s") >= 2, 15, "a refresh")
        assert "registered (1 of 1 workers)" in trunks_check(stack)
        worker.close()  # drain: REGISTER with Expires: 0
        assert "unbound (200)" in worker.log(), worker.log()[-3000:]
        assert registration_of(stack) == {}
    finally:
        proxy.stop()


@requires_kamailio
def test_a_trunk_the_registrar_refuses_fails_its_dials_before_any_invite(
    stack: Stack, tmp_path: Path
) -> None:
    far_end = stack.sipp("uas_421_prack.xml", 1)
    proxy = registrar(free_ports(1), f"127.0.0.1:{far_end.port}", tmp_path / "kamailio",
                      user="acme", password="s3cret").start()
    try:
        stack.configure_trunk(proxy.port, (
            'register = true\nregister_expires = 60\n'
            'credentials = { username = "acme", password = "wrong" }\n'))
        stack.start_worker("w1@refused")
        wait_for(lambda: registration_of(stack).get("state") == "backing_off", 15,
                 "the registration to fail")
        assert registration_of(stack)["registered"] == "0"
        assert "rejected" in registration_of(stack)["last_error"]
        leg_ids = dial(stack, {"15550200000": "B"})
        cdrs = stack.wait_cdrs(leg_ids, timeout=30)
        [row] = cdrs.values()
        assert row[2] == "failed" and "not registered" in row[5], row
        assert received_invites(far_end) == []
    finally:
        proxy.stop()
