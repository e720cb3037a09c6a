// Channels: list with health; add, edit (the upstream key and credentials are write-only), enable/disable,
// test, delete. Which fields a type takes comes from the type registry, rendered into the <select>'s options.
import { api, confirmDialog, el, loadTable, numberOrNull, requireSignIn, showError, splitList, when, withButton } from "./api.js";

const signedIn = requireSignIn();

const form = document.getElementById("channel-form");
const formError = document.getElementById("channel-form-error");
const submit = document.getElementById("channel-submit");
const cancel = document.getElementById("channel-cancel");
const tbody = document.querySelector("#channels-table tbody");
const pageError = document.getElementById("page-error");
let editing = null; // the channel being edited, or null when the form adds one

function parseMap(text) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`Model map: "${line}" is not requested=upstream.`);
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function selectedType() {
  const option = form.elements.type.selectedOptions[0];
  return {
    apiKey: option.dataset.apiKey,
    options: option.dataset.options ? option.dataset.options.split(" ") : [],
    credentials: Boolean(option.dataset.credentials),
    credentialsHelp: option.dataset.credentialsHelp,
    baseUrlHint: option.dataset.baseUrlHint,
    local: Boolean(option.dataset.local),
  };
}

function showTypeFields() {
  const type = selectedType();
  for (const field of form.querySelectorAll("[data-option-field]")) {
    field.hidden = !type.options.includes(field.dataset.optionField);
  }
  document.getElementById("ch-credentials-field").hidden = !type.credentials;
  document.getElementById("ch-credentials-hint").textContent = type.credentialsHelp;
  document.getElementById("ch-api-key-field").hidden = type.apiKey !== "optional";
  document.getElementById("ch-base-url-field").hidden = type.local;
  document.getElementById("ch-base-url-hint").textContent = type.baseUrlHint;
}

function typeFields(out) {
  const type = selectedType();
  const options = {};
  for (const name of type.options) {
    const value = form.querySelector(`[data-option="${name}"]`).value.trim();
    if (value) options[name] = value;
  }
  if (type.options.length || editing) out.options = options; // a type change clears the old type's options
  const credentials = form.elements.credentials.value.trim();
  if (type.credentials && credentials) { // write-only: sent when typed, never read back
    try {
      out.credentials = JSON.parse(credentials);
    } catch {
      throw new Error("Credentials: not valid JSON.");
    }
  }
  if (type.apiKey !== "optional") delete out.api_key;
}

function fields() {
  const els = form.elements;
  const out = {
    name: els.name.value.trim(),
    type: els.type.value,
    base_url: els.base_url.value.trim() || null,
    models: splitList(els.models.value),
    model_map: parseMap(els.model_map.value),
    enabled: els.enabled.checked,
  };
  for (const name of ["priority", "weight", "timeout_s"]) {
    const value = numberOrNull(els[name]);
    if (value !== null) out[name] = value;
  }
  const secret = els.api_key.value;
  if (secret) out.api_key = secret; // write-only: sent when typed, never read back
  if (!editing && out.base_url === null) delete out.base_url;
  typeFields(out);
  return out;
}

function setMode(channel) {
  editing = channel;
  form.reset();
  showError(formError, null);
  document.getElementById("channel-form-title").textContent = channel ? `Edit channel “${channel.name}”` : "Add a channel";
  submit.textContent = channel ? "Save changes" : "Add channel";
  cancel.hidden = !channel;
  if (!channel) {
    showTypeFields();
    return;
  }
  const els = form.elements;
  els.name.value = channel.name;
  els.type.value = channel.type;
  showTypeFields();
  for (const [name, value] of Object.entries(channel.options ?? {})) {
    const input = form.querySelector(`[data-option="${name}"]`);
    if (input) input.value = value;
  }
  els.base_url.value = channel.base_url ?? "";
  els.models.value = channel.models.join(", ");
  els.model_map.value = Object.entries(channel.model_map).map(([k, v]) => `${k}=${v}`).join("\n");
  els.priority.value = channel.priority;
  els.weight.value = channel.weight;
  els.timeout_s.value = channel.timeout_s;
  els.enabled.checked = channel.enabled;
  form.scrollIntoView({ block: "start" });
  els.name.focus();
}

function health(channel) {
  const cooling = channel.cooldown_until && new Date(channel.cooldown_until) > new Date();
  const parts = [el("span", {
    class: `badge ${cooling ? "cooling" : channel.consecutive_failures ? "failed" : "ok"}`,
    text: cooling ? "cooling down" : channel.consecutive_failures ? "failing" : "healthy",
  })];
  parts.push(el("span", { class: "meter-text", text: `${channel.consecutive_failures} consecutive failures` }));
  if (channel.cooldown_until) parts.push(el("span", { class: "meter-text", text: `cooldown until ${when(channel.cooldown_until)}` }));
  return parts;
}

async function runTest(channel, button, output, error) {
  output.textContent = "Testing…";
  const result = await withButton(button, error, () => api("POST", `/admin/channels/${channel.id}/test`));
  if (!result) {
    output.textContent = "";
    return;
  }
  output.className = result.ok ? "success" : "error";
  output.textContent = `${result.ok ? "OK" : "Failed"}: status ${result.status} in ${result.latency_ms} ms (${result.model})` +
    (result.error ? ` — ${result.error}` : "");
}

function row(channel) {
  const error = el("span", { class: "error", role: "alert" });
  const output = el("output", { "aria-live": "polite", "data-test-result": "" });
  const label = (verb) => `${verb} channel ${channel.name}`;
  const test = el("button", { type: "button", class: "small", text: "Test", "aria-label": label("Test") });
  test.addEventListener("click", () => runTest(channel, test, output, error));
  const edit = el("button", { type: "button", class: "secondary small", text: "Edit", "aria-label": label("Edit") });
  edit.addEventListener("click", () => setMode(channel));
  const verb = channel.enabled ? "Disable" : "Enable";
  const toggle = el("button", { type: "button", class: "secondary small", text: verb, "aria-label": label(verb) });
  toggle.addEventListener("click", () => withButton(toggle, error, async () => {
    await api("PATCH", `/admin/channels/${channel.id}`, { enabled: !channel.enabled });
    await load();
  }));
  const remove = el("button", { type: "button", class: "danger small", text: "Delete", "aria-label": label("Delete") });
  remove.addEventListener("click", async () => {
    if (!(await confirmDialog(`Delete channel “${channel.name}”? Requests stop going to it at once.`, "Delete"))) return;
    await withButton(remove, error, async () => {
      await api("DELETE", `/admin/channels/${channel.id}`);
      if (editing && editing.id === channel.id) setMode(null);
      await load();
    });
  });
  const mapped = Object.keys(channel.model_map).length;
  return el("tr", { "data-channel-id": channel.id },
    el("td", { class: "name", text: channel.name }),
    el("td", { text: channel.type + (Object.keys(channel.options ?? {}).length
      ? ` (${Object.values(channel.options).join(", ")})` : "") }),
    el("td", { class: "mono", text: channel.base_url ?? "—" }),
    el("td", { class: "mono", text: channel.api_key ?? (channel.credentials ? "credentials set" : "none") }),
    el("td", { text: channel.models.join(", ") + (mapped ? ` (+${mapped} mapped)` : "") }),
    el("td", { class: "num", text: `${channel.priority} / ${channel.weight}` }),
    el("td", {}, ...health(channel)),
    el("td", {}, el("span", { class: `badge ${channel.enabled ? "active" : "disabled"}`, text: channel.enabled ? "enabled" : "disabled" })),
    el("td", { class: "row-actions" }, test, edit, toggle, remove, output, error));
}

function load() {
  return loadTable(tbody, "/admin/channels", row, "No channels yet: add one above.", pageError);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  await withButton(submit, formError, async () => {
    const body = fields();
    if (editing) await api("PATCH", `/admin/channels/${editing.id}`, body);
    else await api("POST", "/admin/channels", body);
    setMode(null);
    await load();
  });
});
cancel.addEventListener("click", () => setMode(null));
form.elements.type.addEventListener("change", showTypeFields);
showTypeFields();
if (signedIn) load();
