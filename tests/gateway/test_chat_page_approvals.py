"""The chat page and human in the loop, in headless Chromium: a tool call waiting for
approval is shown with Approve / Edit / Reject, a question with an answer box, and the
same run's answer continues after the decision."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from meshctl.mesh import Mesh
from tests.support.browser import sign_up
from tests.support.gateway import GatewayProcess, gateway_process

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def approvals_gateway(mesh: Mesh, mesh_env: dict[str, str]) -> Iterator[GatewayProcess]:
    agent = mesh.start_service(
        "agent", instance="-page-approvals", TOOLS_REQUIRE_APPROVAL="calculator", MEMORY_ENABLED="false"
    )
    env = {key: value for key, value in mesh_env.items() if key != "GATEWAY_METRICS_PORT"}
    try:
        with gateway_process({**env, "AGENT_ADDR": agent.addr}) as gateway:
            yield gateway
    finally:
        agent.stop()


@pytest.fixture
def page(browser: Browser, approvals_gateway: GatewayProcess) -> Iterator[Page]:
    context = browser.new_context(base_url=approvals_gateway.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def new_chat(page: Page) -> None:
    sign_up(page)
    page.click("#new-session")
    expect(page.locator("#composer")).to_be_visible()


def test_a_tool_call_is_approved_on_the_page_and_the_answer_continues(page: Page) -> None:
    new_chat(page)
    page.fill("#message-input", "what is 17*23")
    page.click("#send")

    approval = page.locator("#messages li.interrupt")
    expect(approval).to_contain_text("calculator")
    expect(approval.locator(".interrupt-input")).to_have_value('{"expression": "17*23"}')
    answer = page.locator("#messages li.message.assistant").last
    expect(answer).to_have_attribute("data-done", "paused")
    approval.locator("button[data-decision='DECISION_APPROVE']").click()

    expect(answer).to_have_attribute("data-done", "true")
    expect(answer.locator(".content")).to_contain_text("391")
    expect(approval).to_have_attribute("data-decided", "DECISION_APPROVE")
    expect(page.locator("#chat-error")).to_be_empty()


def test_an_edited_call_runs_with_the_edited_arguments(page: Page) -> None:
    new_chat(page)
    page.fill("#message-input", "what is 17*23")
    page.click("#send")
    field = page.locator("#messages li.interrupt .interrupt-input")
    expect(field).to_be_visible()

    field.fill('{"expression": "17*24"}')
    page.locator("#messages li.interrupt button[data-decision='DECISION_EDIT']").click()

    answer = page.locator("#messages li.message.assistant").last
    expect(answer).to_have_attribute("data-done", "true")
    expect(answer.locator(".content")).to_contain_text("408")


def test_a_question_is_answered_in_its_box(page: Page) -> None:
    new_chat(page)
    page.fill("#message-input", "Please ask me my favourite colour first")
    page.click("#send")
    question = page.locator("#messages li.interrupt")
    expect(question).to_contain_text("What is your favourite colour?")

    question.locator(".interrupt-input").fill("blue")
    question.locator("button[data-decision='DECISION_ANSWER']").click()

    answer = page.locator("#messages li.message.assistant").last
    expect(answer).to_have_attribute("data-done", "true")
    expect(answer.locator(".content")).to_contain_text("blue")
