// Shared by every dashboard page: the admin token, calls to /admin/*, and DOM helpers.
// Data reaches the page only through textContent and DOM APIs, never innerHTML.

const TOKEN = "octorelay.adminToken";
const NOTICE = "octorelay.signinNotice";
const SIGNIN = "/dashboard/signin";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export function signIn(token) {
  sessionStorage.setItem(TOKEN, token);
}

export function signOut(notice) {
  sessionStorage.removeItem(TOKEN);
  if (notice) sessionStorage.setItem(NOTICE, notice);
  location.assign(`${SIGNIN}?next=${encodeURIComponent(location.pathname)}`);
}

/** The message left for the sign-in page (a rejected token, a sign-out), read once. */
export function takeNotice() {
  const notice = sessionStorage.getItem(NOTICE);
  sessionStorage.removeItem(NOTICE);
  return notice;
}

/** Every page but sign-in: false (and off to sign in) without a token, so the page loads nothing. */
export function requireSignIn() {
  const button = document.getElementById("signout");
  if (button) button.addEventListener("click", () => signOut("Signed out."));
  if (sessionStorage.getItem(TOKEN)) return true;
  signOut(null);
  return false;
}

/**
 * Call the admin API; resolves to the JSON answer (null for 204), rejects with an ApiError
 * carrying the API's own error message. A 401 means the stored token is wrong: back to sign-in.
 */
export async function api(method, path, body, token = sessionStorage.getItem(TOKEN)) {
  const init = { method, cache: "no-store", credentials: "omit", headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError("The server did not answer: is octorelay running?", 0);
  }
  if (resp.status === 204) return null;
  let payload = null;
  try {
    payload = await resp.json();
  } catch {
    payload = null;
  }
  if (resp.ok) return payload;
  const message = (payload && payload.error && payload.error.message) || `HTTP ${resp.status}`;
  if (resp.status === 401 && token === sessionStorage.getItem(TOKEN)) {
    signOut("Wrong admin token: sign in again with the server's OCTORELAY_ADMIN_TOKEN.");
  }
  throw new ApiError(message, resp.status);
}

/** el("td", {class: "num", text: "3"}, child...): attributes via setAttribute, text as text nodes. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export function showError(node, error) {
  node.textContent = error ? String(error.message || error) : "";
}

/** Run `work` with `button` disabled and errors shown in `errorNode`; resolves to work's result or undefined. */
export async function withButton(button, errorNode, work) {
  showError(errorNode, null);
  button.disabled = true;
  try {
    return await work();
  } catch (error) {
    showError(errorNode, error);
    return undefined;
  } finally {
    button.disabled = false;
  }
}

/** Fetch a list from the admin API into a table: each item through `row`; an error next to the table. */
export async function loadTable(tbody, path, row, emptyText, errorNode) {
  try {
    fillTable(tbody, (await api("GET", path)).data.map(row), emptyText);
    showError(errorNode, null);
  } catch (error) {
    showError(errorNode, error);
  }
}

/** Replace a tbody's rows; a single explanatory row when there are none. */
export function fillTable(tbody, rows, emptyText) {
  const columns = tbody.closest("table").querySelectorAll("thead th").length;
  tbody.replaceChildren(...rows);
  if (!rows.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: columns, text: emptyText })));
}

/** A modal question; resolves true when the admin confirms. No window.confirm: it cannot be styled or labelled. */
export function confirmDialog(message, actionLabel) {
  return new Promise((resolve) => {
    const yes = el("button", { type: "button", class: "danger", text: actionLabel });
    const no = el("button", { type: "button", class: "secondary", text: "Cancel" });
    const text = el("p", { id: "confirm-text", text: message });
    const dialog = el("dialog", { "aria-labelledby": "confirm-text" }, text, el("div", { class: "actions" }, yes, no));
    const finish = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    yes.addEventListener("click", () => finish(true));
    no.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

// formatting ------------------------------------------------------------------

export function usd(value) {
  const n = Number(value || 0);
  if (n === 0 || Math.abs(n) >= 1) return `$${n.toFixed(2)}`;
  return `$${Number(n.toPrecision(3))}`;
}

export function count(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function tokensOf(row) {
  return row.input_tokens + row.output_tokens + row.cache_creation_input_tokens + row.cache_read_input_tokens;
}

/** "a, b c" -> ["a", "b", "c"] */
export function splitList(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

/** A number input's value, or null when empty. */
export function numberOrNull(input) {
  return input.value.trim() === "" ? null : Number(input.value);
}

/** A datetime-local value (the browser's local time) -> ISO-8601 UTC, or null. */
export function isoOrNull(input) {
  return input.value ? new Date(input.value).toISOString() : null;
}

/** ISO-8601 UTC -> the local time a datetime-local input shows. */
export function localInputValue(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
