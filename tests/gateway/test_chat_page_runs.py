"""The chat page and durable runs, in headless Chromium: a reload mid-answer picks the
answer up again, Stop cancels the run on the server, a message sent during an answer is
queued behind it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.support.browser import sign_up
from tests.support.gateway import GatewayProcess, offline_llm_stall
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Browser, mesh_gateway: GatewayProcess) -> Iterator[Page]:
    context = browser.new_context(base_url=mesh_gateway.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture
def llm_root(mesh_gateway: GatewayProcess) -> str:
    return mesh_gateway.env["LLM_BASE_URL"].removesuffix("/v1")


def new_chat(page: Page) -> None:
    sign_up(page)
    page.click("#new-session")
    expect(page.locator("#composer")).to_be_visible()


def test_reloading_mid_answer_shows_the_answer_continuing(page: Page, llm_root: str) -> None:
    new_chat(page)
    with offline_llm_stall(llm_root, stall_s=3, after_tokens=2):
        page.fill("#message-input", "Tell me about the sea")
        page.click("#send")
        answer = page.locator("#messages li.message.assistant").last
        expect(answer.locator(".content")).not_to_be_empty()
        expect(answer).to_have_attribute("data-done", "false")

        page.reload()

        resumed = page.locator("#messages li.message.assistant").last
        expect(page.locator("#messages li.message.user .content").last).to_have_text("Tell me about the sea")
        expect(resumed.locator(".content")).not_to_be_empty()
        expect(resumed).to_have_attribute("data-done", "true", timeout=60_000)
    final = resumed.locator(".content").text_content() or ""
    page.reload()
    expect(page.locator("#messages li.message")).to_have_count(2)
    expect(page.locator("#messages li.message.assistant .content")).to_have_text(final)


def test_stop_cancels_the_run_and_the_answer_is_marked_stopped(page: Page, llm_root: str) -> None:
    new_chat(page)
    with offline_llm_stall(llm_root, stall_s=30, after_tokens=2):
        page.fill("#message-input", "Tell me a long story")
        page.click("#send")
        answer = page.locator("#messages li.message.assistant").last
        expect(answer.locator(".content")).not_to_be_empty()
        expect(page.locator("#stop")).to_be_visible()

        page.click("#stop")

        expect(answer).to_have_attribute("data-done", "stopped")
        expect(page.locator("#stop")).to_be_hidden()
    page.reload()
    kept = page.locator("#messages li.message.assistant").last
    expect(kept).to_have_attribute("data-done", "stopped")
    expect(kept.locator(".content")).not_to_be_empty()


def test_a_message_sent_during_an_answer_is_queued_behind_it(page: Page, llm_root: str) -> None:
    new_chat(page)
    with offline_llm_stall(llm_root, stall_s=2, after_tokens=2):
        page.fill("#message-input", "My name is Ada")
        page.click("#send")
        expect(page.locator("#messages li.message.assistant").last.locator(".content")).not_to_be_empty()
        page.fill("#message-input", "what is my name?")
        page.click("#send")
        answers = page.locator("#messages li.message.assistant")
        expect(answers).to_have_count(2)
        expect(answers.nth(0)).to_have_attribute("data-done", "true", timeout=60_000)
        expect(answers.nth(1)).to_have_attribute("data-done", "true", timeout=60_000)
    assert "Ada" in (answers.nth(1).locator(".content").text_content() or "")
    expect(page.locator("#chat-error")).to_be_empty()


def test_after_a_reload_each_turn_shows_its_tool_call_memory_and_metadata(page: Page) -> None:
    new_chat(page)
    page.fill("#message-input", "My name is Ada and what is 6*7")
    page.click("#send")
    answer = page.locator("#messages li.message.assistant").last
    expect(answer).to_have_attribute("data-done", "true")

    # The fact reaches long-term memory through the outbox; a later turn of a new session uses it.
    def remembered() -> Locator:
        page.click("#new-session")
        page.fill("#message-input", "what is my name?")
        page.click("#send")
        answer = page.locator("#messages li.message.assistant").last
        expect(answer).to_have_attribute("data-done", "true")
        assert answer.locator(".turn-memory").count(), "the turn used no long-term memory yet"
        return answer

    answer = eventually_sync(remembered, timeout_s=30, interval_s=0.25)
    expect(answer.locator(".turn-memory")).to_contain_text("Ada")
    live_meta = answer.locator(".meta").text_content()

    page.reload()

    reloaded = page.locator("#messages li.message.assistant").last
    expect(reloaded.locator(".turn-memory")).to_contain_text("Ada")
    expect(reloaded.locator(".meta")).to_have_text(live_meta or "")
    page.locator("#session-list li").last.click()  # the first session: the calculator turn
    expect(page.locator("#messages li.message.tool").first).to_contain_text("calculator(")
    expect(page.locator("#messages li.message.tool").nth(1)).to_contain_text("calculator -> 42")
    expect(page.locator("#messages li.message.assistant .meta")).to_contain_text("tokens")
