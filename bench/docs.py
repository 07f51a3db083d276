"""Regenerate the benchmark tables of docs/benchmarks.md, docs/reliability.md and README.md from
the recorded runs.

    python -m bench.docs            # rewrite the generated sections
    python -m bench.docs --check    # exit 1 if the docs disagree with bench/results/*.json

Every table of figures lives between ``<!-- bench:KEY -->`` and ``<!-- /bench:KEY -->`` and is
written only by this script: one section per benchmark (KEY = the benchmark's name) in
docs/reliability.md for the fault benchmarks that have a block there, else in
docs/benchmarks.md (a benchmark without a section gets one appended at its end), and the
README's figures table (KEY = ``figures``: every figure that has a goal). Text outside the
markers is prose written by people (what a figure means for a user); nothing inside is.

For each benchmark the newest full-size run that recorded it is used (smoke runs are never
committed), so rerunning one benchmark (``python -m bench NAME``) updates only its tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from bench._harness import REPO, fmt

RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
RELIABILITY = REPO / "docs" / "reliability.md"
"""The fault suite's page: the benchmarks with a block here have their table here only."""
README = REPO / "README.md"


def latest_results(folder: Path = RESULTS) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Benchmark name -> (its newest successful result, the run record it came from)."""
    latest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):  # names start with the UTC time: oldest first
        run = json.loads(path.read_text())
        if run.get("smoke"):
            continue
        for name, result in run["benchmarks"].items():
            if "error" not in result:
                latest[name] = (result, run)
    return latest


def _machine_line(run: dict[str, Any]) -> str:
    m, v = run["machine"], run["versions"]
    load = "/".join(f"{x:g}" for x in m.get("load_average", []))
    return (
        f"Run of {run['started_at']} on {m['cpus']} CPUs ({m['cpu_model']}), load average "
        f"{load or 'n/a'} at the start; Python {v['python']}, SQLite {v['sqlite']}"
        + (f", commit {v['billing_ui_commit']}" if "billing_ui_commit" in v else "")
        + "."
    )


def section(name: str, result: dict[str, Any], run: dict[str, Any]) -> str:
    """The generated body of one benchmark's section."""
    config = ", ".join(f"{k}={json.dumps(v)}" for k, v in result["config"].items())
    rows = [
        f"| `{figure}` | {fmt(value)} | {result['goals'].get(figure, '')} |"
        for figure, value in result["figures"].items()
    ]
    return "\n".join(
        [
            f"    python -m bench.{name}",
            "",
            f"Configuration: {config}.",
            "",
            "| figure | value | goal |",
            "|---|---:|---|",
            *rows,
            "",
            f"Verdict: {result['verdict']}",
            "",
            _machine_line(run),
        ]
    )


def figures_table(latest: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The README's table: every figure that has a goal, from every benchmark."""
    rows = ["| benchmark | figure | value | goal |", "|---|---|---:|---|"]
    if not latest:
        rows.append("| (no recorded run yet: `make bench`) | | | |")
    for name, (result, _run) in sorted(latest.items()):
        for figure, goal in result["goals"].items():
            rows.append(f"| {name} | `{figure}` | {fmt(result['figures'][figure])} | {goal} |")
    return "\n".join(rows)


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"


def has_block(text: str, key: str) -> bool:
    return _markers(key)[0] in text


def replace_block(text: str, key: str, body: str) -> str | None:
    """``text`` with the block ``key`` replaced by ``body``; None if it has no such block."""
    start, end = _markers(key)
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        return None
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text, count=1)


def render_docs(text: str, latest: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> str:
    for name, (result, run) in sorted(latest.items()):
        body = section(name, result, run)
        new = replace_block(text, name, body)
        if new is None:  # a new benchmark: its section goes at the end until someone moves it
            start, end = _markers(name)
            new = text.rstrip("\n") + f"\n\n## {name}\n\n{start}\n{body}\n{end}\n"
        text = new
    return text


def render_readme(text: str, latest: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> str:
    new = replace_block(text, "figures", figures_table(latest))
    if new is None:
        raise SystemExit(f"{README} has no {_markers('figures')[0]} block")
    return new


def expected() -> dict[Path, str]:
    """What docs/benchmarks.md, docs/reliability.md and README.md should contain, from the
    recorded runs."""
    latest = latest_results()
    reliability = RELIABILITY.read_text()
    faults = {name: found for name, found in latest.items() if has_block(reliability, name)}
    others = {name: found for name, found in latest.items() if name not in faults}
    return {
        DOCS: render_docs(DOCS.read_text(), others),
        RELIABILITY: render_docs(reliability, faults),
        README: render_readme(README.read_text(), latest),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.docs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on difference")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected().items():
        if path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    verb = "out of date" if args.check else "rewritten"
    for path in stale:
        print(f"{path.relative_to(REPO)}: {verb}", file=sys.stderr if args.check else sys.stdout)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
