"""workers.routing.groups: which trunk a dial tries next, and the [groups.NAME] parser."""

from __future__ import annotations

import random
import tomllib
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipstack.outcome import LocalCause, OutcomeRules
from sipstack.reason import Q850, ReasonValue
from workers.config.settings import ConfigError
from workers.routing.groups import Attempt, TrunkGroup, may_fail_over, next_trunk, parse_groups

ABC = TrunkGroup("route", (("a", 1), ("b", 1), ("c", 1)))


def all_up(trunk: str) -> bool:
    return True


# (name, last attempt on "a", expected next trunk)
FAILOVER_TABLE: list[tuple[str, Attempt | None, str | None]] = [
    ("first attempt", None, "a"),
    ("a 486 on the first trunk is not retried on the second", Attempt("a", 486), None),
    ("603 declined: not retried", Attempt("a", 603), None),
    ("a 487 we caused: not retried", Attempt("a", 487, rang=True), None),
    ("480 after ringing: the callee was reached", Attempt("a", 480, rang=True), None),
    ("480 before ringing: capacity, fails over", Attempt("a", 480), "b"),
    ("503 without Retry-After fails over", Attempt("a", 503), "b"),
    ("503 with Q.850 17 (user busy) is the callee: stop",
     Attempt("a", 503, reason=ReasonValue(Q850, 17)), None),
    ("429 fails over", Attempt("a", 429), "b"),
    ("500 (network) fails over", Attempt("a", 500), "b"),
    ("timer B: no answer at all fails over",
     Attempt("a", None, cause=LocalCause.TRANSACTION_TIMEOUT), "b"),
    ("transport error fails over", Attempt("a", None, cause=LocalCause.TRANSPORT_ERROR), "b"),
    ("our own CPS limit fails over", Attempt("a", None, cause=LocalCause.CPS_LIMIT), "b"),
    ("ring timeout: the callee did not pick up, stop",
     Attempt("a", 487, rang=True, cause=LocalCause.RING_TIMEOUT), None),
    ("an answered call is never retried", Attempt("a", 200), None),
    ("404 (config) stops", Attempt("a", 404), None),
    ("403 (config) stops", Attempt("a", 403), None),
    ("607 (policy) stops", Attempt("a", 607), None),
    ("a bad target stops", Attempt("a", None, cause=LocalCause.BAD_TARGET), None),
    ("a 3xx is not failed over", Attempt("a", 302), None),
]


@pytest.mark.parametrize(
    ("attempt", "expected"), [row[1:] for row in FAILOVER_TABLE],
    ids=[row[0] for row in FAILOVER_TABLE],
)
def test_failover_follows_the_outcome(attempt: Attempt | None, expected: str | None) -> None:
    tried = [] if attempt is None else ["a"]
    assert next_trunk(ABC, tried, attempt, all_up, random.Random(1)) == expected


def test_busy_from_proxy_lets_a_486_before_ringing_fail_over() -> None:
    rules = {"a": OutcomeRules(busy_from_proxy=True)}
    assert next_trunk(ABC, ["a"], Attempt("a", 486), all_up, random.Random(1), rules) == "b"
    # after ringing it is the callee's busy, even on such a trunk
    assert next_trunk(ABC, ["a"], Attempt("a", 486, rang=True), all_up, random.Random(1),
                      rules) is None
    # the rules are the failed trunk's: b's say nothing about a's 486
    assert next_trunk(ABC, ["a"], Attempt("a", 486), all_up, random.Random(1),
                      {"b": OutcomeRules(busy_from_proxy=True)}) is None


def test_a_code_in_the_trunks_final_codes_stops() -> None:
    rules = {"a": OutcomeRules(final_codes=frozenset({486, 503}))}
    assert next_trunk(ABC, ["a"], Attempt("a", 503), all_up, random.Random(1), rules) is None


# (name, down trunks, tried, expected)
HEALTH_TABLE: list[tuple[str, set[str], list[str], str | None]] = [
    ("a down trunk is skipped", {"a"}, [], "b"),
    ("two down trunks are skipped", {"a", "b"}, [], "c"),
    ("all down: nothing to try", {"a", "b", "c"}, [], None),
    ("down and tried together", {"b"}, ["a"], "c"),
    ("everything tried", set(), ["a", "b", "c"], None),
]


@pytest.mark.parametrize(("down", "tried", "expected"),
                         [row[1:] for row in HEALTH_TABLE], ids=[row[0] for row in HEALTH_TABLE])
def test_down_and_tried_trunks_are_skipped(
    down: set[str], tried: list[str], expected: str | None
) -> None:
    last = Attempt(tried[-1], 503) if tried else None
    assert next_trunk(ABC, tried, last, lambda t: t not in down, random.Random(1)) == expected


def test_the_failed_trunk_counts_as_tried_even_when_left_out() -> None:
    assert next_trunk(ABC, [], Attempt("a", 503), all_up, random.Random(1)) == "b"


def walk(group: TrunkGroup, rng: random.Random, down: frozenset[str] = frozenset()) -> list[str]:
    """Dial until the group says stop, every attempt failing with a transaction timeout."""
    tried: list[str] = []
    last: Attempt | None = None
    while (trunk := next_trunk(group, tried, last, lambda t: t not in down, rng)) is not None:
        tried.append(trunk)
        last = Attempt(trunk, None, cause=LocalCause.TRANSACTION_TIMEOUT)
    return tried


@given(
    weights=st.lists(st.integers(1, 10), min_size=1, max_size=6),
    strategy=st.sampled_from(["ordered", "weighted"]),
    seed=st.integers(0, 2**32 - 1),
    down=st.sets(st.integers(0, 5)),
)
def test_every_member_is_tried_once_at_most(
    weights: list[int], strategy: str, seed: int, down: set[int]
) -> None:
    group = TrunkGroup("g", tuple((f"t{i}", w) for i, w in enumerate(weights)), strategy)
    down_names = frozenset(f"t{i}" for i in down)
    tried = walk(group, random.Random(seed), down_names)
    assert len(tried) == len(set(tried))
    assert set(tried) == set(group.trunks) - down_names  # and every live member once
    if strategy == "ordered":
        assert tried == [t for t in group.trunks if t not in down_names]


def test_weighted_choice_follows_the_weights_with_the_injected_rng() -> None:
    group = TrunkGroup("w", (("a", 3), ("b", 1)), "weighted")
    firsts = Counter(next_trunk(group, [], None, all_up, random.Random(seed))
                     for seed in range(4000))
    assert set(firsts) == {"a", "b"}
    assert 0.70 < firsts["a"] / 4000 < 0.80
    # the same seed gives the same walk
    assert walk(group, random.Random(7)) == walk(group, random.Random(7))
    # after a failure the remaining member is the only choice
    assert next_trunk(group, ["a"], Attempt("a", 503), all_up, random.Random(0)) == "b"


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(("value", "expected"), [
    (0.0, "a"), (0.5999, "a"), (0.6, "b"), (0.8999, "b"), (0.9, "c"), (0.999999, "c"),
])
def test_weighted_choice_splits_the_unit_interval(value: float, expected: str) -> None:
    group = TrunkGroup("w", (("a", 6), ("b", 3), ("c", 1)), "weighted")
    assert next_trunk(group, [], None, all_up, FixedRandom(value)) == expected


def test_may_fail_over_is_the_same_decision() -> None:
    assert may_fail_over(Attempt("a", 503)) and not may_fail_over(Attempt("a", 486))


@pytest.mark.parametrize(("members", "strategy", "match"), [
    ((), "ordered", "no members"),
    ((("a", 1), ("a", 1)), "ordered", "listed twice"),
    ((("a", 0),), "weighted", "weight of 'a'"),
    ((("a", 1),), "random", "strategy 'random'"),
])
def test_the_dataclass_refuses_bad_groups(
    members: tuple[tuple[str, int], ...], strategy: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        TrunkGroup("g", members, strategy)


# -- parse_groups ----------------------------------------------------------------------------

KNOWN = ("carrier-a", "carrier-b", "carrier-c")


def parse(text: str) -> dict[str, TrunkGroup]:
    return parse_groups(tomllib.loads(text).get("groups", {}), KNOWN, "trunks.toml: groups")


def test_parse_ordered_and_weighted_groups() -> None:
    groups = parse("""
        [groups.national]
        strategy = "weighted"
        members = [{ trunk = "carrier-a", weight = 3 }, { trunk = "carrier-b" }]

        [groups.fallback]
        members = ["carrier-c", "carrier-a"]
    """)
    assert groups == {
        "national": TrunkGroup("national", (("carrier-a", 3), ("carrier-b", 1)), "weighted"),
        "fallback": TrunkGroup("fallback", (("carrier-c", 1), ("carrier-a", 1)), "ordered"),
    }


BAD_GROUPS: list[tuple[str, str]] = [
    ('[groups.g]\nmembers = []\n', "trunks.toml: groups.g.members: must be a non-empty list"),
    ('[groups.g]\nstrategy = "ordered"\n', "trunks.toml: groups.g.members: must be a non-empty"),
    ('[groups.g]\nmembers = "carrier-a"\n', "groups.g.members: must be a non-empty list"),
    ('[groups.g]\nmembers = ["carrier-a", "nope"]\n',
     "groups.g.members[1]: no trunk 'nope' (trunks defined: carrier-a, carrier-b, carrier-c)"),
    ('[groups.g]\nmembers = ["carrier-a", "carrier-a"]\n',
     "groups.g.members[1]: trunk 'carrier-a' is listed twice"),
    ('[groups.g]\nmembers = [{ trunk = "nope" }]\n', "groups.g.members[0].trunk: no trunk"),
    ('[groups.g]\nmembers = [{ weight = 2 }]\nstrategy = "weighted"\n',
     "groups.g.members[0].trunk: missing"),
    ('[groups.g]\nmembers = [{ trunk = "carrier-a", colour = 1 }]\n',
     "groups.g.members[0].colour: unknown key"),
    ('[groups.g]\nstrategy = "weighted"\nmembers = [{ trunk = "carrier-a", weight = 0 }]\n',
     "groups.g.members[0].weight: must be an integer of at least 1, got 0"),
    ('[groups.g]\nstrategy = "weighted"\nmembers = [{ trunk = "carrier-a", weight = 1.5 }]\n',
     "groups.g.members[0].weight: must be an integer"),
    ('[groups.g]\nmembers = [{ trunk = "carrier-a", weight = 2 }]\n',
     'groups.g.members[0].weight: weights apply only to strategy = "weighted"'),
    ('[groups.g]\nmembers = [3]\n', "groups.g.members[0]: must be a trunk name (text), got 3"),
    ('[groups.g]\nstrategy = "random"\nmembers = ["carrier-a"]\n',
     "groups.g.strategy: 'random' is not one of 'ordered', 'weighted'"),
    ('[groups.g]\nmembers = ["carrier-a"]\nfailover = true\n', "groups.g.failover: unknown key"),
    ('[groups.carrier-a]\nmembers = ["carrier-b"]\n',
     "groups.carrier-a: a trunk has this name too"),
    ('[groups."bad name"]\nmembers = ["carrier-a"]\n', 'groups.bad name: group names use'),
    ('groups = 3\n', "trunks.toml: groups: must be a table"),
    ('[groups]\ng = 3\n', "trunks.toml: groups.g: must be a table"),
]


@pytest.mark.parametrize(("text", "message"), BAD_GROUPS)
def test_parse_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(text)
    assert message in str(error.value)


def test_parse_groups_takes_any_mapping() -> None:
    table: dict[str, Any] = {"g": {"members": ["carrier-b"]}}
    assert parse_groups(table, KNOWN).keys() == {"g"}
    with pytest.raises(ConfigError, match=r"^groups\.g\.members\[0\]: no trunk"):
        parse_groups(table, ["carrier-a"])
