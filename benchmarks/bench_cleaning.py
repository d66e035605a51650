"""The cleaning boundary costs linear time: at most 3 x a plain ``json.loads`` of the same body.

Three answers of about ``MAX_RESPONSE_BYTES`` (1 MB), the shapes a hostile gateway sent:

- wide: a 480 KB key and a list of about 255,000 items (numbers and short strings);
- deep: thousands of objects nested up to the cleaning's depth cap, and one chain past it;
- escaped: the wide answer with a ``\\u0000`` in every string, so every string is cleaned
  (shown, not a goal: each string then needs its own search).

The baseline is ``json.loads`` of the same bytes, timed in the same run; each figure is the
best of several repetitions, which is what the code costs without the machine's noise.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import goal, parse_args, print_table

CAP = 1_000_000
GOAL_RATIO = 3.0


def wide_answer(size: int) -> bytes:
    items: list[Any] = []
    body = {"code": "success", "data": {"task_id": "t-1", "k" * (size * 48 // 100): 1, "x": items}}
    while len(json.dumps(body)) < size:
        items.extend([7, "ab"] * 1000)
    return json.dumps(body).encode()


def deep_answer(size: int) -> bytes:
    from django_runway_feed.cleaning import MAX_DEPTH

    def nest(depth: int) -> Any:
        value: Any = {"leaf": [1, 2.5, "s", None]}
        for _ in range(depth):
            value = {"n": [value, 1, "t"]}
        return value

    shallow = json.dumps(nest(MAX_DEPTH // 2 - 2))
    count = max(1, size // len(shallow))
    return json.dumps({"data": [nest(MAX_DEPTH // 2 - 2)] * count + [nest(400)]}).encode()


def escaped_answer(size: int) -> bytes:
    return wide_answer(size).replace(b'"ab"', b'"a\\u0000"')


def best_of(repeat: int, call: Callable[[], object]) -> float:
    # The collector off while timing, for both sides: its passes over the many new objects
    # land on whichever call happens to trigger them, and say nothing about either.
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - started)
        finally:
            gc.enable()
    return best


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    from django_runway_feed import cleaning

    size = CAP // 10 if args.quick else CAP
    repeat = 3 if args.quick else 15
    rows = []
    ratios = {}
    for name, body in (
        ("wide", wide_answer(size)),
        ("deep", deep_answer(size)),
        ("escaped", escaped_answer(size)),
    ):
        plain = best_of(repeat, lambda body=body: json.loads(body))
        cleaned = best_of(repeat, lambda body=body: cleaning.loads(body))
        ratios[name] = cleaned / plain
        rows.append((name, len(body), plain * 1000, cleaned * 1000, ratios[name]))
    print_table(
        "Cleaning vs json.loads (best of the repetitions)",
        ["answer", "bytes", "json.loads ms", "cleaning.loads ms", "ratio"],
        rows,
    )
    goal("cleaning_wide_vs_json_loads", ratios["wide"], GOAL_RATIO, at_most=True, unit="x")
    goal("cleaning_deep_vs_json_loads", ratios["deep"], GOAL_RATIO, at_most=True, unit="x")


if __name__ == "__main__":
    main()
