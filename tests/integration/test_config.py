"""Trunks TOML and settings: every refusal names the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.dial_fields import InvalidDialRequest, validate_dial_fields
from sipstack.transport import Transport
from workers.config.settings import (
    ConfigError,
    Settings,
    hide_password,
    load_trunks,
    resolve_trunks,
)

GOOD = """
[defaults]
cps = 5
ring_timeout = 30

[trunks.carrier-a]
proxy = "127.0.0.1:5080"
transport = "udp"
cps = 10
max_concurrent = 100
caller_user = "+15550100"
caller_display_name = "ACME Sales"
codecs = ["PCMU", "telephone-event"]
srtp = false
session_expires = 1800
max_call_duration = 600

[trunks.carrier-a.credentials]
username = "acme"
password = "s3cret"
realm = "carrier.example"

[trunks.backup]
proxy = "[::1]:5061"
transport = "tls"
domain = "backup.example"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trunks.toml"
    path.write_text(text)
    return path


def test_good_file_is_read_with_defaults_applied(tmp_path: Path) -> None:
    trunks = load_trunks(write(tmp_path, GOOD))
    a = trunks.get("carrier-a")
    assert a.proxy == "127.0.0.1:5080"
    assert a.transport is Transport.UDP
    assert a.cps == 10.0 and a.max_concurrent == 100
    assert a.ring_timeout == 30.0  # from [defaults]
    assert [codec.name for codec in a.codecs] == ["PCMU", "telephone-event"]
    assert a.credentials is not None and a.credentials.realm == "carrier.example"
    assert a.session_expires == 1800
    backup = trunks.get("backup")
    assert backup.cps == 5.0  # from [defaults]
    assert backup.transport is Transport.TLS
    assert backup.session_expires is None
    assert backup.request_uri("+4930123") == "sips:+4930123@backup.example"


def test_proxy_address_and_request_uris_from_numbers(tmp_path: Path) -> None:
    trunks = load_trunks(write(tmp_path, GOOD))
    a, backup = trunks.get("carrier-a"), trunks.get("backup")
    assert a.proxy_address == ("127.0.0.1", 5080)
    assert backup.proxy_address == ("::1", 5061)
    assert a.request_uri("+1 (555) 010-0199") == "sip:+15550100199@127.0.0.1"
    assert a.request_uri(" sip:bob@elsewhere.test ") == "sip:bob@elsewhere.test"
    path = write(tmp_path, '[trunks.v6]\nproxy = "[2001:db8::5]"\ntransport = "tcp"\n'
                           '[trunks.v6-domain]\nproxy = "h"\ndomain = "[2001:db8::7]"\n')
    v6 = load_trunks(path).get("v6")
    assert v6.proxy_address == ("2001:db8::5", 5060)
    assert v6.request_uri("1234") == "sip:1234@[2001:db8::5]"
    assert load_trunks(path).get("v6-domain").request_uri("1234") == "sip:1234@[2001:db8::7]"


@pytest.mark.parametrize(("to", "message"), [
    ("", "to: empty destination"),
    ("not-a-uri", "to: 'not-a-uri' is neither a sip:, sips: or tel: URI nor a phone number"),
    ("+1555#22", "nor a phone number"),
    ("++1555", "nor a phone number"),
])
def test_a_destination_that_is_no_uri_and_no_number_is_refused(
    tmp_path: Path, to: str, message: str
) -> None:
    trunk = load_trunks(write(tmp_path, GOOD)).get("carrier-a")
    with pytest.raises(InvalidDialRequest, match=message) as caught:
        trunk.request_uri(to)
    assert caught.value.field == "to"


def test_unknown_trunk_lists_the_known_ones(tmp_path: Path) -> None:
    trunks = load_trunks(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"no \[trunks.nope\] table .*backup, carrier-a"):
        trunks.get("nope")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('transport = "udp"', r"trunks\.t\.proxy: missing"),
        ('proxy = "h:99999"', r"trunks\.t\.proxy: .*port 99999 out of range 1\.\.65535"),
        ('proxy = "bad host:5060"', r"trunks\.t\.proxy: .*invalid host 'bad host'"),
        ('proxy = "[::1:5060"', r"trunks\.t\.proxy: .*unclosed '\['"),
        ('proxy = "::1:5060"', r"trunks\.t\.proxy: .*write an IPv6 address as \[addr\]:port"),
        ('proxy = "h"\ndomain = "bad domain"', r"trunks\.t\.domain: .*invalid host 'bad domain'"),
        ('proxy = "h"\nasserted_identity = "mailto:a@b"',
         r"trunks\.t\.asserted_identity: .*unsupported scheme 'mailto'"),
        ('proxy = "h:5060"\ntransport = "sctp"', r"trunks\.t\.transport: unknown SIP transport"),
        ('proxy = "h:5060"\ncps = 0', r"trunks\.t\.cps: must be a number >= "),
        ('proxy = "h:5060"\ncps = "ten"', r"trunks\.t\.cps: must be a number, got str"),
        ('proxy = "h:5060"\nmax_concurrent = 1.5', r"trunks\.t\.max_concurrent: must be an int"),
        ('proxy = "h:5060"\nmax_concurrent = 0', r"trunks\.t\.max_concurrent: must be an int"),
        ('proxy = "h:5060"\ncodecs = ["G729"]', r"trunks\.t\.codecs: unknown codec 'G729'"),
        ('proxy = "h:5060"\nsession_expires = 30', r"trunks\.t\.session_expires: 30 is below"),
        ('proxy = "h:5060"\nsrtp = "yes"', r"trunks\.t\.srtp: must be true or false"),
        ('proxy = "h:5060"\nring_timeot = 5', r"trunks\.t\.ring_timeot: unknown key"),
        ('proxy = "h:5060"\ncredentials = "x"', r"trunks\.t\.credentials: must be a table"),
        (
            'proxy = "h:5060"\n[trunks.t.credentials]\npassword = "p"',
            r"trunks\.t\.credentials\.username: missing",
        ),
    ],
)
def test_bad_values_name_key_and_reason(tmp_path: Path, table: str, message: str) -> None:
    path = write(tmp_path, f"[trunks.t]\n{table}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_trunks(path)
    assert str(path) in str(caught.value)


def test_broken_toml_and_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_trunks(write(tmp_path, "[trunks.t\nproxy="))
    with pytest.raises(ConfigError, match="cannot read trunks file"):
        load_trunks(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"trunks: no \[trunks.NAME\] table"):
        load_trunks(write(tmp_path, "[defaults]\ncps = 1\n"))
    with pytest.raises(ConfigError, match=r"trunks\.bad name: trunk names use"):
        load_trunks(write(tmp_path, '[trunks."bad name"]\nproxy = "h"\n'))


def test_build_request_fills_trunk_defaults_and_caps_duration(tmp_path: Path) -> None:
    trunk = load_trunks(write(tmp_path, GOOD)).get("carrier-a")
    fields = validate_dial_fields(
        {
            "correlation_id": "c-1",
            "trunk": "carrier-a",
            "request_uri": trunk.request_uri("+15550123"),
            "max_duration": 7200,
        }
    )
    request = trunk.build_request(fields)
    assert request.target.request_uri == "sip:+15550123@127.0.0.1"
    assert request.target.signaling_addr == "127.0.0.1:5080"
    assert request.target.transport is Transport.UDP
    assert request.caller_user == "+15550100"
    assert request.caller_display_name == "ACME Sales"
    assert request.max_duration == 600.0  # the trunk's ceiling wins over 7200
    assert request.ring_timeout == 30.0
    assert request.session_expires == 1800
    assert request.credentials is not None and request.credentials.username == "acme"
    assert [codec.name for codec in request.codecs] == ["PCMU", "telephone-event"]

    own = validate_dial_fields(
        {
            "correlation_id": "c-2",
            "trunk": "carrier-a",
            "request_uri": "sip:1@x",
            "caller_user": "+1999",
            "max_duration": 60,
            "codecs": ["PCMA"],
        }
    )
    request = trunk.build_request(own)
    assert request.caller_user == "+1999"
    assert request.max_duration == 60.0
    assert [codec.name for codec in request.codecs] == ["PCMA"]


def test_settings_from_env_and_flags() -> None:
    env = {
        "OUTBOUND_REDIS_URL": "redis://127.0.0.1:6379/3",
        "OUTBOUND_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1/x",
        "OUTBOUND_DRAIN_TIMEOUT": "12.5",
    }
    settings = Settings.from_env(env)
    assert settings.broker_url == "redis://127.0.0.1:6379/3"  # defaults to the Redis URL
    assert settings.drain_timeout == 12.5
    flagged = Settings.from_env({**env, "OUTBOUND_BROKER_URL": "redis://b/1"}, drain_timeout=3)
    assert flagged.broker_url == "redis://b/1"
    assert flagged.drain_timeout == 3
    assert flagged.events_stream("t1") == "outbound:events:t1"
    with pytest.raises(ConfigError, match="OUTBOUND_HEARTBEAT_TTL='soon': not a number"):
        Settings.from_env({"OUTBOUND_HEARTBEAT_TTL": "soon"})
    with pytest.raises(ConfigError, match="drain_timeout: must be a positive number"):
        Settings.from_env({}, drain_timeout=-1)
    with pytest.raises(ConfigError, match="pass --trunks FILE or set OUTBOUND_TRUNKS_FILE"):
        resolve_trunks(Settings.from_env({}))


@pytest.mark.parametrize(("env", "message"), [
    ({"OUTBOUND_DATABASE_URL": "not a url"},
     r"OUTBOUND_DATABASE_URL='not a url': not a usable database URL"),
    ({"OUTBOUND_DATABASE_URL": "bogus://x"},
     r"OUTBOUND_DATABASE_URL='bogus://x': not a usable database URL .*bogus"),
    ({"OUTBOUND_DATABASE_URL": "postgresql://u:secret@h:notaport/x"},
     r"OUTBOUND_DATABASE_URL='postgresql://u:\*\*\*@h:notaport/x': not a usable database URL"),
    ({"OUTBOUND_DATABASE_URL": "mysql://u@h/x"},
     r"OUTBOUND_DATABASE_URL=.*driver .* not installed"),
    ({"OUTBOUND_REDIS_URL": "nope://"}, r"OUTBOUND_REDIS_URL='nope://': not a Redis URL"),
    ({"OUTBOUND_REDIS_URL": "redis://:secret@h:99999/0"},
     r"OUTBOUND_REDIS_URL='redis://:\*\*\*@h:99999/0': not a Redis URL \(Port out of range"),
    ({"OUTBOUND_BROKER_URL": "bogus://x"}, r"OUTBOUND_BROKER_URL='bogus://x': not a broker URL"),
    ({"OUTBOUND_DRAIN_TIMEOUT": "-1"}, r"OUTBOUND_DRAIN_TIMEOUT: must be a positive number"),
    ({"OUTBOUND_CLAIM_BATCH_SIZE": "0"}, r"OUTBOUND_CLAIM_BATCH_SIZE: must be a positive number"),
    ({"OUTBOUND_CLAIM_BATCH_SIZE": "many"}, r"OUTBOUND_CLAIM_BATCH_SIZE='many': not a number"),
    ({"OUTBOUND_CLAIM_BATCH_DELAY": "0"},
     r"OUTBOUND_CLAIM_BATCH_DELAY: must be a positive number"),
])
def test_a_malformed_variable_is_named_with_its_password_hidden(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env(env)
    assert "secret" not in str(caught.value)


def test_any_installed_kombu_transport_is_a_broker() -> None:
    assert Settings.from_env({"OUTBOUND_BROKER_URL": "memory://"}).broker_url == "memory://"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://app:s3cr%40t@db:5432/outbound",
     "postgresql+psycopg://app:***@db:5432/outbound"),
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://user@host/0", "redis://user@host/0"),
])
def test_hide_password(url: str, shown: str) -> None:
    assert hide_password(url) == shown
