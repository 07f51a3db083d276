"""The plans file: the packaged sample, and clear errors for broken files."""

from __future__ import annotations

import pytest

from billing_ui.server.plans import PlansError, load_plans, parse_plans


def test_the_sample_has_what_the_demo_needs():
    plans = load_plans()
    assert set(plans.products) == {"free", "pro", "enterprise"}
    types = {f.type for f in plans.features.values()}
    assert types == {"usage_quota", "boolean_flag", "numeric_limit"}
    resets = {f.reset for f in plans.features.values() if f.type == "usage_quota"}
    assert resets == {"day", "week", "month", "never"}
    grants = [g for p in plans.products.values() for g in p.grants.values()]
    assert any(g.unlimited and g.feature.type == "usage_quota" for g in grants)
    assert any(g.hard_limit for g in grants)
    assert plans.products["free"].grants["projects"].limit == 5
    assert {c.customer_id for c in plans.customers} >= {
        "demo_free",
        "demo_pro",
        "demo_enterprise",
        "demo_none",
    }


BASE = {"features": {"calls": {"type": "usage_quota"}}, "products": {"p": {"name": "P"}}}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"products": {}}, "features"),
        ({**BASE, "features": {"calls": {"type": "meter"}}}, "features.calls.type"),
        ({**BASE, "features": {"bad key": {"type": "usage_quota"}}}, "features.bad key"),
        ({**BASE, "features": {"f": {"type": "boolean_flag", "reset": "day"}}}, "reset"),
        (
            {**BASE, "products": {"p": {"name": "P", "features": {"nope": {"limit": 1}}}}},
            "unknown feature",
        ),
        ({**BASE, "products": {"p": {"name": "P", "features": {"calls": {}}}}}, "exactly one"),
        ({**BASE, "products": {"p": {"name": "P", "features": {"calls": {"limit": -1}}}}}, "limit"),
        ({**BASE, "products": {"p": {"name": "P", "features": {"calls": True}}}}, "boolean_flag"),
        ({**BASE, "customers": {"c": {"products": ["gold"]}}}, "unknown product"),
        ({**BASE, "customers": {"c": {"products": ["p"], "usage": {"x": 1}}}}, "usage_quota"),
        ({**BASE, "extra": 1}, "extra"),
    ],
)
def test_broken_plans_name_the_key(doc, needle):
    with pytest.raises(PlansError, match=needle.replace(".", r"\.")):
        parse_plans(doc)


def test_unreadable_and_non_toml_files(tmp_path):
    with pytest.raises(PlansError, match="cannot read"):
        load_plans(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[features\n")
    with pytest.raises(PlansError, match="not valid TOML"):
        load_plans(bad)
