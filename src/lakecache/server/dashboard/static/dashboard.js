// lakecache dashboard: the few things a server-rendered page cannot do by itself.
//
// - log in and out (POST /api/v1/auth/login, /logout);
// - "Load more" of a folder or a diff (the next page of the API, appended);
// - "Cache on <site>" and "Evict" (POST /datasets/{d}/caches, DELETE /caches/{id}),
//   then poll GET /caches/{id} every second while anything is filling or being evicted.
//
// Every unsafe call sends the session's CSRF token (from <meta name="csrf-token">) in
// X-CSRF-Token. Data from the API reaches the page only through textContent and
// setAttribute, never as HTML. Links and buttons are real <a> and <button> elements, so
// everything works from the keyboard; what changes is announced in a live region.
"use strict";

(function () {
  const POLL_MS = 1000;
  const ACTIVE = new Set(["pending", "filling", "evicting"]);

  // --- the API --------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.hint = error.hint || "";
    }
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
    const response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      if (response.status === 401 && !path.startsWith("/api/v1/auth/")) {
        window.location.assign(loginUrl());
      }
      const error = data && data.error ? data.error : { message: `HTTP ${response.status}` };
      throw new ApiError(response.status, error);
    }
    return data;
  }

  function loginUrl() {
    const here = window.location.pathname + window.location.search;
    return "/login?next=" + encodeURIComponent(here);
  }

  // --- words for numbers (as the server's templates write them) -------------------------

  function size(n) {
    if (n === null || n === undefined) return "–";
    let value = Number(n);
    const units = ["B", "kB", "MB", "GB", "TB"];
    for (let i = 0; i < units.length; i++) {
      if (Math.abs(value) < 1000 || i === units.length - 1) {
        if (i === 0) return `${Math.trunc(value)} B`;
        const shown = Math.abs(value) < 100 ? Number(value.toPrecision(3)) : Math.round(value);
        return `${shown} ${units[i]}`;
      }
      value /= 1000;
    }
    return "";
  }

  function number(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  function duration(seconds) {
    const s = Math.max(0, Math.trunc(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.trunc(s / 60)} min`;
    if (s < 86400) {
      const h = Math.trunc(s / 3600);
      const m = Math.trunc((s % 3600) / 60);
      return m ? `${h} h ${m} min` : `${h} h`;
    }
    const d = Math.trunc(s / 86400);
    const h = Math.trunc((s % 86400) / 3600);
    return h ? `${d} d ${h} h` : `${d} d`;
  }

  function ago(iso) {
    if (!iso) return "never";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    return seconds < 5 ? "just now" : `${duration(seconds)} ago`;
  }

  function percent(part, whole) {
    if (!whole || whole <= 0) return 0;
    return Math.round(Math.min(100, Math.max(0, (100 * part) / whole)) * 10) / 10;
  }

  function short(id) {
    return (id || "").slice(0, 12);
  }

  function urlPath(path) {
    return path
      .split("/")
      .filter((s) => s)
      .map(encodeURIComponent)
      .join("/");
  }

  // --- small DOM helpers ------------------------------------------------------------------

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function field(root, name) {
    return root.querySelector(`[data-field="${name}"]`);
  }

  function setText(root, name, text) {
    const node = field(root, name);
    if (node) node.textContent = text;
  }

  function announce(text) {
    const region = document.getElementById("announce");
    if (!region) return;
    region.textContent = "";
    window.setTimeout(() => {
      region.textContent = text;
    }, 30);
  }

  function flash(message, hint) {
    let box = document.getElementById("flash");
    if (!box) {
      box = el("div", { id: "flash", class: "notice error", role: "alert" });
      const main = document.getElementById("main");
      main.insertBefore(box, main.firstChild);
    }
    box.replaceChildren(el("p", {}, message));
    if (hint) box.appendChild(el("p", { class: "hint" }, hint));
  }

  // --- log in and out -----------------------------------------------------------------------

  // Where to go after logging in: a path of this site, never another origin. The same
  // rules as safe_next on the server (pages.py), checked again here before navigating:
  // browsers drop tabs and newlines inside a URL ("/\t/evil" is "//evil") and read "\"
  // as "/", so a target with either, or with an encoded separator, goes to "/".
  function safeNext(target) {
    if (typeof target !== "string" || target.length > 2048) return "/";
    if (!/^\/(?![\/\\])/.test(target)) return "/";
    // eslint-disable-next-line no-control-regex
    if (/[\\\u0000-\u001f\u007f]/.test(target)) return "/";
    const path = target.split(/[?#]/, 1)[0];
    if (/%(2f|5c|2e|00|09|0a|0d)/i.test(path)) return "/";
    try {
      if (new URL(target, window.location.origin).origin !== window.location.origin) return "/";
    } catch (e) {
      return "/";
    }
    return target;
  }

  function setUpLogin() {
    const form = document.getElementById("login-form");
    if (!form) return;
    const error = document.getElementById("login-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = form.elements.namedItem("name").value.trim();
      const password = form.elements.namedItem("password").value;
      error.hidden = true;
      if (!name || !password) {
        error.textContent = "Enter your user name and password.";
        error.hidden = false;
        return;
      }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        await api("POST", "/api/v1/auth/login", { name, password });
        window.location.assign(safeNext(form.dataset.next));
      } catch (e) {
        error.textContent = e.hint ? `${e.message}. ${e.hint}` : e.message;
        error.hidden = false;
        form.elements.namedItem("password").focus();
      } finally {
        button.disabled = false;
      }
    });
  }

  async function logOut() {
    try {
      await api("POST", "/api/v1/auth/logout");
    } finally {
      window.location.assign("/login");
    }
  }

  // --- "Load more" --------------------------------------------------------------------------

  function treeRow(tbody, item) {
    const href =
      `/datasets/${encodeURIComponent(tbody.dataset.dataset)}/tree/${tbody.dataset.commit}/` +
      urlPath(item.path);
    const tr = el("tr");
    const th = el("th", { scope: "row" });
    th.appendChild(el("a", { class: item.type, href }, item.name + (item.type === "folder" ? "/" : "")));
    tr.appendChild(th);
    tr.appendChild(el("td", { class: "num", "data-label": "Size" }, size(item.size)));
    tr.appendChild(el("td", { class: "num", "data-label": "Files" }, number(item.files)));
    const kind = item.type === "folder" ? "folder" : item.content_type || "file";
    tr.appendChild(el("td", { "data-label": "Type" }, kind));
    return tr;
  }

  function changeRow(tbody, change) {
    const commit = change.status === "removed" ? tbody.dataset.from : tbody.dataset.to;
    const href =
      `/datasets/${encodeURIComponent(tbody.dataset.dataset)}/tree/${commit}/` + urlPath(change.path);
    const tr = el("tr");
    const status = el("td", { "data-label": "Change" });
    status.appendChild(el("span", { class: `change change-${change.status}` }, change.status));
    tr.appendChild(status);
    const th = el("th", { scope: "row" });
    th.appendChild(el("a", { class: "mono", href }, change.path));
    tr.appendChild(th);
    const before = change.old_size === null ? "–" : size(change.old_size);
    const after = change.new_size === null ? "–" : size(change.new_size);
    tr.appendChild(el("td", { class: "num", "data-label": "Size before" }, before));
    tr.appendChild(el("td", { class: "num", "data-label": "Size after" }, after));
    return tr;
  }

  async function loadMore(link) {
    if (link.getAttribute("aria-busy") === "true") return;
    const table = document.getElementById(link.dataset.target);
    const tbody = table.tBodies[0];
    const sep = link.dataset.api.includes("?") ? "&" : "?";
    const url = `${link.dataset.api}${sep}limit=200&cursor=${encodeURIComponent(link.dataset.cursor)}`;
    link.setAttribute("aria-busy", "true");
    try {
      const page = await api("GET", url);
      const build = link.dataset.kind === "diff" ? changeRow : treeRow;
      let first = null;
      for (const item of page.items) {
        const row = build(tbody, item);
        tbody.appendChild(row);
        first = first || row;
      }
      const counter = document.getElementById("shown-count");
      const shown = Number(counter.dataset.shown) + page.items.length;
      counter.dataset.shown = String(shown);
      counter.textContent =
        page.total !== null && page.total !== undefined
          ? `${number(shown)} of ${number(page.total)} shown`
          : `${number(shown)} shown`;
      if (page.next_cursor) {
        link.dataset.cursor = page.next_cursor;
        link.setAttribute("href", `?cursor=${encodeURIComponent(page.next_cursor)}`);
      } else {
        link.remove();
      }
      announce(`Loaded ${number(page.items.length)} more; ${counter.textContent}.`);
      // Keyboard users go on from the first new row, not from the top of the page.
      const target = first && first.querySelector("a");
      if (target) target.focus();
    } catch (e) {
      flash(e.message, e.hint);
    } finally {
      link.removeAttribute("aria-busy");
    }
  }

  // --- caches: ask, evict, watch --------------------------------------------------------------

  let pollTimer = null;

  function expiryText(c) {
    if (c.pinned) return "pinned";
    if (c.leases) return "in use";
    if (c.expires_in_seconds !== null && c.expires_in_seconds !== undefined) {
      return `in ${duration(c.expires_in_seconds)}`;
    }
    return "–";
  }

  function updateState(root, c) {
    root.dataset.state = c.state;
    const badge = field(root, "state");
    if (badge) {
      badge.textContent = c.state;
      badge.className = `state state-${c.state}`;
    }
  }

  // A note beside the state: shown with its text, or hidden when there is nothing to say.
  function setNote(root, name, text) {
    const node = field(root, name);
    if (!node) return;
    node.textContent = text || "";
    node.hidden = !text;
  }

  function updateRow(row, c) {
    updateState(row, c);
    row.dataset.request = c.request || "";
    setNote(row, "error", c.state === "failed" ? c.error : "");
    setNote(row, "agent-note", c.agent_note);
    setNote(row, "report", c.report);
    const done = c.state === "ready" ? c.bytes : c.done_bytes;
    const pct = c.bytes ? percent(done, c.bytes) : c.state === "ready" ? 100 : 0;
    const bar = field(row, "progress");
    if (bar) {
      bar.setAttribute("aria-valuenow", String(pct));
      bar.setAttribute("aria-valuetext", `${pct}% (${size(done)} of ${size(c.bytes)})`);
      bar.setAttribute("aria-label", `Fill progress of ${c.dataset}@${short(c.commit)} on ${c.volume}`);
      bar.querySelector(".bar-fill").setAttribute("width", `${pct}%`);
    }
    setText(row, "progress-text", `${size(done)} of ${size(c.bytes)}`);
    const sizeCell = field(row, "size");
    if (sizeCell) {
      sizeCell.textContent = size(c.bytes);
      sizeCell.appendChild(el("span", { class: "sub" }, ` · ${number(c.files)} files`));
    }
    const used = field(row, "last-used");
    if (used) used.replaceChildren(el("time", { datetime: c.last_used_at }, ago(c.last_used_at)));
    setText(row, "expires", expiryText(c));
    setText(row, "leases", String(c.leases));
    setText(row, "linked", size(c.linked_bytes));
    const clear = row.querySelector('[data-action="clear"]');
    if (clear && (c.state === "evicting" || c.state === "evicted")) clear.remove();
  }

  function newRow(c) {
    const template = document.getElementById("cache-row-template");
    const table = document.getElementById("caches-table");
    if (!template || !table) return null;
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.cache = String(c.id);
    const dsLink = field(row, "dataset-link");
    if (dsLink) {
      dsLink.setAttribute("href", `/datasets/${encodeURIComponent(c.dataset)}`);
      dsLink.textContent = c.dataset;
    }
    const commitLink = field(row, "commit-link");
    commitLink.setAttribute("href", `/datasets/${encodeURIComponent(c.dataset)}/tree/${c.commit}`);
    commitLink.textContent = short(c.commit) + (c.subpath ? `:${c.subpath}` : "");
    setText(row, "place", `${c.site} / ${c.volume}`);
    const clear = row.querySelector('[data-action="clear"]');
    clear.dataset.cacheId = String(c.id);
    clear.setAttribute("aria-label", `Evict cache ${c.dataset}@${short(c.commit)} on ${c.volume}`);
    table.tBodies[0].appendChild(row);
    table.hidden = false;
    const empty = document.getElementById("no-caches");
    if (empty) empty.hidden = true;
    return row;
  }

  function newBadge(c) {
    if (c.subpath) return;
    const holder = document.querySelector(`.commit-caches[data-commit="${CSS.escape(c.commit)}"]`);
    if (!holder) return;
    const badge = el("span", { class: "place-state", "data-cache": String(c.id) }, `${c.site}: `);
    badge.appendChild(el("span", { class: `state state-${c.state}`, "data-field": "state" }, c.state));
    holder.appendChild(badge);
  }

  // Show a cache everywhere this page mentions it: table rows and the badges beside commits.
  function show(c) {
    const nodes = document.querySelectorAll(`[data-cache="${CSS.escape(String(c.id))}"]`);
    let rows = 0;
    let badges = 0;
    for (const node of nodes) {
      if (node.tagName === "TR") {
        updateRow(node, c);
        rows++;
      } else {
        updateState(node, c);
        badges++;
      }
    }
    if (!rows && c.state !== "evicted") {
      const row = newRow(c);
      if (row) updateRow(row, c);
    }
    if (!badges && c.state !== "evicted") newBadge(c);
  }

  function watching() {
    const ids = new Set();
    for (const node of document.querySelectorAll("[data-cache]")) {
      const state = node.dataset.state;
      // A failed cache being evicted is watched too, until its agent has removed it.
      const clearing = node.dataset.request === "evict" && state !== "evicted";
      if (ACTIVE.has(state) || clearing) {
        ids.add(node.dataset.cache);
      }
    }
    return ids;
  }

  function schedulePoll() {
    if (pollTimer === null && watching().size) {
      pollTimer = window.setTimeout(poll, POLL_MS);
    }
  }

  async function poll() {
    pollTimer = null;
    const ids = watching();
    try {
      for (const id of ids) {
        const before = document.querySelector(`[data-cache="${CSS.escape(id)}"]`);
        const was = before ? before.dataset.state : "";
        const c = await api("GET", `/api/v1/caches/${encodeURIComponent(id)}`);
        show(c);
        if (c.state !== was) announce(`${c.dataset}@${short(c.commit)} on ${c.site}: ${c.state}`);
      }
      if (ids.size && document.querySelector(".capacity[data-volume]")) await refreshVolumes();
    } catch (e) {
      flash(e.message, e.hint);
    }
    schedulePoll();
  }

  async function refreshVolumes() {
    const page = await api("GET", "/api/v1/volumes?limit=1000");
    for (const v of page.items) {
      const bar = document.querySelector(`.capacity[data-volume="${CSS.escape(v.name)}"]`);
      if (!bar) continue;
      const quota = Math.max(v.capacity, 0);
      const committed = quota ? Math.min(v.committed, quota) : v.committed;
      const available = Math.max(0, Math.min(v.available, quota - committed));
      const blocked = Math.max(0, quota - committed - available);
      const [c, a, b] = [committed, available, blocked].map((x) => percent(x, quota));
      bar.setAttribute("aria-valuenow", String(c));
      bar.setAttribute(
        "aria-valuetext",
        `${size(v.committed)} committed to caches of a ${size(quota)} capacity; ${size(v.available)} free for caches`,
      );
      const rects = bar.querySelectorAll("rect");
      rects[0].setAttribute("width", `${c}%`);
      rects[1].setAttribute("x", `${c}%`);
      rects[1].setAttribute("width", `${a}%`);
      rects[2].setAttribute("x", `${c + a}%`);
      rects[2].setAttribute("width", `${b}%`);
      const legend = bar.nextElementSibling;
      if (legend) {
        setText(legend, "committed", size(v.committed));
        setText(legend, "available", size(v.available));
        setText(legend, "linked-saved", size(v.linked_saved));
      }
    }
  }

  async function askCache(button) {
    const { dataset, ref, site } = button.dataset;
    button.disabled = true;
    try {
      const c = await api("POST", `/api/v1/datasets/${encodeURIComponent(dataset)}/caches`, {
        ref,
        site,
      });
      show(c);
      announce(`Caching ${dataset}@${short(ref)} on ${site}: ${c.state}`);
      schedulePoll();
    } catch (e) {
      flash(`Could not cache ${dataset}@${short(ref)} on ${site}: ${e.message}`, e.hint);
    } finally {
      button.disabled = false;
    }
  }

  async function clearCache(button) {
    const id = button.dataset.cacheId;
    button.disabled = true;
    try {
      const c = await api("DELETE", `/api/v1/caches/${encodeURIComponent(id)}`);
      show(c);
      announce(`Evicting ${c.dataset}@${short(c.commit)} on ${c.volume}: ${c.state}`);
      schedulePoll();
    } catch (e) {
      button.disabled = false;
      flash(`Could not evict the cache: ${e.message}`, e.hint);
    }
  }

  // The helpers above, for the page sections further down this file (each its own block):
  // one way to call the API (CSRF header, 401 -> login) and to write text into the page.
  window.lakecache = Object.freeze({
    api, el, field, setText, size, number, duration, ago, percent, short, urlPath, announce, flash,
  });

  // --- wiring ---------------------------------------------------------------------------------

  document.addEventListener("click", (event) => {
    const target = event.target.closest("[data-action]");
    if (!target) return;
    const action = target.dataset.action;
    if (action === "load-more") {
      event.preventDefault();
      loadMore(target);
    } else if (action === "cache") {
      askCache(target);
    } else if (action === "clear") {
      clearCache(target);
    } else if (action === "logout") {
      logOut();
    }
  });

  function start() {
    setUpLogin();
    schedulePoll();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

// --- compute and jobs pages (lakecache.server.dashboard.compute_pages) ------------------------
//
// /compute: poll /compute/live and redraw the capacity bars, queue counts and the queued
// and running jobs. /jobs/{id}: poll /jobs/{id}/live (state, timeline, placement,
// attempts) until the job ends; follow its log from /api/v1/jobs/{id}/log?offset=N, with
// a search box that shows only the matching lines; "Cancel job" posts to the API with the
// session's CSRF token. Text from the server goes in through textContent only.
(function () {
  "use strict";
  const lc = window.lakecache;
  if (!lc) return;
  const { api, el, field, setText, announce, flash } = lc;
  const SVG = "http://www.w3.org/2000/svg";
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  //: The most log text a page holds; older text is dropped (the raw log link has it all).
  const LOG_KEEP = 4 * 1024 * 1024;

  function badge(state) {
    return el("span", { class: `state state-${state}`, "data-field": "state" }, state);
  }

  function setBadge(node, state) {
    if (!node) return;
    node.textContent = state;
    node.className = `state state-${state}`;
  }

  function cell(label, text, cls) {
    const attrs = { "data-label": label };
    if (cls) attrs.class = cls;
    return el("td", attrs, text);
  }

  function slug(text) {
    return String(text).replace(/[^a-z0-9]+/gi, "-").toLowerCase();
  }

  // --- /compute -----------------------------------------------------------------------------

  function bar(pct, free) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "capacity-svg");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    for (const [cls, x, w] of [
      ["cap-used", 0, pct],
      ["cap-free", pct, free],
    ]) {
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("class", cls);
      r.setAttribute("x", `${x}%`);
      r.setAttribute("width", `${w}%`);
      r.setAttribute("height", "100%");
      svg.appendChild(r);
    }
    return svg;
  }

  function dimItem(resource, d) {
    const li = el("li", { class: "dim", "data-dim": d.key });
    li.appendChild(el("span", { class: "dim-label" }, d.label));
    const meter = el("div", {
      class: "capacity dim-bar",
      role: "progressbar",
      "aria-label": `${d.label} of ${resource}`,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": String(d.used_pct),
      "aria-valuetext": d.text,
    });
    meter.appendChild(bar(d.used_pct, d.free_pct));
    li.appendChild(meter);
    const text = el("span", { class: "dim-text" });
    text.appendChild(el("strong", { "data-field": "used" }, d.used));
    text.appendChild(document.createTextNode(` of ${d.total} used · `));
    text.appendChild(el("span", { "data-field": "free" }, d.free));
    text.appendChild(document.createTextNode(" free"));
    li.appendChild(text);
    return li;
  }

  function jobRow(j) {
    const tr = el("tr", { "data-job": String(j.id) });
    const th = el("th", { scope: "row" });
    th.appendChild(el("a", { href: j.href }, `Job ${j.id}`));
    tr.appendChild(th);
    const state = el("td", { "data-label": "State" });
    state.appendChild(badge(j.state));
    tr.appendChild(state);
    tr.appendChild(cell("Queue", j.queue));
    tr.appendChild(cell("Where", j.where));
    tr.appendChild(cell("Command", j.command, "mono wrap"));
    tr.appendChild(cell("Submitted by", j.submitted_by));
    const when = cell("Submitted");
    when.appendChild(el("time", { datetime: j.created }, j.age));
    tr.appendChild(when);
    return tr;
  }

  let activeSignature = null;

  function drawCompute(root, data) {
    for (const site of data.sites) {
      for (const r of site.resources) {
        const section = root.querySelector(`[data-compute="${CSS.escape(r.name)}"]`);
        if (!section) continue;
        const jobs = field(section, "jobs");
        if (jobs) jobs.textContent = `${r.jobs} job${r.jobs === 1 ? "" : "s"} placed or running`;
        const dims = field(section, "dims");
        if (dims) dims.replaceChildren(...r.dims.map((d) => dimItem(r.name, d)));
      }
      const agent = root.querySelector(`[data-site="${CSS.escape(site.name)}"] [data-field="agent"]`);
      if (agent && site.agent) {
        agent.textContent = site.agent.text;
        agent.dataset.up = site.agent.up ? "true" : "false";
        agent.className = `agent-state ${site.agent.up ? "agent-up" : "agent-down"}`;
      }
    }
    for (const q of data.queues) {
      const row = root.querySelector(`tr[data-queue="${CSS.escape(q.name)}"]`);
      if (!row) continue;
      setText(row, "queued", String(q.queued));
      setText(row, "running", String(q.running));
    }
    const table = document.getElementById("active-jobs");
    const signature = JSON.stringify(data.jobs.map((j) => [j.id, j.state, j.where]));
    if (table && signature !== activeSignature) {
      // Redrawn only when something changed, so a focused link is not pulled away.
      table.tBodies[0].replaceChildren(...data.jobs.map(jobRow));
      table.hidden = !data.jobs.length;
      document.getElementById("no-active-jobs").hidden = !!data.jobs.length;
      if (activeSignature !== null) {
        announce(`${data.jobs_total} job${data.jobs_total === 1 ? "" : "s"} queued or running`);
      }
      activeSignature = signature;
    } else if (table) {
      for (const j of data.jobs) {
        const time = table.querySelector(`tr[data-job="${j.id}"] time`);
        if (time) time.textContent = j.age;
      }
    }
    const count = document.getElementById("active-count");
    if (count && count.firstChild) {
      const mine = count.firstChild.textContent.includes("(yours)") ? " (yours)" : "";
      count.firstChild.textContent =
        `${data.jobs_total.toLocaleString("en-US")} job${data.jobs_total === 1 ? "" : "s"} ` +
        `queued, placed or running${mine} · `;
    }
  }

  async function pollCompute(root) {
    try {
      drawCompute(root, await api("GET", root.dataset.live));
    } catch (e) {
      flash(`Could not refresh the figures: ${e.message}`, e.hint);
    }
    window.setTimeout(() => pollCompute(root), Number(root.dataset.pollMs) || 1000);
  }

  // --- /jobs/{id} ---------------------------------------------------------------------------

  const signatures = {};

  function redraw(name, items, draw) {
    const signature = JSON.stringify(items);
    if (signatures[name] === signature) return false;
    signatures[name] = signature;
    draw();
    return true;
  }

  function timelineItem(e) {
    const li = el("li", { class: `event event-${slug(e.kind)}` });
    li.appendChild(el("time", { datetime: e.at }, e.when));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", { class: "since" }, e.since));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("strong", { class: "event-kind" }, e.kind));
    if (e.attempt) {
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", { class: "muted" }, `(attempt ${e.attempt})`));
    }
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", { class: "event-detail" }, e.detail));
    return li;
  }

  function placementRow(p) {
    const tr = el("tr", p.chosen ? { class: "chosen" } : {});
    tr.appendChild(el("th", { scope: "row" }, p.template));
    tr.appendChild(cell("Site", p.site));
    const verdict = cell("Verdict");
    verdict.appendChild(el("span", { class: `verdict verdict-${slug(p.verdict)}` }, p.verdict));
    tr.appendChild(verdict);
    tr.appendChild(cell("Why", p.detail));
    return tr;
  }

  function attemptRow(a) {
    const tr = el("tr");
    tr.appendChild(el("th", { scope: "row" }, String(a.number)));
    tr.appendChild(cell("Worker", a.worker, "mono wrap"));
    tr.appendChild(cell("Compute", a.compute));
    tr.appendChild(cell("Started", a.started));
    tr.appendChild(cell("Ended", a.ended));
    tr.appendChild(cell("Took", a.took, "num"));
    tr.appendChild(cell("Exit code", a.exit_code, "num"));
    tr.appendChild(cell("Outcome", a.outcome));
    return tr;
  }

  function outputRow(o) {
    const tr = el("tr");
    const th = el("th", { scope: "row" });
    th.appendChild(el("a", { class: "mono", href: o.href, download: "" }, o.path));
    tr.appendChild(th);
    tr.appendChild(cell("Size", o.size, "num"));
    tr.appendChild(cell("Content digest", o.digest, "mono"));
    return tr;
  }

  function fillTable(id, emptyId, rows) {
    const table = document.getElementById(id);
    if (!table) return;
    table.tBodies[0].replaceChildren(...rows);
    table.hidden = !rows.length;
    const empty = document.getElementById(emptyId);
    if (empty) empty.hidden = !!rows.length;
  }

  function drawJob(root, d) {
    const was = root.dataset.state;
    root.dataset.state = d.state;
    root.dataset.done = d.done ? "true" : "false";
    setBadge(root.querySelector("h1 [data-field=state]"), d.state);
    for (const name of ["where", "slot", "attempt", "exit_code", "ran_for", "worker"]) {
      setText(root, name, d.summary[name]);
    }
    const reason = field(root, "reason");
    if (reason) {
      reason.hidden = d.summary.reason === "–";
      setText(reason, "reason-text", d.summary.reason);
    }
    const cancel = root.querySelector('[data-action="cancel-job"]');
    if (cancel) cancel.hidden = !d.can_cancel || d.cancel_requested;
    const note = field(root, "cancel-note");
    if (note) note.hidden = !(d.cancel_requested && !d.done);
    redraw("timeline", d.timeline, () =>
      document.getElementById("timeline").replaceChildren(...d.timeline.map(timelineItem)),
    );
    redraw("placement", d.placement, () =>
      fillTable("placement-table", "no-placement", d.placement.map(placementRow)),
    );
    redraw("attempts", d.attempts, () =>
      fillTable("attempts-table", "no-attempts", d.attempts.map(attemptRow)),
    );
    redraw("outputs", d.outputs, () => {
      fillTable("outputs-table", "", d.outputs.files.map(outputRow));
      const summary = document.getElementById("outputs-summary");
      if (summary && d.outputs.summary) summary.textContent = d.outputs.summary;
    });
    if (was && was !== d.state) announce(`Job ${d.id} is ${d.state}`);
  }

  async function pollJob(root) {
    let d = null;
    try {
      d = await api("GET", root.dataset.live);
      drawJob(root, d);
    } catch (e) {
      flash(`Could not refresh job ${root.dataset.jobId}: ${e.message}`, e.hint);
    }
    if (!d || !d.done) {
      window.setTimeout(() => pollJob(root), Number(root.dataset.pollMs) || 1000);
    }
  }

  // The log: kept whole (up to LOG_KEEP) and shown whole, or only its lines that hold
  // the search text, each with its number and the matches marked.
  const log = { offset: 0, text: "", shown: 0, decoder: new TextDecoder(), dropped: false };

  function logQuery() {
    const box = document.getElementById("log-search");
    return box ? box.value : "";
  }

  function drawLog(appended) {
    const pre = document.getElementById("job-log");
    if (!pre) return;
    const query = logQuery();
    if (!query) {
      if (appended && log.shown === log.text.length - appended.length) {
        pre.appendChild(document.createTextNode(appended));
      } else {
        pre.textContent = log.text;
      }
      log.shown = log.text.length;
    } else {
      log.shown = -1;
      const needle = query.toLowerCase();
      const lines = log.text.split("\n");
      const frag = document.createDocumentFragment();
      let found = 0;
      lines.forEach((line, i) => {
        const lower = line.toLowerCase();
        if (!lower.includes(needle)) return;
        found++;
        const row = el("span", { class: "log-line" });
        row.appendChild(el("span", { class: "log-no" }, `${i + 1}: `));
        let at = 0;
        for (let hit = lower.indexOf(needle); hit !== -1; hit = lower.indexOf(needle, at)) {
          row.appendChild(document.createTextNode(line.slice(at, hit)));
          row.appendChild(el("mark", {}, line.slice(hit, hit + needle.length)));
          at = hit + needle.length;
        }
        row.appendChild(document.createTextNode(line.slice(at) + "\n"));
        frag.appendChild(row);
      });
      pre.replaceChildren(frag);
      const total = log.text ? lines.length - (log.text.endsWith("\n") ? 1 : 0) : 0;
      setStatus(`${found.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} lines match “${query}”`);
    }
    const follow = document.getElementById("log-follow");
    if (follow && follow.checked) pre.scrollTop = pre.scrollHeight;
  }

  function setStatus(text) {
    const status = document.getElementById("log-status");
    if (status) status.textContent = text;
  }

  async function pollLog(root) {
    let again = Number(root.dataset.pollMs) || 1000;
    try {
      const response = await fetch(`${root.dataset.log}?offset=${log.offset}`, {
        credentials: "same-origin",
        headers: { Accept: "application/octet-stream" },
      });
      if (response.status === 401) {
        window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
        return;
      }
      if (!response.ok) {
        let error = {};
        try {
          error = (await response.json()).error || {};
        } catch (_) {
          error = {};
        }
        throw new Error(error.message || `HTTP ${response.status}`);
      }
      const size = Number(response.headers.get("X-Log-Size") || "0");
      const state = response.headers.get("X-Job-State") || "";
      const bytes = await response.arrayBuffer();
      if (size < log.offset) {
        // A new attempt writes a new log: start again from its beginning.
        Object.assign(log, { offset: 0, text: "", shown: 0, decoder: new TextDecoder() });
        drawLog("");
        window.setTimeout(() => pollLog(root), 0);
        return;
      }
      log.offset += bytes.byteLength;
      const ended = FINAL.has(state) && log.offset >= size;
      let added = log.decoder.decode(bytes, { stream: !ended });
      if (added) {
        log.text += added;
        if (log.text.length > LOG_KEEP) {
          log.text = log.text.slice(log.text.length - LOG_KEEP);
          log.dropped = true;
          added = "";
        }
        drawLog(added);
      }
      if (!logQuery()) {
        const what = `${lc.size(log.offset)}${log.dropped ? " (only the end is shown)" : ""}`;
        setStatus(ended ? `${what}; the job is ${state}` : `${what} so far; the job is ${state}`);
      }
      if (ended) {
        const follow = document.getElementById("log-follow");
        if (follow) follow.checked = false;
        return;
      }
      if (log.offset < size) again = 0; // more is there already
    } catch (e) {
      setStatus(`Could not read the log: ${e.message}`);
    }
    window.setTimeout(() => pollLog(root), again);
  }

  async function cancelJob(button) {
    const id = button.dataset.jobId;
    button.disabled = true;
    try {
      const job = await api("POST", `/api/v1/jobs/${encodeURIComponent(id)}/cancel`);
      button.hidden = true;
      announce(
        job.state === "running" ? `Job ${id}: cancel requested` : `Job ${id} is ${job.state}`,
      );
      const root = document.getElementById("job-live");
      if (root) drawJob(root, await api("GET", root.dataset.live));
    } catch (e) {
      flash(`Could not cancel job ${id}: ${e.message}`, e.hint);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("click", (event) => {
    const target = event.target.closest('[data-action="cancel-job"]');
    if (target) cancelJob(target);
  });

  function start() {
    const compute = document.getElementById("compute-live");
    if (compute) window.setTimeout(() => pollCompute(compute), Number(compute.dataset.pollMs) || 1000);
    const job = document.getElementById("job-live");
    if (!job) return;
    if (job.dataset.done !== "true") {
      window.setTimeout(() => pollJob(job), Number(job.dataset.pollMs) || 1000);
    }
    const search = document.getElementById("log-search");
    if (search) search.addEventListener("input", () => {
      drawLog("");
      if (!logQuery()) setStatus(`${lc.size(log.offset)} of log`);
    });
    const pre = document.getElementById("job-log");
    const follow = document.getElementById("log-follow");
    if (pre && follow) {
      // Scrolling up to read stops following; ticking Follow again jumps to the end.
      pre.addEventListener("scroll", () => {
        if (pre.scrollHeight - pre.scrollTop - pre.clientHeight > 40) follow.checked = false;
      });
      follow.addEventListener("change", () => {
        if (follow.checked) pre.scrollTop = pre.scrollHeight;
      });
    }
    pollLog(job);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

// --- flows: a run's DAG (lakecache.server.dashboard.flow_pages) --------------------------------
//
// The page lays the tasks out in columns by depth (CSS grid); this draws each dependency as a
// curve from the upstream node's right edge to the node's left edge in the SVG behind them, and
// polls /flows/{id}/live to update states, timings and links until the run ends.
(function () {
  "use strict";
  const lc = window.lakecache;
  if (!lc) return;
  const { api, announce, flash } = lc;
  const SVG = "http://www.w3.org/2000/svg";

  function nodesByName(root) {
    const nodes = new Map();
    root.querySelectorAll(".flow-node").forEach((n) => nodes.set(n.dataset.task, n));
    return nodes;
  }

  function drawEdges(root) {
    const svg = root.querySelector(".flow-edges");
    const wrap = root.querySelector(".flow-dag-wrap");
    if (!svg || !wrap) return;
    let edges = [];
    try {
      edges = JSON.parse(svg.dataset.edges || "[]");
    } catch (e) {
      edges = [];
    }
    const nodes = nodesByName(root);
    const box = wrap.getBoundingClientRect();
    svg.setAttribute("width", String(wrap.scrollWidth));
    svg.setAttribute("height", String(wrap.scrollHeight));
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    for (const [from, to] of edges) {
      const a = nodes.get(from);
      const b = nodes.get(to);
      if (!a || !b) continue;
      const ra = a.getBoundingClientRect();
      const rb = b.getBoundingClientRect();
      const x1 = ra.right - box.left + wrap.scrollLeft;
      const y1 = ra.top + ra.height / 2 - box.top + wrap.scrollTop;
      const x2 = rb.left - box.left + wrap.scrollLeft;
      const y2 = rb.top + rb.height / 2 - box.top + wrap.scrollTop;
      const mid = (x1 + x2) / 2;
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("d", `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
      path.setAttribute("class", `flow-edge state-${a.dataset.state || ""}`);
      svg.appendChild(path);
    }
  }

  function setLink(node, name, href, text) {
    const link = node.querySelector(`[data-field="${name}"]`);
    if (!link) return;
    if (href) {
      link.setAttribute("href", href);
      link.hidden = false;
      if (text) link.textContent = text;
    } else {
      link.removeAttribute("href");
      link.hidden = true;
    }
  }

  function setField(node, name, text) {
    const f = node.querySelector(`[data-field="${name}"]`);
    if (!f) return;
    f.textContent = text;
    f.hidden = !text;
  }

  function drawRun(root, d) {
    const badge = root.querySelector('[data-field="run-state"] .state');
    if (badge && badge.textContent !== d.state) {
      badge.textContent = d.state;
      badge.className = `state state-${d.state}`;
      announce(`Flow run ${d.id} is ${d.state}`);
    }
    setField(root, "counts", d.counts);
    setField(root, "took", d.took);
    const reason = root.querySelector('p[data-field="reason"]');
    if (reason) {
      reason.textContent = d.reason;
      reason.hidden = !d.reason;
    }
    root.querySelector('[data-action="cancel-flow"]').hidden = !d.can_cancel;
    root.querySelector('[data-action="resume-flow"]').hidden = !d.can_resume;
    const nodes = nodesByName(root);
    for (const level of d.levels) {
      for (const n of level) {
        const node = nodes.get(n.name);
        if (!node) continue;
        node.dataset.state = n.state;
        node.className = `flow-node state-${n.state}${n.reused ? " reused" : ""}`;
        const s = node.querySelector(".state");
        if (s) {
          s.textContent = n.state;
          s.className = `state state-${n.state}`;
        }
        setField(node, "took", n.took);
        setField(node, "tries", n.tries > 1 ? ` · try ${n.tries}` : "");
        setField(node, "reason", n.reason);
        const reused = node.querySelector('[data-field="reused"]');
        if (reused) reused.hidden = !n.reused;
        setLink(node, "job", n.job_href, n.job ? `job ${n.job}` : "");
        setLink(node, "run", n.run_href, "run");
      }
    }
    root.dataset.done = d.done ? "true" : "false";
    drawEdges(root);
  }

  async function pollRun(root) {
    try {
      const d = await api("GET", root.dataset.live);
      drawRun(root, d);
      if (d.done) return;
    } catch (e) {
      flash(`Could not refresh the run: ${e.message}`, e.hint);
    }
    window.setTimeout(() => pollRun(root), Number(root.dataset.pollMs) || 1000);
  }

  async function act(button, verb) {
    const id = button.dataset.runId;
    button.disabled = true;
    try {
      await api("POST", `/api/v1/flows/runs/${encodeURIComponent(id)}/${verb}`);
      announce(`Flow run ${id}: ${verb === "cancel" ? "cancelled" : "resumed"}`);
      const root = document.getElementById("flow-live");
      if (root) {
        const wasDone = root.dataset.done === "true";
        drawRun(root, await api("GET", root.dataset.live));
        if (wasDone && root.dataset.done !== "true") pollRun(root);
      }
    } catch (e) {
      flash(`Could not ${verb} flow run ${id}: ${e.message}`, e.hint);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("click", (event) => {
    const cancel = event.target.closest('[data-action="cancel-flow"]');
    if (cancel) act(cancel, "cancel");
    const resume = event.target.closest('[data-action="resume-flow"]');
    if (resume) act(resume, "resume");
  });

  function start() {
    const root = document.getElementById("flow-live");
    if (!root) return;
    root.querySelectorAll(".flow-node").forEach((n) => {
      const s = n.querySelector(".state");
      if (s) n.dataset.state = s.textContent;
    });
    drawEdges(root);
    window.addEventListener("resize", () => drawEdges(root));
    if (root.dataset.done !== "true") {
      window.setTimeout(() => pollRun(root), Number(root.dataset.pollMs) || 1000);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

// --- tracking: runs table, run page, compare (lakecache.server.dashboard.tracking_pages) -------
//
// Plots: each <figure class="chart" data-chart='[{"label": ..., "url": ...}]'> is drawn with
// uPlot, which this server serves itself (static/vendor/uplot, fetched at install time), from
// the server's downsampled series: the mean as a line and, where the server merged points into
// buckets, each bucket's min..max as a band, so a spike stays visible at any zoom. Several
// series (compare) are overlaid on one x axis. Drag across a plot to zoom into a range; a
// double click or "Reset zoom" goes back; the range shown is kept in data-x-min / data-x-max.
// NaN and infinite values cannot be drawn: the note under the plot counts them.
// Runs table: "Compare selected" counts the ticked runs and takes 2 to 20 of them.
(function () {
  "use strict";
  const HEIGHT = 240;
  const EAGER = 12;
  // 20 colours that stay apart on white (compare takes up to 20 runs); matches .series-N.
  const COLORS = [
    "#1f6feb", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#0a7c86", "#bf3989", "#57606a",
    "#fb8500", "#2da44e", "#6639ba", "#d1242f", "#0969da", "#7d4e00", "#116329", "#a475f9",
    "#e16f24", "#3192aa", "#953800", "#4d2d8f",
  ];

  function finite(v) {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }

  async function getJson(url) {
    const response = await fetch(url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
      throw new Error(message);
    }
    return data;
  }

  function plural(n, word) {
    return `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
  }

  // One series as uPlot columns: x, mean, and (downsampled) min and max; non-finite -> null.
  function columns(result, byTime) {
    const xs = byTime ? result.times : result.steps;
    let bad = 0;
    const mean = result.values.map((v) => {
      const n = finite(v);
      if (n === null) bad++;
      return n;
    });
    const cols = [xs, mean];
    if (result.downsampled) {
      cols.push(result.mins.map(finite), result.maxs.map(finite));
    }
    return { cols, bad };
  }

  function noteText(results, bad, byTime) {
    const total = results.reduce((sum, r) => sum + r.points_total, 0);
    const shown = results.reduce((sum, r) => sum + r.values.length, 0);
    const parts = [];
    if (results.some((r) => r.downsampled)) {
      parts.push(
        `${plural(total, "point")}, drawn as ${plural(shown, "bucket")} (mean line, ` +
          "min–max band; NaN and infinite points are left out of buckets: the CSV has them all)"
      );
    } else {
      parts.push(plural(total, "point"));
    }
    if (bad) parts.push(`${plural(bad, "value")} NaN or infinite, not drawn`);
    parts.push(`drag across the plot to zoom into a range of ${byTime ? "time" : "steps"}`);
    return parts.join("; ") + ".";
  }

  function options(fig, specs, results, byTime, width) {
    const series = [{ label: byTime ? "time" : "step" }];
    const bands = [];
    if (results.length === 1 && results[0].downsampled) {
      const color = COLORS[0];
      series.push(
        { label: `${specs[0].label} (mean)`, stroke: color, width: 1.5 },
        { label: "min", stroke: color + "55", width: 0.5 },
        { label: "max", stroke: color + "55", width: 0.5 }
      );
      bands.push({ series: [3, 2], fill: color + "22" });
    } else {
      specs.forEach((spec, i) => {
        series.push({
          label: spec.label,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          spanGaps: results.length > 1,
        });
      });
    }
    return {
      width,
      height: HEIGHT,
      series,
      bands,
      scales: { x: { time: byTime } },
      axes: [{}, { size: axisWidth }],
      cursor: { drag: { x: true, y: false, setScale: true } },
      legend: { live: true },
      hooks: {
        setScale: [
          (u, key) => {
            if (key === "x") rangeShown(fig, u);
          },
        ],
      },
    };
  }

  // The y axis as wide as its longest label (uPlot's fixed default cuts "10,000" short).
  function axisWidth(u, values) {
    if (!values) return 50;
    const longest = values.reduce((n, v) => Math.max(n, String(v).length), 0);
    return Math.max(40, 14 + longest * 7.5);
  }

  function rangeShown(fig, u) {
    const { min, max } = u.scales.x;
    if (min === null || min === undefined) return;
    fig.dataset.xMin = String(min);
    fig.dataset.xMax = String(max);
    const full = fig._fullRange;
    const zoomed = full && (min > full[0] || max < full[1]);
    const reset = fig.querySelector('[data-action="chart-reset"]');
    if (reset) reset.hidden = !zoomed;
    fig.dataset.zoomed = zoomed ? "1" : "0";
    if (zoomed && fig._coarse) {
      zoomDetail(fig, min, max);
    } else if (!zoomed && fig.dataset.detail === "range") {
      fig.dataset.detail = "";
      u.setData(fig._fullData, false);
    }
  }

  // uPlot's columns for a set of results: one series (x, mean[, min, max]: ``layout`` 4 when
  // the first draw had a band), or several joined on their x values.
  function build(results, byTime, layout) {
    let bad = 0;
    if (results.length === 1) {
      const one = columns(results[0], byTime);
      if (layout === 4 && one.cols.length === 2) one.cols.push(one.cols[1], one.cols[1]);
      return { data: one.cols, bad: one.bad };
    }
    const tables = results.map((r) => {
      const one = columns(r, byTime);
      bad += one.bad;
      return [one.cols[0], one.cols[1]];
    });
    return { data: window.uPlot.join(tables), bad };
  }

  // Zoomed into a downsampled series: ask the server for that range in full detail (a
  // million points are a thousand buckets at first; a zoom shows what is in them).
  function zoomDetail(fig, min, max) {
    window.clearTimeout(fig._detailTimer);
    fig._detailTimer = window.setTimeout(async () => {
      const ticket = (fig._detailTicket = (fig._detailTicket || 0) + 1);
      const range = new URLSearchParams({
        start: String(Math.floor(min)),
        end: String(Math.ceil(max)),
        axis: fig._byTime ? "time" : "step",
      });
      let results;
      try {
        results = await Promise.all(fig._specs.map((s) => getJson(`${s.url}&${range}`)));
      } catch (_) {
        return; // the coarse data stays: still right, only less detailed
      }
      if (ticket !== fig._detailTicket || fig.dataset.zoomed !== "1") return;
      fig._chart.setData(build(results, fig._byTime, fig._layout).data, false);
      fig.dataset.detail = "range";
    }, 150);
  }

  async function drawChart(fig) {
    const note = fig.querySelector('[data-field="chart-note"]');
    const plot = fig.querySelector(".chart-plot");
    if (typeof window.uPlot !== "function") {
      fig.dataset.state = "no-library";
      return; // the server wrote into the note how to install it
    }
    let specs;
    try {
      specs = JSON.parse(fig.dataset.chart || "[]");
    } catch (_) {
      specs = [];
    }
    const byTime = fig.dataset.x === "time";
    let results;
    try {
      results = await Promise.all(specs.map((spec) => getJson(spec.url)));
    } catch (error) {
      fig.dataset.state = "error";
      note.textContent = `The data could not be loaded: ${error.message}`;
      return;
    }
    const layout = results.length === 1 && results[0].downsampled ? 4 : 2;
    const { data, bad } = build(results, byTime, layout);
    const xs = data[0];
    fig._fullRange = xs.length ? [xs[0], xs[xs.length - 1]] : null;
    plot.textContent = "";
    const width = Math.max(280, plot.clientWidth || fig.clientWidth || 600);
    const chart = new window.uPlot(options(fig, specs, results, byTime, width), data, plot);
    fig._chart = chart;
    fig._specs = specs;
    fig._byTime = byTime;
    fig._layout = layout;
    fig._fullData = data;
    fig._coarse = results.some((r) => r.downsampled);
    fig.dataset.points = String(results.reduce((sum, r) => sum + r.points_total, 0));
    fig.dataset.notFinite = String(bad);
    note.textContent = noteText(results, bad, byTime);
    rangeShown(fig, chart);
    fig.dataset.state = "drawn";
    if (window.ResizeObserver) {
      new ResizeObserver(() => {
        const w = Math.max(280, plot.clientWidth);
        if (Math.abs(w - chart.width) > 2) chart.setSize({ width: w, height: HEIGHT });
      }).observe(plot);
    }
  }

  function resetZoom(button) {
    const fig = button.closest("figure.chart");
    if (!fig || !fig._chart || !fig._fullRange) return;
    fig._chart.setScale("x", { min: fig._fullRange[0], max: fig._fullRange[1] });
  }

  // Draw each plot when it first comes near the screen: a run page may hold 48 of them
  // (24 metrics, 24 system metrics). A page of a few draws them all at once.
  function drawCharts() {
    const figures = Array.from(document.querySelectorAll("figure.chart[data-chart]"));
    if (!figures.length) return;
    if (figures.length <= EAGER || !("IntersectionObserver" in window)) {
      figures.forEach(drawChart);
      return;
    }
    const seen = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          if (!entry.isIntersecting) continue;
          seen.unobserve(entry.target);
          drawChart(entry.target);
        }
      },
      { rootMargin: "400px 0px" }
    );
    figures.forEach((fig) => seen.observe(fig));
  }

  // --- runs table: pick runs to compare ----------------------------------------------------

  function setUpCompare() {
    const form = document.getElementById("compare-form");
    if (!form) return;
    const max = Number(form.dataset.max || "20");
    const button = form.querySelector('[data-field="compare-button"]');
    const count = form.querySelector('[data-field="compare-count"]');
    const boxes = () => Array.from(document.querySelectorAll('input[form="compare-form"]'));
    function update() {
      const ticked = boxes().filter((b) => b.checked).length;
      button.disabled = ticked < 2 || ticked > max;
      if (ticked === 0) count.textContent = `Tick 2 to ${max} runs to compare them.`;
      else if (ticked > max) count.textContent = `${ticked} runs ticked: compare takes at most ${max}.`;
      else count.textContent = `${plural(ticked, "run")} ticked.`;
    }
    document.addEventListener("change", (event) => {
      if (event.target.matches && event.target.matches('input[form="compare-form"]')) update();
    });
    update();
  }

  document.addEventListener("click", (event) => {
    const target = event.target.closest && event.target.closest('[data-action="chart-reset"]');
    if (target) resetZoom(target);
  });

  function start() {
    drawCharts();
    setUpCompare();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
