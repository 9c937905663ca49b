"""TLS settings of a worker: trunk keys, OUTBOUND_TLS_* overrides, files checked at start with
errors naming the key, the file and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.sipp.harness import TestPki
from workers.config.settings import ConfigError, Settings, load_trunks, worker_tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("other-pki"))


def trunks_file(directory: Path, extra: str) -> Path:
    path = directory / "trunks.toml"
    path.write_text(f'[trunks.t]\nproxy = "localhost:5061"\ntransport = "tls"\n{extra}\n')
    return path


def test_tls_keys_are_read_and_relative_paths_are_taken_from_the_trunks_file(
    tmp_path: Path,
) -> None:
    path = trunks_file(tmp_path, 'tls_ca_file = "pki/ca.pem"\ntls_cert_file = "/etc/w.pem"\n'
                                 'tls_key_file = "w.key"')
    trunk = load_trunks(path).get("t")
    assert trunk.tls_ca_file == str(tmp_path / "pki" / "ca.pem")
    assert trunk.tls_cert_file == "/etc/w.pem"
    assert trunk.tls_key_file == str(tmp_path / "w.key")
    plain = load_trunks(trunks_file(tmp_path, "")).get("t")
    assert (plain.tls_ca_file, plain.tls_cert_file, plain.tls_key_file) == (None, None, None)


def test_reading_the_file_does_not_open_the_tls_files(tmp_path: Path) -> None:
    """Schedulers read the trunks file too, without the workers' keys."""
    path = trunks_file(tmp_path, 'tls_cert_file = "absent.pem"\ntls_key_file = "absent.key"')
    assert load_trunks(path).get("t").tls_cert_file == str(tmp_path / "absent.pem")


def test_a_key_without_a_certificate_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = trunks_file(tmp_path, 'tls_key_file = "w.key"')
    with pytest.raises(ConfigError, match=r"trunks\.t\.tls_key_file: given without tls_cert_file"):
        load_trunks(path)


def test_good_files_pass_and_become_the_worker_transport_config(
    tmp_path: Path, pki: TestPki
) -> None:
    path = trunks_file(tmp_path, f'tls_ca_file = "{pki.ca_file}"\n'
                                 f'tls_cert_file = "{pki.cert_file}"\n'
                                 f'tls_key_file = "{pki.key_file}"')
    trunk = worker_tls(load_trunks(path).get("t"), Settings(), trunks_path=str(path))
    config = trunk.transport_config("127.0.0.1", 0)
    assert config.tls_ca_file == str(pki.ca_file)
    assert config.tls_server_cert_file == str(pki.cert_file)
    assert config.tls_server_key_file == str(pki.key_file)
    assert (config.bind_host, config.udp_port) == ("127.0.0.1", 0)
    assert load_trunks(trunks_file(tmp_path, "")).get("t").transport_config(
        "h", 5060).tls_server_cert_file is None  # no certificate: no TLS listener


def test_the_environment_overrides_the_trunks_listener_certificate(
    tmp_path: Path, pki: TestPki, other_pki: TestPki
) -> None:
    path = trunks_file(tmp_path, f'tls_cert_file = "{pki.cert_file}"\n'
                                 f'tls_key_file = "{pki.key_file}"')
    settings = Settings.from_env({"OUTBOUND_TLS_CERT_FILE": str(other_pki.cert_file),
                                  "OUTBOUND_TLS_KEY_FILE": str(other_pki.key_file)})
    trunk = worker_tls(load_trunks(path).get("t"), settings, trunks_path=str(path))
    assert (trunk.tls_cert_file, trunk.tls_key_file) == (
        str(other_pki.cert_file), str(other_pki.key_file))


def test_a_certificate_file_holding_its_key_needs_no_key_file(
    tmp_path: Path, pki: TestPki
) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.cert_file.read_bytes() + pki.key_file.read_bytes())
    settings = Settings(tls_cert_file=str(combined))
    trunk = worker_tls(load_trunks(trunks_file(tmp_path, "")).get("t"), settings,
                       trunks_path="trunks.toml")
    assert (trunk.tls_cert_file, trunk.tls_key_file) == (str(combined), None)


def encrypted_key(pki: TestPki, directory: Path) -> Path:
    key = serialization.load_pem_private_key(pki.key_file.read_bytes(), password=None)
    path = directory / "encrypted.key"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ))
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("missing ca", r"trunks\.t\.tls_ca_file: .*absent\.pem: cannot read \(No such file"),
    ("ca not pem", r"trunks\.t\.tls_ca_file: .*garbage\.pem: no PEM CA certificate in it"),
    ("missing cert", r"trunks\.t\.tls_cert_file: .*absent\.pem: cannot read"),
    ("cert not pem", r"trunks\.t\.tls_cert_file: .*garbage\.pem: no PEM certificate in it"),
    ("key not pem", r"trunks\.t\.tls_key_file: .*garbage\.pem: no PEM private key in it"),
    ("key of another cert", r"trunks\.t\.tls_key_file: .*server\.key: this key does not belong"),
    ("encrypted key", r"trunks\.t\.tls_key_file: .*encrypted\.key: the private key is encrypted"),
])
def test_bad_trunk_files_are_refused_naming_the_file_the_key_and_the_path(
    tmp_path: Path, pki: TestPki, other_pki: TestPki, case: str, message: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    ca, cert, key = str(pki.ca_file), str(pki.cert_file), str(pki.key_file)
    if case == "missing ca":
        ca = str(tmp_path / "absent.pem")
    elif case == "ca not pem":
        ca = str(garbage)
    elif case == "missing cert":
        cert = str(tmp_path / "absent.pem")
    elif case == "cert not pem":
        cert = str(garbage)
    elif case == "key not pem":
        key = str(garbage)
    elif case == "key of another cert":
        key = str(other_pki.key_file)
    elif case == "encrypted key":
        key = str(encrypted_key(pki, tmp_path))
    path = trunks_file(tmp_path, f'tls_ca_file = "{ca}"\ntls_cert_file = "{cert}"\n'
                                 f'tls_key_file = "{key}"')
    with pytest.raises(ConfigError, match=message) as caught:
        worker_tls(load_trunks(path).get("t"), Settings(), trunks_path=str(path))
    assert str(caught.value).startswith(f"{path}: trunks.t.tls_")


def test_bad_environment_files_are_refused_naming_the_variable_or_flag(
    tmp_path: Path, pki: TestPki, other_pki: TestPki
) -> None:
    trunk = load_trunks(trunks_file(tmp_path, "")).get("t")
    with pytest.raises(ConfigError, match=r"^OUTBOUND_TLS_CERT_FILE: /nonexistent\.pem: cannot"):
        worker_tls(trunk, Settings.from_env({"OUTBOUND_TLS_CERT_FILE": "/nonexistent.pem"}),
                   trunks_path="x")
    with pytest.raises(ConfigError,
                       match=r"^OUTBOUND_TLS_KEY_FILE: given without OUTBOUND_TLS_CERT_FILE"):
        worker_tls(trunk, Settings.from_env({"OUTBOUND_TLS_KEY_FILE": str(pki.key_file)}),
                   trunks_path="x")
    mismatched = Settings(tls_cert_file=str(pki.cert_file), tls_key_file=str(other_pki.key_file))
    with pytest.raises(ConfigError, match=r"^--tls-key-file: .*does not belong"):
        worker_tls(trunk, mismatched, trunks_path="x", cert_setting="--tls-cert-file",
                   key_setting="--tls-key-file")
    # the trunk's own key is never paired with a certificate from the environment
    with_key = trunk.model_copy(update={"tls_cert_file": str(other_pki.cert_file),
                                        "tls_key_file": str(other_pki.key_file)})
    only_cert = Settings(tls_cert_file=str(pki.cert_file))
    with pytest.raises(ConfigError, match=r"^OUTBOUND_TLS_CERT_FILE: .*not a PEM certificate "
                                          r"followed by its private key"):
        worker_tls(with_key, only_cert, trunks_path="x")
