// Keys: list with usage against limits; create (the secret is shown once), edit, disable, revoke.
import {
  api, confirmDialog, count, el, isoOrNull, loadTable, localInputValue, numberOrNull, requireSignIn,
  showError, splitList, usd, when, withButton,
} from "./api.js";

const signedIn = requireSignIn();

const STATUS_LABELS = { active: "enabled", disabled: "disabled", expired: "expired", revoked: "revoked" };
const LIMITS = ["budget_usd", "token_quota", "rpm", "tpm", "max_concurrency"];
const form = document.getElementById("key-form");
const formError = document.getElementById("key-form-error");
const submit = document.getElementById("key-submit");
const cancel = document.getElementById("key-cancel");
const tbody = document.querySelector("#keys-table tbody");
const pageError = document.getElementById("page-error");
let editing = null; // the key being edited, or null when the form creates

function fields() {
  const out = { name: form.elements.name.value.trim() };
  for (const name of LIMITS) out[name] = numberOrNull(form.elements[name]);
  out.budget_period = form.elements.budget_period.value || null;
  out.models = splitList(form.elements.models.value);
  out.expires_at = isoOrNull(form.elements.expires_at);
  if (editing) return { ...out, enabled: form.elements.enabled.checked };
  // creating: leave out what was not given, so the server's defaults apply
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== null && !(Array.isArray(v) && !v.length)));
}

function setMode(key) {
  editing = key;
  form.reset();
  showError(formError, null);
  document.getElementById("key-form-title").textContent = key ? `Edit key “${key.name}”` : "Create a key";
  submit.textContent = key ? "Save changes" : "Create key";
  cancel.hidden = !key;
  document.getElementById("key-enabled-field").hidden = !key;
  if (!key) return;
  form.elements.name.value = key.name;
  for (const name of LIMITS) form.elements[name].value = key[name] ?? "";
  form.elements.budget_period.value = key.budget_period ?? "";
  form.elements.models.value = key.models.join(", ");
  form.elements.expires_at.value = localInputValue(key.expires_at);
  form.elements.enabled.checked = key.enabled;
  form.scrollIntoView({ block: "start" });
  form.elements.name.focus();
}

function showNewKey(key) {
  const origin = location.origin;
  document.getElementById("new-key-value").value = key.key;
  document.getElementById("new-key-curl").textContent =
    `curl -s ${origin}/v1/messages -H "x-api-key: ${key.key}" -H "anthropic-version: 2023-06-01" ` +
    `-H "content-type: application/json" -d '{"model": "${exampleModel(key)}", "max_tokens": 256, ` +
    `"messages": [{"role": "user", "content": "Hello"}]}'`;
  document.getElementById("new-key-claude").textContent = `ANTHROPIC_BASE_URL=${origin} ANTHROPIC_API_KEY=${key.key} claude`;
  document.getElementById("copy-status").textContent = "";
  const panel = document.getElementById("new-key");
  panel.hidden = false;
  panel.scrollIntoView({ block: "start" });
  document.getElementById("copy-key").focus();
}

function exampleModel(key) {
  return key.models.find((m) => !/[*?[]/.test(m)) || "claude-sonnet-4-6";
}

function hideNewKey() {
  document.getElementById("new-key-value").value = "";
  document.getElementById("new-key-curl").textContent = "";
  document.getElementById("new-key-claude").textContent = "";
  document.getElementById("new-key").hidden = true;
}

async function copyKey() {
  const input = document.getElementById("new-key-value");
  const status = document.getElementById("copy-status");
  try {
    await navigator.clipboard.writeText(input.value);
    status.textContent = "Copied.";
  } catch {
    input.select();
    status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

function meter(used, limit, format) {
  if (limit === null || limit === undefined) return el("span", { class: "meter-text", text: `${format(used)} used · no limit` });
  const label = `${format(used)} of ${format(limit)}`;
  return el("span", {},
    el("progress", { max: limit || 1, value: Math.min(used, limit || 1), class: used >= limit ? "over" : null, "aria-label": label }),
    el("span", { class: "meter-text", text: label }));
}

function resets(key) {
  if (!key.budget_resets_at) return null;
  return el("span", { class: "meter-text resets", text: `${key.budget_period}: resets ${when(key.budget_resets_at)}` });
}

/** The API's status, except that an enabled key with its budget or token quota used up says so: it gets 402. */
function statusOf(key) {
  if (key.status !== "active") return { name: key.status, label: STATUS_LABELS[key.status] || key.status };
  if (key.budget_usd !== null && key.budget_usd !== undefined && key.used_usd >= key.budget_usd) {
    return { name: "over", label: "over budget" };
  }
  if (key.token_quota !== null && key.token_quota !== undefined && key.used_tokens >= key.token_quota) {
    return { name: "over", label: "over quota" };
  }
  return { name: "active", label: STATUS_LABELS.active };
}

function limitsText(key) {
  const parts = [];
  if (key.rpm) parts.push(`${count(key.rpm)} rpm`);
  if (key.tpm) parts.push(`${count(key.tpm)} tpm`);
  if (key.max_concurrency) parts.push(`${count(key.max_concurrency)} concurrent`);
  return parts.join(" · ") || "none";
}

function row(key) {
  const error = el("span", { class: "error", role: "alert" });
  const actions = el("td", { class: "row-actions" });
  if (key.status !== "revoked") {
    const edit = el("button", { type: "button", class: "secondary small", text: "Edit", "aria-label": `Edit key ${key.name}` });
    edit.addEventListener("click", () => setMode(key));
    const toggle = el("button", {
      type: "button", class: "secondary small", text: key.enabled ? "Disable" : "Enable",
      "aria-label": `${key.enabled ? "Disable" : "Enable"} key ${key.name}`,
    });
    toggle.addEventListener("click", () => withButton(toggle, error, async () => {
      await api("PATCH", `/admin/keys/${key.id}`, { enabled: !key.enabled });
      await load();
    }));
    const revoke = el("button", { type: "button", class: "danger small", text: "Revoke", "aria-label": `Revoke key ${key.name}` });
    revoke.addEventListener("click", async () => {
      const sure = await confirmDialog(`Revoke key “${key.name}” (${key.key_prefix}…)? Clients using it get 401 within 2 seconds. This cannot be undone.`, "Revoke");
      if (!sure) return;
      await withButton(revoke, error, async () => {
        await api("DELETE", `/admin/keys/${key.id}`);
        if (editing && editing.id === key.id) setMode(null);
        await load();
      });
    });
    actions.append(edit, toggle, revoke);
  } else {
    actions.append(el("span", { class: "meter-text", text: `revoked ${when(key.revoked_at)}` }));
  }
  actions.append(error);
  const status = statusOf(key);
  return el("tr", { "data-key-id": key.id },
    el("td", { class: "name", text: key.name }),
    el("td", { class: "mono", text: `${key.key_prefix}…` }),
    el("td", {}, el("span", { class: `badge ${status.name}`, text: status.label })),
    el("td", {}, meter(key.used_usd, key.budget_usd, usd), resets(key)),
    el("td", {}, meter(key.used_tokens, key.token_quota, count)),
    el("td", { text: limitsText(key) }),
    el("td", { text: key.models.length ? key.models.join(", ") : "all" }),
    el("td", { text: when(key.expires_at) }),
    actions);
}

function load() {
  return loadTable(tbody, "/admin/keys", row, "No keys yet: create one above.", pageError);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  await withButton(submit, formError, async () => {
    if (editing) {
      await api("PATCH", `/admin/keys/${editing.id}`, fields());
      setMode(null);
    } else {
      const created = await api("POST", "/admin/keys", fields());
      form.reset();
      showNewKey(created);
    }
    await load();
  });
});
cancel.addEventListener("click", () => setMode(null));
document.getElementById("copy-key").addEventListener("click", copyKey);
document.getElementById("new-key-done").addEventListener("click", hideNewKey);
if (signedIn) load();
