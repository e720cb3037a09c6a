// Sign-in: check the token against the admin API, keep it in this tab's sessionStorage.
import { api, showError, signIn, takeNotice, withButton } from "./api.js";

const form = document.getElementById("signin-form");
const input = document.getElementById("token");
const error = document.getElementById("signin-error");

showError(error, takeNotice());

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) {
    showError(error, "Enter the admin token.");
    input.focus();
    return;
  }
  const button = form.querySelector("button[type=submit]");
  const ok = await withButton(button, error, async () => {
    try {
      await api("GET", "/admin/prices", undefined, token);
    } catch (failure) {
      if (failure.status === 401) throw new Error("Wrong admin token: it must equal OCTORELAY_ADMIN_TOKEN on the server.");
      throw failure;
    }
    return true;
  });
  if (!ok) {
    input.select();
    input.focus();
    return;
  }
  signIn(token);
  const next = new URLSearchParams(location.search).get("next") || "";
  location.assign(next.startsWith("/dashboard") && !next.startsWith("/dashboard/signin") ? next : "/dashboard/");
});
