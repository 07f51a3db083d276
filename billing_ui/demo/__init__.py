"""The demo app: a small SaaS ("Acme Cloud") whose pages compose the billing components.

One module per route (``sign_in``, ``dashboard``, ``playground``, ``security``), a shared page
shell (``layout``), the demo's notion of a signed-in customer (``session``), its configuration
from the environment (``config``) and the embedded billing server it starts when no
``BILLINGOS_API_URL`` is given (``embedded``). ``billing_ui/billing_ui.py`` assembles them.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)
