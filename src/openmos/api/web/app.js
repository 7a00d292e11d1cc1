// OpenMOS device page: plain JS and SVG, no third-party code. Live data from /api/v1/stream (SSE).
"use strict";

const history = { hashrate: [], power: [], temp: [] };
const MAX_POINTS = 120;
let token = sessionStorage.getItem("openmos-token");
let lastNonces = null;

function fmt(value, digits, unit) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)} ${unit}`;
}

function push(series, value) {
  if (value === null || value === undefined) return;
  series.push(value);
  if (series.length > MAX_POINTS) series.shift();
}

function drawChart(id, series) {
  const svg = document.getElementById(id);
  if (!series.length) return;
  const lo = Math.min(...series), hi = Math.max(...series);
  const span = hi - lo || Math.max(Math.abs(hi) * 0.05, 1);
  const points = series.map((v, i) => {
    const x = (i / (MAX_POINTS - 1)) * 300;
    const y = 95 - ((v - lo) / span) * 85;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  }).join(" ");
  svg.innerHTML = `<polyline points="${points}"></polyline>` +
    `<text x="2" y="9">${hi.toFixed(1)}</text><text x="2" y="99">${lo.toFixed(1)}</text>`;
}

async function drawHeatmap() {
  const boards = await (await fetch("/api/v1/hashboards")).json();
  const chips = await Promise.all(boards.map((b) => fetch(`/api/v1/hashboards/${b.index}/chips`).then((r) => r.json())));
  const nonces = chips.map((list) => list.map((c) => c.nonces));
  const deltas = nonces.map((list, b) => list.map((n, c) => lastNonces ? n - lastNonces[b][c] : 0));
  lastNonces = nonces;
  const max = Math.max(1, ...deltas.flat());
  const cols = Math.max(...chips.map((l) => l.length));
  const size = Math.max(4, Math.min(14, Math.floor(900 / cols)));
  let svg = `<svg viewBox="0 0 ${cols * size} ${chips.length * (size + 4)}" data-chips="${chips.flat().length}">`;
  chips.forEach((list, b) => list.forEach((chip, c) => {
    const share = deltas[b][c] / max;
    const fill = chip.enabled ? `hsl(${(30 + 90 * share).toFixed(0)}, 80%, ${(25 + 35 * share).toFixed(0)}%)` : "#444";
    svg += `<rect x="${c * size}" y="${b * (size + 4)}" width="${size - 1}" height="${size}" fill="${fill}">` +
      `<title>board ${b} chip ${c}: ${chip.frequency_mhz ?? "-"} MHz, ${chip.nonces} nonces, ${chip.errors} errors</title></rect>`;
  }));
  document.getElementById("heatmap").innerHTML = svg + "</svg>";
}

function render(s) {
  document.getElementById("hardware").textContent = `${s.device.hardware} · OpenMOS ${s.device.version}`;
  document.getElementById("source").textContent = s.device.hashrate_source === "modelled"
    ? "figures modelled (simulated hardware)" : `hashrate ${s.device.hashrate_source}`;
  document.getElementById("state").textContent = s.device.paused ? "paused" : "mining";
  document.getElementById("hashrate").textContent = fmt(s.hashrate_ths["1m"], 3, "TH/s");
  document.getElementById("power").textContent = fmt(s.power_w, 0, "W");
  document.getElementById("efficiency").textContent = fmt(s.efficiency_j_per_th, 2, "J/TH");
  document.getElementById("hottest").textContent = fmt(s.hottest_c, 1, "°C");
  document.getElementById("accepted").textContent = s.shares.accepted;
  document.getElementById("tuner").textContent = s.tuner ? `${s.tuner.state} ${s.tuner.percent.toFixed(0)}%` : "off";
  push(history.hashrate, s.hashrate_ths["1m"]);
  push(history.power, s.power_w);
  push(history.temp, s.hottest_c);
  drawChart("chart-hashrate", history.hashrate);
  drawChart("chart-power", history.power);
  drawChart("chart-temp", history.temp);
  const body = document.querySelector("#pools tbody");
  body.innerHTML = "";
  for (const p of s.pools) {
    const row = document.createElement("tr");
    for (const v of [p.index, p.url, p.user, p.active ? "active" : p.status, p.accepted, p.rejected, p.stale,
      Number(p.difficulty).toPrecision(4)]) {
      const cell = document.createElement("td");
      cell.textContent = v;  // textContent: pool fields are never interpreted as HTML
      row.appendChild(cell);
    }
    body.appendChild(row);
  }
}

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await response.text();
  document.getElementById("control-result").textContent = `${response.status} ${text.slice(0, 120)}`;
  return response;
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/api/v1/auth/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: document.getElementById("user").value, password: document.getElementById("password").value }),
  });
  if (response.ok) {
    token = (await response.json()).token;
    sessionStorage.setItem("openmos-token", token);
    document.getElementById("login-state").textContent = "logged in";
  } else {
    document.getElementById("login-state").textContent = `login failed (${response.status})`;
  }
});

for (const button of document.querySelectorAll("button[data-action]")) {
  button.addEventListener("click", () => call("POST", `/api/v1/actions/${button.dataset.action}`));
}
document.getElementById("set-power").addEventListener("click", () =>
  call("PUT", "/api/v1/performance", { power_w: Number(document.getElementById("power-target").value) }));

async function drawMaintenance() {
  const m = await (await fetch("/api/v1/maintenance")).json();
  document.getElementById("maintenance-summary").textContent = `(${m.modelled ? "modelled: " : ""}${m.summary})`;
  const body = document.querySelector("#maintenance tbody");
  body.innerHTML = "";
  for (const f of m.findings) {
    const row = document.createElement("tr");
    const where = [f.board !== null ? `board ${f.board}` : "", f.index !== null ? `${f.component} ${f.index}` : f.component]
      .filter(Boolean).join(" ");
    for (const v of [where, f.reason, `${Number(f.score).toFixed(1)}x`,
      f.lead_time_h === null ? "-" : `${Number(f.lead_time_h).toFixed(0)} h`]) {
      const cell = document.createElement("td");
      cell.textContent = v;  // textContent: never interpreted as HTML
      row.appendChild(cell);
    }
    body.appendChild(row);
  }
}

const source = new EventSource("/api/v1/stream?interval=1");
source.addEventListener("status", (event) => render(JSON.parse(event.data)));
drawHeatmap();
setInterval(drawHeatmap, 3000);
drawMaintenance();
setInterval(drawMaintenance, 30000);
