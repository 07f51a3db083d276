"""The examples stay small: the FastAPI example's app code (not counting blank lines, comments
and docstrings) is under 60 lines, as the README says."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "fastapi_app" / "app.py"


def code_lines(path: Path) -> int:
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER):
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def test_the_fastapi_example_is_under_60_lines_of_code() -> None:
    count = code_lines(EXAMPLE)
    assert 20 < count < 60, count
