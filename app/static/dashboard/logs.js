// Logs: the most recent requests (GET /admin/logs), by key on the server, by model and status here.
import { api, count, el, fillTable, requireSignIn, showError, usd, when, withButton } from "./api.js";

const signedIn = requireSignIn();

const form = document.getElementById("logs-form");
const error = document.getElementById("logs-error");
const tbody = document.querySelector("#logs-table tbody");
const keyNames = new Map();
let fetched = [];

function matches(log) {
  const model = form.elements.model.value;
  const status = form.elements.status.value;
  if (model && log.model !== model) return false;
  if (status === "disconnected") return log.client_disconnected;
  return !status || String(log.status).startsWith(status);
}

function row(log) {
  return el("tr", {},
    el("td", { text: when(log.created_at) }),
    el("td", { class: "mono", text: log.request_id }),
    el("td", { text: keyNames.get(log.key_id) ?? (log.key_id ?? "—") }),
    el("td", { text: log.channel_id ?? "—" }),
    el("td", { text: log.model ?? "—" }),
    el("td", { text: log.error_type ? `${log.status} ${log.error_type}` : String(log.status) }),
    el("td", { class: "num", text: count(log.input_tokens) }),
    el("td", { class: "num", text: count(log.output_tokens) }),
    el("td", { class: "num", text: count(log.cache_creation_input_tokens) }),
    el("td", { class: "num", text: count(log.cache_creation_1h_input_tokens) }),
    el("td", { class: "num", text: count(log.cache_read_input_tokens) }),
    el("td", { class: "num", text: count(log.web_search_requests) }),
    el("td", { class: "num", text: usd(log.cost_usd) }),
    el("td", { class: "num", text: count(log.latency_ms) }),
    el("td", { class: "num", text: count(log.ttft_ms) }),
    el("td", { class: "num", text: count(log.attempts) }),
    el("td", { text: log.client_disconnected ? "yes" : "" }));
}

function render() {
  const shown = fetched.filter(matches);
  fillTable(tbody, shown.map(row), fetched.length ? "No fetched request matches these filters." : "No requests yet.");
  document.getElementById("logs-count").textContent = `(${shown.length} of ${fetched.length} fetched)`;
}

function setModels() {
  const select = form.elements.model;
  const chosen = select.value;
  const models = [...new Set(fetched.map((log) => log.model).filter(Boolean))].sort();
  if (chosen && !models.includes(chosen)) models.push(chosen);
  select.replaceChildren(el("option", { value: "", text: "All models" }), ...models.map((m) => el("option", { value: m, text: m })));
  select.value = chosen;
}

async function fetchLogs() {
  const params = new URLSearchParams({ limit: form.elements.limit.value });
  if (form.elements.key_id.value) params.set("key_id", form.elements.key_id.value);
  fetched = (await api("GET", `/admin/logs?${params}`)).data;
  setModels();
  render();
}

async function loadKeys() {
  const keys = (await api("GET", "/admin/keys")).data;
  for (const key of keys) keyNames.set(key.id, `${key.name} (${key.key_prefix}…)`);
  form.elements.key_id.append(...keys.map((key) => el("option", { value: key.id, text: keyNames.get(key.id) })));
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  withButton(document.getElementById("logs-refresh"), error, fetchLogs);
});
for (const name of ["key_id", "limit"]) form.elements[name].addEventListener("change", () => withButton(document.getElementById("logs-refresh"), error, fetchLogs));
for (const name of ["model", "status"]) form.elements[name].addEventListener("change", render);

if (signedIn) loadKeys().then(fetchLogs).catch((failure) => showError(document.getElementById("page-error"), failure));
