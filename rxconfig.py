"""Reflex configuration of the demo app (``make demo`` = ``reflex run`` from the repo root)."""

import billing_ui.server_memory

# Before `import reflex`: the server's allocator reads it when the server starts.
billing_ui.server_memory.return_memory_after_bursts()

import reflex as rx  # noqa: E402 - after the allocator setting above

config = rx.Config(
    app_name="billing_ui",
    plugins=[
        # The components use Radix Themes tokens only; this is the demo's look.
        rx.plugins.RadixThemesPlugin(
            theme=rx.theme(accent_color="indigo", gray_color="slate", radius="large")
        ),
    ],
    # The sitemap plugin only warns without a deploy URL; the demo has no sitemap.
    disable_plugins=[rx.plugins.SitemapPlugin],
    telemetry_enabled=False,
    # Prod builds otherwise pin a sticky badge over the bottom-right of every page.
    show_built_with_reflex=False,
)
