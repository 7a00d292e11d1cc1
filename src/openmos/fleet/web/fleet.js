// OpenMOS fleet dashboard: plain JS and SVG, no third-party code.
"use strict";

const history = { hashrate: [], power: [] };
const MAX = 120;
let token = sessionStorage.getItem("openmos-fleet-token");

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;  // never HTML: device names and tags come from devices
  row.appendChild(td);
  return td;
}

function chart(id, series) {
  const svg = document.getElementById(id);
  if (!series.length) return;
  const lo = Math.min(...series), hi = Math.max(...series), span = hi - lo || Math.max(hi * 0.05, 1);
  const pts = series.map((v, i) => `${((i / (MAX - 1)) * 300).toFixed(1)},${(95 - ((v - lo) / span) * 85).toFixed(1)}`);
  svg.innerHTML = `<polyline points="${pts.join(" ")}"></polyline><text x="2" y="9">${hi.toFixed(1)}</text>` +
    `<text x="2" y="99">${lo.toFixed(1)}</text>`;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  document.getElementById("action-result").textContent = `${r.status} ${text.slice(0, 100)}`;
  return r;
}

async function refresh() {
  const o = await (await fetch("/api/fleet/overview")).json();
  document.getElementById("summary").textContent = `${o.devices} devices, ${Object.keys(o.sites).length} site(s)`;
  document.getElementById("source").textContent = o.modelled ? "figures modelled" : "figures measured";
  document.getElementById("online").textContent = `${o.online} / ${o.devices}`;
  document.getElementById("hashrate").textContent = `${(o.hashrate_ths / 1000).toFixed(2)} PH/s`;
  document.getElementById("power").textContent = `${(o.power_w / 1e6).toFixed(2)} MW`;
  document.getElementById("efficiency").textContent = o.j_per_th ? `${o.j_per_th.toFixed(2)} J/TH` : "–";
  document.getElementById("alert-count").textContent = o.alerts;
  document.getElementById("pools").textContent =
    Object.entries(o.pools).map(([url, n]) => `${url} (${n})`).join(" · ") || "–";
  history.hashrate.push(o.hashrate_ths); history.power.push(o.power_w / 1000);
  for (const s of Object.values(history)) if (s.length > MAX) s.shift();
  chart("chart-hashrate", history.hashrate);
  chart("chart-power", history.power);

  const filter = document.getElementById("filter").value;
  const devices = await (await fetch(`/api/fleet/devices?q=${encodeURIComponent(filter)}`)).json();
  const body = document.querySelector("#devices tbody");
  body.innerHTML = "";
  for (const d of devices.slice(0, 200)) {
    const row = document.createElement("tr");
    row.dataset.device = d.id;  // "site/device": the same id at two sites is two rows
    for (const v of [d.device, d.site, d.model, d.tags.container ?? "", (d.hashrate_ths ?? 0).toFixed(1),
      (d.power_w ?? 0).toFixed(0), d.hottest_c == null ? "–" : d.hottest_c.toFixed(1),
      !d.online ? "offline" : d.paused ? "paused" : "mining"]) cell(row, v);
    body.appendChild(row);
  }
  document.getElementById("device-count").textContent = `${devices.length} shown (first 200 listed)`;

  const grid = await (await fetch("/api/fleet/heatmap?tag=container")).json();
  let svg = "", y = 0;
  for (const [name, list] of Object.entries(grid).sort()) {
    svg += `<text x="0" y="${y + 10}">${name.replace(/[<&>]/g, "")}</text>`;
    list.forEach((d, i) => {
      const t = d.hottest_c ?? 0, share = Math.min(1, Math.max(0, (t - 40) / 45));
      svg += `<rect class="cell" x="${60 + (i % 100) * 9}" y="${y + Math.floor(i / 100) * 9}" width="8" height="8"` +
        ` fill="hsl(${(120 - 120 * share).toFixed(0)},70%,45%)"><title>${d.id.replace(/[<&>]/g, "")}: ${t.toFixed(1)} °C</title></rect>`;
    });
    y += Math.ceil(list.length / 100) * 9 + 6;
  }
  document.getElementById("heatmap").innerHTML = `<svg viewBox="0 0 960 ${Math.max(y, 10)}">${svg}</svg>`;

  const alerts = await (await fetch("/api/fleet/alerts")).json();
  const ul = document.getElementById("alerts");
  ul.innerHTML = "";
  for (const a of alerts.active.slice(0, 50)) {
    const li = document.createElement("li");
    li.textContent = `${a.severity} · ${a.site}/${a.device} · ${a.kind}: ${a.message}`;
    ul.appendChild(li);
  }

  const queue = await (await fetch("/api/fleet/maintenance?limit=100")).json();
  const mb = document.querySelector("#maintenance tbody");
  mb.innerHTML = "";
  for (const q of queue) {
    const row = document.createElement("tr");
    const where = [q.board !== null ? `board ${q.board}` : "", q.index !== null ? `${q.component} ${q.index}` : q.component]
      .filter(Boolean).join(" ");
    for (const v of [`${q.site}/${q.device}` + (q.modelled ? " (modelled)" : ""), where, q.reason,
      q.lead_time_h === null ? "-" : `${Number(q.lead_time_h).toFixed(0)} h`]) cell(row, v);
    mb.appendChild(row);
  }

  const reqs = await (await fetch("/api/fleet/requests")).json();
  const rb = document.querySelector("#requests tbody");
  rb.innerHTML = "";
  for (const r of reqs.slice(-20)) {
    const row = document.createElement("tr");
    for (const v of [r.request_id, r.action, r.requested_by, r.state, `${r.approvals.length}/${r.needed}`]) cell(row, v);
    const td = cell(row, "");
    const verbs = r.action === "install" ? ["approve", "rollout"] : ["approve", "execute"];
    for (const verb of verbs) {
      const b = document.createElement("button");
      b.textContent = verb;
      b.addEventListener("click", () => api("POST", `/api/fleet/requests/${r.request_id}/${verb}`).then(refresh));
      td.appendChild(b);
    }
    rb.appendChild(row);
  }

  const rollouts = await (await fetch("/api/fleet/rollouts")).json();
  const box = document.getElementById("rollouts");
  box.innerHTML = "";
  for (const ro of rollouts) {
    const p = document.createElement("p");
    const state = ro.done ? (ro.halted ? `HALTED: ${ro.reason}` : ro.reason) : (ro.messages.at(-1) ?? "starting");
    p.textContent = `rollout ${ro.request_id} → ${ro.version}: ${(100 * ro.progress).toFixed(0)} % · ${state}`;
    const bar = document.createElement("progress");
    bar.max = 1; bar.value = ro.progress;
    p.prepend(bar);
    box.appendChild(p);
  }
}

function age(s) {
  return s < 120 ? `${s.toFixed(0)} s` : s < 7200 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
}

async function refreshEnrollments() {
  // Admins only: the token goes in the Authorization header (never a cookie), so another site cannot forge
  // an approval; every value is set as text, never as HTML.
  const state = document.getElementById("enrollments-state");
  const body = document.querySelector("#enrollments tbody");
  if (!token) { body.replaceChildren(); return; }
  const r = await fetch("/api/fleet/enrollments", { headers: { Authorization: `Bearer ${token}` } });
  if (!r.ok) {
    state.textContent = r.status === 403 ? "only admins approve enrollments" : `log in again (${r.status})`;
    body.replaceChildren();
    return;
  }
  const doc = await r.json();
  state.textContent = `${doc.pending.length} waiting for approval · ${doc.enrolled} enrolled`;
  const rows = [];
  for (const p of doc.pending) {
    const row = document.createElement("tr");
    row.dataset.device = p.id;
    for (const v of [p.device, p.site, p.fingerprint, p.source, age(p.age_s)]) cell(row, v);
    const td = cell(row, "");
    for (const verdict of ["approve", "reject"]) {
      const b = document.createElement("button");
      b.textContent = verdict;
      b.className = verdict;
      b.addEventListener("click", () => api("POST", `/api/fleet/enrollments/${verdict}`,
        { site: p.site, device: p.device, fingerprint: p.fingerprint }).then(refreshEnrollments));
      td.appendChild(b);
    }
    rows.push(row);
  }
  body.replaceChildren(...rows);
}

document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/api/v1/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: document.getElementById("user").value, password: document.getElementById("password").value }) });
  if (r.ok) { token = (await r.json()).token; sessionStorage.setItem("openmos-fleet-token", token); }
  document.getElementById("login-state").textContent = r.ok ? "logged in" : `login failed (${r.status})`;
  refreshEnrollments();
});
document.getElementById("request").addEventListener("click", () => {
  const action = document.getElementById("action").value;
  const args = action === "set_power" ? { watts: Number(document.getElementById("action-watts").value) } : {};
  const site = document.getElementById("action-site").value || null;
  api("POST", "/api/fleet/requests", { action, args, site }).then(refresh);
});
async function loadHistory() {
  // Earlier history from the store's 5-minute rollups, then live points on top.
  const rows = await (await fetch("/api/fleet/series?bucket=300&days=1")).json();
  for (const r of rows.slice(-MAX / 2)) { history.hashrate.push(r.hashrate_ths); history.power.push(r.power_w / 1000); }
}
loadHistory().then(refresh);
setInterval(() => { refresh(); refreshEnrollments(); }, 2000);
refreshEnrollments();
