"""The chat page in headless Chromium against the real gateway and services."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.gateway.conftest import GatewayProcess, offline_llm_stall

pytestmark = pytest.mark.browser

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
PASSWORD = "Corr3ct-Horse!"
ROOT = Path(__file__).resolve().parents[2]
MARKUP = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'

requires_agent = pytest.mark.skipif(
    not (ROOT / "services" / "agent" / "server.py").exists(),
    reason="services/agent/server.py does not exist yet: sending a message needs the agent service",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


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


def sign_up(page: Page) -> str:
    email = f"page-{uuid.uuid4().hex[:10]}@example.com"
    page.goto("/")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#register")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#whoami")).to_have_text(email)
    return email


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


@requires_agent
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
