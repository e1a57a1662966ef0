"""Driving the chat page in headless Chromium (the `browser` fixture is in tests/gateway/conftest.py)."""

from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from tests.support.users import MeshUser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def sign_up(page: Page) -> str:
    """Registers a new user through the page's form; returns the email, once signed in."""
    email = f"page-{uuid.uuid4().hex[:10]}@example.com"
    page.goto("/")
    page.fill("#email", email)
    page.fill("#password", MeshUser.PASSWORD)
    page.click("#register")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#whoami")).to_have_text(email)
    return email
