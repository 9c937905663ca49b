"""Print parse/render cost of the hot-path header models (Via, NameAddr, CSeq, URIs).

Cold: every value distinct (a new branch or tag), so the parse caches miss.
Warm: the same value again, as when a transaction's responses repeat From, To and Via.
Run: .venv/bin/python bench/bench_headers.py
"""

from __future__ import annotations

import functools
import time
import timeit
from collections.abc import Callable

from sipstack.headers import CSeq, NameAddr, Via, split_header_values
from sipstack.uri import parse_uri

Parser = Callable[[str], object]
COUNT = 20000

CASES: list[tuple[str, Parser, str]] = [
    (
        "Via.parse",
        Via.parse,
        "SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK{n};rport=5060;received=1.2.3.4",
    ),
    (
        "Via.parse_first (2 hops)",
        Via.parse_first,
        "SIP/2.0/TCP p1.example.com;branch=z9hG4bK{n}, SIP/2.0/UDP h;branch=b",
    ),
    (
        "NameAddr.parse (From)",
        NameAddr.parse,
        '"Alice Smith" <sip:+15551234567@carrier.example.com>;tag={n}',
    ),
    ("NameAddr.parse (To, no name)", NameAddr.parse, "<sip:+1555{n}@10.0.0.5:5060;user=phone>"),
    ("CSeq.parse", CSeq.parse, "{n} INVITE"),
    ("parse_uri", parse_uri, "sip:+1555{n}@10.0.0.5:5060;user=phone;transport=tcp"),
    (
        "split_header_values (3)",
        split_header_values,
        "<sip:p{n}.example.com;lr>, <sip:p2;lr>, <sip:p3;lr>",
    ),
]


def per_call_us(function: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=3)) / number * 1e6


def cold_us(parse: Parser, template: str) -> float:
    texts = [template.format(n=n) for n in range(COUNT)]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for text in texts:
            parse(text)
        best = min(best, time.perf_counter() - start)
    return best / COUNT * 1e6


def main() -> None:
    print(f"{'case':30} {'cold us':>8} {'warm us':>8} {'render us':>10}")
    for name, parse, template in CASES:
        text = template.format(n=1)
        warm = per_call_us(functools.partial(parse, text), COUNT)
        value = parse(text)
        render = getattr(value, "render", None)
        render_text = "-" if render is None else f"{per_call_us(render, COUNT):.2f}"
        print(f"{name:30} {cold_us(parse, template):8.2f} {warm:8.2f} {render_text:>10}")


if __name__ == "__main__":
    main()
