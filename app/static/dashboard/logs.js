// Logs: pages of requests (GET /admin/logs), newest first, by key and date range on the server (keyset pages:
// before_id), by model and status on the page fetched. Keys and channels are shown by name.
import { api, count, el, fillTable, isoOrNull, requireSignIn, showError, usd, withButton } from "./api.js";

const signedIn = requireSignIn();

const form = document.getElementById("logs-form");
const error = document.getElementById("logs-error");
const tbody = document.querySelector("#logs-table tbody");
const newer = document.getElementById("logs-newer");
const older = document.getElementById("logs-older");
const keyNames = new Map();
const channelNames = new Map();
let fetched = [];
let cursors = [null]; // before_id of each page shown so far; the last one is the current page's
let nextCursor = null; // before_id of the page after this one, null on the last page

const SHORT_TIME = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };

function matches(log) {
  const model = form.elements.model.value;
  const status = form.elements.status.value;
  if (model && log.model !== model) return false;
  if (status === "disconnected") return log.client_disconnected;
  return !status || String(log.status).startsWith(status);
}

function shortTime(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, SHORT_TIME) : "—";
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 10_000 ? `${count(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function named(names, id) {
  if (id === null || id === undefined) return "—";
  return names.get(id) ?? `#${id} (deleted)`;
}

function tokens(log) {
  const extra = [];
  if (log.cache_creation_input_tokens) {
    const hour = log.cache_creation_1h_input_tokens ? ` (${count(log.cache_creation_1h_input_tokens)} 1h)` : "";
    extra.push(`cache write ${count(log.cache_creation_input_tokens)}${hour}`);
  }
  if (log.cache_read_input_tokens) extra.push(`cache read ${count(log.cache_read_input_tokens)}`);
  if (log.web_search_requests) extra.push(`${count(log.web_search_requests)} web search${log.web_search_requests === 1 ? "" : "es"}`);
  return [el("span", { text: `${count(log.input_tokens)} in · ${count(log.output_tokens)} out` }),
    extra.length ? el("span", { class: "meter-text", text: extra.join(" · ") }) : null];
}

function status(log) {
  const parts = [el("span", { text: String(log.status) })];
  if (log.error_type) parts.push(el("span", { class: "meter-text", text: log.error_type }));
  if (log.client_disconnected) parts.push(el("span", { class: "meter-text", text: "client disconnected" }));
  return parts;
}

function cell(label, props, ...children) {
  return el("td", { "data-label": label, ...props }, ...children);
}

function row(log) {
  return el("tr", { "data-request-id": log.request_id },
    cell("Time", { class: "when", title: log.created_at }, el("span", { text: shortTime(log.created_at) }),
      el("span", { class: "meter-text mono", text: log.request_id })),
    cell("Key", { class: "name", text: named(keyNames, log.key_id) }),
    cell("Channel", { class: "name", text: named(channelNames, log.channel_id) }),
    cell("Model", { class: "name", text: log.model ?? "—" }),
    cell("Status", {}, ...status(log)),
    cell("Tokens", {}, ...tokens(log)),
    cell("Cost", { class: "num cost", text: usd(log.cost_usd) }),
    cell("Latency", { class: "num latency", title: `${log.latency_ms} ms`, text: duration(log.latency_ms) }),
    cell("TTFT", { class: "num ttft", text: duration(log.ttft_ms) }),
    cell("Tries", { class: "num", text: count(log.attempts) }));
}

function render() {
  const shown = fetched.filter(matches);
  fillTable(tbody, shown.map(row), fetched.length ? "No request on this page matches these filters." : "No requests.");
  document.getElementById("logs-count").textContent = `(${shown.length} of ${fetched.length} on this page)`;
  document.getElementById("logs-page").textContent = `Page ${cursors.length}`;
  newer.disabled = cursors.length < 2;
  older.disabled = !nextCursor;
}

function setModels() {
  const select = form.elements.model;
  const chosen = select.value;
  const models = [...new Set(fetched.map((log) => log.model).filter(Boolean))].sort();
  if (chosen && !models.includes(chosen)) models.push(chosen);
  select.replaceChildren(el("option", { value: "", text: "All models" }), ...models.map((m) => el("option", { value: m, text: m })));
  select.value = chosen;
}

async function fetchPage() {
  const params = new URLSearchParams({ limit: form.elements.limit.value });
  if (form.elements.key_id.value) params.set("key_id", form.elements.key_id.value);
  const since = isoOrNull(form.elements.since);
  const until = isoOrNull(form.elements.until);
  if (since) params.set("since", since);
  if (until) params.set("until", until);
  const before = cursors[cursors.length - 1];
  if (before) params.set("before_id", before);
  const page = await api("GET", `/admin/logs?${params}`);
  fetched = page.data;
  nextCursor = page.has_more ? page.last_id : null;
  setModels();
  render();
  return true;
}

/** From the newest request again (a filter changed, or Refresh). */
function firstPage() {
  cursors = [null];
  return withButton(document.getElementById("logs-refresh"), error, fetchPage);
}

async function loadNames() {
  const [keys, channels] = await Promise.all([api("GET", "/admin/keys"), api("GET", "/admin/channels")]);
  for (const key of keys.data) keyNames.set(key.id, `${key.name} (${key.key_prefix}…)`);
  for (const channel of channels.data) channelNames.set(channel.id, channel.name);
  form.elements.key_id.append(...keys.data.map((key) => el("option", { value: key.id, text: keyNames.get(key.id) })));
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  firstPage();
});
for (const name of ["key_id", "limit", "since", "until"]) form.elements[name].addEventListener("change", firstPage);
for (const name of ["model", "status"]) form.elements[name].addEventListener("change", render);
/** Move a page (`step` changes the cursor stack); on a failure the stack goes back as it was. */
async function turn(button, step, undo) {
  step();
  if (!(await withButton(button, error, fetchPage))) undo();
  render(); // withButton re-enabled the button: set both from the page's state again
}
older.addEventListener("click", () => {
  const cursor = nextCursor;
  turn(older, () => cursors.push(cursor), () => cursors.pop());
});
newer.addEventListener("click", () => {
  const cursor = cursors[cursors.length - 1];
  turn(newer, () => cursors.pop(), () => cursors.push(cursor));
});

if (signedIn) loadNames().then(firstPage).catch((failure) => showError(document.getElementById("page-error"), failure));
