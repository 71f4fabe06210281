// The chat page: a small useChat-like client of the AI SDK UI message stream (v1).
// It reads POST /api/chat as SSE, applies each chunk to the assistant message like the SDK's
// reader does, and renders with textContent or the escaping Markdown renderer only.
// Stop (button or Esc) posts /api/chats/{id}/cancel: the open stream then delivers what was
// kept and an `abort` chunk, and the message is marked interrupted with the reason.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };

  // -- the token: given once in the URL fragment (never sent to the server), kept for the tab --
  const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
  if (hashToken) { sessionStorage.setItem("llm-worker-token", hashToken); history.replaceState(null, "", location.pathname + location.search); }
  const token = sessionStorage.getItem("llm-worker-token");

  function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ "content-type": "application/json" }, opts.headers);
    if (token) opts.headers.authorization = "Bearer " + token;
    return fetch(path, opts);
  }
  async function apiJson(path, options) {
    const response = await api(path, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  const state = { chatId: null, messages: [], running: false, title: "New chat", chats: [] };

  function newChatId() {
    const d = new Date(), p = (n) => String(n).padStart(2, "0");
    return "web-" + d.getFullYear() + p(d.getMonth() + 1) + p(d.getDate()) + "-" + p(d.getHours()) + p(d.getMinutes()) + p(d.getSeconds()) +
      "-" + Math.random().toString(16).slice(2, 6);
  }

  // -- rendering -------------------------------------------------------------------------------
  let renderQueued = false;
  function scheduleRender() { if (!renderQueued) { renderQueued = true; requestAnimationFrame(() => { renderQueued = false; render(); }); } }

  function render() {
    const box = $("messages");
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    box.replaceChildren();
    if (!state.messages.length) box.append($("empty") || el("p", "empty", "Ask anything."));
    state.messages.forEach((message, index) => box.append(renderMessage(message, index === state.messages.length - 1)));
    $("chat-title").textContent = state.title;
    $("stop").hidden = !state.running;
    $("send").hidden = state.running;
    $("status").textContent = state.running ? "answering… (Esc stops)" : "";
    if (nearBottom) box.scrollTop = box.scrollHeight;
    renderChatList();
  }

  function renderMessage(message, isLast) {
    const node = el("article", "message " + message.role);
    node.dataset.id = message.id || "";
    const bubble = el("div", "bubble");
    node.append(bubble);
    if (message.role === "user") {
      bubble.textContent = message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
      return node;
    }
    const tools = {};
    for (const part of message.parts) {
      if (part.type === "text") {
        const text = el("div", "md text-part" + (part.state === "streaming" ? " cursor" : ""));
        text.innerHTML = window.llmMarkdown.render(part.text);  // escaped first, see markdown.js
        bubble.append(text);
      } else if (part.type === "reasoning") {
        const details = el("details", "reasoning");
        details.append(el("summary", null, part.state === "streaming" ? "Thinking…" : "Reasoning"), el("div", "text", part.text));
        bubble.append(details);
      } else if (part.type.startsWith("tool-")) {
        tools[part.toolCallId] = part;
        bubble.append(renderTool(part));
      } else if (part.type === "error") {
        bubble.append(el("div", "error-box", "Error: " + part.errorText));
      }
    }
    const mark = message.parts.find((p) => p.type === "data-interrupted");
    if (mark) {
      const box = el("div", "interrupted");
      const data = mark.data || {};
      box.append(el("span", "label", "Interrupted" + (data.reason ? ": " + data.reason : "") + (data.kind && data.kind !== "explicit" ? " (" + data.kind + ")" : "")));
      if (isLast && !state.running) {
        const again = el("button", "continue", "Continue");
        again.type = "button";
        again.addEventListener("click", () => send(null));
        box.append(again);
      }
      bubble.append(box);
    }
    if (!message.parts.some((p) => p.type === "text" || p.type.startsWith("tool-") || p.type === "reasoning") && state.running && isLast) {
      bubble.append(el("span", "cursor", ""));
    }
    return node;
  }

  function renderTool(part) {
    const details = el("details", "tool");
    details.open = part.state !== "output-available" || (part.resultStatus && part.resultStatus !== "ok");
    const summary = el("summary");
    const labels = { "input-streaming": "preparing", "input-available": "running", "output-available": "done", "output-error": "error" };
    let label = labels[part.state] || part.state;
    let cls = part.state === "input-available" || part.state === "input-streaming" ? "running" : part.state === "output-error" ? "error" : "";
    if (part.resultStatus === "interrupted" || part.resultStatus === "cancelled" || part.resultStatus === "abandoned") { label = part.resultStatus; cls = "stopped"; }
    if (part.state === "input-available" && !state.running) { label = "not finished"; cls = "stopped"; }
    summary.append(el("span", "name", part.type.slice(5)), el("span", "state " + cls, label));
    details.append(summary);
    const input = part.input !== undefined ? JSON.stringify(part.input) : part.rawInput || "";
    if (input) details.append(el("pre", "input", "→ " + input));
    if (part.state === "output-available") details.append(el("pre", "output", typeof part.output === "string" ? part.output : JSON.stringify(part.output, null, 2)));
    if (part.state === "output-error") details.append(el("pre", "output error", part.errorText || ""));
    return details;
  }

  function renderChatList() {
    const list = $("chat-list");
    list.replaceChildren();
    for (const chat of state.chats) {
      const item = el("li", chat.id === state.chatId ? "current" : "");
      const open = el("button", "open", chat.title || chat.id);
      open.type = "button";
      open.title = chat.id;
      open.addEventListener("click", () => openChat(chat.id));
      const del = el("button", "delete", "×");
      del.type = "button";
      del.setAttribute("aria-label", "Delete chat " + (chat.title || chat.id));
      del.addEventListener("click", () => deleteChat(chat.id));
      item.append(open);
      if (chat.running) item.append(el("span", "badge", "running"));
      item.append(del);
      list.append(item);
    }
  }

  // -- the UI message stream -------------------------------------------------------------------
  function applyChunk(message, chunk, open) {
    const parts = message.parts;
    const tool = (id) => parts.find((p) => p.toolCallId === id && p.type.startsWith("tool-"));
    switch (chunk.type) {
      case "start": if (chunk.messageId) message.id = chunk.messageId; break;
      case "start-step": parts.push({ type: "step-start" }); break;
      case "finish-step": open.text = {}; open.reasoning = {}; break;
      case "text-start": open.text[chunk.id] = { type: "text", text: "", state: "streaming" }; parts.push(open.text[chunk.id]); break;
      case "text-delta": open.text[chunk.id].text += chunk.delta; break;
      case "text-end": open.text[chunk.id].state = "done"; delete open.text[chunk.id]; break;
      case "reasoning-start": open.reasoning[chunk.id] = { type: "reasoning", text: "", state: "streaming" }; parts.push(open.reasoning[chunk.id]); break;
      case "reasoning-delta": open.reasoning[chunk.id].text += chunk.delta; break;
      case "reasoning-end": open.reasoning[chunk.id].state = "done"; delete open.reasoning[chunk.id]; break;
      case "tool-input-start": parts.push({ type: "tool-" + chunk.toolName, toolCallId: chunk.toolCallId, state: "input-streaming", rawInput: "" }); break;
      case "tool-input-delta": { const t = tool(chunk.toolCallId); if (t) t.rawInput += chunk.inputTextDelta; break; }
      case "tool-input-available": { let t = tool(chunk.toolCallId); if (!t) { t = { type: "tool-" + chunk.toolName, toolCallId: chunk.toolCallId }; parts.push(t); } t.state = "input-available"; t.input = chunk.input; break; }
      case "tool-input-error": { let t = tool(chunk.toolCallId); if (!t) { t = { type: "tool-" + chunk.toolName, toolCallId: chunk.toolCallId }; parts.push(t); } t.state = "output-error"; t.errorText = chunk.errorText; break; }
      case "tool-output-available": { const t = tool(chunk.toolCallId); if (t) { t.state = "output-available"; t.output = chunk.output; } break; }
      case "tool-output-error": { const t = tool(chunk.toolCallId); if (t) { t.state = "output-error"; t.errorText = chunk.errorText; } break; }
      case "data-tool-result": { const t = tool(chunk.data.toolCallId); if (t) t.resultStatus = chunk.data.status; break; }
      case "data-tool-status": break;
      case "error": parts.push({ type: "error", errorText: chunk.errorText }); break;
      case "abort": message.aborted = true; break;
      case "finish": break;
      default: if (chunk.type.startsWith("data-")) parts.push({ type: chunk.type, data: chunk.data });
    }
  }

  async function send(text) {
    if (state.running) return;
    if (!state.chatId) state.chatId = newChatId();
    localStorage.setItem("llm-worker-chat", state.chatId);
    if (text !== null) {
      state.messages.push({ id: "u-" + Date.now(), role: "user", parts: [{ type: "text", text: text }] });
      if (state.messages.length === 1) state.title = text.split(/\s+/).join(" ").slice(0, 80);
    }
    const assistant = { id: "", role: "assistant", parts: [] };
    state.messages.push(assistant);
    state.running = true;
    render();
    const body = { id: state.chatId, messages: state.messages.filter((m) => m !== assistant).map((m) => ({ id: m.id, role: m.role, parts: m.parts.filter((p) => p.type === "text") })),
      trigger: text === null ? "regenerate-message" : "submit-message", resume: text === null };
    const open = { text: {}, reasoning: {} };
    try {
      const response = await api("/api/chat", { method: "POST", body: JSON.stringify(body) });
      if (!response.ok) {
        const problem = await response.json().catch(() => ({}));
        throw new Error(problem.error || response.statusText);
      }
      loadChats();
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const payload = line.slice(6);
            if (payload === "[DONE]") continue;
            applyChunk(assistant, JSON.parse(payload), open);
          }
        }
        scheduleRender();
      }
    } catch (error) {
      assistant.parts.push({ type: "error", errorText: String(error.message || error) });
    } finally {
      for (const part of assistant.parts) if (part.state === "streaming") part.state = "done";
      state.running = false;
      render();
      loadChats();
      $("prompt").focus();
    }
  }

  async function stop() {
    if (!state.running || !state.chatId) return;
    $("status").textContent = "stopping…";
    try { await apiJson("/api/chats/" + encodeURIComponent(state.chatId) + "/cancel", { method: "POST", body: JSON.stringify({ reason: "stopped from the page" }) }); }
    catch (error) { $("status").textContent = "could not stop: " + error.message; }
  }

  // -- chats -----------------------------------------------------------------------------------
  async function loadChats() {
    try { state.chats = (await apiJson("/api/chats")).chats; } catch (error) { state.chats = []; $("status").textContent = error.message; }
    renderChatList();
  }

  async function openChat(id) {
    if (state.running) return;
    try {
      const chat = await apiJson("/api/chats/" + encodeURIComponent(id));
      state.chatId = id; state.messages = chat.messages; state.title = chat.title;
      localStorage.setItem("llm-worker-chat", id);
      render();
      if (chat.running) { $("status").textContent = "an answer is still running elsewhere"; }
    } catch (error) { $("status").textContent = error.message; }
  }

  async function deleteChat(id) {
    if (!confirm("Delete this chat and its history?")) return;
    try {
      await apiJson("/api/chats/" + encodeURIComponent(id), { method: "DELETE" });
      if (id === state.chatId) newChat();
      loadChats();
    } catch (error) { $("status").textContent = error.message; }
  }

  function newChat() {
    if (state.running) return;
    state.chatId = null; state.messages = []; state.title = "New chat";
    localStorage.removeItem("llm-worker-chat");
    render();
    $("prompt").focus();
  }

  // -- wiring ----------------------------------------------------------------------------------
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value;
    if (!text.trim() || state.running) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && state.running) { event.preventDefault(); stop(); } });

  loadChats();
  const last = new URLSearchParams(location.search).get("chat") || localStorage.getItem("llm-worker-chat");
  if (last) openChat(last); else render();
  $("prompt").focus();
})();
