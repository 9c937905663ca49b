"""The TLS files a worker uses, opened and checked at its start: the CA bundle, and the
listener's certificate and key (from the settings when set there, else from the trunk)."""

from __future__ import annotations

import ssl
from typing import Protocol

from workers.config.errors import ConfigError
from workers.config.trunks import TrunkConfig


class ListenerFiles(Protocol):
    """The settings that override a trunk's listener files (workers.config.settings.Settings)."""

    @property
    def tls_cert_file(self) -> str | None: ...

    @property
    def tls_key_file(self) -> str | None: ...


def worker_tls(
    trunk: TrunkConfig,
    settings: ListenerFiles,
    *,
    trunks_path: str,
    cert_setting: str = "OUTBOUND_TLS_CERT_FILE",
    key_setting: str = "OUTBOUND_TLS_KEY_FILE",
) -> TrunkConfig:
    """The trunk with the TLS files a worker uses, each one opened and checked.

    The listener's certificate and key come from `settings` (named `cert_setting` and
    `key_setting` in errors: a flag or a variable) when set there, else from the trunk's table.
    ConfigError names the setting or the file and key, the path and what is wrong with it.
    """
    where = f"{trunks_path}: trunks.{trunk.name}"
    cert, key = trunk.tls_cert_file, trunk.tls_key_file
    cert_name, key_name = f"{where}.tls_cert_file", f"{where}.tls_key_file"
    if settings.tls_cert_file:
        cert, cert_name = settings.tls_cert_file, cert_setting
        key, key_name = None, key_setting  # the trunk's key belongs to the trunk's certificate
    if settings.tls_key_file:
        if not settings.tls_cert_file:
            raise ConfigError(f"{key_setting}: given without {cert_setting}")
        key = settings.tls_key_file
    if trunk.tls_ca_file:
        check_ca_file(trunk.tls_ca_file, f"{where}.tls_ca_file")
    if cert:
        check_certificate(cert, key, cert_setting=cert_name, key_setting=key_name)
    return trunk.model_copy(update={"tls_cert_file": cert, "tls_key_file": key})


def _unreadable(path: str, setting: str) -> ConfigError | None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        return ConfigError(f"{setting}: {path}: cannot read ({error.strerror or error})")
    return None


def check_ca_file(path: str, setting: str) -> None:
    """`path` holds PEM CA certificates; ConfigError naming `setting` and the path if not."""
    problem = _unreadable(path, setting)
    if problem is not None:
        raise problem
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as error:
        raise ConfigError(
            f"{setting}: {path}: no PEM CA certificate in it ({error.reason or error})"
        ) from None


def check_certificate(
    cert: str, key: str | None, *, cert_setting: str, key_setting: str
) -> None:
    """`cert` (and `key`, else the key inside `cert`) load as a TLS server identity."""
    for path, setting in ((cert, cert_setting), (key, key_setting)):
        if path is not None:
            problem = _unreadable(path, setting)
            if problem is not None:
                raise problem
    encrypted = False

    def password() -> bytes:  # called only for an encrypted key; never prompt on a terminal
        nonlocal encrypted
        encrypted = True
        return b""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=password)
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        if encrypted:
            raise ConfigError(
                f"{key_setting if key else cert_setting}: {key or cert}: the private key is "
                "encrypted (a worker starts unattended: give it an unencrypted key file)"
            ) from None
        if reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{key_setting}: {key}: this key does not belong to the certificate in {cert}"
            ) from None
        if key is None:
            raise ConfigError(
                f"{cert_setting}: {cert}: not a PEM certificate followed by its private key "
                f"(or set the key file) ({reason})"
            ) from None
        if _holds_certificate(cert):
            raise ConfigError(
                f"{key_setting}: {key}: no PEM private key in it ({reason})"
            ) from None
        raise ConfigError(f"{cert_setting}: {cert}: no PEM certificate in it ({reason})") from None


def _holds_certificate(path: str) -> bool:
    with open(path, "rb") as file:
        return b"-----BEGIN CERTIFICATE-----" in file.read()
