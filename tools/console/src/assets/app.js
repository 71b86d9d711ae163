// The console page: one EventSource, `snapshot` redraws the panels, `watch` adds to
// the timeline. No framework, no build step.
"use strict";

// Errors of this page show on it (and the browser test reads them from #errors).
const errorBox = document.getElementById("errors");
function showError(text) {
  errorBox.hidden = false;
  errorBox.textContent += text + "\n";
}
// Capturing, so a resource that fails to load (whose error does not bubble) counts too.
window.addEventListener("error", (e) => {
  const from = e.target && e.target !== window ? e.target.src || e.target.href : null;
  showError(from ? "failed to load " + from : "error: " + e.message);
}, true);
window.addEventListener("unhandledrejection", (e) => showError("unhandled: " + e.reason));
const consoleError = console.error.bind(console);
console.error = (...args) => { showError("console.error: " + args.join(" ")); consoleError(...args); };

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const DOCS = "https://github.com/coord-shop/coord-shop/blob/main/docs/primitives/";
const PRIMITIVE_DOC = {
  lock: "mutex.md", election: "election.md", queue: "work-queue.md", semaphore: "semaphore.md",
  barrier: "barrier.md", stm: "stm.md", rwlock: "rwmutex.md",
};

let streamUp = false;
let last = null;
const seenTokens = {}; // lock name -> holder token, to animate hand-offs
const seenLeaders = {}; // election -> leader revision

function who(c, role, extra) {
  const name = c.replica || "lease " + c.lease;
  const ttl = c.ttl == null ? "" : ` · TTL ${c.ttl}s`;
  return `<div class="who ${role}" data-lease="${esc(c.lease)}" data-revision="${c.revision}">` +
    `<b>${esc(name)}</b><br><span class="sub">rev ${c.revision}${ttl}${extra || ""}</span></div>`;
}

function lockHtml(lock, acceptedToken) {
  const h = lock.holder;
  const handoff = h && seenTokens[lock.name] !== undefined && seenTokens[lock.name] !== h.revision;
  seenTokens[lock.name] = h ? h.revision : null;
  const parts = [];
  if (h) {
    parts.push(who(h, "holder" + (handoff ? " handoff" : ""), ` · token <b class="token">${h.revision}</b>`));
  }
  lock.waiters.forEach((w, i) => {
    parts.push(`<span class="arrow">←</span>`);
    parts.push(who(w, "waiter", ` · #${i + 1} in line`));
  });
  const accepted = acceptedToken == null ? "" :
    ` · stock row last accepted token <b>${acceptedToken}</b>`;
  return `<div class="lock" data-name="${esc(lock.name)}" data-holder="${h ? h.revision : ""}" data-waiters="${lock.waiters.length}">` +
    `<div class="title">${esc(lock.name)} <span class="meta">${lock.waiters.length} waiting${accepted}</span></div>` +
    `<div class="line">${parts.join("")}</div></div>`;
}

function renderLocks(s) {
  const accepted = {};
  s.stock.forEach((row) => { accepted[row.sku] = row.fence_token; });
  const html = s.model.locks.map((l) => lockHtml(l, l.sku != null ? accepted[l.sku] : null)).join("");
  $("locks").innerHTML = html || `<p class="empty">No lock is held. The mutex strategy takes one per SKU while it reserves.</p>`;
}

function progress(value) {
  try {
    const v = JSON.parse(value);
    if (v && typeof v === "object") {
      return Object.entries(v).filter(([k]) => k !== "replica").map(([k, x]) => `${k} ${x}`).join(" · ");
    }
  } catch (_) { /* a plain replica id */ }
  return "";
}

function renderElections(s) {
  const html = s.model.elections.map((e) => {
    const l = e.leader;
    const changed = l && seenLeaders[e.name] !== undefined && seenLeaders[e.name] !== l.revision;
    seenLeaders[e.name] = l ? l.revision : null;
    const line = [];
    if (l) line.push(who(l, "holder" + (changed ? " handoff" : ""), ` · token ${l.revision}`));
    e.candidates.forEach((c) => { line.push(`<span class="arrow">←</span>`); line.push(who(c, "waiter", "")); });
    const p = l ? progress(l.value) : "";
    return `<div class="election" data-name="${esc(e.name)}" data-leader="${esc(l ? (l.replica || l.lease) : "")}">` +
      `<div class="title">${esc(e.name)} <span class="meta">${e.candidates.length} in line</span></div>` +
      `<div class="line">${line.join("")}</div>` +
      (p ? `<div class="progress">proclaimed: ${esc(p)}</div>` : "") + `</div>`;
  }).join("");
  $("elections").innerHTML = html || `<p class="empty">No election. Each service campaigns for its job at start.</p>`;
  const hist = s.history.slice().reverse().slice(0, 30).map((h) =>
    `<li data-election="${esc(h.election)}">${new Date(h.at_ms).toLocaleTimeString()} · ${esc(h.election)}: ` +
    (h.leader ? `<b>${esc(h.leader)}</b> leads (token ${h.revision})` : `<span class="over">nobody leads</span>`) + `</li>`).join("");
  $("history").innerHTML = hist;
}

const TIERS = { 0: "platinum", 1: "gold", 2: "standard" };

function renderQueues(s) {
  const html = s.model.queues.map((q) => {
    const prios = Object.keys(q.depth).map(Number);
    [0, 1, 2].forEach((p) => { if (!prios.includes(p)) prios.push(p); });
    prios.sort((a, b) => a - b);
    const max = Math.max(1, ...prios.map((p) => q.depth[p] || 0));
    const bars = prios.map((p) => {
      const n = q.depth[p] || 0;
      return `<div><div class="bar" style="height:${(1.4 + 2.6 * n / max).toFixed(2)}rem">${n}</div>` +
        `<div class="barlabel">p${p}${TIERS[p] ? "<br>" + TIERS[p] : ""}</div></div>`;
    }).join("");
    const items = q.items.slice(0, 40).map((i) => {
      const claim = i.claim ? ` <span class="claimed">claimed by ${esc(i.claim.replica || "lease " + i.claim.lease)}, attempt ${i.claim.attempt}</span>` : "";
      return `<li>p${i.priority} · ${esc(i.id.slice(0, 13))} ${i.customer ? "· " + esc(i.customer) : ""} · ${i.attempts} attempts${claim}</li>`;
    }).join("");
    const dead = q.dead.map((i) => `<li class="dead">dead: ${esc(i.id)} after ${i.attempts} attempts</li>`).join("");
    return `<div class="queue" data-name="${esc(q.name)}" data-total="${q.total}" data-claimed="${q.claimed}" data-dead="${q.dead.length}">` +
      `<div class="title">${esc(q.name)} <span class="meta">depth <span class="big depth">${q.total}</span> · ` +
      `${q.claimed} claimed · ${q.dead.length} dead letters${q.malformed ? " · " + q.malformed + " malformed" : ""}</span></div>` +
      `<div class="bars">${bars}</div><ul class="items">${items}${dead}</ul></div>`;
  }).join("");
  $("queues").innerHTML = html || `<p class="empty">The payment queue is empty (depth 0).</p>`;
  const sems = s.model.semaphores.map((m) => {
    const free = Math.max(0, m.permits - m.holders.length);
    const dots = `<span class="permit held"></span>`.repeat(m.holders.length) + `<span class="permit"></span>`.repeat(free);
    const holders = m.holders.map((h) => who(h, "holder", "")).join("");
    return `<div class="semaphore" data-name="${esc(m.name)}"><div class="title">semaphore ${esc(m.name)} ` +
      `<span class="meta">${m.holders.length} of ${m.permits} permits held, ${free} free, ${m.waiters.length} waiting</span></div>` +
      `${dots}<div class="line">${holders}</div></div>`;
  }).join("");
  $("semaphores").innerHTML = sems || `<p class="empty">No provider permit is held right now.</p>`;
}

function renderSales(s) {
  const html = s.sales.map((sale) => {
    const closed = sale.barrier_closed;
    const state = closed ? `<span class="barrier closed">barrier closed: buyers wait</span>` :
      `<span class="barrier open">open</span>`;
    const limit = sale.per_customer_limit ? `limit ${sale.per_customer_limit} per customer` : "no limit";
    const rows = sale.customers.slice(0, 12).map((c) =>
      `<tr><td>${esc(c.customer)}</td><td class="${c.over_limit ? "over" : ""}">${c.units}${c.over_limit ? " over the limit" : ""}</td>` +
      `<td>${sale.stm_customers[c.customer] ?? ""}</td></tr>`).join("");
    return `<div class="sale" data-sale="${esc(sale.sale)}" data-closed="${closed}"><div class="title">${esc(sale.sale)} ${state}` +
      ` <span class="meta">${limit}${sale.barrier_revision ? " · barrier rev " + sale.barrier_revision : ""}</span></div>` +
      (rows ? `<table><tr><th>customer</th><th>units</th><th>stm counter</th></tr>${rows}</table>` : "") + `</div>`;
  }).join("");
  $("sales").innerHTML = html || `<p class="empty">No flash sale.</p>`;
}

function renderStock(s) {
  if (!s.database.configured) {
    $("stock").innerHTML = `<p class="empty">No inventory database configured (INVENTORY_DATABASE_URL).</p>`;
    return;
  }
  const rows = s.stock.map((r) => {
    const c = r.conservation;
    const lock = r.lock ? (r.lock.holder ? `held · ${r.lock.waiters.length} waiting` : "") : "";
    return `<tr class="sku${c.ok ? "" : " broken"}" data-sku="${esc(r.sku)}" data-ok="${c.ok}">` +
      `<td>${esc(r.sku)}</td><td class="left">${r.strategies.map((x) => `<span class="tag">${esc(x)}</span>`).join("") || "–"}</td>` +
      `<td>${r.available}</td><td>${r.reserved}</td><td>${r.sold}</td><td>${r.stocked}</td>` +
      `<td><span class="verdict ${c.ok ? "ok" : "bad"}">${c.ok ? "adds up" : "BROKEN"}</span>` +
      (c.ok ? "" : `<div class="problem">${esc(c.problem)}</div>`) + `</td>` +
      `<td>${r.fence_token}</td><td>${r.stm_available ?? ""}</td><td class="left">${lock}</td></tr>`;
  }).join("");
  $("stock").innerHTML = rows ?
    `<table><tr><th>SKU</th><th class="left">strategies</th><th>available</th><th>reserved</th><th>sold</th><th>stocked</th>` +
    `<th>conservation</th><th>fence token</th><th>stm counter</th><th class="left">lock</th></tr>${rows}</table>` :
    `<p class="empty">No SKU yet.</p>`;
}

function chart(title, points, pick, unit) {
  const values = points.map(pick);
  const shown = values.filter((v) => v != null);
  const now = shown.length ? shown[shown.length - 1] : null;
  const max = Math.max(1e-9, ...shown) * 1.15;
  const w = 600, h = 120;
  const n = Math.max(points.length - 1, 1);
  let path = "", dots = "";
  values.forEach((v, i) => {
    if (v == null) return;
    const x = (i / n) * w, y = h - (v / max) * (h - 8);
    path += (path ? " L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    if (points.length < 30) dots += `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="4" fill="#1d4ed8"/>`;
  });
  const span = points.length > 1 ? Math.round((points[points.length - 1].at_ms - points[0].at_ms) / 1000) : 0;
  return `<div class="chart"><div>${title}: <span class="now">${now == null ? "–" : now.toFixed(1) + " " + unit}</span>` +
    ` <small>(peak ${shown.length ? (max / 1.15).toFixed(1) : "–"}, last ${span}s)</small></div>` +
    `<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" data-points="${shown.length}"><path d="${path}" fill="none" stroke="#1d4ed8" stroke-width="3" vector-effect="non-scaling-stroke"/>${dots}</svg></div>`;
}

function renderCharts(s) {
  if (!s.metrics.length) {
    $("charts").innerHTML = `<p class="empty">No metrics targets configured (METRICS_TARGETS).</p>`;
    return;
  }
  $("charts").innerHTML = chart("orders/s", s.series, (p) => p.orders_per_s, "/s") +
    chart("mean lock wait", s.series, (p) => p.lock_wait_ms, "ms");
}

function renderBanner(s) {
  const problems = [];
  if (!streamUp) problems.push("The console server is unreachable; reconnecting…");
  if (s) {
    if (!s.etcd.ok) problems.push(`etcd is unreachable (${s.etcd.message}); showing the last state seen, reconnecting…`);
    if (s.database.configured && !s.database.ok) problems.push(`Inventory database: ${s.database.message}; stock shows the last rows read.`);
    s.metrics.filter((t) => !t.ok).forEach((t) => problems.push(`Metrics ${t.target}: ${t.message || "no answer"}`));
  }
  const banner = $("banner");
  banner.hidden = problems.length === 0;
  banner.innerHTML = problems.map((p) => `<div>⚠ ${esc(p)}</div>`).join("");
  const live = $("live");
  const up = streamUp && s && s.etcd.ok;
  live.textContent = up ? "live" : "offline";
  live.className = "pill " + (up ? "on" : "off");
}

function render(s) {
  last = s;
  $("prefix").textContent = s.prefix;
  $("revision").textContent = s.revision;
  renderBanner(s);
  renderStock(s);
  renderLocks(s);
  renderElections(s);
  renderQueues(s);
  renderSales(s);
  renderCharts(s);
}

const filter = $("event-filter");
function eventVisible(li) {
  return filter.value === "all" || li.dataset.primitive === filter.value;
}
filter.addEventListener("change", () => {
  for (const li of $("events").children) li.hidden = !eventVisible(li);
});

function addEvent(e) {
  const li = document.createElement("li");
  li.dataset.primitive = e.primitive;
  li.dataset.revision = e.revision;
  li.className = "fresh";
  const doc = PRIMITIVE_DOC[e.primitive];
  const prim = doc ? `<a href="${DOCS}${doc}" target="_blank" rel="noopener">${e.primitive}</a>` : e.primitive;
  li.innerHTML = `<span>rev ${e.revision}</span><span class="${e.kind}">${e.kind}</span><span>${prim}</span>` +
    `<span class="key" title="${esc(e.value)}">${esc(e.key)}</span><span class="lease">${e.lease ? "lease " + esc(e.lease) : "no lease"}</span>`;
  li.hidden = !eventVisible(li);
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 300) list.removeChild(list.lastChild);
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { streamUp = true; $("events").innerHTML = ""; renderBanner(last); });
  source.addEventListener("snapshot", (m) => render(JSON.parse(m.data)));
  source.addEventListener("watch", (m) => addEvent(JSON.parse(m.data)));
  // EventSource reconnects by itself (the server asks for 1 s); the banner says so.
  source.addEventListener("error", () => { streamUp = false; renderBanner(last); });
}
connect();
