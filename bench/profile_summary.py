"""Where a worker's CPU goes: summarise a py-spy raw profile by thread and by library.

    py-spy record --pid P --format raw --threads -o profile.txt
    .venv/bin/python -m bench.profile_summary profile.txt

Each sample is charged to its thread's role (dial tasks, recorder, SIP loop, Celery consumer)
and to the library doing the work: walking from the innermost frame outwards, the first frame
that belongs to a known library wins (json called by SQLAlchemy is database time). The
inclusive time of our own functions (workers/, models/) shows which call paths cost most.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

THREAD_ROLES = (
    (re.compile(r"ThreadPoolExecutor"), "dial tasks (Celery pool threads)"),
    (re.compile(r"leg-recorder"), "recorder (PostgreSQL + stream)"),
    (re.compile(r"^sip-"), "SIP loop (asyncio + sipstack)"),
    (re.compile(r"MainThread"), "Celery consumer (main thread)"),
)
# (package prefix of the frame's file, category); first match from the innermost frame wins
LIBRARIES = (
    ("sqlalchemy/", "SQLAlchemy"),
    ("psycopg/", "psycopg"),
    ("psycopg_binary/", "psycopg"),
    ("psycopg_pool/", "psycopg"),
    ("redis/", "redis-py"),
    ("kombu/", "Celery/kombu"),
    ("celery/", "Celery/kombu"),
    ("billiard/", "Celery/kombu"),
    ("vine/", "Celery/kombu"),
    ("sipstack/", "sipstack"),
    ("workers/signaling/", "signaling shell"),
    ("tenacity/", "tenacity"),
    ("asyncio/", "asyncio"),
    ("models/", "models (ours)"),
    ("workers/", "workers (ours)"),
)
OWN_CODE = ("workers/", "models/")
FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


@dataclass
class Summary:
    total: int = 0
    by_role: Counter[str] = field(default_factory=Counter)
    by_library: Counter[str] = field(default_factory=Counter)
    by_role_library: Counter[tuple[str, str]] = field(default_factory=Counter)
    own_inclusive: Counter[tuple[str, str]] = field(default_factory=Counter)


def role_of(thread: str) -> str:
    for pattern, role in THREAD_ROLES:
        if pattern.search(thread):
            return role
    return "other threads"


def library_of(frames: list[tuple[str, str]]) -> str:
    for _function, file in reversed(frames):
        for prefix, library in LIBRARIES:
            if file.startswith(prefix) or f"/{prefix}" in file:
                return library
    return "other (stdlib, interpreter)"


def parse_line(line: str) -> tuple[str, list[tuple[str, str]], int] | None:
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack or not count.isdigit():
        return None
    parts = stack.split(";")
    thread = parts[0].split(": ", 1)[-1] if parts[0].startswith("thread") else "?"
    frames = []
    for part in parts[1:] if parts[0].startswith("thread") else parts:
        match = FRAME.match(part)
        if match:
            frames.append((match["function"], match["file"]))
    return thread, frames, int(count)


def summarise(lines: Iterable[str]) -> Summary:
    summary = Summary()
    for line in lines:
        parsed = parse_line(line)
        if parsed is None:
            continue
        thread, frames, count = parsed
        role = role_of(thread)
        library = library_of(frames)
        summary.total += count
        summary.by_role[role] += count
        summary.by_library[library] += count
        summary.by_role_library[(role, library)] += count
        seen = set()
        for function, file in frames:
            if file.startswith(OWN_CODE) and (function, file) not in seen:
                seen.add((function, file))
                summary.own_inclusive[(role, f"{function} ({file})")] += count
    return summary


def render(summary: Summary, *, cpu_ms_per_call: float | None = None, top: int = 25) -> str:
    if summary.total == 0:
        return "no samples"

    def share(count: int) -> str:
        text = f"{count / summary.total * 100:5.1f}%"
        if cpu_ms_per_call is not None:
            text += f" {count / summary.total * cpu_ms_per_call:5.2f} ms/call"
        return text

    lines = [f"samples {summary.total}", "by thread:"]
    for role, count in summary.by_role.most_common():
        lines.append(f"  {share(count)}  {role}")
        for (owner, library), part in summary.by_role_library.most_common():
            if owner == role and part / summary.total >= 0.01:
                lines.append(f"      {share(part)}  {library}")
    lines.append("by library:")
    for library, count in summary.by_library.most_common():
        lines.append(f"  {share(count)}  {library}")
    lines.append("our functions, inclusive:")
    for (role, function), count in summary.own_inclusive.most_common(top):
        lines.append(f"  {share(count)}  {function}  [{role.split(' (')[0]}]")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--cpu-ms-per-call", type=float, default=None)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with args.profile.open() as lines:
        print(render(summarise(lines), cpu_ms_per_call=args.cpu_ms_per_call, top=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
