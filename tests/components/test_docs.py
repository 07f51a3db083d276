"""docs/components.md's reference is generated from the code; these fail when it is stale, or
when a setting is added to BillingSettings without its docstring or its configure() keyword."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
from pathlib import Path
from types import ModuleType

import pytest

from billing_ui import settings

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_components_doc", ROOT / "scripts" / "gen_components_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_components_md_is_up_to_date() -> None:
    gen = generator()
    doc = gen.DOC.read_text()
    assert gen.updated(doc) == doc, (
        "docs/components.md is out of date: python scripts/gen_components_doc.py --write"
    )


def test_every_component_parameter_is_listed() -> None:
    text = generator().generated()
    for name in ("upgrade_url", "feature_name", "show_limit", "title", "icon"):
        assert f"| `{name}`" in text, name
    assert "`entitlements_refresh_interval`" in text and "`client_factory`" in text


def test_configure_takes_exactly_the_settings_with_their_types() -> None:
    params = inspect.signature(settings.configure).parameters
    fields = {f.name: f.type for f in dataclasses.fields(settings.BillingSettings)}
    assert {n: p.annotation for n, p in params.items()} == fields
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values())


def test_every_setting_has_a_docstring() -> None:
    docs = generator().attribute_docs(settings.BillingSettings)
    missing = [f.name for f in dataclasses.fields(settings.BillingSettings) if f.name not in docs]
    assert missing == []


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"refresh_interval": 0}, "refresh_interval", "gt"),
        ({"entitlements_refresh_interval": -5.0}, "entitlements_refresh_interval", "gt"),
        ({"refresh_interval": True}, "refresh_interval", "gt"),
        ({"customer_resolver": "user_1"}, "customer_resolver", "callable"),
        ({"client_factory": None}, "client_factory", "callable"),
        ({"trackable": {"api_calls": 10}}, "trackable.api_calls", "type"),
        ({"trackable": {"not a key!": settings.TrackRule()}}, "trackable", None),
    ],
)
def test_configure_refuses_bad_values_naming_the_setting_and_rule(
    changes: dict[str, object], field: str, rule: str | None
) -> None:
    from billing_ui.core.errors import InvalidInputError

    before = settings.get_settings()
    with pytest.raises(InvalidInputError) as caught:
        settings.configure(**changes)  # type: ignore[arg-type]
    assert caught.value.field == field and (rule is None or caught.value.rule == rule)
    assert settings.get_settings() is before, "a refused configure() changes nothing"
