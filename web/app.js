// evident's web page: plain JavaScript, no build step, no external resources.
// Character offsets from the API (char_start, char_end, page_starts, answer_char_offset) count Unicode code points,
// so every slice of a document or answer goes through Array.from (code points), never UTF-16 string indices.
"use strict";

const $ = (id) => document.getElementById(id);
const RECENT_KEY = "evident.recent";
const state = { citations: [], answer: "", passages: [], docs: new Map(), extractive: false, busy: false };

// ---------------------------------------------------------------------------------------------------------------------
// Small helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// Code-point slice of `cps` (an Array.from(text) array): [start, end).
function cpSlice(cps, start, end) {
  return cps.slice(Math.max(0, start), Math.max(0, end)).join("");
}

async function api(path, opts = {}) {
  const res = await fetch(path, opts);
  const isJson = (res.headers.get("Content-Type") || "").includes("application/json");
  const body = isJson ? await res.json() : await res.text();
  if (!res.ok) {
    const msg = body && body.error ? body.error.message : `HTTP ${res.status}`;
    throw new Error(msg);
  }
  return body;
}

function verdictLabel(v) {
  return {
    supported: "verified: the quote is in the cited passage",
    other_passage: "found in another passage than the one cited",
    not_found: "quote not found in the passages",
    no_quote: "no quote; checked by overlap",
    invalid_label: "cites a passage that does not exist",
  }[v] || v;
}

function fmtSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / (1 << 20)).toFixed(1)} MB`;
}

// ---------------------------------------------------------------------------------------------------------------------
// Views

function showView(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.view === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
  if (name === "docs") loadDocuments();
}

async function loadCollections() {
  try {
    const { collections } = await api("/v1/collections");
    for (const sel of [$("collection"), $("doc-collection")]) {
      const keep = sel.value;
      sel.length = 1;
      for (const c of collections) sel.append(el("option", { value: c.name }, `${c.name} (${c.documents})`));
      sel.value = keep;
    }
  } catch (e) {
    $("server-status").textContent = `collections: ${e.message}`;
  }
  try {
    const r = await api("/readyz");
    state.extractive = !!r.extractive;
    $("server-status").textContent = r.extractive ? "extractive answers (no language model)" : `model: ${r.generator}`;
  } catch (e) {
    $("server-status").textContent = `not ready: ${e.message}`;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Asking: POST /v1/ask with stream true, Server-Sent Events read from the fetch body.

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += (data ? "\n" : "") + line.slice(6);
      }
      if (data) yield { name, data: JSON.parse(data) };
    }
  }
}

function resetResult(question) {
  state.citations = [];
  state.answer = "";
  state.passages = [];
  $("result").hidden = false;
  $("status").textContent = "Searching the documents…";
  $("status").className = "status busy";
  $("not-found").hidden = true;
  $("answer").textContent = "";
  $("answer").dataset.done = "false";
  $("reasoning").hidden = true;
  $("reasoning").open = false;
  $("reasoning-text").textContent = "";
  $("sources").textContent = "";
  $("sources-title").hidden = true;
  $("result").dataset.question = question;
}

async function ask(question) {
  question = question.trim();
  if (!question || state.busy) return;
  state.busy = true;
  $("ask").disabled = true;
  resetResult(question);
  rememberQuestion(question);
  const body = { question, stream: true };
  if ($("collection").value) body.collection = $("collection").value;
  try {
    const res = await fetch("/v1/ask", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    if (!res.ok) {
      const err = await res.json().catch(() => null);
      throw new Error(err && err.error ? err.error.message : `HTTP ${res.status}`);
    }
    for await (const ev of sseEvents(res)) handleEvent(ev);
  } catch (e) {
    $("status").textContent = `Error: ${e.message}`;
    $("status").className = "status error";
  } finally {
    state.busy = false;
    $("ask").disabled = false;
  }
}

function handleEvent({ name, data }) {
  if (name === "retrieval") {
    state.passages = data.passages || [];
    $("status").textContent = `${state.passages.length} passage${state.passages.length === 1 ? "" : "s"} found; answering…`;
    renderSources();
  } else if (name === "reasoning") {
    $("reasoning").hidden = false;
    $("reasoning-text").textContent += data.delta;
  } else if (name === "answer") {
    state.answer += data.delta;
    renderAnswer();
  } else if (name === "citation") {
    state.citations.push(data);
    renderAnswer();
  } else if (name === "done") {
    const t = data.timings ? ` in ${(data.timings.total_ms / 1000).toFixed(2)} s` : "";
    const kind = data.extractive ? "Extractive answer: sentences quoted from the documents, no language model"
                                 : `Answer by ${data.generator}`;
    $("status").textContent = `${kind}${t}.`;
    $("status").className = data.extractive ? "status extractive" : "status";
    $("not-found").hidden = !data.not_found;
    $("answer").dataset.done = "true";
    $("answer").classList.toggle("abstained", !!data.not_found);
    $("result").dataset.answerId = data.answer_id;
    renderAnswer();
  } else if (name === "error") {
    $("status").textContent = `Error: ${data.error.message}`;
    $("status").className = "status error";
  }
}

// The answer text with each [n] / [n, m] marker turned into citation chips.
function renderAnswer() {
  const box = $("answer");
  box.textContent = "";
  const re = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
  let last = 0, m;
  while ((m = re.exec(state.answer)) !== null) {
    box.append(state.answer.slice(last, m.index));
    const cpOffset = Array.from(state.answer.slice(0, m.index)).length;
    for (const labelText of m[1].split(",")) {
      const label = Number(labelText.trim());
      box.append(makeChip(label, cpOffset));
    }
    last = m.index + m[0].length;
  }
  box.append(state.answer.slice(last));
}

function citationFor(label, cpOffset) {
  return state.citations.find((c) => c.label === label && c.answer_char_offset === cpOffset) ||
         state.citations.find((c) => c.label === label) || null;
}

function makeChip(label, cpOffset) {
  const c = citationFor(label, cpOffset);
  const chip = el("button", {
    class: `chip ${c ? `verdict-${c.verdict}` : "pending"}`,
    type: "button",
    "data-label": label,
    "aria-label": c ? `Citation ${label}: ${c.document_title}, page ${c.page}` : `Citation ${label}`,
  }, String(label));
  if (c) {
    chip.addEventListener("mouseenter", () => showTooltip(chip, c));
    chip.addEventListener("focus", () => showTooltip(chip, c));
    chip.addEventListener("mouseleave", hideTooltip);
    chip.addEventListener("blur", hideTooltip);
    chip.addEventListener("click", () => openCitation(c));
  } else {
    chip.addEventListener("click", () => {
      const p = state.passages.find((x) => x.label === label);
      if (p) openPassage(p);
    });
  }
  return chip;
}

function showTooltip(anchor, c) {
  const t = $("tooltip");
  t.textContent = "";
  t.append(el("q", {}, c.quote || c.span_text || ""),
           el("div", { class: `verdict verdict-${c.verdict}` }, verdictLabel(c.verdict)),
           el("div", { class: "muted" }, `${c.document_title || c.document_path} · page ${c.page}`));
  t.hidden = false;
  const r = anchor.getBoundingClientRect();
  const w = Math.min(360, window.innerWidth - 16);
  t.style.maxWidth = `${w}px`;
  t.style.left = `${Math.max(8, Math.min(r.left + window.scrollX, window.scrollX + window.innerWidth - w - 8))}px`;
  t.style.top = `${r.bottom + window.scrollY + 6}px`;
}

function hideTooltip() {
  $("tooltip").hidden = true;
}

function renderSources() {
  const list = $("sources");
  list.textContent = "";
  $("sources-title").hidden = state.passages.length === 0;
  for (const p of state.passages) {
    const excerpt = Array.from(p.text || "");
    list.append(el("li", { value: p.label },
      el("button", { class: "link", type: "button", onclick: () => openPassage(p) },
         `${p.document_title || p.document_path}`),
      el("span", { class: "muted" }, ` · page ${p.page_start}${p.page_end !== p.page_start ? `–${p.page_end}` : ""}`),
      el("div", { class: "excerpt" }, cpSlice(excerpt, 0, 220) + (excerpt.length > 220 ? "…" : ""))));
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The side panel: the document text around a span, the span highlighted.

async function getDocument(id) {
  if (!state.docs.has(id)) state.docs.set(id, await api(`/v1/documents/${id}`));
  return state.docs.get(id);
}

function pageOf(pageStarts, pos) {
  let page = 1;
  for (let i = 0; i < (pageStarts || []).length; i++) if (pageStarts[i] <= pos) page = i + 1;
  return page;
}

// Opens the side panel on document `docId`: "Loading…" until it arrives, then its title and `fill(doc)`.
async function showDocumentPanel(docId, fill) {
  const panel = $("panel");
  panel.hidden = false;
  $("panel-title").textContent = "Loading…";
  $("panel-text").textContent = "";
  $("panel-verdict").textContent = "";
  try {
    const doc = await getDocument(docId);
    $("panel-title").textContent = doc.title || doc.path;
    fill(doc);
    panel.focus();
  } catch (e) {
    $("panel-title").textContent = `Error: ${e.message}`;
  }
}

function showSpan(docId, start, end, verdict) {
  return showDocumentPanel(docId, (doc) => {
    const cps = Array.from(doc.text);
    const context = 700;  // code points shown on each side of the span
    const from = Math.max(0, start - context), to = Math.min(cps.length, end + context);
    const page = pageOf(doc.page_starts, start);
    $("panel-meta").textContent = `${doc.path} · page ${page} of ${doc.pages}`;
    if (verdict) {
      $("panel-verdict").append(el("span", { class: `verdict verdict-${verdict}` }, verdictLabel(verdict)));
    }
    const mark = el("mark", { id: "highlight" }, cpSlice(cps, start, end));
    $("panel-text").append(from > 0 ? "…" : "", cpSlice(cps, from, start), mark, cpSlice(cps, end, to),
                           to < cps.length ? "…" : "");
    mark.scrollIntoView({ block: "center" });
  });
}

function openCitation(c) {
  hideTooltip();
  showSpan(c.document_id, c.char_start, c.char_end, c.verdict);
}

function openPassage(p) {
  showSpan(p.document_id, p.char_start, p.char_end, null);
}

function openDocument(id) {
  return showDocumentPanel(id, (doc) => {
    $("panel-meta").textContent = `${doc.path} · ${doc.pages} page${doc.pages === 1 ? "" : "s"} · ${doc.format}`;
    const cps = Array.from(doc.text);
    const starts = doc.page_starts && doc.page_starts.length ? doc.page_starts : [0];
    for (let i = 0; i < starts.length; i++) {
      if (starts.length > 1) $("panel-text").append(el("div", { class: "page-break" }, `page ${i + 1}`));
      $("panel-text").append(cpSlice(cps, starts[i], i + 1 < starts.length ? starts[i + 1] : cps.length));
    }
  });
}

function closePanel() {
  $("panel").hidden = true;
}

// ---------------------------------------------------------------------------------------------------------------------
// Recent questions (localStorage)

function recentQuestions() {
  try {
    return JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
  } catch {
    return [];
  }
}

function rememberQuestion(q) {
  const list = [q, ...recentQuestions().filter((x) => x !== q)].slice(0, 10);
  try {
    localStorage.setItem(RECENT_KEY, JSON.stringify(list));
  } catch { /* storage full or disabled: recent questions are a convenience */ }
  renderRecent();
}

function renderRecent() {
  const ul = $("recent");
  ul.textContent = "";
  const list = recentQuestions();
  if (!list.length) ul.append(el("li", { class: "muted" }, "None yet."));
  for (const q of list) {
    ul.append(el("li", {}, el("button", {
      class: "link", type: "button",
      onclick: () => { $("question").value = q; ask(q); },
    }, q)));
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Documents view

let allDocs = [];

async function loadDocuments() {
  const coll = $("doc-collection").value;
  try {
    const { documents } = await api(`/v1/documents${coll ? `?collection=${encodeURIComponent(coll)}` : ""}`);
    allDocs = documents;
    renderDocuments();
  } catch (e) {
    $("doc-list").textContent = "";
    $("doc-list").append(el("tr", {}, el("td", { colspan: 6 }, `Error: ${e.message}`)));
  }
}

function renderDocuments() {
  const q = $("doc-search").value.trim().toLowerCase();
  const tbody = $("doc-list");
  tbody.textContent = "";
  const shown = allDocs.filter((d) => !q || `${d.title} ${d.path}`.toLowerCase().includes(q));
  if (!shown.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No documents.")));
  for (const d of shown) {
    tbody.append(el("tr", {},
      el("td", {}, el("button", { class: "link", type: "button", onclick: () => openDocument(d.id) }, d.title || d.path)),
      el("td", { class: "path" }, d.path),
      el("td", {}, d.collection),
      el("td", {}, String(d.pages)),
      el("td", {}, fmtSize(d.size)),
      el("td", {}, el("button", {
        class: "danger", type: "button", "aria-label": `Delete ${d.path}`,
        onclick: () => deleteDocument(d),
      }, "Delete"))));
  }
}

async function deleteDocument(d) {
  if (!confirm(`Delete ${d.path}?`)) return;
  try {
    await api(`/v1/documents/${d.id}`, { method: "DELETE" });
    state.docs.delete(d.id);
    await loadDocuments();
    loadCollections();
  } catch (e) {
    alert(`Delete failed: ${e.message}`);
  }
}

async function upload(ev) {
  ev.preventDefault();
  const files = $("upload-files").files;
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  if ($("upload-collection").value.trim()) form.append("collection", $("upload-collection").value.trim());
  $("upload-status").textContent = "Uploading…";
  try {
    const r = await api("/v1/documents", { method: "POST", body: form });
    $("upload-status").textContent = `Added ${r.documents.length} document${r.documents.length === 1 ? "" : "s"}.`;
    $("upload-files").value = "";
    await loadDocuments();
    loadCollections();
  } catch (e) {
    $("upload-status").textContent = `Upload failed: ${e.message}`;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Wiring

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => showView(tab.dataset.view));
  $("ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask($("question").value); });
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); ask($("question").value); }
  });
  $("panel-close").addEventListener("click", closePanel);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { hideTooltip(); closePanel(); }
  });
  $("doc-search").addEventListener("input", renderDocuments);
  $("doc-collection").addEventListener("change", loadDocuments);
  $("upload-form").addEventListener("submit", upload);
  renderRecent();
  loadCollections();
  $("question").focus();
});
