// Prices: the price table (GET /admin/prices), each row editable in place (PUT /admin/prices/{model}),
// deleted after a confirmation (DELETE /admin/prices/{model}), and the models relayed at cost 0 because no
// price matches them (the answer's `unpriced`).
import { api, confirmDialog, count, el, fillTable, requireSignIn, showError, when, withButton } from "./api.js";

const signedIn = requireSignIn();

const RATES = ["input", "output", "cache_write", "cache_write_1h", "cache_read"];
const OPTIONAL = new Set(["cache_write_1h"]);
const LABELS = { input: "Input", output: "Output", cache_write: "Cache write", cache_write_1h: "Cache write (1 hour)",
  cache_read: "Cache read", web_search_per_1k: "Web searches (per 1,000)" };
const form = document.getElementById("price-form");
const tbody = document.querySelector("#prices-table tbody");
const unpricedSection = document.getElementById("unpriced");
const unpricedList = document.getElementById("unpriced-list");

/** A number input's value; null when empty and optional. */
function number(input, label, required, what = "a price (0 is allowed)") {
  if (input.validity.badInput) throw new Error(`${label}: enter a number.`);
  const text = input.value.trim();
  if (text === "") {
    if (required) throw new Error(`${label}: enter ${what}.`);
    return null;
  }
  return Number(text);
}

/** The tier's fields all empty: no tier (null); otherwise the threshold and four rates are needed. */
function tierBody(inputs) {
  if (Object.values(inputs).every((input) => input.value.trim() === "" && !input.validity.badInput)) return null;
  const tier = { threshold_tokens: number(inputs.threshold_tokens, "Long context threshold", true, "the threshold in prompt tokens") };
  for (const name of RATES) tier[name] = number(inputs[name], `Long context ${LABELS[name].toLowerCase()}`, !OPTIONAL.has(name));
  return tier;
}

/** The PUT body: every field, optional ones null when empty (a PUT replaces the whole price). */
function priceBody(inputs) {
  const body = {};
  for (const name of RATES) body[name] = number(inputs.rates[name], LABELS[name], !OPTIONAL.has(name));
  body.web_search_per_1k = number(inputs.web_search_per_1k, LABELS.web_search_per_1k, false);
  body.long_context = tierBody(inputs.tier);
  return body;
}

function put(model, inputs) {
  return api("PUT", `/admin/prices/${encodeURIComponent(model)}`, priceBody(inputs));
}

/** The API reports the 1-hour rate that applies; at 2 x input it is the default, shown as empty. */
function shown(rates, name) {
  if (name === "cache_write_1h" && Math.abs(rates.cache_write_1h - 2 * rates.input) < 1e-9) return "";
  return rates[name] === null || rates[name] === undefined ? "" : String(rates[name]);
}

function showPrice(inputs, price) {
  for (const name of RATES) inputs.rates[name].value = shown(price, name);
  inputs.web_search_per_1k.value = shown(price, "web_search_per_1k");
  const tier = price.long_context;
  inputs.tier.threshold_tokens.value = tier ? String(tier.threshold_tokens) : "";
  for (const name of RATES) inputs.tier[name].value = tier ? shown(tier, name) : "";
}

function tierSummary(price) {
  const tier = price.long_context;
  return tier ? `above ${count(tier.threshold_tokens)}` : "none";
}

function rateInput(label, placeholder) {
  return el("input", { type: "number", min: 0, step: "any", placeholder, "aria-label": label });
}

function row(price) {
  const model = price.model;
  const inputs = { rates: {}, tier: {} };
  for (const name of RATES) {
    inputs.rates[name] = rateInput(`${LABELS[name]} price of ${model}`, OPTIONAL.has(name) ? "2 × input" : undefined);
  }
  inputs.web_search_per_1k = rateInput(`Web search price of ${model}`, "0");
  inputs.tier.threshold_tokens = el("input", { type: "number", min: 1, step: 1, placeholder: "none",
    "aria-label": `Long context threshold of ${model}` });
  for (const name of RATES) {
    inputs.tier[name] = rateInput(`Long context ${LABELS[name].toLowerCase()} rate of ${model}`,
      OPTIONAL.has(name) ? "2 × input" : undefined);
  }
  showPrice(inputs, price);

  const summary = el("summary", { text: tierSummary(price) });
  const tierFields = [["threshold_tokens", "Above (prompt tokens)"], ...RATES.map((name) => [name, `Tier ${LABELS[name].toLowerCase()}`])]
    .map(([name, text]) => el("label", {}, el("span", { text }), inputs.tier[name]));
  const tier = el("details", { class: "tier" }, summary, el("div", { class: "tier-grid" }, ...tierFields));

  const error = el("span", { class: "error", role: "alert" });
  const status = el("span", { class: "success", role: "status" });
  const save = el("button", { type: "button", class: "small", text: "Save", "aria-label": `Save price of ${model}` });
  save.addEventListener("click", async () => {
    status.textContent = "";
    const saved = await withButton(save, error, () => put(model, inputs));
    if (!saved) return;
    showPrice(inputs, saved);
    summary.textContent = tierSummary(saved);
    status.textContent = "Saved.";
  });
  const remove = el("button", { type: "button", class: "danger small", text: "Delete", "aria-label": `Delete price of ${model}` });
  remove.addEventListener("click", async () => {
    const question = `Delete the price of “${model}”? From the next request on it bills by the next matching price, ` +
      "or is unpriced (keys with a budget are then refused it).";
    if (!(await confirmDialog(question, "Delete"))) return;
    status.textContent = "";
    await withButton(remove, error, async () => {
      await api("DELETE", `/admin/prices/${encodeURIComponent(model)}`);
      await load();
    });
  });
  return el("tr", { "data-model": model }, el("td", { class: "mono", text: model }),
    ...RATES.map((name) => el("td", {}, inputs.rates[name])), el("td", {}, inputs.web_search_per_1k),
    el("td", {}, tier), el("td", { class: "row-actions" }, save, remove, status, error));
}

function priceIt(model) {
  form.elements.model.value = model;
  form.scrollIntoView({ block: "start" });
  form.elements.input.focus();
}

function unpricedItem(item) {
  const button = el("button", { type: "button", class: "small", text: "Price it", "aria-label": `Price it: ${item.model}` });
  button.addEventListener("click", () => priceIt(item.model));
  const requests = `${count(item.requests)} request${item.requests === 1 ? "" : "s"}`;
  return el("li", { "data-model": item.model }, el("span", { class: "mono", text: item.model }),
    el("span", { class: "requests", text: requests }), el("span", { class: "seen", text: `last seen ${when(item.last_seen)}` }),
    button);
}

async function load() {
  try {
    const answer = await api("GET", "/admin/prices");
    fillTable(tbody, answer.data.map(row), "No prices.");
    const unpriced = answer.unpriced || [];
    unpricedList.replaceChildren(...unpriced.map(unpricedItem));
    unpricedSection.hidden = unpriced.length === 0;
  } catch (error) {
    showError(document.getElementById("page-error"), error);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const model = form.elements.model.value.trim();
  const inputs = { rates: {}, tier: {}, web_search_per_1k: form.elements.web_search_per_1k };
  for (const name of RATES) {
    inputs.rates[name] = form.elements[name];
    inputs.tier[name] = form.elements[`tier_${name}`];
  }
  inputs.tier.threshold_tokens = form.elements.tier_threshold_tokens;
  await withButton(document.getElementById("price-submit"), document.getElementById("price-form-error"), async () => {
    if (!model) throw new Error("Model: enter the model name.");
    await put(model, inputs);
    form.reset();
    document.getElementById("price-tier").open = false;
    await load();
  });
});
if (signedIn) load();
