"""Trunk groups: a route is an ordered or weighted list of trunks, and `next_trunk` says
which one a dial tries next, or that it must stop.

- A trunk the health board marks down is skipped; a trunk already tried is never tried again
  for the same dial.
- After a failed attempt the next trunk is tried only when the outcome is `network` or
  `capacity` *and* `OutcomeRules.retry_on_next_trunk` agrees (the failed trunk's rules). Never
  after a user or policy outcome (`is_final_for_callee`): a callee who answered 486/603 is not
  dialled again through another carrier (jambonz sbc-outbound#198). A `config` outcome (401,
  403, 404, 484...) stops too: the number or our request is wrong, and the issue asks for
  failover on network/capacity only.
- `weighted` picks among the remaining live members in proportion to their weights with the
  caller's RNG; `ordered` takes the first remaining live member.

`TrunkGroup` is a plain frozen dataclass; `parse_groups` reads `[groups.<name>]` tables of a
trunks TOML document (workers.config.trunks.parse_trunks reads them into `TrunksFile.groups`):

    [groups.national]
    strategy = "weighted"        # or "ordered" (the default)
    members = [{ trunk = "carrier-a", weight = 3 }, { trunk = "carrier-b", weight = 1 }]

    [groups.fallback]
    members = ["carrier-a", "carrier-b"]   # ordered; a bare name has weight 1
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sipstack.outcome import (
    LocalCause,
    Outcome,
    OutcomeRules,
    classify_outcome,
    is_final_for_callee,
)
from sipstack.reason import ReasonValue
from workers.config.errors import ConfigError

STRATEGIES = ("ordered", "weighted")
_FAIL_OVER_OUTCOMES = frozenset({Outcome.NETWORK, Outcome.CAPACITY})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DEFAULT_RULES = OutcomeRules()


@dataclass(frozen=True, slots=True)
class TrunkGroup:
    """`members`: (trunk, weight) in order; weights matter only for `strategy='weighted'`."""

    name: str
    members: tuple[tuple[str, int], ...]
    strategy: str = "ordered"

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple((t, w) for t, w in self.members))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"group {self.name}: strategy {self.strategy!r} is not one of "
                             f"{', '.join(STRATEGIES)}")
        if not self.members:
            raise ValueError(f"group {self.name}: no members")
        seen: set[str] = set()
        for trunk, weight in self.members:
            if trunk in seen:
                raise ValueError(f"group {self.name}: trunk {trunk!r} is listed twice")
            seen.add(trunk)
            if type(weight) is not int or weight < 1:
                raise ValueError(f"group {self.name}: weight of {trunk!r} must be an integer "
                                 f"of at least 1, got {weight!r}")

    @property
    def trunks(self) -> tuple[str, ...]:
        return tuple(trunk for trunk, _ in self.members)


@dataclass(frozen=True, slots=True)
class Attempt:
    """How a dial's attempt on `trunk` ended: the INVITE's final status (None: none came),
    whether it rang, the local cause and the primary Reason, as for `classify_outcome`."""

    trunk: str
    status: int | None = None
    rang: bool = False
    cause: LocalCause | None = None
    reason: ReasonValue | None = None


def may_fail_over(attempt: Attempt, rules: OutcomeRules = _DEFAULT_RULES) -> bool:
    """May another trunk dial the same callee after this attempt?"""
    outcome = classify_outcome(
        attempt.status, rang=attempt.rang, cause=attempt.cause, reason=attempt.reason,
        rules=rules,
    )
    if is_final_for_callee(outcome) or outcome not in _FAIL_OVER_OUTCOMES:
        return False
    return rules.retry_on_next_trunk(attempt.status, attempt.rang)


def next_trunk(
    group: TrunkGroup,
    tried: Collection[str],
    outcome_so_far: Attempt | None,
    health: Callable[[str], bool],
    rng: random.Random,
    rules: Mapping[str, OutcomeRules] | None = None,
) -> str | None:
    """The trunk to try next, or None: stop (the last outcome forbids another trunk, or
    every member was tried or is down).

    `tried`: trunks this dial already used (the failed attempt's trunk counts as tried even
    if left out); `outcome_so_far`: how the last attempt ended (None before the first);
    `health(trunk)`: False when the trunk is down (`TrunkHealthBoard.is_up`); `rules`: each
    trunk's `OutcomeRules` (default: `OutcomeRules()`).
    """
    used = set(tried)
    if outcome_so_far is not None:
        used.add(outcome_so_far.trunk)
        trunk_rules = (rules or {}).get(outcome_so_far.trunk, _DEFAULT_RULES)
        if not may_fail_over(outcome_so_far, trunk_rules):
            return None
    candidates = [(t, w) for t, w in group.members if t not in used and health(t)]
    if not candidates:
        return None
    if group.strategy == "ordered":
        return candidates[0][0]
    point = rng.random() * sum(weight for _, weight in candidates)
    for trunk, weight in candidates:
        point -= weight
        if point < 0:
            return trunk
    return candidates[-1][0]  # rounding at the top end


# -- the TOML table -------------------------------------------------------------------------

_GROUP_KEYS = frozenset({"members", "strategy"})
_MEMBER_KEYS = frozenset({"trunk", "weight"})


def parse_groups(
    table: Mapping[str, Any], known_trunks: Collection[str], where: str = "groups"
) -> dict[str, TrunkGroup]:
    """Check the `[groups]` table of a trunks document (`document.get("groups", {})`);
    ConfigError names the key: `where` is the prefix, e.g. "trunks.toml: groups"."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table of [groups.NAME] tables")
    known = set(known_trunks)
    groups: dict[str, TrunkGroup] = {}
    for name, group_table in table.items():
        at = f"{where}.{name}"
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{at}: group names use letters, digits, '-', '_' and '.'")
        if name in known:
            raise ConfigError(f"{at}: a trunk has this name too: a route would be ambiguous")
        if not isinstance(group_table, Mapping):
            raise ConfigError(f"{at}: must be a table")
        unknown = sorted(set(group_table) - _GROUP_KEYS)
        if unknown:
            raise ConfigError(f"{at}.{unknown[0]}: unknown key (known: members, strategy)")
        strategy = group_table.get("strategy", "ordered")
        if strategy not in STRATEGIES:
            raise ConfigError(f"{at}.strategy: {strategy!r} is not one of "
                              f"{', '.join(map(repr, STRATEGIES))}")
        members = _parse_members(group_table.get("members"), known, f"{at}.members")
        if strategy == "ordered":
            weighted = next((i for i, (_, w) in enumerate(members) if w != 1), None)
            if weighted is not None:
                raise ConfigError(f"{at}.members[{weighted}].weight: weights apply only to "
                                  "strategy = \"weighted\"")
        groups[name] = TrunkGroup(name, tuple(members), strategy)
    return groups


def _parse_members(raw: object, known: set[str], at: str) -> list[tuple[str, int]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{at}: must be a non-empty list of trunk names or "
                          "{ trunk = NAME, weight = N } tables")
    members: list[tuple[str, int]] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        item = f"{at}[{index}]"
        weight: object = 1
        if isinstance(entry, Mapping):
            unknown = sorted(set(entry) - _MEMBER_KEYS)
            if unknown:
                raise ConfigError(f"{item}.{unknown[0]}: unknown key (known: trunk, weight)")
            if "trunk" not in entry:
                raise ConfigError(f"{item}.trunk: missing")
            trunk, weight = entry["trunk"], entry.get("weight", 1)
            trunk_at = f"{item}.trunk"
        else:
            trunk, trunk_at = entry, item
        if not isinstance(trunk, str):
            raise ConfigError(f"{trunk_at}: must be a trunk name (text), got {trunk!r}")
        if trunk not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{trunk_at}: no trunk {trunk!r} (trunks defined: {names})")
        if trunk in seen:
            raise ConfigError(f"{trunk_at}: trunk {trunk!r} is listed twice")
        if type(weight) is not int or weight < 1:
            raise ConfigError(f"{item}.weight: must be an integer of at least 1, got {weight!r}")
        seen.add(trunk)
        members.append((trunk, weight))
    return members
