// The agentmesh chat page. Plain browser JavaScript, no build step. Every piece of user or model
// text goes into the page through textContent, never innerHTML, so markup in a message is shown
// as the literal characters it is and can never run.
"use strict";

const store = window.sessionStorage;
const $ = (id) => document.getElementById(id);

const state = {
  sessionId: store.getItem("agentmesh.session") || "",
  // Runs this page follows, by run id: {sessionId, controller}. A run outlives the page: a
  // reload finds it again through ListRuns and follows it from its first event.
  following: new Map(),
  loads: 0, // increases with every history load; stale loads are dropped
};

function tokens() {
  return { access: store.getItem("agentmesh.access") || "", refresh: store.getItem("agentmesh.refresh") || "" };
}

function saveTokens(pair) {
  store.setItem("agentmesh.access", pair.access_token);
  store.setItem("agentmesh.refresh", pair.refresh_token);
}

function clearAuth() {
  for (const key of ["agentmesh.access", "agentmesh.refresh", "agentmesh.session", "agentmesh.email"]) {
    store.removeItem(key);
  }
  state.sessionId = "";
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function parseError(response) {
  try {
    return new ApiError(response.status, await response.json());
  } catch {
    return new ApiError(response.status, null);
  }
}

// One request with the bearer token; on 401 tries a single refresh and repeats it once.
async function api(method, path, body, { retry = true, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, signal };
  const access = tokens().access;
  if (access) init.headers.Authorization = `Bearer ${access}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401 && retry && (await refreshTokens())) {
    return api(method, path, body, { retry: false, headers, signal });
  }
  return response;
}

async function apiJson(method, path, body) {
  const response = await api(method, path, body);
  if (!response.ok) throw await parseError(response);
  return response.json();
}

async function refreshTokens() {
  const refresh = tokens().refresh;
  if (!refresh) return false;
  const response = await fetch("/v1/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ refresh_token: refresh }),
  });
  if (!response.ok) {
    clearAuth();
    showAuth();
    return false;
  }
  saveTokens(await response.json());
  return true;
}

function showError(id, error) {
  $(id).textContent = error ? String(error.message || error) : "";
}

// ---- sign in ----

async function authenticate(kind) {
  showError("auth-error", null);
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || !password) {
    showError("auth-error", "Enter an email and a password.");
    return;
  }
  try {
    const response = await fetch(`/v1/auth/${kind}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ email, password }),
    });
    if (!response.ok) throw await parseError(response);
    const body = await response.json();
    saveTokens(kind === "register" ? body.tokens : body);
    store.setItem("agentmesh.email", email);
    $("password").value = "";
    await showApp();
  } catch (error) {
    showError("auth-error", error);
  }
}

function showAuth() {
  $("auth").hidden = false;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("whoami").textContent = "";
}

async function showApp() {
  $("auth").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = store.getItem("agentmesh.email") || "";
  await loadSessions();
}

async function logout() {
  const refresh = tokens().refresh;
  if (refresh) {
    try {
      await api("POST", "/v1/auth/logout", { refresh_token: refresh }, { retry: false });
    } catch {
      // Signing out locally matters more than telling the server.
    }
  }
  clearAuth();
  $("messages").replaceChildren();
  showAuth();
}

// ---- sessions ----

async function loadSessions() {
  try {
    const body = await apiJson("GET", "/v1/sessions?page_size=100");
    renderSessions(body.sessions || []);
    const known = (body.sessions || []).some((s) => s.session_id === state.sessionId);
    if (known) {
      await selectSession(state.sessionId);
    } else {
      state.sessionId = "";
      renderConversation(null);
    }
  } catch (error) {
    showError("chat-error", error);
  }
}

function renderSessions(sessions) {
  const list = $("session-list");
  list.replaceChildren();
  for (const session of sessions) {
    const item = document.createElement("li");
    item.textContent = session.name || "Untitled session";
    item.dataset.sessionId = session.session_id;
    item.dataset.name = session.name || "";
    item.tabIndex = 0;
    item.setAttribute("aria-current", String(session.session_id === state.sessionId));
    item.addEventListener("click", () => selectSession(session.session_id));
    item.addEventListener("keydown", (event) => {
      if (event.key === "Enter") selectSession(session.session_id);
    });
    list.append(item);
  }
}

async function createSession() {
  showError("chat-error", null);
  try {
    const body = await apiJson("POST", "/v1/sessions", { name: `Chat ${new Date().toLocaleString()}` });
    state.sessionId = body.session.session_id;
    store.setItem("agentmesh.session", state.sessionId);
    await loadSessions();
  } catch (error) {
    showError("chat-error", error);
  }
}

async function selectSession(sessionId) {
  state.sessionId = sessionId;
  const load = ++state.loads;
  store.setItem("agentmesh.session", sessionId);
  for (const item of $("session-list").children) {
    item.setAttribute("aria-current", String(item.dataset.sessionId === sessionId));
    if (item.dataset.sessionId === sessionId) $("session-name").value = item.dataset.name;
  }
  renderConversation(sessionId);
  try {
    const body = await apiJson("GET", `/v1/sessions/${encodeURIComponent(sessionId)}/messages`);
    // A later selection (or a newer load of this one) owns the pane now.
    if (load !== state.loads) return;
    const list = $("messages");
    list.replaceChildren();
    for (const message of body.messages || []) {
      const item = messageElement(message.role, message.content);
      if (message.role === "assistant") {
        // The turn as it looked live: its tool calls and results, the memory it used, its numbers.
        for (const use of message.tool_uses || []) {
          const call = use.call || {};
          list.append(messageElement("tool", `${call.name}(${call.arguments_json || ""})`));
          if (use.decision) addMeta(list.lastChild, use.decision);
          if (use.decision !== "reject") list.append(messageElement("tool", `${call.name} -> ${use.result || ""}`));
        }
        if ((message.memory_facts || []).length) showMemory(item, message.memory_facts);
        if (message.model) addMeta(item, turnMeta(message.model, message.usage, message.latency_ms));
        if (message.interrupted) markStopped(item);
      }
      list.append(item);
    }
    list.scrollTop = list.scrollHeight;
    // The composer appears only now, so a message sent at once is never wiped by the history load.
    $("composer").hidden = false;
    await resumeActiveRuns(sessionId, load);
  } catch (error) {
    showError("chat-error", error);
  }
}

// Runs still pending or running on the session (this page was reloaded mid-answer, or they were
// started elsewhere): show each one's question and follow it from its first event.
async function resumeActiveRuns(sessionId, load) {
  const body = await apiJson("GET", `/v1/sessions/${encodeURIComponent(sessionId)}/runs?page_size=10`);
  if (load !== state.loads) return;
  const waiting = ["RUN_STATUS_PENDING", "RUN_STATUS_RUNNING", "RUN_STATUS_INTERRUPTED"];
  const active = (body.runs || []).filter((run) => waiting.includes(run.status));
  for (const run of active.reverse()) {
    if (state.following.has(run.run_id)) continue;
    const turn = startTurn((run.input && run.input.content) || "");
    followRun(turn, run.run_id);
  }
}

function renderConversation(sessionId) {
  // Streams of the pane being replaced stop here; their runs go on and are picked up
  // again (resumeActiveRuns) when their session is shown.
  for (const turn of state.following.values()) turn.controller.abort();
  state.following.clear();
  $("stop").hidden = true;
  const active = Boolean(sessionId);
  $("session-bar").hidden = !active;
  $("composer").hidden = true;
  $("empty-state").hidden = active;
  $("messages").replaceChildren();
}

async function renameSession() {
  const name = $("session-name").value.trim();
  if (!state.sessionId || !name) return;
  try {
    await apiJson("PATCH", `/v1/sessions/${encodeURIComponent(state.sessionId)}`, { name });
    await loadSessions();
  } catch (error) {
    showError("chat-error", error);
  }
}

async function deleteSession() {
  if (!state.sessionId) return;
  try {
    const response = await api("DELETE", `/v1/sessions/${encodeURIComponent(state.sessionId)}`);
    if (!response.ok) throw await parseError(response);
    state.sessionId = "";
    store.removeItem("agentmesh.session");
    await loadSessions();
  } catch (error) {
    showError("chat-error", error);
  }
}

// ---- messages ----

function messageElement(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role === "user" ? "user" : role === "tool" ? "tool" : "assistant"}`;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  item.append(label, content);
  return item;
}

function addMeta(item, text) {
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = text;
  item.append(meta);
}

// Splits a Server-Sent Events byte stream into events; `onEvent(name, data)` per complete event.
function sseParser(onEvent) {
  let buffer = "";
  return (chunk) => {
    buffer += chunk;
    let boundary;
    while ((boundary = buffer.search(/\r?\n\r?\n/)) !== -1) {
      const raw = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
      let name = "message";
      const data = [];
      for (const line of raw.split(/\r?\n/)) {
        if (line.startsWith(":")) continue; // heartbeat comment
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  };
}

// The long-term memory a turn was given, shown with that turn's answer.
function showMemory(answer, facts) {
  const box = document.createElement("details");
  box.className = "turn-memory";
  const summary = document.createElement("summary");
  summary.textContent = `Memory used (${facts.length})`;
  const list = document.createElement("ul");
  for (const fact of facts) {
    const item = document.createElement("li");
    item.textContent = fact;
    list.append(item);
  }
  box.append(summary, list);
  answer.append(box);
}

function turnMeta(model, usage, latencyMs) {
  const tokens = usage || {};
  return `${model || ""} · ${tokens.prompt_tokens || 0}+${tokens.completion_tokens || 0} tokens · ${latencyMs || 0} ms`;
}

function markStopped(item) {
  item.dataset.done = "stopped";
  addMeta(item, "stopped");
}

function applyChatEvent(event, turn) {
  if (event.run_id && !turn.runId) turn.follow(event.run_id);
  if (event.seq) turn.lastSeq = event.seq;
  if (event.interrupt) {
    showInterrupt(event.interrupt, turn);
    if (event.interrupt.last) {
      turn.answer.dataset.done = "paused";
      turn.status("waiting for your decision");
    }
  } else if (event.started) {
    turn.status(`thinking (${event.started.model || "model"})`);
  } else if (event.token) {
    turn.status(""); // the answer itself shows progress now
    turn.answer.querySelector(".content").textContent += event.token.text || "";
  } else if (event.tool_call) {
    const call = event.tool_call;
    turn.list.insertBefore(messageElement("tool", `${call.name}(${call.arguments_json || ""})`), turn.answer);
  } else if (event.tool_result) {
    const result = event.tool_result;
    turn.list.insertBefore(messageElement("tool", `${result.name} -> ${result.content || ""}`), turn.answer);
  } else if (event.memory) {
    showMemory(turn.answer, event.memory.facts || []);
  } else if (event.completed) {
    const done = event.completed;
    const content = turn.answer.querySelector(".content");
    if (done.message && done.message.content && !content.textContent) content.textContent = done.message.content;
    addMeta(turn.answer, turnMeta(done.model, done.usage, done.latency_ms));
    turn.answer.dataset.done = "true";
  } else if (event.error) {
    if (event.error.reason === "RUN_CANCELLED") markStopped(turn.answer);
    else turn.fail(event.error.message || "the turn failed");
  }
}

// A paused run: the tool call to approve (its arguments editable) or the question to answer.
function showInterrupt(interrupt, turn) {
  const box = document.createElement("li");
  box.className = "message interrupt";
  box.dataset.interruptId = interrupt.interrupt_id;
  const title = document.createElement("span");
  title.className = "role";
  const body = document.createElement("div");
  body.className = "content";
  const actions = document.createElement("div");
  actions.className = "row";
  const question = interrupt.kind === "INTERRUPT_KIND_QUESTION";
  const field = document.createElement(question ? "input" : "textarea");
  field.className = "interrupt-input";
  const buttons = [];
  if (question) {
    title.textContent = "question";
    body.textContent = interrupt.question || "";
    field.setAttribute("aria-label", "Your answer");
    buttons.push(["Answer", "DECISION_ANSWER", ""], ["Skip", "DECISION_REJECT", "secondary"]);
  } else {
    const call = interrupt.tool_call || {};
    title.textContent = "approval";
    body.textContent = `${call.name} wants to run with:`;
    field.value = call.arguments_json || "{}";
    field.rows = 2;
    field.setAttribute("aria-label", "Tool arguments");
    buttons.push(["Approve", "DECISION_APPROVE", ""], ["Edit", "DECISION_EDIT", "secondary"], ["Reject", "DECISION_REJECT", "danger"]);
  }
  for (const [label, decision, style] of buttons) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.dataset.decision = decision;
    if (style) button.className = style;
    button.addEventListener("click", () => decideInterrupt(turn, interrupt, decision, field.value, box));
    actions.append(button);
  }
  box.append(title, body, field, actions);
  turn.list.insertBefore(box, turn.answer);
}

async function decideInterrupt(turn, interrupt, decision, value, box) {
  const body = { interrupt_id: interrupt.interrupt_id, decision };
  if (decision === "DECISION_EDIT") body.arguments_json = value;
  if (decision === "DECISION_ANSWER") body.answer = value;
  for (const button of box.querySelectorAll("button")) button.disabled = true;
  try {
    const run = await apiJson(
      "POST",
      `/v1/sessions/${encodeURIComponent(turn.sessionId)}/runs/${encodeURIComponent(turn.runId)}:resume`,
      body,
    );
    box.dataset.decided = decision;
    addMeta(box, decision.replace("DECISION_", "").toLowerCase());
    // Once every interrupt of the pause is decided the run goes on: follow it from where it stopped.
    if (run.status !== "RUN_STATUS_INTERRUPTED" && turn.answer.dataset.done === "paused") {
      turn.answer.dataset.done = "false";
      followRun(turn, turn.runId, turn.lastSeq);
    }
  } catch (error) {
    for (const button of box.querySelectorAll("button")) button.disabled = false;
    showError("chat-error", error);
  }
}

// The user's message and an empty answer that the run's events fill in.
function startTurn(text) {
  const list = $("messages");
  list.append(messageElement("user", text));
  const answer = messageElement("assistant", "");
  answer.dataset.done = "false";
  list.append(answer);
  list.scrollTop = list.scrollHeight;
  const turn = {
    list,
    answer,
    runId: "",
    lastSeq: 0,
    sessionId: state.sessionId,
    controller: new AbortController(),
    status: (text) => { $("status").textContent = text; },
    fail: (message) => { showError("chat-error", message); answer.dataset.done = "error"; },
    follow: (runId) => {
      turn.runId = runId;
      state.following.set(runId, turn);
      $("stop").hidden = false;
    },
  };
  return turn;
}

// Relays an SSE response into the turn; returns once the stream ends.
async function relay(response, turn) {
  if (!response.ok) throw await parseError(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const feed = sseParser((name, data) => {
    const payload = JSON.parse(data);
    // A run that ended with an error event (a stop) also ends its stream with that status:
    // the answer already says how it ended.
    const ended = ["true", "stopped"].includes(turn.answer.dataset.done);
    if (name === "error") {
      if (!ended) turn.fail(payload.message || "the stream failed");
    } else applyChatEvent(payload, turn);
    turn.list.scrollTop = turn.list.scrollHeight;
  });
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    feed(value);
  }
}

function endTurn(turn) {
  if (turn.answer.dataset.done === "paused") return; // still this page's run: the decision resumes it
  state.following.delete(turn.runId);
  if (turn.answer.dataset.done === "false" && !turn.controller.signal.aborted) {
    turn.fail("the answer stream ended early; reload the page to pick it up again");
  }
  if (![...state.following.values()].some((t) => t.sessionId === state.sessionId)) {
    $("stop").hidden = true;
    turn.status("");
  }
}

async function followRun(turn, runId, afterSeq = 0) {
  turn.follow(runId);
  turn.status(afterSeq ? "" : "reconnecting");
  try {
    const response = await api(
      "GET",
      `/v1/sessions/${encodeURIComponent(turn.sessionId)}/runs/${encodeURIComponent(runId)}:stream`,
      undefined,
      {
        headers: { Accept: "text/event-stream", ...(afterSeq ? { "Last-Event-ID": String(afterSeq) } : {}) },
        signal: turn.controller.signal,
      },
    );
    await relay(response, turn);
  } catch (error) {
    if (error.name !== "AbortError") turn.fail(error.message || String(error));
  } finally {
    endTurn(turn);
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value;
  if (!text.trim() || !state.sessionId) return;
  showError("chat-error", null);
  input.value = "";
  const turn = startTurn(text);
  turn.status("sending");
  try {
    // A message sent while an answer is still coming is queued behind it (ENQUEUE), not refused.
    const response = await api(
      "POST",
      `/v1/sessions/${encodeURIComponent(state.sessionId)}:stream`,
      { message: { role: "user", content: text }, multitask_strategy: "ENQUEUE" },
      { headers: { Accept: "text/event-stream" }, signal: turn.controller.signal },
    );
    await relay(response, turn);
  } catch (error) {
    if (error.name !== "AbortError") turn.fail(error.message || String(error));
  } finally {
    endTurn(turn);
  }
}

// Stop cancels the session's runs on the server (keeping what they said), whoever started them.
async function stopRuns() {
  const session = state.sessionId;
  const runs = [...state.following.values()].filter((turn) => turn.sessionId === session && turn.runId);
  for (const turn of runs) {
    try {
      await apiJson(
        "POST",
        `/v1/sessions/${encodeURIComponent(session)}/runs/${encodeURIComponent(turn.runId)}:cancel`,
        { action: "INTERRUPT" },
      );
    } catch (error) {
      showError("chat-error", error);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    authenticate("login");
  });
  $("register").addEventListener("click", () => authenticate("register"));
  $("logout").addEventListener("click", logout);
  $("new-session").addEventListener("click", createSession);
  $("rename-session").addEventListener("click", renameSession);
  $("delete-session").addEventListener("click", deleteSession);
  $("composer").addEventListener("submit", sendMessage);
  $("stop").addEventListener("click", stopRuns);
  $("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) $("composer").requestSubmit();
  });
  if (tokens().access) showApp();
  else showAuth();
});
