"""Benchmark: the local server's one-event ingest vs a bare endpoint on the same HTTP stack.

    python -m bench.http_ceiling [--smoke]

Two processes serve ``POST /v1/usage/track`` with uvicorn, one after the other, on the same
stack (``bench._stack``): the local billing server (SQLite on a temporary file, rate limit
off, no access log), and the ceiling, a bare Starlette route that reads and parses the same
JSON body and answers with the same bytes the server answered (recorded at the start). Both are
driven over loopback by the same client (``--clients`` threads of keep-alive ``httpx.Client``,
request bodies encoded before the clock starts, a distinct idempotency key per event), in
alternating rounds. Each HTTP stack is measured: uvicorn's pure-Python ``h11`` parser on
asyncio, and ``httptools`` on ``uvloop`` (``uvicorn[standard]``; what uvicorn picks when they
are installed).

Figures per stack: events/s for each side and their ratio server/bare (the headline: how close
the server gets to what the HTTP stack allows; goal >= 0.75), and the CPU the serving process
spent per request (read from /proc, so the client's own CPU is not in it) and its ratio
bare/server. Plus what JSON encoding costs in-process: parsing a track body with ``json`` vs
``orjson``, and encoding the answer with pydantic (what the server does) vs ``orjson``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import timeit
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

from bench._harness import cli, result
from bench.server_process import Served, uvicorn_process
from billing_ui.core import _constants as C
from billing_ui.core.models import TrackUsageResult

HEADERS = {"Authorization": f"Bearer {C.LOCAL_SECRET_KEY}", "content-type": "application/json"}
CUSTOMER = "ceiling_bench"
STACKS = {"h11_asyncio": ("h11", "asyncio"), "httptools_uvloop": ("httptools", "uvloop")}
GOAL = 0.75
SYNCHRONOUS = "NORMAL"


def body(n: int, tag: str) -> bytes:
    event = {"customer_id": CUSTOMER, "feature_key": "api_calls", "quantity": 1}
    return json.dumps({**event, "idempotency_key": f"{tag}-{n}"}).encode()


@contextmanager
def serve(side: str, stack: tuple[str, str], tmp: Path) -> Iterator[Served]:
    http, loop = stack
    env = {}
    if side == "server":
        # The HTTP path's own cost: the bare side writes nothing, so the server does not fsync
        # either (synchronous=NORMAL). What FULL costs is bench/ingest_durability.py's figure.
        env["BILLING_UI_SQLITE_SYNCHRONOUS"] = SYNCHRONOUS
        extra = ["--port", "0", "--db", str(tmp / f"{http}.db"), "--no-seed",
                 "--rate-limit-per-minute", "0", "--no-access-log"]  # fmt: skip
    else:
        extra = ["--answer", str(tmp / "answer.json")]
    args = ("-m", "bench._stack", side, "--http", http, "--loop", loop, *extra)
    with uvicorn_process(*args, env=env) as s:
        yield s


def drive(url: str, bodies: list[bytes], clients: int) -> float:
    """Post every body (``clients`` threads, keep-alive); return the wall time."""

    def post_all(part: list[bytes]) -> None:
        with httpx.Client(base_url=url, headers=HEADERS) as client:
            for b in part:
                response = client.post("/v1/usage/track", content=b)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code} {response.text}")

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post_all, [bodies[i::clients] for i in range(clients)]))
    return time.perf_counter() - start


def measure(served: Served, bodies: list[bytes], clients: int) -> tuple[float, float]:
    """(requests/s, server CPU microseconds per request)."""
    cpu0 = served.cpu_seconds()
    wall = drive(served.url, bodies, clients)
    return len(bodies) / wall, (served.cpu_seconds() - cpu0) / len(bodies) * 1e6


def record_answer(server: Served, path: Path) -> None:
    """The server's answer to one track: what the bare endpoint sends back."""
    with httpx.Client(base_url=server.url, headers=HEADERS) as client:
        response = client.post("/v1/usage/track", content=body(0, "answer"))
        response.raise_for_status()
    path.write_bytes(response.content)


def stack_figures(
    name: str, tmp: Path, rounds: int, requests: int, clients: int
) -> dict[str, float]:
    stack = STACKS[name]
    samples: dict[str, list[tuple[float, float]]] = {"server": [], "bare": []}
    with serve("server", stack, tmp) as server:
        httpx.put(
            f"{server.url}/v1/customers/{CUSTOMER}", json={"products": ["enterprise"]},
            headers=HEADERS,
        ).raise_for_status()  # fmt: skip
        if not (tmp / "answer.json").exists():
            record_answer(server, tmp / "answer.json")
        with serve("bare", stack, tmp) as bare:
            sides = {"server": server, "bare": bare}
            for side, s in sides.items():  # warm-up
                drive(s.url, [body(i, f"warm-{side}") for i in range(100)], clients)
            for r in range(rounds):
                for side in ("server", "bare") if r % 2 == 0 else ("bare", "server"):
                    bodies = [body(i, f"{name}-{r}") for i in range(requests)]
                    samples[side].append(measure(sides[side], bodies, clients))
    rps = {side: statistics.median(v[0] for v in values) for side, values in samples.items()}
    cpu = {side: statistics.median(v[1] for v in values) for side, values in samples.items()}
    ratios = [s[0] / b[0] for s, b in zip(samples["server"], samples["bare"], strict=True)]
    return {
        f"{name}_server_over_bare": round(statistics.median(ratios), 3),
        f"{name}_server_req_per_s": round(rps["server"]),
        f"{name}_bare_req_per_s": round(rps["bare"]),
        f"{name}_server_cpu_us_per_request": round(cpu["server"]),
        f"{name}_bare_cpu_us_per_request": round(cpu["bare"]),
        f"{name}_bare_over_server_cpu": round(cpu["bare"] / cpu["server"], 3),
    }


def json_costs(tmp: Path) -> dict[str, float]:
    """Microseconds per call of parsing a track body and encoding a track answer."""
    raw = body(1, "json")
    answer = TrackUsageResult.model_validate_json((tmp / "answer.json").read_bytes())
    as_dict = answer.model_dump(mode="json", by_alias=True)

    def best(fn: object) -> float:
        return min(timeit.repeat(fn, number=2000, repeat=5)) / 2000 * 1e6  # type: ignore[arg-type]

    return {
        "parse_json_us": round(best(lambda: json.loads(raw)), 2),
        "parse_orjson_us": round(best(lambda: orjson.loads(raw)), 2),
        "encode_pydantic_us": round(best(lambda: answer.model_dump_json(by_alias=True)), 2),
        "encode_orjson_us": round(
            best(lambda: orjson.dumps(answer.model_dump(mode="json", by_alias=True))), 2
        ),
        "encode_orjson_prebuilt_dict_us": round(best(lambda: orjson.dumps(as_dict)), 2),
    }


def run(*, smoke: bool = False) -> dict[str, object]:
    rounds, requests, clients = (1, 60, 2) if smoke else (4, 3000, 4)
    config = {
        "rounds": rounds,
        "requests_per_side_round": requests,
        "client_threads": clients,
        "stacks": ", ".join(f"{h}+{lp}" for h, lp in STACKS.values()),
        "server_sqlite_synchronous": SYNCHRONOUS,
    }
    print(f"http_ceiling: {config}", flush=True)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in STACKS:
            figures |= stack_figures(name, Path(tmp), rounds, requests, clients)
        figures |= json_costs(Path(tmp))
    goals = {f"{name}_server_over_bare": f">= {GOAL}" for name in STACKS}
    checks = {name: figures[name] >= GOAL for name in goals}
    return result("http_ceiling", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
