"""Print the dial message's JSON Schema: `python -m workers.contract.schema > docs/…json`."""

from __future__ import annotations

import json

from workers.contract.dial_message import message_schema


def render() -> str:
    return json.dumps(message_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
