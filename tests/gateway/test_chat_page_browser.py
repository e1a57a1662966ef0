"""The chat page in headless Chromium against the real gateway and services."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import sign_up
from tests.support.gateway import GatewayProcess, offline_llm_stall

pytestmark = pytest.mark.browser

MARKUP = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


@pytest.fixture
def page(browser: Browser, mesh_gateway: GatewayProcess) -> Iterator[Page]:
    context = browser.new_context(base_url=mesh_gateway.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    foreign: list[str] = []
    dialogs: list[str] = []
    page.on(
        "request", lambda request: None if request.url.startswith(mesh_gateway.url) else foreign.append(request.url)
    )
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()
    assert foreign == [], "the page must make no external requests"
    assert dialogs == [], "nothing may pop up a dialog"


def xss_ran(page: Page) -> object:
    return page.evaluate("window.__xss")


def test_register_create_and_rename_a_session_with_markup_shown_as_text(page: Page) -> None:
    sign_up(page)
    page.click("#new-session")
    sessions = page.locator("#session-list li")
    expect(sessions).to_have_count(1)
    expect(page.locator("#composer")).to_be_visible()

    page.fill("#session-name", MARKUP)
    page.click("#rename-session")
    expect(sessions.first).to_have_text(MARKUP)
    assert page.locator("#session-list img, #session-list script").count() == 0
    assert xss_ran(page) is None

    page.reload()
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#session-list li").first).to_have_text(MARKUP)
    assert xss_ran(page) is None


def test_log_in_with_a_wrong_password_shows_the_error(page: Page) -> None:
    page.goto("/")
    page.fill("#email", f"nobody-{uuid.uuid4().hex[:8]}@example.com")
    page.fill("#password", "Wr0ng-password!")
    page.click("#login")
    expect(page.locator("#auth-error")).not_to_be_empty()
    expect(page.locator("#app")).to_be_hidden()


def test_docs_page_renders_the_operations_from_openapi(page: Page) -> None:
    document = page.request.get("/openapi.json").json()
    operations = sum(len(item) for item in document["paths"].values())
    page.goto("/docs")
    expect(page.locator("details.operation")).to_have_count(operations)
    expect(page.locator("#operations")).to_contain_text("/v1/sessions/{session_id}:stream")
    expect(page.locator("#schemas")).to_contain_text("agentmesh.sessions.v1.Session")


def test_send_a_message_see_it_stream_then_see_the_history_after_reload(
    page: Page, mesh_gateway: GatewayProcess
) -> None:
    llm_root = mesh_gateway.env.get("LLM_BASE_URL", "").removesuffix("/v1")
    if not llm_root:
        pytest.skip("no offline LLM in this mesh (a real LLM is configured); the pacing needs it")
    sign_up(page)
    page.click("#new-session")
    expect(page.locator("#composer")).to_be_visible()

    text = f"Hello {MARKUP}"
    page.fill("#message-input", text)
    # The offline model answers two tokens, pauses 2s, then finishes: the page must show the partial
    # answer while the turn is still running, i.e. render tokens as they stream in.
    with offline_llm_stall(llm_root, stall_s=2, after_tokens=2):
        page.click("#send")
        user_message = page.locator("#messages li.message.user .content").first
        expect(user_message).to_have_text(text)
        answer = page.locator("#messages li.message.assistant").last
        expect(answer.locator(".content")).not_to_be_empty()
        partial = answer.locator(".content").text_content()
        expect(answer).to_have_attribute("data-done", "false")
        expect(answer).to_have_attribute("data-done", "true", timeout=60_000)
    final_answer = answer.locator(".content").text_content()
    assert partial and final_answer and final_answer.startswith(partial) and len(final_answer) > len(partial)
    assert page.locator("#messages img, #messages script").count() == 0
    assert xss_ran(page) is None

    page.reload()
    expect(page.locator("#messages li.message")).to_have_count(2, timeout=20_000)
    expect(page.locator("#messages li.message.user .content")).to_have_text(text)
    expect(page.locator("#messages li.message.assistant .content")).to_have_text(final_answer)
    assert page.locator("#messages img, #messages script").count() == 0
    assert xss_ran(page) is None


# Every control of the signed-in page, each of which must be on screen and clickable at both widths.
CONTROLS = [
    "a[href='/docs']",
    "#logout",
    "#new-session",
    "#session-list li",
    "#session-name",
    "#rename-session",
    "#delete-session",
    "#message-input",
    "#send",
]


def assert_fits(page: Page, width: int) -> None:
    """No horizontal scroll; every control inside the viewport, not covered, and big enough to use."""
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width}px wide in a {width}px viewport"
    for selector in CONTROLS:
        control = page.locator(selector).first
        expect(control).to_be_visible()
        control.scroll_into_view_if_needed()
        box = control.bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, f"{selector} sticks out: {box}"
        assert box["width"] >= 24 and box["height"] >= 24, f"{selector} is too small to use: {box}"
        # Nothing else is drawn over its middle (what a tap there would hit).
        on_top = page.evaluate(
            """([selector, x, y]) => {
                const hit = document.elementFromPoint(x, y);
                return hit !== null && document.querySelector(selector).contains(hit);
            }""",
            [selector, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2 - page.evaluate("window.scrollY")],
        )
        assert on_top, f"{selector} is covered by another element"
    # The session name box keeps room for a name (at 390px it used to shrink to 16px).
    assert page.locator("#session-name").bounding_box()["width"] >= 120
    # The header stays one row: the title and every header control share one line.
    rows = {
        round(box["y"] + box["height"] / 2)
        for box in (page.locator(sel).bounding_box() for sel in (".topbar h1", "a[href='/docs']", "#logout"))
        if box is not None
    }
    assert max(rows) - min(rows) <= 4, f"the header wraps: centres at {sorted(rows)}"


@pytest.mark.parametrize("width,height", [(390, 844), (1280, 800)], ids=["phone-390", "desktop-1280"])
def test_the_page_fits_the_screen_at_phone_and_desktop_widths(
    browser: Browser, mesh_gateway: GatewayProcess, tmp_path: Path, width: int, height: int
) -> None:
    context = browser.new_context(base_url=mesh_gateway.url, viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto("/")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=tmp_path / f"sign-in-{width}.png", full_page=True)
        email = sign_up(page)
        # A long address must not push the header wider than the screen.
        assert email in page.locator("#whoami").text_content()
        page.click("#new-session")
        expect(page.locator("#composer")).to_be_visible()
        page.fill("#message-input", "Hello from a " + ("phone" if width < 500 else "desktop") + " " + "word " * 40)
        page.click("#send")
        answer = page.locator("#messages li.message.assistant").last
        expect(answer).to_have_attribute("data-done", "true", timeout=60_000)
        page.screenshot(path=tmp_path / f"chat-{width}.png", full_page=True)
        assert_fits(page, width)
        for message in page.locator("#messages li.message").all():
            box = message.bounding_box()
            assert box is not None and box["x"] + box["width"] <= width, f"a message sticks out: {box}"
        # Usable, not just visible: rename through the name box at this width.
        page.fill("#session-name", f"renamed at {width}px")
        page.click("#rename-session")
        expect(page.locator("#session-list li").first).to_have_text(f"renamed at {width}px")
        assert_fits(page, width)
    finally:
        context.close()


def test_the_page_links_a_favicon_that_is_served(page: Page) -> None:
    page.goto("/")
    href = page.locator("link[rel='icon']").get_attribute("href")
    assert href == "/static/favicon.svg"
    reply = page.request.get(href)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in reply.body()
