"""Benchmark: click a track button -> the meter shows the new count, in a real browser.

    python -m bench.click_to_meter [--smoke]

The repo's demo app runs under AppHarness (Reflex backend in this process, the dev frontend
under bun), headless Debian chromium drives it, and the local billing server runs as its own
process (SQLite on a temporary file), all on loopback. One customer on the Enterprise plan
(unlimited API calls) clicks "Call the API" ``--clicks`` times, one click at a time.

Each sample is measured inside the page: ``performance.now()`` when the button is clicked, a
MutationObserver on the meter's ``aria-valuenow``, and the next animation frame after it shows
the expected count (so "on screen", not just "in the DOM"). The path: websocket event -> the
``TrackUsageState.track`` background task -> ``POST /v1/usage/track`` -> the meter's state
patched from the server's answer -> delta over the websocket -> React render. The next click
starts when the button is idle again. Target: p50 <= 150 ms. The baseline, measured in the same
run against the same server: one ``POST /v1/usage/track`` from a keep-alive httpx client (the
part of the path that is the billing API itself); the ratio says how much the UI path adds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from selenium.webdriver.common.by import By

from bench._harness import cli, result
from bench.server_process import server_process

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the e2e helpers live in tests/e2e

from tests.e2e.browser import chromium, wait_for  # noqa: E402
from tests.e2e.demo import go, meter_value, running_demo, sign_in  # noqa: E402

KEY = "sk_test_billing_ui_local"
CUSTOMER = "bench_clicks"
FEATURE = "api_calls"
PACE_S = 0.25
"""At most 4 clicks a second: a person's pace, and under the per-session token bucket's
default 5 per second (at full speed clicks 31 and on are refused, as they should be)."""

# Resolves with the milliseconds from click to the first frame showing `expected`.
MEASURE_JS = """
const [selector, button_id, expected, done] = arguments;
const bar = document.querySelector(selector);
const button = document.getElementById(button_id);
const t0 = performance.now();
const seen = () => Number(bar.getAttribute("aria-valuenow")) === expected;
const observer = new MutationObserver(() => {
  if (seen()) {
    observer.disconnect();
    requestAnimationFrame(() => done(performance.now() - t0));
  }
});
observer.observe(bar, {attributes: true, attributeFilter: ["aria-valuenow"]});
button.click();
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def measure(clicks: int, warmup: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp, server_process(Path(tmp) / "billing.db") as url:
        httpx.put(
            f"{url}/v1/customers/{CUSTOMER}",
            json={"products": ["enterprise"]},
            headers={"Authorization": f"Bearer {KEY}"},
        ).raise_for_status()
        with running_demo(url, KEY, [CUSTOMER], refresh_interval=30) as demo, chromium() as page:
            sign_in(page, demo, CUSTOMER)
            go(page, "playground")
            selector = (
                f'[data-testid="usage-meter"][data-feature-key="{FEATURE}"] [role="progressbar"]'
            )
            wait_for(lambda: page.find_element(By.CSS_SELECTOR, selector), timeout=30)
            page.set_script_timeout(10)
            samples: list[float] = []
            for i in range(warmup + clicks):
                started = time.monotonic()
                before = meter_value(page, FEATURE)
                elapsed = page.execute_async_script(
                    MEASURE_JS, selector, f"track-{FEATURE}", before + 1
                )
                if i >= warmup:
                    samples.append(float(elapsed))
                # One click at a time: the next starts when this one's track has finished.
                wait_for(
                    lambda: (
                        page.find_element(By.ID, f"track-{FEATURE}").get_attribute("aria-busy")
                        in (None, "false")
                    ),
                    timeout=10,
                )
                time.sleep(max(0.0, started + PACE_S - time.monotonic()))  # the pace, not a wait
            final = meter_value(page, FEATURE)
        server_count = httpx.get(
            f"{url}/v1/usage/metrics",
            params={"customer_id": CUSTOMER},
            headers={"Authorization": f"Bearer {KEY}"},
        ).json()["metrics"]
        direct = direct_tracks(url, clicks)  # after the count check's snapshot
    consumed = next(m["consumed"] for m in server_count if m["feature_key"] == FEATURE)
    assert consumed == final == warmup + clicks, (consumed, final)
    return samples, direct


def direct_tracks(url: str, n: int) -> list[float]:
    """Milliseconds of ``n`` tracks posted straight to the server (after 5 warm-up ones)."""
    samples = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for i in range(n + 5):
            t = time.perf_counter()
            http.post(
                "/v1/usage/track",
                json={"customer_id": CUSTOMER, "feature_key": FEATURE, "quantity": 1},
            ).raise_for_status()
            if i >= 5:
                samples.append((time.perf_counter() - t) * 1000)
    return samples


def run(*, smoke: bool = False) -> dict[str, object]:
    clicks, warmup = (3, 1) if smoke else (50, 5)
    config = {"clicks": clicks, "warmup_clicks": warmup, "feature": FEATURE, "pace_s": PACE_S}
    print(f"click_to_meter: {config}", flush=True)
    samples, direct = measure(clicks, warmup)
    p50 = percentile(samples, 50)
    figures: dict[str, float] = {
        "click_to_meter_p50_ms": round(p50, 1),
        "click_to_meter_p95_ms": round(percentile(samples, 95), 1),
        "click_to_meter_min_ms": round(min(samples), 1),
        "click_to_meter_max_ms": round(max(samples), 1),
        "direct_track_p50_ms": round(statistics.median(direct), 2),
        "click_over_direct_track_p50": round(p50 / statistics.median(direct), 1),
    }
    goals = {"click_to_meter_p50_ms": "<= 150 ms"}
    return result("click_to_meter", config, figures, goals, {"click_to_meter_p50_ms": p50 <= 150})


if __name__ == "__main__":
    cli(run)
