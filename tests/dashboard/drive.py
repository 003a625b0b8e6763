"""What the dashboard tests share: where Chromium is, the world's names, and small steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.live import LiveServer

from lakecache.server import ControlPlane

CHROMIUM = Path("/usr/bin/chromium")
#: The flags seen to work for headless Chromium on this kind of machine (SERVICES.md).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "user-password-1"
DATASET = "chest-xray"
#: Files in many/ besides XSS_LAST: more than two pages of the file browser (200 a page).
MANY = 450
XSS_NAME = "<img src=x onerror=alert(1)>.txt"
XSS_LAST = 'zz <b title=x>bold & "quoted".txt'
XSS_DESCRIPTION = 'Meeting notes <script>alert("notes")</script>'


@dataclass
class Dash:
    url: str
    plane: ControlPlane
    server: LiveServer
    commits: dict[str, str] = field(default_factory=dict)


def log_in(page: Any, name: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    """Log in through the login form, and wait until the browser has left it."""
    page.goto("/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def shot(page: Any, artifacts: Path, name: str, *, full: bool = True) -> Path:
    """Save a screenshot as a test artifact (test-artifacts/dashboard/NAME.png)."""
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def image_loaded(page: Any, selector: str = "#preview") -> bool:
    """Whether the <img> has finished loading real pixels (naturalWidth > 0)."""
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete; }", arg=selector
    )
    width: int = page.eval_on_selector(selector, "img => img.naturalWidth")
    return width > 0


def overflow_x(page: Any) -> int:
    """How many CSS pixels the page is wider than the window (0: no horizontal scroll)."""
    return int(
        page.evaluate(
            "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - window.innerWidth"
        )
    )


def tab_to(page: Any, predicate: str, limit: int = 60) -> dict[str, Any]:
    """Press Tab until the focused element satisfies ``predicate`` (a JS function of it).

    Returns what was focused: tag, text, href and its outline (visible focus).
    """
    for _ in range(limit):
        page.keyboard.press("Tab")
        info: dict[str, Any] = page.evaluate(
            f"""() => {{
                const el = document.activeElement;
                const ok = ({predicate})(el);
                const style = getComputedStyle(el);
                return {{ok, tag: el.tagName, text: (el.textContent || "").trim(),
                         label: el.getAttribute("aria-label") || "",
                         href: el.getAttribute("href") || "",
                         outline: style.outlineStyle, outlineWidth: style.outlineWidth}};
            }}"""
        )
        if info["ok"]:
            return info
    raise AssertionError(f"no element matching {predicate} after {limit} presses of Tab")
