"""The /docs page: a getting-started walkthrough, and proto comments rendered, not shown raw.

Before: descriptions were set with textContent, so `session_id` showed its backticks, and the page
had no walkthrough at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

STATIC = Path(__file__).resolve().parents[2] / "gateway" / "static"

# A DOM just large enough for docs.js: elements with children, text nodes, textContent.
DOM_STUB = """
class Node {
  constructor(tag) { this.tag = tag; this.children = []; this.className = ""; this._text = ""; }
  append(...nodes) { this.children.push(...nodes); }
  set textContent(value) { this._text = value; this.children = []; }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
}
global.document = {
  createElement: (tag) => new Node(tag),
  createTextNode: (text) => { const n = new Node("#text"); n._text = text; return n; },
  addEventListener: () => {},
};
"""


def render(text: str) -> list[list[str]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = (
        DOM_STUB
        + (STATIC / "docs.js").read_text()
        + f"\nconst out = rich('p', {json.dumps(text)}, 'description');"
        + "\nconsole.log(JSON.stringify(out.children.map((c) => [c.tag, c.textContent])));"
    )
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(result.stdout)


def test_code_spans_become_code_elements_without_backticks() -> None:
    parts = render("Send `session_id` from\n`CreateSession`.")
    assert parts == [
        ["#text", "Send "],
        ["code", "session_id"],
        ["#text", " from "],
        ["code", "CreateSession"],
        ["#text", "."],
    ]


def test_markup_in_a_comment_stays_text() -> None:
    parts = render("a <img src=x onerror=alert(1)> `<b>`")
    assert parts == [["#text", "a <img src=x onerror=alert(1)> "], ["code", "<b>"]]
    assert "innerHTML" not in (STATIC / "docs.js").read_text()


def test_paragraphs_are_kept() -> None:
    parts = render("one\n\ntwo")
    assert [tag for tag, _ in parts] == ["#text", "br", "br", "#text"]


async def test_docs_page_has_the_getting_started_walkthrough(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert 'id="getting-started"' in page
    for needle in (
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/sessions",
        ":chat",
        ":stream",
        "accept: text/event-stream",
        "Newline-delimited JSON",
        "Which one?",
        "Last-Event-ID",
        "/runs/$RUN:stream",
    ):
        assert needle in page, needle
    # Served locally: no external scripts, styles or links.
    assert "http://" not in page and "https://" not in page
