// The topology page: renders the agent's /events stream (server-sent
// events, one full topology per change). Text from the cluster (names) is
// only ever set as text, never as HTML.
"use strict";

const COLORS = ["#3867d6", "#20bf6b", "#eb3b5a", "#f7b731", "#8854d0", "#0fb9b1", "#fa8231", "#4b6584"];
const SVG = "http://www.w3.org/2000/svg";
const seen = new Set();
let first = true;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v);
  }
  for (const c of children) if (c != null) el.append(c);
  return el;
}

function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text != null) el.textContent = text;
  return el;
}

function colorOf(t, netId) {
  const i = t.networks.findIndex((n) => n.id === netId);
  return COLORS[(i < 0 ? 0 : i) % COLORS.length];
}

function problemCount(t) {
  return t.problems.length + t.hosts.reduce((n, x) => n + x.problems.length, 0);
}

function header(t) {
  document.getElementById("cluster").textContent = t.cluster;
  const n = problemCount(t);
  const health = document.getElementById("health");
  health.textContent = n === 0 ? "Healthy" : `${n} problem${n > 1 ? "s" : ""}`;
  health.className = "badge " + (n === 0 ? "ok" : "bad");
  const sec = document.getElementById("security");
  sec.textContent = t.open ? "Open cluster" : "Secured";
  sec.className = "badge " + (t.open ? "warn" : "ok");
  const leader = t.hosts.find((x) => x.id === t.store.leader);
  document.getElementById("store").textContent =
    `store ${t.store.backend || "?"} · leader ${leader ? leader.name : "none"}`;
  document.getElementById("revision").textContent = t.revision;
}

function problems(t) {
  const box = document.getElementById("problems");
  const items = t.problems.map((p) => ["cluster", p])
    .concat(t.hosts.flatMap((x) => x.problems.map((p) => [x.name, p])));
  box.hidden = items.length === 0;
  box.replaceChildren(h("h3", { text: "Needs attention" }),
    h("ul", {}, ...items.map(([who, p]) => h("li", {}, h("strong", { text: who + ": " }), p))));
}

function map(t) {
  const svg = document.getElementById("map");
  const W = 420, H = 320, cx = W / 2, cy = H / 2, r = Math.min(W, H) / 2 - 55;
  const pos = {};
  t.hosts.forEach((x, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, t.hosts.length);
    pos[x.id] = t.hosts.length === 1 ? [cx, cy] : [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  const nodes = [];
  // Several networks between the same two hosts: bend each its own way.
  const pairs = {};
  for (const tn of t.tunnels) {
    const key = tn.a + "|" + tn.b;
    const k = (pairs[key] = (pairs[key] || 0) + 1) - 1;
    const [x1, y1] = pos[tn.a] || [cx, cy], [x2, y2] = pos[tn.b] || [cx, cy];
    const mx = (x1 + x2) / 2, my = (y1 + y2) / 2, dx = x2 - x1, dy = y2 - y1;
    const len = Math.hypot(dx, dy) || 1, bend = (k % 2 ? -1 : 1) * (12 + 16 * Math.floor(k / 2));
    const qx = mx - (dy / len) * bend, qy = my + (dx / len) * bend;
    nodes.push(s("path", {
      d: `M${x1},${y1} Q${qx},${qy} ${x2},${y2}`, fill: "none",
      stroke: colorOf(t, tn.network), "stroke-width": 3, "stroke-linecap": "round", opacity: 0.85,
    }));
  }
  for (const x of t.hosts) {
    const [x0, y0] = pos[x.id];
    const count = t.endpoints.filter((e) => e.host === x.id).length;
    const g = s("g", { class: "map-host" + (x.alive ? "" : " dead") });
    g.append(s("circle", { cx: x0, cy: y0, r: 26 }),
      s("text", { x: x0, y: y0 + 5, class: "count" }, count),
      s("text", { x: x0, y: y0 + 44 }, x.name),
      s("text", { x: x0, y: y0 + 57, class: "addr" }, x.addr));
    nodes.push(g);
  }
  svg.replaceChildren(...nodes);
  document.getElementById("legend").replaceChildren(...t.networks.map((n) =>
    h("span", {}, h("span", { class: "swatch", style: `background:${colorOf(t, n.id)}` }), n.name)));
}

function networks(t) {
  document.getElementById("networks").replaceChildren(...t.networks.map((n) => {
    const pct = n.size ? Math.min(100, (100 * n.used) / n.size) : 0;
    const fill = h("div", { class: "fill" + (pct >= 100 ? " full" : pct >= 80 ? " high" : ""), style: `width:${pct.toFixed(1)}%` });
    return h("tr", { "data-network": n.name },
      h("td", {}, h("span", { class: "swatch", style: `background:${colorOf(t, n.id)}` }), h("strong", { text: n.name })),
      h("td", { class: "mono", text: n.subnet }),
      h("td", { class: "mono", text: n.gateway }),
      h("td", { class: "mono", text: String(n.vni) }),
      h("td", {}, h("div", { class: "pool" }, h("div", { class: "track" }, fill), h("span", { class: "num", text: `${n.used} / ${n.size}` }))));
  }));
  const name = (id) => (t.hosts.find((x) => x.id === id) || { name: id }).name;
  const net = (id) => (t.networks.find((n) => n.id === id) || { name: id }).name;
  const list = document.getElementById("tunnels");
  list.replaceChildren(...(t.tunnels.length ? t.tunnels.map((tn) =>
    h("li", { style: `border-color:${colorOf(t, tn.network)}` },
      `${name(tn.a)} ⇄ ${name(tn.b)} · ${net(tn.network)} (VNI ${tn.vni})`))
    : [h("li", { class: "none", text: "No tunnels in use: no network has endpoints on two hosts yet." })]));
}

function hosts(t) {
  document.getElementById("hosts").replaceChildren(...t.hosts.map((x) => {
    const mine = t.endpoints.filter((e) => e.host === x.id);
    const byNet = t.networks.map((n) => [n, mine.filter((e) => e.network === n.id)]).filter(([, es]) => es.length);
    const unhealthy = x.problems.length > 0;
    return h("article", { class: "host" + (unhealthy ? " unhealthy" : ""), "data-host": x.name, "data-addr": x.addr },
      h("header", {},
        h("span", {}, h("span", { class: "name", text: x.name }), x.id === t.this_node ? h("span", { class: "me", text: "this agent" }) : null),
        h("span", { class: "pill" + (x.alive ? "" : " dead"), text: x.alive ? "alive" : "dead" })),
      h("div", { class: "meta" },
        h("span", { class: "mono", text: x.addr }),
        h("span", { text: "store: " + x.role }),
        h("span", { text: "datapath: " + x.datapath }),
        h("span", { text: "lag: " + (x.applied_lag == null ? "–" : x.applied_lag) })),
      unhealthy ? h("ul", { class: "reasons" }, ...x.problems.map((p) => h("li", { text: p }))) : null,
      ...(byNet.length ? byNet.map(([n, es]) => h("div", { class: "net" },
        h("div", { class: "label" }, h("span", { class: "swatch", style: `background:${colorOf(t, n.id)}` }), n.name),
        h("ul", { class: "eps" }, ...es.map((e) => {
          const fresh = !first && !seen.has(e.id);
          return h("li", { class: "ep" + (fresh ? " fresh" : ""), "data-endpoint": e.id, "data-ip": e.ip },
            h("span", { class: "mono", text: e.ip }), h("span", { class: "epname", text: e.name || e.id.slice(0, 12) }));
        }))))
        : [h("div", { class: "empty", text: "No endpoints." })]));
  }));
}

function render(t) {
  if (!t) return;
  header(t); problems(t); map(t); networks(t); hosts(t);
  for (const e of t.endpoints) seen.add(e.id);
  first = false;
  document.body.dataset.revision = t.revision;
}

const live = document.getElementById("live");
const events = new EventSource("/events");
events.addEventListener("topology", (m) => { render(JSON.parse(m.data)); });
events.onopen = () => { live.textContent = "live"; live.className = "live on"; };
events.onerror = () => { live.textContent = "reconnecting"; live.className = "live"; };
