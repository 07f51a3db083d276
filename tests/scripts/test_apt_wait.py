"""scripts/apt_wait.sh: `apt-get update` waits for apt's locks (with a deadline) instead of
failing at once, and says which process it waits for.

A real process holds a real fcntl lock (as apt and dpkg do) on a temporary lock file; the
script is pointed at that file through APT_LOCK_FILES, so the machine's apt is never touched.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOLD = """
import fcntl, sys
f = open(sys.argv[1], "w")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
"""


@contextmanager
def held_lock(path: Path) -> Iterator[subprocess.Popen[str]]:
    program = path.parent / "apt-get-lookalike.py"
    program.write_text(HOLD)
    holder = subprocess.Popen(
        [sys.executable, str(program), str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        yield holder
    finally:
        if holder.stdin:
            holder.stdin.close()
        holder.wait(timeout=10)


def waiter(lock: Path, wait_s: int) -> subprocess.Popen[str]:
    script = f". {REPO}/scripts/apt_wait.sh && wait_for_apt_locks && echo free"
    return subprocess.Popen(
        ["bash", "-c", script],
        env={"PATH": "/usr/bin:/bin", "APT_LOCK_FILES": str(lock), "APT_LOCK_WAIT_S": str(wait_s)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_it_waits_for_the_holder_names_it_and_goes_on_when_the_lock_is_free(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    with held_lock(lock) as holder:
        proc = waiter(lock, wait_s=60)
        assert proc.stderr is not None
        said = proc.stderr.readline()  # blocks until the script reports the wait
        assert "waiting for another apt/dpkg run" in said
        assert str(holder.pid) in said and "apt-get-lookalike" in said and str(lock) in said
        assert proc.poll() is None, "it must still be waiting while the lock is held"
    out, _ = proc.communicate(timeout=30)  # the holder is gone: the wait ends
    assert proc.returncode == 0 and out.strip() == "free"


def test_it_gives_up_at_the_deadline_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    with held_lock(lock) as holder:
        started = time.monotonic()
        proc = waiter(lock, wait_s=2)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1 and "free" not in out
        assert "gave up after 2s" in err and str(holder.pid) in err
        assert time.monotonic() - started >= 2


def test_a_free_lock_costs_no_wait(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    proc = waiter(lock, wait_s=60)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and out.strip() == "free" and err == ""
