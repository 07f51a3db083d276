"""Who the customer is: resolved on the server, never taken from the browser.

An app supplies a *resolver*: a callable that receives whatever context its framework has (in
Reflex, the handler's state, with its cookies, headers and the app's own auth state) and returns
the customer's id (BillingOS's ``external_user_id``) or ``None`` when nobody is signed in. It may
be sync or async. :func:`resolve_customer` calls it and validates what it returns, so a resolver
bug cannot smuggle an invalid id into a request.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from billing_ui.core.validation import check_customer_id

CustomerResolver: TypeAlias = Callable[[Any], "str | Awaitable[str | None] | None"]


class NoCustomerError(LookupError):
    """Nobody is signed in (the resolver returned ``None``): there is no usage to show."""


async def resolve_customer(resolver: CustomerResolver, context: Any) -> str:
    """Run ``resolver(context)`` (sync or async) and return a validated customer id.

    Raises :class:`NoCustomerError` when it returns ``None`` and
    :class:`~billing_ui.core.errors.InvalidInputError` when it returns something that is not a
    valid customer id.
    """
    value = resolver(context)
    if inspect.isawaitable(value):
        value = await value
    if value is None:
        raise NoCustomerError("no customer is signed in")
    return check_customer_id(value, field="customer")
