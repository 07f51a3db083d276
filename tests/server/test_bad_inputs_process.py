"""The bad-input catalogue of test_bad_inputs.py (huge numbers, invalid UTF-8 in a path or
query, duplicate JSON keys, a BOM, charsets, ...) kept as a regression suite against the real
server **process** (``python -m billing_ui.server``: its own uvicorn, command line and
protocol settings), not the in-process server the catalogue otherwise uses. Half-sent requests
against the process are in test_slow_requests.py.

Each case: the status, the envelope code, the field, and the database file unchanged (row
counts and sums of every table, read from the file itself)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billing_ui.server.testing import ServerProcess, fingerprint, server_process

from .test_bad_inputs import CASES, CID, TRACK, Case, assert_refused_and_unchanged, body


def _auth(server: ServerProcess, credential: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential or server.api_key}"}


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path, str]]:
    """A server process on a SQLite file with the victim customer, some usage and a session
    token for it."""
    db = tmp_path_factory.mktemp("bad-process") / "billing.db"
    with (
        server_process(db_path=db) as server,
        httpx.Client(base_url=server.base_url, headers=_auth(server), timeout=30) as api,
    ):
        api.put(f"/v1/customers/{CID}", json={"products": ["pro"]}).raise_for_status()
        api.post(TRACK, json=body(quantity=12, idempotency_key="seed")).raise_for_status()
        minted = api.post("/v1/session-tokens", json={"externalUserId": CID, "expiresIn": 3600})
        minted.raise_for_status()
        yield server, db, minted.json()["sessionToken"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_to_the_server_process_is_refused_and_changes_nothing(
    proc: tuple[ServerProcess, Path, str], case: Case
) -> None:
    server, db, token = proc
    assert_refused_and_unchanged(
        server.base_url, lambda c: _auth(server, c), lambda: fingerprint(db), token, case
    )


def test_the_server_process_still_works_afterwards(proc: tuple[ServerProcess, Path, str]) -> None:
    server, db, _ = proc
    before = fingerprint(db)["usage_events.rows"]
    response = httpx.post(server.base_url + TRACK, json=body(), headers=_auth(server))
    assert response.status_code == 200
    assert fingerprint(db)["usage_events.rows"] == before + 1
