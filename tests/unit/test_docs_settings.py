"""The docs cannot go stale: every trunk key the code reads is a row of docs/trunks.md (and
every row is a real key), every `OUTBOUND_*` variable the code reads is in docs/operations.md,
and the README's first two commands stay as they are."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from workers.config.settings import ENV_PREFIX, ConfigError, TrunkConfig, _Environment, load_trunks

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("workers", "models", "cli", "carrier", "migrations", "sipstack")


def trunk_fields() -> set[str]:
    model_fields = getattr(TrunkConfig, "model_fields", None)  # pydantic, if it becomes that
    if model_fields:  # a field read under another TOML key says so in its validation_alias
        names = {f.validation_alias if isinstance(f.validation_alias, str) else name
                 for name, f in model_fields.items()}
    else:
        names = {f.name for f in dataclasses.fields(TrunkConfig)}
    return names - {"name"}  # the table's name, not a key


def documented_keys() -> set[str]:
    text = (ROOT / "docs" / "trunks.md").read_text()
    section = text.split("## Every key", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z][a-z0-9_]*)` \|", section, re.M))


def test_every_trunk_key_is_documented_and_every_documented_key_is_real() -> None:
    assert documented_keys() == trunk_fields()


@pytest.mark.parametrize("key", sorted(trunk_fields()))
def test_every_documented_key_is_accepted_by_the_trunks_file_reader(
    tmp_path: Path, key: str
) -> None:
    # An unknown key is refused by name; a known key with a value of the wrong type is
    # refused for its value: either way the reader knows the documented key.
    path = tmp_path / "trunks.toml"
    value = "[1]" if key == "credentials" else "{ wrong = 1 }"
    proxy = "" if key == "proxy" else 'proxy = "127.0.0.1:5999"\n'
    path.write_text(f"[trunks.t1]\n{proxy}{key} = {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_trunks(path)
    assert f"trunks.t1.{key}" in str(raised.value) and "unknown key" not in str(raised.value)


def variables_in_code() -> set[str]:
    """Every OUTBOUND_* name written out in the code, and every one pydantic-settings reads
    (those are field names under the prefix, never written out whole)."""
    found = {ENV_PREFIX + name for name in _Environment.model_fields}
    for package in SOURCES:
        for source in (ROOT / package).rglob("*.py"):
            found.update(re.findall(r"\bOUTBOUND_[A-Z][A-Z_]*[A-Z]\b", source.read_text()))
    return found


def test_every_outbound_variable_is_documented() -> None:
    variables = variables_in_code()
    assert {"OUTBOUND_VISIBILITY_TIMEOUT", "OUTBOUND_CONTROL_EXPIRES"} <= variables
    operations = (ROOT / "docs" / "operations.md").read_text()
    table = operations.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = sorted(v for v in variables if f"`{v}`" not in table)
    assert missing == [], f"not in docs/operations.md's Configuration table: {missing}"


def test_the_readme_keeps_its_two_commands_and_says_what_production_needs() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(?!#)\S.*$", readme.split("## The two commands", 1)[1]
                          .split("```sh", 1)[1].split("```", 1)[0], re.M)
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[demo]' && .venv/bin/outbound demo",
        "bash scripts/test.sh",
    ]
    production = readme.split("## In production", 1)[1].split("\n## ", 1)[0]
    for variable in ("OUTBOUND_DATABASE_URL", "OUTBOUND_REDIS_URL", "OUTBOUND_BROKER_URL",
                     "OUTBOUND_TRUNKS_FILE"):
        assert f"`{variable}`" in production
    assert "docs/trunks.md" in production and "[trunks." in production
