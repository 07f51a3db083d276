"""What every benchmark module shares: the result contract, the command line, the record of the
machine and versions.

A benchmark module in ``bench/`` exposes ``run(*, smoke: bool = False) -> dict[str, object]``
returning ``{"name", "config", "figures", "goals", "verdict"}`` (see :func:`check_result`) and
ends with ``if __name__ == "__main__": cli(run)``, so ``python -m bench.<module>`` prints its
configuration, every figure and a one-line verdict. ``python -m bench`` (``make bench``) finds
every such module and records all results in one JSON file per run; ``bench/docs.py`` turns
that JSON into the tables of docs/benchmarks.md and the README.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT_KEYS = ("name", "config", "figures", "goals", "verdict")
DISTRIBUTIONS = (
    "httpx", "httpcore", "pydantic", "fastapi", "starlette", "uvicorn", "httptools", "uvloop",
    "orjson", "reflex", "orb-billing", "metronome-sdk", "lago-python-client",
)  # fmt: skip
"""Packages whose version can move a figure; those installed are recorded with every run."""

Run = Callable[..., Mapping[str, Any]]


class BadResult(ValueError):
    """A benchmark returned something that does not follow the contract."""


def check_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``result`` as a plain dict if it follows the contract, else raise BadResult
    naming what is wrong: every key present, ``figures`` a non-empty mapping of names to
    numbers, every goal naming a figure, ``verdict`` one line."""
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        raise BadResult(f"result lacks {missing}")
    figures = result["figures"]
    if not isinstance(figures, Mapping) or not figures:
        raise BadResult("figures must be a non-empty mapping of name -> number")
    for name, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadResult(f"figure {name!r} is {value!r}, not a number")
        if value != value:  # NaN: a figure that was not measured
            raise BadResult(f"figure {name!r} is NaN")
    goals = result["goals"]
    if not isinstance(goals, Mapping):
        raise BadResult("goals must be a mapping of figure name -> goal text")
    unknown = [g for g in goals if g not in figures]
    if unknown:
        raise BadResult(f"goals {unknown} name no figure")
    if not isinstance(result["config"], Mapping):
        raise BadResult("config must be a mapping")
    verdict = result["verdict"]
    if not isinstance(verdict, str) or not verdict or "\n" in verdict:
        raise BadResult(f"verdict must be one non-empty line, got {verdict!r}")
    plain: dict[str, Any] = json.loads(json.dumps(dict(result)))
    return plain


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """The machine a run was made on: absolute figures only compare within one machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def versions() -> dict[str, str]:
    """Python, SQLite, the git commit and every installed package that can move a figure."""
    found = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found["billing_ui_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    for dist in DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found


def fmt(value: float) -> str:
    """A figure for people: integers with separators, others with 3 significant digits."""
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def describe(result: Mapping[str, Any]) -> str:
    """The printed report of one result: configuration, figures with their goals, verdict."""
    config = ", ".join(f"{k}={v}" for k, v in result["config"].items())
    lines = [f"[{result['name']}] config: {config}"]
    width = max(len(name) for name in result["figures"])
    for name, value in result["figures"].items():
        goal = result["goals"].get(name)
        lines.append(f"  {name:<{width}}  {fmt(value):>12}" + (f"   goal {goal}" if goal else ""))
    lines.append(f"[{result['name']}] verdict: {result['verdict']}")
    return "\n".join(lines)


def verdict(
    checks: Mapping[str, bool], figures: Mapping[str, float], goals: Mapping[str, str]
) -> str:
    """One line: which goals are met, with the figure, e.g. ``met: ratio 0.91 (>= 0.85)``."""
    parts = [
        f"{name} {fmt(figures[name])} ({goals[name]}): {'met' if ok else 'MISSED'}"
        for name, ok in checks.items()
    ]
    head = "all goals met" if all(checks.values()) else "goal missed"
    return f"{head} - " + "; ".join(parts) if parts else "no goal"


def result(
    name: str,
    config: Mapping[str, Any],
    figures: Mapping[str, float],
    goals: Mapping[str, str],
    checks: Mapping[str, bool],
) -> dict[str, Any]:
    """The contract's dict, its verdict made from ``checks`` (goal figure -> met)."""
    return {
        "name": name,
        "config": dict(config),
        "figures": dict(figures),
        "goals": dict(goals),
        "verdict": verdict(checks, figures, goals),
    }


@dataclass(frozen=True)
class Goal:
    """A goal on one figure: the text shown beside it and the test of it, written side by
    side (in :func:`judged`) so that the one cannot say other than the other checks."""

    text: str
    met: Callable[[float], bool]


def judged(
    name: str, config: Mapping[str, Any], figures: Mapping[str, float], goals: Mapping[str, Goal]
) -> dict[str, Any]:
    """:func:`result` with each goal's text and check taken from one :class:`Goal`."""
    texts = {figure: goal.text for figure, goal in goals.items()}
    checks = {figure: goal.met(figures[figure]) for figure, goal in goals.items()}
    return result(name, config, figures, texts, checks)


def cli(run: Run) -> None:
    """``python -m bench.<module> [--smoke] [--json PATH]``: run, print, optionally save."""
    parser = argparse.ArgumentParser(
        description=(sys.modules[run.__module__].__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny size: checks it runs, not speed")
    parser.add_argument("--json", type=Path, help="write the result (the contract's dict) here")
    args = parser.parse_args()
    result = check_result(run(smoke=args.smoke))
    print(describe(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
