"use strict";
// Polls /api/v1/jd and writes every value as text (values partly come from upstream: never markup).
(function () {
  const $ = (id) => document.getElementById(id);
  const text = (id, value) => { $(id).textContent = value; };
  const n = (v, unit) => (v === null || v === undefined ? "–" : `${v.toLocaleString("en-US")}${unit || ""}`);
  const ms = (v) => (v === null || v === undefined ? "–" : `${v} ms`);

  function render(s) {
    const t = s.template;
    const whose = s.mode === "own" ? "our own template" : s.mode === "pool" ? "the pool's template (fallback)"
      : "no work yet";
    text("whose", whose);
    $("whose").className = `mode-${s.mode}`;
    text("reason", s.reason);
    text("height", n(t.height));
    text("fees", n(t.fees_sat, " sat"));
    text("txs", n(t.tx_count));
    text("weight", n(t.weight, " WU"));
    text("excluded", n(t.excluded_by_policy));
    text("note", t.note);
    const p = s.policy;
    text("min-fee-rate", `${p.min_fee_rate_sat_vb} sat/vB`);
    text("max-weight", n(p.max_weight, " WU"));
    text("excluded-txids", p.excluded_txids.length ? p.excluded_txids.join(", ") : "none");
    text("excluded-scripts", p.excluded_scripts.length ? p.excluded_scripts.join(", ") : "none");
    text("unverifiable", n(p.unverifiable_by_pool));
    const c = s.counters;
    text("counts", `${c.templates} / ${c.empty_block_jobs} / ${c.fallbacks}`);
    text("shares", `${c.shares_forwarded} / ${c.pool_accepted} / ${c.pool_rejected}`);
    text("blocks", `${c.blocks}${s.blocks.length ? ` (last ${s.blocks[s.blocks.length - 1]})` : ""}`);
    text("latency", `${ms(s.latency_ms.first_job)} / ${ms(s.latency_ms.full_template)}`);
    text("upstream", `${s.upstream.pool} / ${s.upstream.jds} / ${s.upstream.node}`);
  }

  async function poll() {
    try {
      const r = await fetch("/api/v1/jd", { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      render(await r.json());
      text("status", `updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      text("status", `cannot reach mos jd: ${e.message}`);
    }
  }

  poll();
  setInterval(poll, 1000);
})();
