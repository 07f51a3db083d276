"""Run the whole e2e suite again and again beside two CPU-burning processes, bounded in time.

Why: a flake shows only under load, and one green run proves little. Issue 13 asks for the e2e
suite to pass 10 times in a row beside two CPU burners. This script makes those runs and keeps a
record a reader can check: per run the commit, start and end, load-average samples, pytest's
junit XML, pass/fail counts and each failure's traceback.

Run it from a clone pinned to a commit (not from a worktree being edited), e.g.

    git clone /work/main /tmp/stress && cd /tmp/stress && bash scripts/bootstrap.sh
    . scripts/env.sh && python scripts/stress_e2e.py --runs 10 --end 16:10 --out /tmp/stress-runs

Rules it keeps:
- the burners start only while the 1-minute load average is below `--max-load` (other work on
  the machine counts; checked every 10 s during the run), and they are killed when the run
  ends (each also has its own time bound); the record says when they started, if at all;
- a run starts only if it is expected to end by `--end` (UTC), from the longest run so far;
- before a run, if the file `<out>/REPIN` exists, the clone is pulled (`git pull --ff-only`)
  and bootstrapped, so a landed fix is tested by the next run;
- before every run the toolchain is checked (:func:`preflight`): without the environment of
  `scripts/env.sh` (bun, node 22, chromium, this clone's `.venv`) every e2e test fails in
  its setup, and a run of 84 errors in 5 s proves nothing. The script then refuses, saying
  what is missing, and starts no run. `--check` does only that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from importlib.util import find_spec
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the e2e suite's own toolchain check (standard library only)

from tests.e2e import toolchain  # noqa: E402

PACKAGES = ("pytest", "selenium", "reflex", "billing_ui")
"""What ``python -m pytest tests/e2e`` imports, from the python running this script."""
BURN = "import time\nend = time.monotonic() + {secs}\nwhile time.monotonic() < end: pass\n"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


class Burners:
    """Two CPU-burning processes, started only while the 1-minute load average is below a
    limit (the machine is shared: on a machine already that loaded they would add nothing but
    harm to others), each bounded in time and killed when the run ends."""

    def __init__(self, limit: float, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started_at: str | None = None
        self.load_at_start: float | None = None

    def maybe_start(self) -> None:
        if self.procs or (value := load1()) >= self.limit:
            return
        code = BURN.format(secs=self.seconds)
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
        self.started_at, self.load_at_start = utc_now().strftime("%H:%M:%S"), value

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def sample_load(
    samples: list[tuple[str, str]], burners: Burners, stop: threading.Event, every: float
) -> None:
    """Record the three load averages every `every` seconds until `stop` is set, starting the
    burners as soon as the load allows."""
    n = 0
    while True:
        burners.maybe_start()
        if n % 3 == 0:
            parts = Path("/proc/loadavg").read_text().split()[:3]
            samples.append((utc_now().strftime("%H:%M:%S"), " ".join(parts)))
        n += 1
        if stop.wait(every / 3):
            return


def junit_summary(path: Path) -> dict[str, object]:
    """Counts and each failure's or error's traceback from pytest's junit XML."""
    if not path.exists():
        return {"tests": 0, "failures": [], "note": "no junit XML (run killed?)"}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    failures = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                failures.append(
                    {
                        "test": f"{case.get('classname')}::{case.get('name')}",
                        "kind": kind,
                        "message": node.get("message", ""),
                        "traceback": node.text or "",
                    }
                )
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "passed": passed, "time": float(suite.get("time", "0")), "failures": failures}


def preflight() -> list[str]:
    """Why the e2e suite cannot run here (empty: it can): the tools it needs, and this
    python's packages, billing_ui imported from this clone (another's would be tested)."""
    found = toolchain.problems()
    missing = [name for name in PACKAGES if find_spec(name) is None]
    if missing:
        found.append(f"{sys.executable} lacks {', '.join(missing)} (not this clone's .venv?)")
    elif (spec := find_spec("billing_ui")) and spec.origin:
        origin = Path(spec.origin).resolve()
        if REPO not in origin.parents:
            found.append(f"billing_ui is imported from {origin.parent}, not from {REPO}")
    return found


def refuse_unless_ready() -> None:
    """Exit (status 2, no run started) with what is missing, when the suite cannot run."""
    found = preflight()
    if found:
        lines = "\n".join(f"  - {problem}" for problem in found)
        print(
            f"stress_e2e: the e2e toolchain is not ready, no run started:\n{lines}\n"
            f"Load the environment first: . scripts/env.sh (after bash scripts/bootstrap.sh).",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)


def repin(out: Path) -> None:
    """Move the clone to the newest main if asked (flag file), and bootstrap it."""
    flag = out / "REPIN"
    if not flag.exists():
        return
    subprocess.run(["git", "pull", "--ff-only", "-q"], check=True)
    subprocess.run(["bash", "scripts/bootstrap.sh"], check=True, stdout=subprocess.DEVNULL)
    flag.unlink()


def one_run(n: int, out: Path, end: dt.datetime, max_load: float) -> dict[str, object]:
    """One whole e2e run, burners beside it when the load allows; its record (also as JSON)."""
    budget = (end - utc_now()).total_seconds() + 120  # hard bound; the estimate aims at `end`
    burners = Burners(max_load, budget)
    samples: list[tuple[str, str]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_load, args=(samples, burners, stop, 30.0))
    xml, log = out / f"run{n}.xml", out / f"run{n}.log"
    started = utc_now()
    record: dict[str, object] = {"run": n, "commit": commit(), "start": f"{started:%H:%M:%S}"}
    print(f"[run {n}] {record} load {load1()}", flush=True)
    sampler.start()
    # A base temp folder of its own: pytest's default, /tmp/pytest-of-<user>/pytest-<N>, is
    # pruned to the newest 3 by any other pytest run of the same user, so on a shared machine
    # a 20-minute run lost its folder mid-way (run 2 of 2026-11-30: 63 setup errors).
    cmd = [sys.executable, "-m", "pytest", "tests/e2e", "-q", "-p", "no:cacheprovider"]
    cmd.append(f"--basetemp={out / f'run{n}-tmp'}")
    try:
        with log.open("w") as fh:
            rc = subprocess.run(
                [*cmd, f"--junitxml={xml}"], stdout=fh, stderr=subprocess.STDOUT, timeout=budget
            ).returncode
    except subprocess.TimeoutExpired:
        rc = -1
    finally:
        stop.set()
        sampler.join()
        burners.stop()
    finished = utc_now()
    record.update(
        end=f"{finished:%H:%M:%S}",
        seconds=round((finished - started).total_seconds()),
        returncode=rc,
        burners_started_at=burners.started_at,
        load1_when_burners_started=burners.load_at_start,
        load_samples=samples,
        junit=str(xml),
        **junit_summary(xml),
    )
    (out / f"run{n}.json").write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the toolchain and exit")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--end", help="HH:MM UTC by which the last run must end")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--max-load", type=float, default=4.0)
    parser.add_argument("--expect", type=float, default=18 * 60, help="first run's length, s")
    parser.add_argument("--first", type=int, default=1, help="number of the first run")
    args = parser.parse_args()
    refuse_unless_ready()
    if args.check:
        print("stress_e2e: the e2e toolchain is ready", flush=True)
        return
    if args.end is None or args.out is None:
        parser.error("--end and --out are required (unless --check)")
    hh, mm = map(int, args.end.split(":"))
    end = utc_now().replace(hour=hh, minute=mm, second=0, microsecond=0)
    args.out.mkdir(parents=True, exist_ok=True)
    expected = args.expect
    for n in range(args.first, args.first + args.runs):
        if utc_now() + dt.timedelta(seconds=expected) > end:
            print(f"[run {n}] not started: {expected:.0f} s would end after {end:%H:%M}")
            break
        repin(args.out)
        refuse_unless_ready()  # a bootstrap just now may have broken it
        record = one_run(n, args.out, end, args.max_load)
        expected = max(expected, float(record["seconds"]))  # type: ignore[arg-type]
        fails = [f["test"] for f in record["failures"]]  # type: ignore[attr-defined]
        print(
            f"[run {n}] {record['commit']} {record['start']}-{record['end']} "
            f"passed {record.get('passed')} failed {len(fails)} rc {record['returncode']} "
            f"{fails}",
            flush=True,
        )
    print(f"[done] {utc_now():%H:%M:%S}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
