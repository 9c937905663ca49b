"""The trunk's STIR/SHAKEN and REGISTER/100rel keys: what a bad value says, the signer loaded
once from the trunk's files (bad files name their key), and CallSigner.sign checked by an
independent verifier (joserfc) on a fake clock; and the registration summary the CLI prints."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sipstack.dial import DialRequest, DialTarget
from tests.stir_verify import make_stir_files, verify_identity
from workers.config.errors import ConfigError
from workers.config.trunks import TrunkConfig, parse_trunks
from workers.signaling.identity import load_call_signer
from workers.signaling.registrations import register_gauge, registration_summary

X5U = "https://certs.example/shaken.pem"


def trunk(tmp_path: Path, **keys: object) -> TrunkConfig:
    table = {"proxy": "127.0.0.1:5060", **keys}
    return parse_trunks({"trunks": {"t": table}}, base_dir=tmp_path).get("t")


@pytest.mark.parametrize(("keys", "message"), [
    ({"stir_key_file": "k.pem"}, "trunks.t.stir_x5u: required with stir_key_file"),
    ({"stir_key_file": "k.pem", "stir_x5u": X5U}, "trunks.t.stir_attest: required with"),
    ({"stir_key_file": "k.pem", "stir_x5u": X5U, "stir_attest": "D"},
     "trunks.t.stir_attest: must be one of '', 'A', 'B', 'C', got 'D'"),
    ({"stir_key_file": "k.pem", "stir_x5u": "http://x", "stir_attest": "A"},
     "trunks.t.stir_x5u: 'http://x' is not an https:// URL"),
    ({"stir_attest": "A"}, "trunks.t.stir_attest: given without stir_key_file"),
    ({"prack": "yes"}, "trunks.t.prack: must be one of 'off', 'when_required'"),
    ({"register": "yes"}, "trunks.t.register: must be true or false"),
    ({"register_expires": 5}, "trunks.t.register_expires: must be an integer between 10"),
    ({"register_aor": "tel:+1555"}, "trunks.t.register_aor: 'tel:+1555' is not a sip:"),
])
def test_bad_keys_name_themselves(tmp_path: Path, keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^<trunks>: " + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("+", r"\+")):
        trunk(tmp_path, **keys)


def test_prack_modes_set_the_core_fields(tmp_path: Path) -> None:
    modes = {mode: trunk(tmp_path, prack=mode).prack_options()
             for mode in ("off", "when_required", "supported", "required")}
    assert modes["off"] == {"prack": False, "require_100rel": False, "retry_421": False}
    assert modes["when_required"] == {"prack": False, "require_100rel": False, "retry_421": True}
    assert modes["supported"] == {"prack": True, "require_100rel": False, "retry_421": True}
    assert modes["required"] == {"prack": True, "require_100rel": True, "retry_421": True}
    assert trunk(tmp_path).prack == "when_required" and not trunk(tmp_path).registers


def test_bad_key_and_certificate_files_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    key_file, cert_file = make_stir_files(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_cert = make_stir_files(other)
    (tmp_path / "junk.pem").write_text("not a key")
    base = {"stir_x5u": X5U, "stir_attest": "B"}
    cases = [
        ({"stir_key_file": "missing.pem"}, "trunks.t.stir_key_file: cannot read"),
        ({"stir_key_file": "junk.pem"}, "trunks.t.stir_key_file: STIR key: not a usable PEM"),
        ({"stir_key_file": str(key_file), "stir_cert_file": str(other_cert)},
         "trunks.t.stir_cert_file: STIR certificate: its public key is not the signing key's"),
    ]
    for keys, message in cases:
        with pytest.raises(ConfigError, match="^" + message):
            load_call_signer(trunk(tmp_path, **base, **keys))
    assert load_call_signer(trunk(tmp_path)) is None
    assert load_call_signer(trunk(tmp_path, **base, stir_key_file=str(key_file),
                                  stir_cert_file=str(cert_file))) is not None


def test_sign_gives_a_fresh_verifiable_header_with_the_dials_attestation(
    tmp_path: Path,
) -> None:
    key_file, cert_file = make_stir_files(tmp_path)
    signer = load_call_signer(trunk(tmp_path, stir_key_file=str(key_file), stir_x5u=X5U,
                                    stir_attest="B", stir_cert_file=str(cert_file)))
    assert signer is not None
    now = [1_800_000_000.5]
    ids = iter([uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)])
    signer = type(signer)(signer.signer, signer.attest, clock=lambda: now[0],
                          origid=lambda: next(ids))
    request = DialRequest(target=DialTarget(request_uri="sip:+1-555-0123@carrier.example",
                                                  signaling_addr="127.0.0.1"),
                          caller_user="+15550100")
    first = signer.sign(request)
    now[0] += 30
    second = signer.sign(request, "A")
    cert = cert_file.read_bytes()
    claims = verify_identity(first.identity_header, cert, x5u=X5U, now=now[0])
    assert claims == {"attest": "B", "dest": {"tn": ["15550123"]}, "iat": 1_800_000_000,
                      "orig": {"tn": "15550100"}, "origid": str(uuid.UUID(int=1))}
    again = verify_identity(second.identity_header, cert, x5u=X5U, now=now[0])
    assert again["attest"] == "A" and again["iat"] == 1_800_000_030
    assert again["origid"] == str(uuid.UUID(int=2))
    with pytest.raises(ValueError, match="telephone number"):
        signer.sign(DialRequest(target=DialTarget(request_uri="sip:alice@example.com",
                                                   signaling_addr="127.0.0.1"),
                                caller_user="+15550100"))


def test_registration_summary() -> None:
    now = 1000.0
    bound = {"registered": "1", "expires_at": "1030", "state": "registered", "last_error": ""}
    failed = {"registered": "0", "expires_at": "", "state": "backing_off",
              "last_error": "403 Forbidden"}
    assert registration_summary({}, now) == "no worker registering"
    assert registration_summary({"w1": bound, "w2": failed}, now) == (
        "registered (1 of 2 workers), expires in 30 s")
    assert registration_summary({"w2": failed}, now) == "NOT registered: 403 Forbidden"


def test_the_registered_gauge_reads_the_binding_on_each_scrape() -> None:
    registry = CollectorRegistry()
    bound = [False]
    register_gauge(registry, "t1", lambda: bound[0])
    labels = {"trunk": "t1"}
    assert registry.get_sample_value("outbound_trunk_registered", labels) == 0.0
    bound[0] = True
    assert registry.get_sample_value("outbound_trunk_registered", labels) == 1.0
