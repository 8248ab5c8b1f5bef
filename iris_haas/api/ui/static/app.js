// The Iris dashboard: topology, calendar, live events and utilization, read from the /v1 API with the
// token the user pastes. Everything the API says is rendered with textContent (a tenant's
// description is text, whatever it holds); the page's policy allows no inline script.

const TOKEN_KEY = "iris-token";
const FEED_MAX = 200; // events kept in the Live view
const $ = (sel) => document.querySelector(sel);

const state = {
  token: null,
  me: null, // {admin, tenant}
  sites: [], nodes: [], gateways: [], links: [], hosts: [], tenants: [],
  reservations: new Map(), // id -> the reservation as GET /v1/reservations/{id} answers (with resources)
  cursor: 0,
  abort: null,
};

class ApiError extends Error {
  constructor(status, body) {
    super(`${status} ${body.type || "HTTPError"}: ${body.message || ""}`);
    this.status = status;
    this.retryAfter = 0;
  }
}

async function api(path, init = {}) {
  const r = await fetch(path, {
    ...init,
    headers: { ...(init.headers || {}), Authorization: `Bearer ${state.token}` },
    cache: "no-store",
    credentials: "omit",
  });
  if (!r.ok) {
    let body = {};
    try { body = await r.json(); } catch { /* not JSON */ }
    const e = new ApiError(r.status, body);
    e.retryAfter = Number(r.headers.get("Retry-After")) || 0;
    throw e;
  }
  return r;
}

const get = async (path) => (await api(path)).json();

// ------------------------------------------------------------------ DOM helpers (text only)
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k.startsWith("data-") || k === "title" || k === "role") node.setAttribute(k, String(v));
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

const short = (id) => String(id).slice(0, 8);
const when = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) : "—");
const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

function showError(e) {
  $("#error").textContent = e ? String(e.message || e) : "";
}

// ------------------------------------------------------------------ loading
async function loadAll() {
  if (state.me.admin) {
    const [sites, nodes, gateways, links, hosts, tenants, list] = await Promise.all(
      ["/v1/sites", "/v1/nodes", "/v1/gateways", "/v1/links", "/v1/hosts", "/v1/tenants", "/v1/reservations"]
        .map(get));
    Object.assign(state, { sites, nodes, gateways, links, hosts, tenants });
    await loadReservations(list);
  } else {
    const [sites, list] = await Promise.all(["/v1/sites", "/v1/reservations"].map(get));
    state.sites = sites;
    await loadReservations(list);
  }
}

async function loadReservations(list) {
  // the list has no resources: each reservation's own answer names its L0s, L1s and links
  const full = await Promise.all(list.map((r) => get(`/v1/reservations/${encodeURIComponent(r.id)}`)));
  state.reservations = new Map(full.map((r) => [r.id, r]));
}

async function refreshReservation(rid) {
  try {
    state.reservations.set(rid, await get(`/v1/reservations/${encodeURIComponent(rid)}`));
  } catch (e) {
    if (e.status === 404) state.reservations.delete(rid);
    else throw e;
  }
}

// a burst of events (a reserve writes several) refreshes each reservation once
const stale = new Set();
let staleTimer = null;
function refreshSoon(rid) {
  stale.add(rid);
  if (staleTimer) return;
  staleTimer = setTimeout(async () => {
    const rids = [...stale];
    stale.clear();
    staleTimer = null;
    if (!state.me) return; // signed out meanwhile
    try {
      await Promise.all(rids.map(refreshReservation));
      showError(null);
    } catch (e) { showError(e); }
    refreshHostsSoon();
    renderSoon();
  }, 50);
}

let hostsTimer = null;
function refreshHostsSoon() {
  // the hosts' generations move with every reservation that changes them: look again, once per burst
  if (!state.me || !state.me.admin || hostsTimer) return;
  hostsTimer = setTimeout(async () => {
    hostsTimer = null;
    try {
      state.hosts = await get("/v1/hosts");
      renderSoon();
    } catch (e) { showError(e); }
  }, 300);
}

// ------------------------------------------------------------------ rendering
let renderPending = false;
function renderSoon() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; render(); });
}

function render() {
  renderTopology();
  renderTimeline();
}

function sortedReservations() {
  return [...state.reservations.values()].sort((a, b) => (a.start || "").localeCompare(b.start || ""));
}

function tenantName(id) {
  if (!state.me.admin) return state.me.tenant;
  const t = state.tenants.find((x) => x.id === id);
  return t ? t.name : `#${id}`;
}

function live(r) {
  return !["Terminated", "Failed", "PassedEndTime"].includes(r.lifecycle_state);
}

// the L1s on each L0 and the bandwidth on each link, of the reservations still alive
function placements() {
  const l1s = new Map(); // node name -> [{rid, l1, kind, status}]
  const links = new Map(); // link name -> [{rid, mbps}]
  for (const r of state.reservations.values()) {
    if (!live(r)) continue;
    for (const res of r.resources) {
      if (res.resource_kind === "node" && res.node) {
        if (!l1s.has(res.node)) l1s.set(res.node, []);
        l1s.get(res.node).push({ rid: r.id, l1: res.l1, kind: res.l1_kind, status: res.status });
      } else if (res.resource_kind === "link" && res.link) {
        if (!links.has(res.link)) links.set(res.link, []);
        const item = r.items[res.item] || {};
        links.get(res.link).push({ rid: r.id, mbps: item.bandwidth_mbps || 0, r });
      }
    }
  }
  return { l1s, links };
}

function hostBox(kind, name, meta, l1s) {
  const host = state.hosts.find((h) => h.host === name);
  const out = host && (!host.in_sync || host.acked < host.generation);
  const box = el("div", { class: `box ${kind}${out ? " out-of-sync" : ""}`, "data-node": kind === "node" ? name : null,
    "data-gateway": kind === "gateway" ? name : null });
  box.append(el("span", { class: "name", text: name }));
  if (host) {
    const title = `generation ${host.generation}, acked ${host.acked}` +
      (host.last_seen ? `, last seen ${new Date(host.last_seen * 1000).toLocaleString()}` : ", never seen") +
      (host.error ? `; last error: ${host.error}` : "");
    box.append(el("span", { class: `sync ${out ? "out" : "in"}`, "data-sync": out ? "out" : "in", title,
      text: out ? `out of sync (${host.acked}/${host.generation})` : "in sync" }));
    if (host.error) box.append(el("div", { class: "meta error", text: host.error }));
  }
  if (meta) box.append(el("div", { class: "meta", text: meta }));
  if (l1s && l1s.length) {
    const ul = el("ul", { class: "l1s" });
    for (const x of l1s) {
      ul.append(el("li", { class: "l1", "data-reservation": x.rid, title: `reservation ${x.rid} (${x.status})`,
        text: `${x.l1 || "L1"} · ${short(x.rid)}` }));
    }
    box.append(ul);
  }
  return box;
}

function renderTopology() {
  const { l1s, links } = placements();
  const sites = $("#sites");
  const cards = [];
  const nodesShown = new Set();
  for (const site of state.sites) {
    const card = el("div", { class: `site ${site.kind}`, "data-site": site.name });
    card.append(el("h3", { text: site.name }), el("div", {
      class: "kind", text: site.kind === "haas" ? "HaaS data center" :
        `IaaS site${site.gateway_underlay ? ` · gateway ${site.gateway_underlay}` : ""}` +
        `${site.service_model ? ` · model ${site.service_model}` : ""}`,
    }));
    for (const g of state.gateways.filter((x) => x.site_id === site.id)) {
      card.append(hostBox("gateway", g.name, `gateway · ${g.underlay_address} · uplink ${g.uplink}`));
    }
    for (const n of state.nodes.filter((x) => x.site_id === site.id)) {
      nodesShown.add(n.name);
      card.append(hostBox("node", n.name, `L0 · ${n.state} · ${n.cpus} cpus · ${n.memory_mb} MiB · ${n.disk_gb} GB`,
        l1s.get(n.name)));
    }
    cards.push(card);
  }
  // a tenant does not see the inventory: its L1s' L0s, as its reservations name them
  const others = [...l1s.keys()].filter((n) => !nodesShown.has(n)).sort();
  if (others.length) {
    const card = el("div", { class: "site haas", "data-site": "" });
    card.append(el("h3", { text: "HaaS L0s holding your L1s" }));
    for (const n of others) card.append(hostBox("node", n, "L0", l1s.get(n)));
    cards.push(card);
  }
  sites.replaceChildren(...cards);
  if (!cards.length) sites.append(el("p", { class: "hint", text: "No sites." }));

  const siteName = (id) => (state.sites.find((s) => s.id === id) || { name: `#${id}` }).name;
  const now = Date.now();
  const linkRows = [];
  const linkNames = new Set();
  const reservedNow = (name) => (links.get(name) || [])
    .filter((x) => x.r.start && Date.parse(x.r.start) <= now && now < Date.parse(x.r.end))
    .reduce((sum, x) => sum + x.mbps, 0);
  for (const l of state.links) {
    linkNames.add(l.name);
    linkRows.push(el("tr", { "data-link": l.name }, el("td", { text: l.name }),
      el("td", { text: `${siteName(l.site_a_id)} ↔ ${siteName(l.site_b_id)}` }),
      el("td", { text: `${l.capacity_mbps} Mbit/s` }), el("td", { text: `${reservedNow(l.name)} Mbit/s` })));
  }
  for (const name of [...links.keys()].filter((n) => !linkNames.has(n)).sort()) {
    linkRows.push(el("tr", { "data-link": name }, el("td", { text: name }), el("td", { text: "—" }),
      el("td", { text: "—" }), el("td", { text: `${reservedNow(name)} Mbit/s` })));
  }
  $("#links tbody").replaceChildren(...linkRows);

  const rows = sortedReservations().map((r) => el("tr", { "data-reservation": r.id, class: `state-${r.lifecycle_state}` },
    el("td", { class: "id", text: r.id }),
    el("td", { text: tenantName(r.tenant_id) }),
    el("td", { class: "description", text: r.description }),
    el("td", { text: r.reservation_state }),
    el("td", { text: r.provision_state }),
    el("td", { text: r.lifecycle_state + (r.data_plane_active ? " (active)" : "") }),
    el("td", { text: when(r.start) }),
    el("td", { text: when(r.end) }),
    el("td", { text: r.resources.filter((x) => x.resource_kind === "node").map((x) => `${x.l1}@${x.node}`).join(", ") || "—" })));
  $("#reservations tbody").replaceChildren(...rows);
}

function renderTimeline() {
  const cal = $("#calendar");
  const now = Date.now();
  const rows = new Map(); // "node:l0-0" / "link:wan" -> {label, meta, bars: Map(rid -> {r, n})}
  const row = (key, label, meta) => {
    if (!rows.has(key)) rows.set(key, { label, meta, bars: new Map() });
    return rows.get(key);
  };
  for (const n of state.nodes) row(`node:${n.name}`, n.name, "L0");
  for (const l of state.links) row(`link:${l.name}`, l.name, `link · ${l.capacity_mbps} Mbit/s`);
  let lo = now - 3600e3, hi = now + 3 * 3600e3;
  for (const r of state.reservations.values()) {
    if (!r.start || !r.end) continue;
    for (const res of r.resources) {
      const key = res.resource_kind === "node" && res.node ? `node:${res.node}`
        : res.resource_kind === "link" && res.link ? `link:${res.link}` : null;
      if (!key) continue;
      const target = row(key, res.node || res.link, res.resource_kind === "node" ? "L0" : "link");
      const bar = target.bars.get(r.id) || { r, n: 0, held: false };
      bar.n += 1;
      bar.held ||= res.status === "held";
      target.bars.set(r.id, bar);
    }
    lo = Math.min(lo, Date.parse(r.start));
    hi = Math.max(hi, Date.parse(r.end));
  }
  hi = Math.min(hi, now + 30 * 86400e3); // a far end is cut at 30 days
  lo = Math.max(lo, now - 30 * 86400e3);
  const pct = (t) => `${(100 * (Math.min(Math.max(t, lo), hi) - lo)) / (hi - lo)}%`;

  const axis = el("div", { class: "cal-track" });
  const ticks = 6;
  for (let i = 0; i < ticks; i++) {
    const t = lo + ((hi - lo) * i) / ticks;
    const tick = el("div", { class: "cal-tick", text: new Date(t).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) });
    tick.style.left = pct(t);
    axis.append(tick);
  }
  const out = [el("div", { class: "cal-row axis" }, el("div", { class: "cal-label" }), axis)];
  // the L0s' rows first, then the links'
  const sorted = [...rows.entries()].sort(([a], [b]) => b.split(":")[0].localeCompare(a.split(":")[0]) ||
    a.localeCompare(b));
  for (const [key, { label, meta, bars }] of sorted) {
    const track = el("div", { class: "cal-track" });
    const list = [...bars.values()].sort((a, b) => a.r.start.localeCompare(b.r.start));
    list.forEach(({ r, n, held }, i) => {
      const s = Date.parse(r.start), e = Date.parse(r.end);
      const active = r.data_plane_active;
      const bar = el("div", {
        class: `cal-bar${held ? " held" : ""}${active ? " active" : ""} state-${r.lifecycle_state}`,
        "data-reservation": r.id, "data-row": key,
        title: `${r.id}\n${r.description}\n${tenantName(r.tenant_id)} · ${r.reservation_state} / ` +
          `${r.provision_state} / ${r.lifecycle_state}\n${when(r.start)} – ${when(r.end)}`,
        text: `${short(r.id)}${n > 1 ? ` ×${n}` : ""} ${r.description}`,
      });
      bar.style.left = pct(s);
      bar.style.width = `calc(${pct(e)} - ${pct(s)})`;
      bar.style.top = `${0.35 + 1.5 * i}rem`;
      track.append(bar);
    });
    const line = el("div", { class: "cal-row", "data-row": key },
      el("div", { class: "cal-label", title: label }, label, el("div", { class: "meta", text: meta })), track);
    line.style.minHeight = `${Math.max(2, 0.7 + 1.5 * list.length)}rem`;
    out.push(line);
  }
  if (sorted.length === 0) out.push(el("p", { class: "hint", text: "Nothing reserved." }));
  cal.replaceChildren(...out);
  // now: a line over every row's track
  const nowLine = el("div", { class: "cal-now", title: `now: ${new Date(now).toLocaleString()}`, "data-now": now });
  nowLine.style.left = `calc(10rem + (100% - 10rem) * ${(now - lo) / (hi - lo)})`;
  cal.append(nowLine);
}

// ------------------------------------------------------------------ live: the event stream
function addToFeed(ev, fresh) {
  const feed = $("#feed");
  const d = ev.detail || {};
  const what = d.machine ? `${d.machine}: ${d.event || ""} ${d.from || ""} → ${d.to || ""}` : JSON.stringify(d);
  const li = el("li", { class: fresh ? "fresh" : null, "data-cursor": ev.cursor, "data-reservation": ev.reservation_id },
    el("span", { class: "at", text: clock(ev.at), title: ev.at }),
    el("span", { class: "id", text: short(ev.reservation_id), title: ev.reservation_id }),
    el("span", { text: `${ev.type} · ${what}` }));
  feed.prepend(li);
  while (feed.childElementCount > FEED_MAX) feed.lastElementChild.remove();
}

// the feed so far (its last FEED_MAX events), then the cursor to stream from
async function catchUp() {
  let after = 0;
  let tail = [];
  for (;;) {
    const page = await get(`/v1/events?after=${after}&limit=1000`);
    tail = tail.concat(page.events).slice(-FEED_MAX);
    after = page.next;
    if (page.events.length < 1000) break;
  }
  $("#feed").replaceChildren();
  for (const ev of tail) addToFeed(ev, false);
  return after;
}

// Server-Sent Events over fetch (EventSource cannot send the token): each event is its
// `id:` and `data:` lines up to a blank line; a line starting with ":" is a heartbeat.
async function* sse(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", data = [], id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { id, data: data.join("\n") };
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let v = colon < 0 ? "" : line.slice(colon + 1);
      if (v.startsWith(" ")) v = v.slice(1);
      if (field === "data") data.push(v);
      else if (field === "id") id = v;
    }
  }
}

function streamState(text, on) {
  const s = $("#stream-state");
  s.textContent = text;
  s.className = `stream ${on ? "on" : "off"}`;
}

// The stream ends after a while by design: it is opened again at once, resuming after the last
// event received (Last-Event-ID); a coordinator that is away is tried again, less and less often.
async function follow(signal) {
  const shown = $("#stream-state");
  let wait = 1000, opened = 0;
  while (!signal.aborted) {
    let pause = 250;
    try {
      const r = await api("/v1/events/stream", {
        headers: { Accept: "text/event-stream", "Last-Event-ID": String(state.cursor) }, signal,
      });
      shown.dataset.opened = String(++opened);
      streamState("live", true);
      wait = 1000;
      for await (const msg of sse(r.body)) {
        const ev = JSON.parse(msg.data);
        state.cursor = ev.cursor;
        addToFeed(ev, true);
        refreshSoon(ev.reservation_id);
        if (ev.type === "dataPlaneStateChange" && util.timer) loadUtilization();
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e.status === 401) { signOut("the token is no longer accepted"); return; }
      streamState("reconnecting…", false);
      pause = e.retryAfter ? e.retryAfter * 1000 : wait;
      wait = Math.min(wait * 2, 15000);
    }
    await new Promise((ok) => setTimeout(ok, pause));
  }
}

// ------------------------------------------------------------------ utilization: the agents' metrics
const UTIL_EVERY_MS = 5000;
const util = { last: null, timer: null, pending: false };

const bytes = (n) => {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
};
const bits = (bps) => (bps === null ? "—" : bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s`
  : `${(bps / 1e3).toFixed(1)} kbit/s`);

// the rate of a counter between the last reading and this one (null: no earlier reading, or reset)
function rate(prev, key, field, now, dt) {
  const before = prev && prev.get(key);
  if (!before || dt <= 0 || before[field] === null || now[field] === null || now[field] < before[field]) return null;
  return (now[field] - before[field]) / dt;
}

async function loadUtilization() {
  if (!state.me || util.pending) return;
  util.pending = true;
  try {
    const u = await get("/v1/utilization");
    const l1s = new Map(u.l1s.map((x) => [`${x.host}/${x.l1}`, x]));
    const ports = new Map(u.ports.map((x) => [`${x.host}/${x.port}`, x]));
    const dt = util.last ? u.at - util.last.at : 0;
    const prev = util.last;
    util.last = { at: u.at, l1s, ports };
    renderUtilization(u, prev, dt);
  } catch (e) { showError(e); } finally { util.pending = false; }
}

function renderUtilization(u, prev, dt) {
  $("#util-at").textContent = `Read at ${new Date(u.at * 1000).toLocaleTimeString()}.`;
  const l1Rows = u.l1s.map((x) => {
    const cpu = rate(prev && prev.l1s, `${x.host}/${x.l1}`, "cpu_seconds", x, dt);
    return el("tr", { "data-l1": x.l1 }, el("td", { text: x.l1 }), el("td", { text: x.tenant }),
      el("td", { text: x.kind }), el("td", { text: x.host }),
      el("td", { class: "cpu", text: cpu === null ? "—" : `${(100 * cpu).toFixed(1)} %` }),
      el("td", { class: "memory", text: bytes(x.memory_bytes) }));
  });
  if (!l1Rows.length) l1Rows.push(el("tr", {}, el("td", { colSpan: 6, class: "hint", text: "No L1 reported." })));
  $("#util-l1s tbody").replaceChildren(...l1Rows);
  const portRows = u.ports.map((x) => {
    const key = `${x.host}/${x.port}`;
    const rx = rate(prev && prev.ports, key, "rx_bytes", x, dt), tx = rate(prev && prev.ports, key, "tx_bytes", x, dt);
    return el("tr", { "data-port": x.port, "data-host": x.host }, el("td", { text: x.port }), el("td", { text: x.kind }),
      el("td", { text: x.tenant }), el("td", { text: x.l1 || "—" }), el("td", { text: x.host }),
      el("td", { class: "rx-rate", text: bits(rx === null ? null : 8 * rx) }),
      el("td", { class: "tx-rate", text: bits(tx === null ? null : 8 * tx) }),
      el("td", { class: "rx", "data-bytes": x.rx_bytes, text: bytes(x.rx_bytes) }),
      el("td", { class: "tx", "data-bytes": x.tx_bytes, text: bytes(x.tx_bytes) }));
  });
  if (!portRows.length) portRows.push(el("tr", {}, el("td", { colSpan: 9, class: "hint", text: "No port reported." })));
  $("#util-ports tbody").replaceChildren(...portRows);
  const down = u.hosts.filter((h) => !h.ok);
  $("#util-hosts").textContent = down.length ? `Not read: ${down.map((h) => `${h.host} (${h.error})`).join("; ")}` : "";
}

function utilizationShown(on) {
  clearInterval(util.timer);
  util.timer = null;
  if (!on) return;
  loadUtilization();
  util.timer = setInterval(loadUtilization, UTIL_EVERY_MS);
}

// ------------------------------------------------------------------ sign in, views
function showView(name) {
  for (const b of document.querySelectorAll("#views button")) b.setAttribute("aria-pressed", String(b.dataset.view === name));
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== name;
  utilizationShown(name === "utilization");
}

async function signIn(token) {
  state.token = token;
  let me;
  try {
    me = await (await api("/ui/whoami")).json();
  } catch (e) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("#signin-error").textContent = e.status === 401 ? "This token is not accepted." : String(e.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.me = me;
  $("#signin").hidden = true;
  $("#signin-error").textContent = "";
  $("#views").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = me.admin ? "admin" : `tenant ${me.tenant}`;
  showView("topology");
  try {
    // the cursor first: whatever happens after it comes by the stream, whatever came before it
    // is in what loadAll reads next
    state.cursor = await catchUp();
    await loadAll();
    showError(null);
  } catch (e) {
    showError(e);
  }
  render();
  state.abort = new AbortController();
  follow(state.abort.signal);
}

function signOut(why) {
  if (state.abort) state.abort.abort();
  utilizationShown(false);
  util.last = null;
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, { token: null, me: null, sites: [], nodes: [], gateways: [], links: [], hosts: [],
    tenants: [], reservations: new Map(), cursor: 0, abort: null });
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("#views").hidden = true;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  $("#stream-state").textContent = "";
  $("#feed").replaceChildren();
  $("#signin").hidden = false;
  $("#token").value = "";
  $("#signin-error").textContent = why || "";
  showError(null);
}

$("#signin").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("#token").value.trim());
});
$("#signout").addEventListener("click", () => signOut());
for (const b of document.querySelectorAll("#views button")) b.addEventListener("click", () => showView(b.dataset.view));
setInterval(() => { if (state.me) renderSoon(); }, 30000); // the now line moves

const kept = sessionStorage.getItem(TOKEN_KEY);
if (kept) signIn(kept);
