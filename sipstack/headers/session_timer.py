"""Session-Expires and Min-SE (RFC 4028 session timers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sipstack.errors import SipParseError
from sipstack.headers._syntax import parse_delta_seconds, parse_params, render_params, shorten
from sipstack.uri import Param

Refresher = Literal["uac", "uas"]


def _split_delta(text: str, header: str) -> tuple[int, tuple[Param, ...]]:
    stripped = text.strip()
    semi = stripped.find(";")
    delta_text = (stripped if semi < 0 else stripped[:semi]).rstrip()
    if not delta_text:
        raise SipParseError(f"{header}: missing delta-seconds")
    delta = parse_delta_seconds(delta_text, header, "interval")
    return delta, () if semi < 0 else parse_params(stripped, semi, header)


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """`Session-Expires: 1800;refresher=uac`; other parameters are kept in params."""

    delta: int
    refresher: Refresher | None = None
    params: tuple[Param, ...] = ()  # extension parameters, refresher excluded

    @classmethod
    def parse(cls, text: str) -> SessionExpires:
        delta, all_params = _split_delta(text, "Session-Expires")
        refresher: Refresher | None = None
        others: list[Param] = []
        for name, value in all_params:
            if name.lower() != "refresher":
                others.append((name, value))
                continue
            lowered = (value or "").lower()
            if lowered == "uac":
                refresher = "uac"
            elif lowered == "uas":
                refresher = "uas"
            else:
                raise SipParseError(
                    f"Session-Expires: refresher {shorten(value or '', 20)} is not uac or uas"
                )
        return cls(delta, refresher, tuple(others))

    def render(self) -> str:
        text = str(self.delta)
        if self.refresher is not None:
            text += f";refresher={self.refresher}"
        return text + render_params(self.params) if self.params else text

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True, slots=True)
class MinSE:
    """`Min-SE: 90`, the smallest interval the sender accepts."""

    delta: int
    params: tuple[Param, ...] = ()

    @classmethod
    def parse(cls, text: str) -> MinSE:
        delta, params = _split_delta(text, "Min-SE")
        return cls(delta, params)

    def render(self) -> str:
        return str(self.delta) + render_params(self.params) if self.params else str(self.delta)

    def __str__(self) -> str:
        return self.render()
