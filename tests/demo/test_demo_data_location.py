"""The demo's SQLite files must stay out of what ``reflex run`` watches for hot reload.

Reflex's dev server watches every file in the app root that exists when it starts and ignores
only ``*.db``: a ``billing.db-wal`` or ``billing_outbox.db-shm`` left there by an earlier run
made each SQLite write reload the backend, which reopened the files, which reloaded it again
(seen with ``make demo`` on a fresh clone: "Killing worker-1 after it refused to gracefully
stop", every few seconds). ``get_reload_paths`` is Reflex's own function for that list.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_data_files_are_not_watched_for_hot_reload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reflex.utils.exec import get_reload_paths

    from billing_ui.demo import config, embedded

    monkeypatch.chdir(ROOT)
    for name in (embedded.ENV_DB, config.ENV_OUTBOX):
        monkeypatch.delenv(name, raising=False)
    watched = [path.resolve() for path in get_reload_paths()]
    assert watched, "Reflex watches nothing: the check below would pass vacuously"
    for db in (embedded.db_path(), config.outbox_path()):
        # A file directly in the root is watched whenever it exists at start (so a leftover
        # -wal is); a file in a watched directory is watched always.
        assert db.parent != ROOT, f"{db} sits in the app root"
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert path.is_relative_to(ROOT)
            hits = [w for w in watched if path == w or path.is_relative_to(w)]
            assert not hits, f"{path} is inside Reflex's hot-reload paths {hits}"
