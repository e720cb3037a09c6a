// Overview: totals for today and 30 days, a per-day chart stacked by model, the prompt cache's
// read share per channel, top keys by spend.
import { api, count, el, fillTable, requireSignIn, showError, tokensOf, usd } from "./api.js";

const signedIn = requireSignIn();

const DAY_MS = 86400000;
const COLORS = ["#2f5bd3", "#e8773a", "#1a9e77", "#c2407a", "#7c5cc4", "#b59a00", "#3a9fd6", "#8c564b", "#5f6b7a"];
const FIELDS = ["requests", "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_creation_1h_input_tokens",
  "cache_read_input_tokens", "web_search_requests", "cost_usd"];
const pageError = document.getElementById("page-error");
const metric = document.getElementById("metric");

const days = [];
for (let i = 29; i >= 0; i--) days.push(new Date(Date.now() - i * DAY_MS).toISOString().slice(0, 10));
const today = days[days.length - 1];
let daily = [];
let chart = null;

function value(row, name) {
  return name === "tokens" ? tokensOf(row) : row[name];
}

function showTotals(period, rows) {
  for (const field of FIELDS) {
    const total = rows.reduce((sum, row) => sum + row[field], 0);
    document.getElementById(`stat-${period}-${field}`).textContent = field === "cost_usd" ? usd(total) : count(total);
  }
}

function drawChart() {
  const models = [...new Set(daily.map((row) => row.model ?? "(none)"))].sort();
  const datasets = models.map((model, i) => {
    const data = days.map(() => 0);
    for (const row of daily) {
      const index = days.indexOf(row.day);
      if (index >= 0 && (row.model ?? "(none)") === model) data[index] += value(row, metric.value);
    }
    return { label: model, data, backgroundColor: COLORS[i % COLORS.length], stack: "usage" };
  });
  const data = { labels: days.map((day) => day.slice(5)), datasets };
  if (chart) {
    chart.data = data;
    chart.update();
    return;
  }
  chart = new window.Chart(document.getElementById("usage-chart"), {
    type: "bar",
    data,
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}

function showDailyTable() {
  const rows = [...daily].reverse().map((row) => el("tr", {},
    el("td", { text: row.day }), el("td", { text: row.model ?? "(none)" }),
    el("td", { class: "num", text: count(row.requests) }), el("td", { class: "num", text: count(tokensOf(row)) }),
    el("td", { class: "num", text: usd(row.cost_usd) })));
  fillTable(document.querySelector("#daily-table tbody"), rows, "No requests in the last 30 days.");
}

async function showTopKeys() {
  const [usage, keys] = await Promise.all([
    api("GET", `/admin/usage?group_by=key&since=${days[0]}`),
    api("GET", "/admin/keys"),
  ]);
  const byId = new Map(keys.data.map((key) => [key.id, key]));
  const top = usage.data.sort((a, b) => b.cost_usd - a.cost_usd || b.requests - a.requests).slice(0, 10);
  const rows = top.map((row) => {
    const key = byId.get(row.key_id);
    return el("tr", {},
      el("td", { text: key ? key.name : `key ${row.key_id ?? "—"}` }), el("td", { class: "mono", text: key ? key.key_prefix : "—" }),
      el("td", { class: "num", text: count(row.requests) }), el("td", { class: "num", text: count(tokensOf(row)) }),
      el("td", { class: "num", text: usd(row.cost_usd) }));
  });
  fillTable(document.querySelector("#top-keys tbody"), rows, "No spend in the last 30 days.");
}

// The part of a row's input tokens that was read from the prompt cache; null without input.
function cacheReadShare(row) {
  const input = row.input_tokens + row.cache_creation_input_tokens + row.cache_read_input_tokens;
  return input ? row.cache_read_input_tokens / input : null;
}

async function showCacheByChannel() {
  const [usage, channels] = await Promise.all([
    api("GET", `/admin/usage?group_by=channel&since=${days[0]}`),
    api("GET", "/admin/channels"),
  ]);
  const byId = new Map(channels.data.map((channel) => [channel.id, channel]));
  const rows = usage.data.filter((row) => row.channel_id !== null).map((row) => {
    const channel = byId.get(row.channel_id);
    const share = cacheReadShare(row);
    return el("tr", {},
      el("td", { text: channel ? channel.name : `channel ${row.channel_id} (deleted)` }),
      el("td", { class: "num", text: count(row.requests) }),
      el("td", { class: "num", text: count(row.cache_read_input_tokens) }),
      el("td", { class: "num", text: count(row.cache_creation_input_tokens) }),
      el("td", { class: "num", text: count(row.input_tokens) }),
      el("td", { class: "num", text: share === null ? "—" : `${(share * 100).toFixed(1)} %` }));
  });
  fillTable(document.querySelector("#cache-by-channel tbody"), rows, "No requests reached a channel in the last 30 days.");
}

async function load() {
  try {
    daily = (await api("GET", `/admin/usage?group_by=day,model&since=${days[0]}`)).data;
    showTotals("today", daily.filter((row) => row.day === today));
    showTotals("month", daily);
    drawChart();
    showDailyTable();
    await Promise.all([showCacheByChannel(), showTopKeys()]);
  } catch (error) {
    showError(pageError, error);
  }
}

metric.addEventListener("change", drawChart);
if (signedIn) load();
