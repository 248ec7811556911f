// Chat page for the Vietnamese articles QA service. Plain JavaScript, no build step, offline.
// Streams POST /v1/ask (Server-Sent Events read with fetch, since EventSource cannot POST),
// shows the evidence as soon as it arrives, renders [n] markers as citation buttons, and opens
// the cited article (GET /v1/documents/{name}) with the cited span highlighted. For a
// converted file (HTML, PDF, DOCX: `text_source` "extracted") that endpoint serves the text
// extracted at indexing, which the offsets point into; a PDF citation also names its page.
// Every string from the server or the user is put in the page as text, never as HTML.
"use strict";

const MAX_HISTORY = 20; // earlier turns sent with a follow-up (the API accepts at most 20)
const SNIPPET_CHARS = 260;
const MARKER = /\[(\d+(?:\s*[,;]\s*\d+)*)\]/g;

const $ = (id) => document.getElementById(id);
const ui = {
  conversation: $("conversation"),
  welcome: $("welcome"),
  form: $("ask-form"),
  question: $("question"),
  send: $("send"),
  status: $("status"),
  newChat: $("new-chat"),
  corpusInfo: $("corpus-info"),
  panel: $("source-panel"),
  panelTitle: $("source-title"),
  panelMeta: $("source-meta"),
  panelNote: $("source-note"),
  panelBody: $("source-body"),
  panelClose: $("source-close"),
};

const state = {
  history: [], // [{role: "user"|"assistant", content}], sent as `history`
  controller: null, // AbortController of the answer being streamed
  docs: new Map(), // name -> Promise<document>
  panelRequest: 0,
  lastTrigger: null,
};

// --- small DOM helpers (text only) ----------------------------------------------------------
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function announce(message) {
  ui.status.textContent = message;
}

function prefersReducedMotion() {
  return window.matchMedia("(prefers-reduced-motion: reduce)").matches;
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toLocaleString("vi-VN", { maximumFractionDigits: 1 })} s`;
}

function snippet(text) {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > SNIPPET_CHARS ? `${flat.slice(0, SNIPPET_CHARS).trimEnd()}…` : flat;
}

// The API counts offsets in Unicode code points (Python strings); JavaScript strings count
// UTF-16 units. They differ only past characters outside the BMP (emoji and the like).
function unitIndex(text, codePoints) {
  if (!/[\uD800-\uDFFF]/.test(text)) return Math.min(codePoints, text.length);
  let units = 0;
  let count = 0;
  for (const ch of text) {
    if (count === codePoints) break;
    units += ch.length;
    count += 1;
  }
  return units;
}

// --- Server-Sent Events over fetch ----------------------------------------------------------
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8");
  const lineEnd = /\r\n|\r|\n/g;
  let buffer = "";
  let event = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let start = 0;
      lineEnd.lastIndex = 0;
      let match;
      while ((match = lineEnd.exec(buffer)) !== null) {
        // A lone CR at the end may be the first half of a CRLF split across reads.
        if (!done && match[0] === "\r" && match.index === buffer.length - 1) break;
        const line = buffer.slice(start, match.index);
        start = match.index + match[0].length;
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n") };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // comment (keep-alive ping)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      buffer = buffer.slice(start);
      if (done) break;
    }
    if (buffer) {
      const colon = buffer.indexOf(":");
      if (buffer.slice(0, colon) === "data") data.push(buffer.slice(colon + 1).replace(/^ /, ""));
    }
    if (data.length) yield { event: event || "message", data: data.join("\n") };
  } finally {
    reader.releaseLock();
  }
}

async function errorMessage(response) {
  let detail = "";
  try {
    const body = await response.json();
    if (typeof body.detail === "string") detail = body.detail;
    else if (Array.isArray(body.detail)) detail = body.detail.map((d) => d.msg).join("; ");
  } catch {
    /* not JSON */
  }
  if (response.status === 401) return "Máy chủ yêu cầu khóa truy cập (API key) cho việc hỏi đáp.";
  if (response.status === 504) return "Câu trả lời vượt quá thời gian cho phép. Vui lòng thử lại sau.";
  if (response.status === 503) return "Hệ thống đang bận trả lời câu hỏi khác. Vui lòng thử lại sau ít giây.";
  if (response.status === 422) return `Câu hỏi không hợp lệ${detail ? `: ${detail}` : "."}`;
  return `Máy chủ báo lỗi ${response.status}${detail ? `: ${detail}` : ""}.`;
}

// --- one question and its answer ------------------------------------------------------------
class Turn {
  constructor(question) {
    this.passages = [];
    this.answer = null;
    this.text = "";

    this.answerText = h("p", { class: "answer-text" },
      h("span", { class: "pending" }, "Đang tìm trong các bài viết…"));
    this.badge = h("p", { class: "abstain-badge", hidden: true },
      h("span", { class: "abstain-icon", "aria-hidden": "true" }, "!"),
      "Không tìm thấy câu trả lời trong các bài viết");
    this.timings = h("p", { class: "timings", hidden: true });
    this.evidenceSummary = h("summary", {}, "Bằng chứng");
    this.evidenceList = h("ol", { class: "passages" });
    this.evidence = h("details", { class: "evidence", open: true, hidden: true },
      this.evidenceSummary, this.evidenceList);
    this.bubble = h("div", { class: "bubble assistant", "aria-busy": "true" },
      h("p", { class: "who" }, "Trợ lý"),
      this.badge, this.answerText, this.timings, this.evidence);
    this.el = h("article", { class: "turn" },
      h("div", { class: "bubble user" }, h("p", { class: "who" }, "Bạn"),
        h("p", { class: "question-text" }, question)),
      this.bubble);
  }

  lookup(n) {
    const cited = this.answer && this.answer.citations.find((c) => c.n === n);
    return cited || this.passages.find((p) => p.n === n) || null;
  }

  citeButton(n) {
    const cite = this.lookup(n);
    if (!cite) return document.createTextNode(`[${n}]`);
    const label = `Nguồn ${n}: ${cite.title || cite.source}`;
    return h("button", {
      type: "button", class: "cite", "aria-label": label, title: label, dataset: { n: String(n) },
      onclick: (e) => openSource(cite, e.currentTarget),
    }, String(n));
  }

  renderText(text) {
    const nodes = [];
    let last = 0;
    for (const m of text.matchAll(MARKER)) {
      nodes.push(text.slice(last, m.index));
      for (const n of m[1].split(/\s*[,;]\s*/)) nodes.push(this.citeButton(Number(n)));
      last = m.index + m[0].length;
    }
    nodes.push(text.slice(last));
    this.answerText.replaceChildren(...nodes.filter((n) => n !== ""));
  }

  showPassages(passages) {
    this.passages = passages;
    this.evidenceSummary.textContent = `Bằng chứng: ${passages.length} đoạn liên quan`;
    this.evidenceList.replaceChildren(...passages.map((p) => {
      const open = h("button", {
        type: "button", class: "passage-open",
        "aria-label": `Mở đoạn ${p.n} trong bài “${p.title || p.source}”`,
        onclick: (e) => openSource(p, e.currentTarget),
      },
      h("span", { class: "pnum" }, String(p.n)),
      h("span", { class: "ptitle" }, p.title || p.source),
      h("span", { class: "psource" }, sourceLabel(p)));
      return h("li", { class: "passage", dataset: { n: String(p.n) } },
        open, h("p", { class: "snippet" }, snippet(p.text)));
    }));
    this.evidence.hidden = false;
    if (!passages.length) this.evidenceSummary.textContent = "Không có đoạn nào liên quan";
    this.answerText.replaceChildren(h("span", { class: "pending" }, "Đang soạn câu trả lời…"));
  }

  addToken(token) {
    this.text += token;
    this.renderText(this.text);
  }

  finish(answer) {
    this.answer = answer;
    this.bubble.setAttribute("aria-busy", "false");
    this.renderText(answer.answer);
    const cited = new Set(answer.citations.map((c) => c.n));
    for (const li of this.evidenceList.children) {
      const isCited = cited.has(Number(li.dataset.n));
      li.classList.toggle("cited", isCited);
      if (isCited) li.querySelector(".passage-open").append(h("span", { class: "tag" }, "được trích dẫn"));
    }
    if (answer.abstained) {
      this.bubble.classList.add("abstained");
      this.badge.hidden = false;
      this.evidenceSummary.textContent = answer.passages.length
        ? `Các đoạn gần nhất (${answer.passages.length}), không đủ để trả lời`
        : "Không có đoạn nào liên quan";
    } else if (answer.citations.length) {
      this.evidenceSummary.textContent =
        `Bằng chứng: ${answer.passages.length} đoạn, ${answer.citations.length} đoạn được trích dẫn`;
    }
    const t = answer.timings_ms || {};
    const parts = [`Tìm kiếm ${formatMs(t.retrieval)}`];
    if (t.first_token !== null && t.first_token !== undefined) parts.push(`chữ đầu tiên sau ${formatMs(t.first_token)}`);
    parts.push(`tổng ${formatMs(t.total)}`);
    if (t.generated_tokens) parts.push(`${t.generated_tokens} token`);
    this.timings.textContent = parts.join(" · ");
    this.timings.hidden = false;
  }

  fail(message) {
    this.bubble.setAttribute("aria-busy", "false");
    this.bubble.classList.add("failed");
    this.answerText.replaceChildren(h("span", { class: "error", role: "alert" }, message));
  }

  stopped() {
    this.bubble.setAttribute("aria-busy", "false");
    if (!this.text) this.answerText.replaceChildren();
    this.answerText.append(h("span", { class: "stopped" }, " (đã dừng)"));
  }
}

// --- asking ---------------------------------------------------------------------------------
function setBusy(busy) {
  document.body.classList.toggle("busy", busy);
  ui.send.textContent = busy ? "Dừng" : "Gửi";
  ui.send.classList.toggle("stop", busy);
  ui.send.setAttribute("aria-label", busy ? "Dừng câu trả lời" : "Gửi câu hỏi");
}

// Bring the new turn's top (the question, then the answer) into view; the evidence below it
// can be long, so following the bottom would push the answer out of sight.
function showTurn(turn) {
  turn.el.scrollIntoView({ block: "start", behavior: prefersReducedMotion() ? "auto" : "smooth" });
}

async function ask(question) {
  ui.welcome.hidden = true;
  const turn = new Turn(question);
  ui.conversation.append(turn.el);
  showTurn(turn);
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  announce("Đang tìm trong các bài viết…");
  const history = state.history.slice(-MAX_HISTORY);
  try {
    const response = await fetch("/v1/ask", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ question, stream: true, history }),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const ev of readEvents(response)) {
      const data = JSON.parse(ev.data);
      if (ev.event === "passages") {
        turn.showPassages(data.passages);
        showTurn(turn);
        announce(`Đã tìm thấy ${data.passages.length} đoạn liên quan, đang soạn câu trả lời…`);
      } else if (ev.event === "token") {
        turn.addToken(data.text);
      } else if (ev.event === "done") {
        turn.finish(data);
      } else if (ev.event === "error") {
        throw new Error(data.status === 504
          ? "Câu trả lời vượt quá thời gian cho phép nên đã bị dừng. Hãy hỏi lại, có thể ngắn gọn hơn."
          : `Lỗi khi soạn câu trả lời: ${data.detail || data.status}`);
      }
    }
    if (!turn.answer) throw new Error("Kết nối bị ngắt trước khi có câu trả lời. Vui lòng thử lại.");
    state.history.push(
      { role: "user", content: question },
      { role: "assistant", content: turn.answer.answer },
    );
    announce(turn.answer.abstained
      ? "Không tìm thấy câu trả lời trong các bài viết."
      : `Đã trả lời: ${turn.answer.answer}`);
  } catch (err) {
    if (err.name === "AbortError") {
      turn.stopped();
      announce("Đã dừng.");
    } else {
      controller.abort(); // stop reading whatever the server still sends
      const message = err instanceof TypeError
        ? "Không kết nối được tới máy chủ. Vui lòng kiểm tra và thử lại."
        : err.message;
      turn.fail(message);
      announce(message);
    }
  } finally {
    if (state.controller === controller) state.controller = null;
    setBusy(state.controller !== null);
  }
}

function submitQuestion() {
  if (state.controller) {
    state.controller.abort();
    return;
  }
  const question = ui.question.value.trim();
  if (!question) {
    announce("Hãy nhập câu hỏi.");
    ui.question.focus();
    return;
  }
  ui.question.value = "";
  ask(question);
}

// --- the source panel -----------------------------------------------------------------------
function sourceLabel(cite) {
  return cite.page ? `${cite.source} · trang ${cite.page}` : cite.source;
}

function loadDocument(name) {
  if (!state.docs.has(name)) {
    const promise = fetch(`/v1/documents/${encodeURIComponent(name)}`).then(async (r) => {
      if (!r.ok) throw new Error(r.status === 404 ? "Không còn bài viết này." : await errorMessage(r));
      return r.json();
    });
    promise.catch(() => state.docs.delete(name));
    state.docs.set(name, promise);
  }
  return state.docs.get(name);
}

function locate(text, cite) {
  const start = unitIndex(text, cite.start);
  const end = unitIndex(text, cite.end);
  if (text.slice(start, end) === cite.text) return { start, end, exact: true };
  const found = text.indexOf(cite.text); // the file changed since it was indexed
  if (found >= 0) return { start: found, end: found + cite.text.length, exact: true };
  return { start, end, exact: false };
}

async function openSource(cite, trigger) {
  const request = ++state.panelRequest;
  state.lastTrigger = trigger || null;
  document.querySelectorAll(".cite.active, .passage-open.active")
    .forEach((b) => b.classList.remove("active"));
  if (trigger) trigger.classList.add("active");
  ui.panel.hidden = false;
  document.body.classList.add("panel-open");
  ui.panelTitle.textContent = cite.title || cite.source;
  ui.panelMeta.textContent = `${sourceLabel(cite)} · đoạn ${cite.n}`;
  ui.panelNote.hidden = true;
  ui.panelBody.replaceChildren(h("p", { class: "muted" }, "Đang tải bài viết…"));
  ui.panelTitle.focus({ preventScroll: true });
  let doc;
  try {
    doc = await loadDocument(cite.source);
  } catch (err) {
    if (request !== state.panelRequest) return;
    ui.panelBody.replaceChildren(h("p", { class: "error", role: "alert" },
      `Không mở được bài viết: ${err.message}`));
    return;
  }
  if (request !== state.panelRequest) return;
  const text = doc.text;
  const { start, end, exact } = locate(text, cite);
  ui.panelTitle.textContent = doc.title || doc.name;
  ui.panelMeta.textContent = [doc.name, cite.page ? `trang ${cite.page}` : "", doc.date,
    doc.text_source === "extracted" ? "văn bản trích từ tệp" : "", `đoạn ${cite.n} được tô sáng`]
    .filter(Boolean).join(" · ");
  if (!exact) {
    ui.panelNote.textContent = "Bài viết đã thay đổi sau khi lập chỉ mục; phần tô sáng có thể lệch.";
    ui.panelNote.hidden = false;
  }
  const mark = h("mark", { id: "cited-span", class: "cited-span" },
    supportedParts(text, cite, start, end));
  ui.panelBody.replaceChildren(h("div", { class: "doc-text" },
    text.slice(0, start), mark, text.slice(end)));
  ui.panelBody.scrollTop = 0;
  const target = mark.querySelector(".support") || mark;
  target.scrollIntoView({ block: "center", behavior: prefersReducedMotion() ? "auto" : "smooth" });
}

// The cited passage text[start:end), with the sentences that support the answer's claim
// (the citation's `highlights`, file offsets in code points) marked more strongly inside it.
function supportedParts(text, cite, start, end) {
  const shift = start - unitIndex(text, cite.start); // non-zero if the passage was found by text
  const spans = (cite.highlights || [])
    .map((sp) => [unitIndex(text, sp.start) + shift, unitIndex(text, sp.end) + shift])
    .map(([s, e]) => [Math.max(s, start), Math.min(e, end)])
    .filter(([s, e]) => s < e)
    .sort((a, b) => a[0] - b[0]);
  const parts = [];
  let at = start;
  for (const [s, e] of spans) {
    if (s < at) continue; // overlapping spans: keep the first
    parts.push(text.slice(at, s), h("mark", { class: "support" }, text.slice(s, e)));
    at = e;
  }
  parts.push(text.slice(at, end));
  return parts.filter((part) => part !== "");
}

function closeSource() {
  if (ui.panel.hidden) return;
  ui.panel.hidden = true;
  document.body.classList.remove("panel-open");
  state.panelRequest += 1;
  document.querySelectorAll(".cite.active, .passage-open.active")
    .forEach((b) => b.classList.remove("active"));
  if (state.lastTrigger && document.contains(state.lastTrigger)) state.lastTrigger.focus();
  state.lastTrigger = null;
}

// --- wiring ---------------------------------------------------------------------------------
function newConversation() {
  if (state.controller) state.controller.abort();
  state.history = [];
  closeSource();
  for (const turn of ui.conversation.querySelectorAll(".turn")) turn.remove();
  ui.welcome.hidden = false;
  ui.question.value = "";
  ui.question.focus();
  announce("Đã bắt đầu cuộc trò chuyện mới.");
}

async function showCorpusInfo() {
  try {
    const r = await fetch("/healthz");
    if (!r.ok) return;
    const info = await r.json();
    ui.corpusInfo.textContent =
      `${info.files} bài viết · ${info.chunks} đoạn đã lập chỉ mục · mô hình: ${info.generator_model}`;
  } catch {
    /* the page works without it */
  }
}

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  submitQuestion();
});
ui.question.addEventListener("keydown", (e) => {
  // Enter sends; Shift+Enter breaks the line; never while an IME (e.g. Telex) is composing.
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    if (!state.controller) submitQuestion();
  }
});
ui.newChat.addEventListener("click", newConversation);
ui.panelClose.addEventListener("click", closeSource);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !ui.panel.hidden) closeSource();
});
for (const button of document.querySelectorAll(".example")) {
  button.addEventListener("click", () => {
    if (state.controller) return;
    ui.question.value = button.textContent.trim();
    submitQuestion();
  });
}
showCorpusInfo();
