"""Configuration errors, and URLs fit to print in them."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A setting or the trunks file is wrong; the message names the key and the reason."""


_URL_PASSWORD = re.compile(r"(://[^/?#@:]*):[^/?#@]*@")


def hide_password(url: object) -> str:
    """A URL fit to print: the password of `scheme://user:password@host` becomes `***`."""
    return _URL_PASSWORD.sub(r"\1:***@", str(url))
