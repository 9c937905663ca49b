"""HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760): challenges and answers.

Over 500 lines on purpose: parsing a challenge, computing and verifying a response and the
per-leg DigestSession (nc counting) share one parameter grammar and one set of algorithm
rules; split, each part would import the others' private helpers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote_to_bytes

from sipstack.errors import LocalProtocolError, SipParseError
from sipstack.headers._syntax import TOKEN_RE, quote, read_quoted, shorten, skip_whitespace

RandomBytes = Callable[[int], bytes]

QOP_AUTH = "auth"
QOP_AUTH_INT = "auth-int"
_MAX_NC = 0xFFFFFFFF
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_BARE_VALUE_RE = re.compile(r'[^\s,"]+')  # tolerant of unquoted nonces with '/', '+', '='
_LINE_BREAK_RE = re.compile(r"[\r\n\x00]")
_HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


class DigestAlgorithm(StrEnum):
    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA_256 = "SHA-256"
    SHA_256_SESS = "SHA-256-sess"
    SHA_512_256 = "SHA-512-256"
    SHA_512_256_SESS = "SHA-512-256-sess"

    @property
    def is_session(self) -> bool:
        """The -sess variants fold the nonce and cnonce into A1 (RFC 7616 §3.4.2)."""
        return self.value.endswith("-sess")

    def hexdigest(self, data: str) -> str:
        """H(data) of RFC 7616 §3.4.1, over the UTF-8 bytes of data."""
        # SHA-512/256 has no hashlib constructor of its own; OpenSSL provides it through
        # hashlib.new (checked in tests), and it is not SHA-512 cut short: the IVs differ.
        return hashlib.new(_hashlib_name(self), data.encode("utf-8")).hexdigest()

    @classmethod
    def parse(cls, text: str) -> DigestAlgorithm:
        """Case-insensitive; SipParseError names an algorithm we do not support."""
        for algorithm in cls:
            if algorithm.value.lower() == text.lower():
                if _hashlib_name(algorithm) not in hashlib.algorithms_available:
                    raise SipParseError(f"digest: {algorithm} is not available in this OpenSSL")
                return algorithm
        raise SipParseError(f"digest: unsupported algorithm {shorten(text, 40)}")


def _hashlib_name(algorithm: DigestAlgorithm) -> str:
    return _HASHLIB_NAMES[algorithm.value.removesuffix("-sess")]


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestChallenge:
    """One `Digest` challenge of a WWW-Authenticate or Proxy-Authenticate header."""

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: tuple[str, ...] = ()  # lower case, as offered
    stale: bool = False
    userhash: bool = False

    def render(self) -> str:
        parts = [f"realm={quote(self.realm)}", f"nonce={quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm.value}")
        if self.qop:
            parts.append(f"qop={quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)

    @property
    def chosen_qop(self) -> str | None:
        """auth when offered, else auth-int, else None (no qop: RFC 2069 compatibility).

        SipParseError when qop options are offered but none is one we support.
        """
        if not self.qop:
            return None
        for qop in (QOP_AUTH, QOP_AUTH_INT):
            if qop in self.qop:
                return qop
        raise SipParseError(f"digest: no supported qop among {', '.join(self.qop)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestCredentials:
    """The fields of an Authorization or Proxy-Authorization `Digest` header."""

    username: str  # the hash of username:realm when userhash is set
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: int | None = None
    userhash: bool = False

    def render(self) -> str:
        parts = [
            f"username={quote(self.username)}",
            f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce)}",
            f"uri={quote(self.uri)}",
            f"response={quote(self.response)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_challenge(header_value: str) -> DigestChallenge:
    """A WWW-Authenticate / Proxy-Authenticate value; SipParseError names what is wrong."""
    params = _parse_digest_params(header_value, "challenge")
    realm = _required(params, "realm", "challenge")
    nonce = _required(params, "nonce", "challenge")
    qop_options: list[str] = []
    for option in params.get("qop", "").split(","):
        option = option.strip().lower()
        if not option:
            continue
        if TOKEN_RE.fullmatch(option) is None:
            raise SipParseError(f"digest challenge: qop option {shorten(option, 30)} is no token")
        qop_options.append(option)
    algorithm = params.get("algorithm")
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        opaque=params.get("opaque"),
        algorithm=DigestAlgorithm.MD5 if algorithm is None else DigestAlgorithm.parse(algorithm),
        qop=tuple(qop_options),
        stale=params.get("stale", "").lower() == "true",
        userhash=params.get("userhash", "").lower() == "true",
    )


def choose_challenge(header_values: Iterable[str], *, realm: str | None = None) -> DigestChallenge:
    """The first challenge we can answer (servers list them most preferred first, RFC 8760 §2.4).

    Challenges we cannot read, with algorithms or qop we do not support, or (when realm is
    given) for another realm are passed over; SipParseError when none is left.
    """
    problems: list[str] = []
    for value in header_values:
        try:
            challenge = parse_challenge(value)
            challenge.chosen_qop  # noqa: B018 - raises when no offered qop is supported
        except SipParseError as exc:
            problems.append(str(exc))
            continue
        if realm is not None and challenge.realm != realm:
            problems.append(f"digest: realm {shorten(challenge.realm, 40)} is not {realm!r}")
            continue
        return challenge
    raise SipParseError("no usable digest challenge: " + ("; ".join(problems) or "none given"))


def parse_authorization(value: str) -> DigestCredentials:
    """An Authorization / Proxy-Authorization value (the carrier simulator's side)."""
    params = _parse_digest_params(value, "credentials")
    if "username*" in params:
        if "username" in params:
            raise SipParseError("digest credentials: both username and username*")
        params["username"] = _decode_ext_value(params["username*"])
    qop = params.get("qop")
    nc_text = params.get("nc")
    nc: int | None = None
    if qop is not None:
        qop = qop.lower()
        if qop not in (QOP_AUTH, QOP_AUTH_INT):
            raise SipParseError(f"digest credentials: unsupported qop {shorten(qop, 30)}")
        _required(params, "cnonce", "credentials")
        nc_text = _required(params, "nc", "credentials")
    if nc_text is not None:
        if _NC_RE.fullmatch(nc_text) is None:
            raise SipParseError(
                f"digest credentials: nc {shorten(nc_text, 20)} is not 8 hex digits"
            )
        nc = int(nc_text, 16)
    algorithm = params.get("algorithm")
    return DigestCredentials(
        username=_required(params, "username", "credentials"),
        realm=_required(params, "realm", "credentials"),
        nonce=_required(params, "nonce", "credentials"),
        uri=_required(params, "uri", "credentials"),
        response=_required(params, "response", "credentials"),
        algorithm=DigestAlgorithm.MD5 if algorithm is None else DigestAlgorithm.parse(algorithm),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        qop=qop,
        nc=nc,
        userhash=params.get("userhash", "").lower() == "true",
    )


def _parse_digest_params(value: str, what: str) -> dict[str, str]:
    """`Digest name=value, name="quoted"` into {lower-case name: unquoted value}."""
    if _LINE_BREAK_RE.search(value):
        raise SipParseError(f"digest {what}: header value contains a line break or NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SipParseError(f"digest {what}: header value is not valid Unicode") from None
    pos = skip_whitespace(value, 0)
    scheme = TOKEN_RE.match(value, pos)
    if scheme is None or scheme.group().lower() != "digest":
        raise SipParseError(f"digest {what}: expected the Digest scheme, got {shorten(value, 40)}")
    pos = scheme.end()
    if pos < len(value) and value[pos] not in " \t":
        raise SipParseError(f"digest {what}: expected a space after 'Digest'")
    params: dict[str, str] = {}
    end = len(value)
    while True:
        while pos < end and value[pos] in " \t,":  # empty list elements are allowed
            pos += 1
        if pos >= end:
            break
        name_match = TOKEN_RE.match(value, pos)
        if name_match is None:
            raise SipParseError(
                f"digest {what}: expected a parameter at {shorten(value[pos:], 40)}"
            )
        name = name_match.group().lower()
        pos = skip_whitespace(value, name_match.end())
        if pos >= end or value[pos] != "=":
            raise SipParseError(f"digest {what}: parameter {shorten(name, 30)} has no value")
        pos = skip_whitespace(value, pos + 1)
        if pos < end and value[pos] == '"':
            param, pos = read_quoted(value, pos, f"digest {what}")
        else:
            bare = _BARE_VALUE_RE.match(value, pos)
            if bare is None:
                raise SipParseError(f"digest {what}: parameter {shorten(name, 30)} has no value")
            param, pos = bare.group(), bare.end()
        if name in params:
            raise SipParseError(f"digest {what}: parameter {shorten(name, 30)} given twice")
        params[name] = param
        pos = skip_whitespace(value, pos)
        if pos < end and value[pos] != ",":
            raise SipParseError(f"digest {what}: expected ',' at {shorten(value[pos:], 40)}")
    if not params:
        raise SipParseError(f"digest {what}: no parameters")
    return params


def _required(params: dict[str, str], name: str, what: str) -> str:
    if name not in params:
        raise SipParseError(f"digest {what}: missing {name}")
    return params[name]


def _decode_ext_value(text: str) -> str:
    """RFC 8187 `UTF-8''percent-encoded` (RFC 7616 §3.4.4 username*)."""
    charset, sep, rest = text.partition("'")
    _language, sep2, encoded = rest.partition("'")
    if not sep or not sep2 or charset.lower() != "utf-8":
        raise SipParseError(f"digest credentials: username* {shorten(text, 40)} is not UTF-8''…")
    try:
        return unquote_to_bytes(encoded).decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("digest credentials: username* is not UTF-8") from None


# ---------------------------------------------------------------------------------------------
# Answering and checking


def compute_response(
    *,
    algorithm: DigestAlgorithm,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: int | None,
    cnonce: str | None,
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 7616 §3.4.1 (RFC 2069 form when qop is None)."""
    hash_ = algorithm.hexdigest
    ha1 = hash_(f"{username}:{realm}:{password}")
    if algorithm.is_session:
        if cnonce is None:
            raise LocalProtocolError(f"digest: {algorithm} needs a cnonce")
        ha1 = hash_(f"{ha1}:{nonce}:{cnonce}")
    if qop == QOP_AUTH_INT:
        body_hash = hashlib.new(_hashlib_name(algorithm), body).hexdigest()
        ha2 = hash_(f"{method}:{uri}:{body_hash}")
    else:
        ha2 = hash_(f"{method}:{uri}")
    if qop is None:
        return hash_(f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise LocalProtocolError("digest: qop needs nc and cnonce")
    return hash_(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


def hashed_username(algorithm: DigestAlgorithm, username: str, realm: str) -> str:
    """The userhash form of a username (RFC 7616 §3.4.4)."""
    return algorithm.hexdigest(f"{username}:{realm}")


def build_credentials(
    challenge: DigestChallenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    body: bytes = b"",
    nc: int,
    cnonce: str | None = None,
    random_bytes: RandomBytes = os.urandom,
) -> DigestCredentials:
    """Our answer to challenge; LocalProtocolError when an argument cannot go on the wire."""
    if not 1 <= nc <= _MAX_NC:
        raise LocalProtocolError(f"digest: nc {nc} is not in 1..0xFFFFFFFF")
    if TOKEN_RE.fullmatch(method) is None:
        raise LocalProtocolError(f"digest: method {method!r} is not a token")
    for name, field in (("username", username), ("uri", uri), ("cnonce", cnonce or "")):
        if _LINE_BREAK_RE.search(field):
            raise LocalProtocolError(f"digest: {name} contains a line break or NUL")
    qop = challenge.chosen_qop
    if cnonce is None and (qop is not None or challenge.algorithm.is_session):
        cnonce = random_bytes(16).hex()
    response = compute_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc if qop is not None else None,
        cnonce=cnonce,
        body=body,
    )
    return DigestCredentials(
        username=(
            hashed_username(challenge.algorithm, username, challenge.realm)
            if challenge.userhash
            else username
        ),
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        cnonce=cnonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc if qop is not None else None,
        userhash=challenge.userhash,
    )


def build_authorization(
    challenge: DigestChallenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    body: bytes = b"",
    nc: int,
    cnonce: str | None = None,
    random_bytes: RandomBytes = os.urandom,
) -> str:
    """The Authorization / Proxy-Authorization value answering challenge."""
    return build_credentials(
        challenge,
        username=username,
        password=password,
        method=method,
        uri=uri,
        body=body,
        nc=nc,
        cnonce=cnonce,
        random_bytes=random_bytes,
    ).render()


def verify_authorization(
    creds: DigestCredentials,
    *,
    password: str,
    method: str,
    body: bytes = b"",
    username: str | None = None,
) -> bool:
    """Whether creds carry the right response for password (and username, when given).

    Checks the hash only: the caller checks that the nonce is one it issued, and its realm.
    Credentials with userhash need the expected username to be checked at all.
    """
    if creds.userhash:
        if username is None:
            raise LocalProtocolError("digest: userhash credentials need the expected username")
        expected_hash = hashed_username(creds.algorithm, username, creds.realm)
        if not creds.username.isascii():
            return False
        if not hmac.compare_digest(expected_hash, creds.username.lower()):
            return False
    elif username is not None and creds.username != username:
        return False
    real_username = creds.username if username is None else username
    if creds.qop is not None and (creds.nc is None or creds.cnonce is None):
        return False
    if creds.algorithm.is_session and creds.cnonce is None:
        return False
    if not creds.response.isascii():
        return False
    expected = compute_response(
        algorithm=creds.algorithm,
        username=real_username,
        realm=creds.realm,
        password=password,
        nonce=creds.nonce,
        method=method,
        uri=creds.uri,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
        body=body,
    )
    return hmac.compare_digest(expected, creds.response.lower())


class DigestSession:
    """Answers challenges with one username and password, counting nc per nonce (RFC 7616 §3.4).

    Give up on a request that was already sent with credentials and drew a new challenge
    without stale=true (RFC 3261 §22.2): the caller knows that, this class does not.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        realm: str | None = None,
        random_bytes: RandomBytes = os.urandom,
        max_nonces: int = 16,
    ) -> None:
        self.username = username
        self._password = password
        self.realm = realm
        self._random_bytes = random_bytes
        self._max_nonces = max_nonces
        self._nonce_counts: dict[str, int] = {}

    def can_answer(self, challenge: DigestChallenge) -> bool:
        """Our realm (any when none was configured) and a qop we support."""
        if self.realm is not None and challenge.realm != self.realm:
            return False
        try:
            challenge.chosen_qop  # noqa: B018 - raises when no offered qop is supported
        except SipParseError:
            return False
        return True

    def nonce_count(self, nonce: str) -> int:
        """The last nc sent with nonce (0: never used)."""
        return self._nonce_counts.get(nonce, 0)

    def authorize(
        self, challenge: DigestChallenge, *, method: str, uri: str, body: bytes = b""
    ) -> str:
        """The header value for the next request answering challenge; nc goes up by one."""
        nc = self._nonce_counts.pop(challenge.nonce, 0) + 1
        if nc > _MAX_NC:
            raise LocalProtocolError("digest: nonce used 2**32-1 times; a new challenge is needed")
        self._nonce_counts[challenge.nonce] = nc  # re-inserted last: most recently used
        while len(self._nonce_counts) > self._max_nonces:
            del self._nonce_counts[next(iter(self._nonce_counts))]
        return build_authorization(
            challenge,
            username=self.username,
            password=self._password,
            method=method,
            uri=uri,
            body=body,
            nc=nc,
            random_bytes=self._random_bytes,
        )
