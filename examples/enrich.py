"""examples/enrich.yaml: orders fanned out to two enrichments, one of them an async
lookup (an in-memory table behind an awaitable, standing in for a service call), and
fanned in to one sink."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

ORDERS = 20_000
REGIONS = {c: ("eu", "us", "apac")[c % 3] for c in range(100)}
TALLY: Counter[str] = Counter()


def orders() -> Iterator[dict[str, int]]:
    for n in range(ORDERS):
        yield {"order": n, "customer": n % 100, "cents": 100 + n % 997}


def price(order: dict[str, int]) -> dict[str, object]:
    return {"order": order["order"], "euros": order["cents"] / 100}


async def region(order: dict[str, int]) -> dict[str, object]:
    await asyncio.sleep(0)  # the lookup's round trip
    return {"order": order["order"], "region": REGIONS[order["customer"]]}


def tally(record: dict[str, object]) -> None:
    TALLY["region" if "region" in record else "price"] += 1
