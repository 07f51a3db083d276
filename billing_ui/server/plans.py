"""The catalogue: features, products (plans) and demo customers, read from a TOML file.

The file is the local server's stand-in for the BillingOS dashboard where a merchant defines
features and attaches them to products. It is parsed once at start-up into frozen objects; a
mistake in it stops the server with a message naming the exact key, rather than surfacing as a
strange API answer later. See ``plans.toml`` beside this module for the format.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from billing_ui.core import validation as V
from billing_ui.core.errors import InvalidInputError
from billing_ui.core.models import FeatureType, SubscriptionStatus
from billing_ui.server.periods import Reset


class PlansError(ValueError):
    """The plans file is missing, not TOML, or breaks a rule (the message names the key)."""


# --- the catalogue, as the rest of the server sees it ----------------------------------
@dataclass(frozen=True, slots=True)
class Feature:
    key: str
    title: str
    type: FeatureType
    reset: Reset | None  # usage_quota only
    description: str = ""


@dataclass(frozen=True, slots=True)
class Grant:
    """A feature as one product grants it. ``limit_micros`` is ``None`` for flags and for
    unlimited quotas/limits; quantities are kept as integer millionths, like usage."""

    feature: Feature
    limit_micros: int | None
    hard_limit: bool

    @property
    def unlimited(self) -> bool:
        return self.feature.type != "boolean_flag" and self.limit_micros is None

    @property
    def limit(self) -> float | None:
        return None if self.limit_micros is None else V.micros_to_quantity(self.limit_micros)

    def generosity(self) -> float:
        """Orders grants of one feature from several products: unlimited beats any limit."""
        return float("inf") if self.limit_micros is None else float(self.limit_micros)

    def properties(self) -> dict[str, Any]:
        """``FeatureEntitlement.properties``: limit (0 = unlimited, BillingOS's way), reset,
        hard_limit."""
        if self.feature.type == "boolean_flag":
            return {}
        props: dict[str, Any] = {"limit": self.limit or 0, "unlimited": self.unlimited}
        if self.feature.type == "usage_quota":
            props["reset"] = self.feature.reset
            props["hard_limit"] = self.hard_limit
        return props


@dataclass(frozen=True, slots=True)
class Product:
    key: str
    name: str
    description: str
    grants: Mapping[str, Grant]


@dataclass(frozen=True, slots=True)
class SeedCustomer:
    customer_id: str
    products: tuple[str, ...]
    status: SubscriptionStatus
    usage: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Plans:
    features: Mapping[str, Feature]
    products: Mapping[str, Product]
    customers: tuple[SeedCustomer, ...] = field(default=())


# --- the file format (private) ---------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FeatureSpec(_Strict):
    title: str = ""
    type: FeatureType
    reset: Reset | None = None
    description: str = ""
    hard_limit: bool = False

    @model_validator(mode="after")
    def _reset_only_on_quotas(self) -> _FeatureSpec:
        if self.type != "usage_quota" and self.reset is not None:
            raise ValueError("`reset` applies to usage_quota features only")
        return self


class _GrantSpec(_Strict):
    limit: Annotated[float, Field(gt=0)] | None = None
    unlimited: bool = False
    hard_limit: bool | None = None


class _ProductSpec(_Strict):
    name: str
    description: str = ""
    features: dict[str, _GrantSpec | bool] = Field(default_factory=dict)


class _CustomerSpec(_Strict):
    products: list[str] = Field(default_factory=list)
    status: SubscriptionStatus = "active"
    usage: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)


class _PlansFile(_Strict):
    features: dict[str, _FeatureSpec]
    products: dict[str, _ProductSpec]
    customers: dict[str, _CustomerSpec] = Field(default_factory=dict)


def default_plans_path() -> Path:
    """The sample catalogue shipped inside the package."""
    return Path(str(resources.files("billing_ui.server").joinpath("plans.toml")))


def load_plans(path: str | Path | None = None) -> Plans:
    """Read and check a plans file (the packaged sample when ``path`` is ``None``)."""
    source = Path(path) if path is not None else default_plans_path()
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlansError(f"cannot read plans file {source}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlansError(f"{source} is not valid TOML: {exc}") from None
    return parse_plans(raw, source=str(source))


def parse_plans(raw: Mapping[str, Any], *, source: str = "plans") -> Plans:
    """Build :class:`Plans` from the decoded TOML document."""
    try:
        spec = _PlansFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlansError(f"{source}: {where}: {first['msg']}") from None
    try:
        return _build(spec)
    except InvalidInputError as exc:
        raise PlansError(f"{source}: {exc.field}: {exc.errors[0].message}") from None
    except ValueError as exc:
        raise PlansError(f"{source}: {exc}") from None


def _build(spec: _PlansFile) -> Plans:
    features: dict[str, Feature] = {}
    hard_default: dict[str, bool] = {}
    for key, f in spec.features.items():
        V.check_feature_key(key, f"features.{key}")
        reset = f.reset or ("month" if f.type == "usage_quota" else None)
        features[key] = Feature(key, f.title or key, f.type, reset, f.description)
        hard_default[key] = f.hard_limit

    products: dict[str, Product] = {}
    for pkey, p in spec.products.items():
        V.check_feature_key(pkey, f"products.{pkey}")
        grants: dict[str, Grant] = {}
        for fkey in features:  # catalogue order, so every listing is stable
            if fkey in p.features:
                where = f"products.{pkey}.features.{fkey}"
                grants[fkey] = _grant(features[fkey], p.features[fkey], hard_default[fkey], where)
        unknown = sorted(set(p.features) - set(features))
        if unknown:
            raise ValueError(f"products.{pkey}.features: unknown feature {unknown[0]!r}")
        products[pkey] = Product(pkey, p.name, p.description, grants)

    customers = []
    for cid, c in spec.customers.items():
        V.check_customer_id(cid, f"customers.{cid}")
        for pkey in c.products:
            if pkey not in products:
                raise ValueError(f"customers.{cid}.products: unknown product {pkey!r}")
        for fkey, qty in c.usage.items():
            if fkey not in features or features[fkey].type != "usage_quota":
                raise ValueError(f"customers.{cid}.usage: {fkey!r} is not a usage_quota feature")
            V.check_quantity(qty, f"customers.{cid}.usage.{fkey}")
        customers.append(SeedCustomer(cid, tuple(c.products), c.status, dict(c.usage)))
    return Plans(features, products, tuple(customers))


def _grant(feature: Feature, spec: _GrantSpec | bool, hard_default: bool, where: str) -> Grant:
    if isinstance(spec, bool):
        if not spec or feature.type != "boolean_flag":
            raise ValueError(f"{where}: `true` grants a boolean_flag; give a table for a limit")
        return Grant(feature, None, False)
    if feature.type == "boolean_flag":
        if spec.limit is not None or spec.unlimited or spec.hard_limit is not None:
            raise ValueError(
                f"{where}: a boolean_flag takes no limit (write `{feature.key} = true`)"
            )
        return Grant(feature, None, False)
    if (spec.limit is None) == (not spec.unlimited):
        raise ValueError(f"{where}: give exactly one of `limit = N` or `unlimited = true`")
    if spec.hard_limit is not None and feature.type != "usage_quota":
        raise ValueError(f"{where}: `hard_limit` applies to usage_quota features only")
    limit = None
    if spec.limit is not None:
        limit = V.quantity_to_micros(V.check_quantity(spec.limit, f"{where}.limit"))
    hard = hard_default if spec.hard_limit is None else spec.hard_limit
    return Grant(feature, limit, hard and not spec.unlimited)
