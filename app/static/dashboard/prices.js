// Prices: the price table (GET /admin/prices), each row editable in place (PUT /admin/prices/{model}).
import { api, el, fillTable, requireSignIn, showError, withButton } from "./api.js";

const signedIn = requireSignIn();

const FIELDS = { input: "Input", output: "Output", cache_write: "Cache write", cache_read: "Cache read" };
const form = document.getElementById("price-form");
const tbody = document.querySelector("#prices-table tbody");

function numbers(inputs) {
  const out = {};
  for (const [name, input] of Object.entries(inputs)) {
    if (input.value.trim() === "") throw new Error(`${FIELDS[name]}: enter a price (0 is allowed).`);
    out[name] = Number(input.value);
  }
  return out;
}

function put(model, inputs) {
  return api("PUT", `/admin/prices/${encodeURIComponent(model)}`, numbers(inputs));
}

function row(price) {
  const inputs = {};
  const cells = Object.entries(FIELDS).map(([name, label]) => {
    inputs[name] = el("input", { type: "number", min: 0, step: "any", value: price[name], "aria-label": `${label} price of ${price.model}` });
    return el("td", {}, inputs[name]);
  });
  const error = el("span", { class: "error", role: "alert" });
  const status = el("span", { class: "success", role: "status" });
  const save = el("button", { type: "button", class: "small", text: "Save", "aria-label": `Save price of ${price.model}` });
  save.addEventListener("click", async () => {
    status.textContent = "";
    if (await withButton(save, error, () => put(price.model, inputs))) status.textContent = "Saved.";
  });
  return el("tr", { "data-model": price.model }, el("td", { class: "mono", text: price.model }), ...cells,
    el("td", { class: "row-actions" }, save, status, error));
}

async function load() {
  try {
    fillTable(tbody, (await api("GET", "/admin/prices")).data.map(row), "No prices.");
  } catch (error) {
    showError(document.getElementById("page-error"), error);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const model = form.elements.model.value.trim();
  const inputs = Object.fromEntries(Object.keys(FIELDS).map((name) => [name, form.elements[name]]));
  await withButton(document.getElementById("price-submit"), document.getElementById("price-form-error"), async () => {
    if (!model) throw new Error("Model: enter the model name.");
    await put(model, inputs);
    form.reset();
    await load();
  });
});
if (signedIn) load();
