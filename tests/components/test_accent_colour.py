"""Badges follow the theme's accent colour: an app's ``rx.theme(accent_color="grass")`` must
re-colour them. Radix Themes has no "accent" colour value; a badge inherits the theme's accent
only when it has no ``color`` at all, so the compiled components are checked for badges that
pin a colour other than the warning scales (amber, red) and neutral gray."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import reflex as rx

from billing_ui.components import entitlements_list, usage_meter

ALLOWED = {"amber", "red", "gray"}


def colours(prop: str) -> set[str]:
    """The colours a badge's ``color`` prop can take: a literal, or every value a compiled
    ``rx.match`` can return."""
    value = prop.removeprefix("color:")
    return set(re.findall(r'return \("(\w+)"\)', value)) or {value.strip('"')}


def badges(node: Any) -> Iterator[list[str]]:
    """The props of every Radix badge in a rendered component tree (every branch of every
    ``cond``/``match``, whatever the data will be)."""
    if isinstance(node, dict):
        if node.get("name") == "RadixThemesBadge":
            yield [str(p) for p in node.get("props", [])]
        for value in node.values():
            yield from badges(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from badges(value)


@pytest.mark.parametrize(
    "component",
    [entitlements_list, lambda: usage_meter(feature_key="api_calls")],
    ids=["entitlements_list", "usage_meter"],
)
def test_badges_pin_no_colour_but_warnings(component: Any) -> None:
    tree: rx.Component = component()
    found = list(badges(tree.render()))
    assert found, "no badge rendered at all: the walk is broken"
    pinned = [
        p for props in found for p in props if p.startswith("color:") and colours(p) - ALLOWED
    ]
    assert pinned == [], f"badges with a fixed colour instead of the theme's accent: {pinned}"
    # At least one badge carries the accent (no colour prop).
    assert any(not any(p.startswith("color:") for p in props) for props in found)
