/* Corral's web console: one page, no dependencies, built into the server
 * binary. It speaks the same /api and /v1 as the CLI, with the session token
 * kept in sessionStorage. Every text from the server goes in as text, never
 * as markup. */
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const store = window.sessionStorage;
let me = null;
let timers = [];
let aborts = [];

/* h("div", {class: "x", onclick: f}, "text", child, ...) */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "style") /* through the CSSOM: the CSP allows no style attributes */
      for (const decl of String(v).split(";")) {
        const i = decl.indexOf(":");
        if (i > 0) el.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
      }
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

/* Replace el's children; null and false kids are left out. */
function put(el, ...kids) {
  el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
}

function toast(msg, bad) {
  const d = h("div", { class: bad ? "bad" : "" }, msg);
  $("#toast").append(d);
  setTimeout(() => d.remove(), bad ? 9000 : 4000);
}

class ApiError extends Error {
  constructor(status, message, fix) { super(message); this.status = status; this.fix = fix || ""; }
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = store.getItem("corral.token");
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && !path.startsWith("/api/auth/login")) {
    store.removeItem("corral.token");
    location.hash = "#/login";
    throw new ApiError(401, "your session ended: log in again");
  }
  if (!r.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(r.status, e.message || ("HTTP " + r.status), e.fix);
  }
  return data;
}

function errorBox(e) {
  return h("div", { class: "card fix", role: "alert" }, e.message, e.fix ? h("div", {}, h("b", {}, "Fix: "), e.fix) : null);
}

function bytes(n) {
  if (n === null || n === undefined || n < 0) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function state(s) { return h("span", { class: "state " + s }, s); }

function page(title, ...kids) {
  const main = $("#main");
  put(main, h("h1", {}, title), ...kids);
  document.title = title + " · Corral";
}

function every(ms, fn) {
  fn();
  timers.push(setInterval(fn, ms));
}

function field(label, input) {
  const id = "f-" + label.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  input.id = id;
  return h("div", {}, h("label", { for: id, class: "field" }, label), input);
}

function check(label, input) {
  const id = "c-" + label.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  input.id = id;
  input.type = "checkbox";
  return h("div", {}, input, " ", h("label", { for: id }, label));
}

/* ---- login and account ---- */

function login() {
  $(".top").hidden = true;
  const user = h("input", { autocomplete: "username", value: "admin", required: true });
  const pass = h("input", { type: "password", autocomplete: "current-password", required: true });
  const out = h("div");
  const form = h("form", { class: "card stack", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("POST", "/api/auth/login", { username: user.value, password: pass.value });
      store.setItem("corral.token", r.token);
      location.hash = "#/overview";
    } catch (e) { put(out, errorBox(e)); }
  } }, field("Username", user), field("Password", pass), h("button", { type: "submit" }, "Log in"), out);
  page("Log in to Corral", form,
    h("p", { class: "muted" }, "The first admin password is in the server's DATA_DIR/initial_admin_password."));
  pass.focus();
}

function account() {
  const cur = h("input", { type: "password", autocomplete: "current-password" });
  const nw = h("input", { type: "password", autocomplete: "new-password", minlength: "8" });
  const out = h("div");
  page("Account",
    h("p", {}, "Logged in as ", h("b", {}, me.username), " (", me.role, ")."),
    h("form", { class: "card stack", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/api/auth/password", { current: cur.value, new: nw.value });
        store.removeItem("corral.token");
        toast("Password changed: log in with the new one");
        location.hash = "#/login";
      } catch (e) { put(out, errorBox(e)); }
    } }, h("h2", {}, "Change password"), field("Current password", cur), field("New password", nw),
      h("button", { type: "submit" }, "Change password"), out));
}

/* ---- overview ---- */

/* Per GPU: claimed by placements, used by Corral's engines, used by others. */
function gpuUse(w, g, instances) {
  let claimed = 0;
  const pids = new Set();
  for (const i of instances) {
    for (const pw of (i.placement && i.placement.workers) || [])
      if (pw.id === w.id)
        for (const pg of pw.gpus || []) if (pg.index === g.index) claimed += pg.claim || 0;
    const m = i.members && i.members[w.id];
    if (m && m.pid) pids.add(m.pid);
  }
  const used = g.memory_used !== undefined ? g.memory_used : (g.memory_total - (g.memory_free || 0));
  let ours;
  if (Array.isArray(g.processes)) ours = g.processes.filter((p) => pids.has(p.pid)).reduce((a, p) => a + p.memory, 0);
  else ours = Math.min(used, claimed);
  return { total: g.memory_total, used, claimed, ours, others: Math.max(0, used - ours) };
}

function gpuBar(label, u) {
  const pct = (n) => Math.max(0, Math.min(100, (100 * n) / (u.total || 1))).toFixed(2) + "%";
  const free = Math.max(0, u.total - Math.max(u.claimed, u.ours) - u.others);
  const text = `${label}: claimed ${bytes(u.claimed)}, used by Corral ${bytes(u.ours)}, used by others ${bytes(u.others)}, free ${bytes(free)} of ${bytes(u.total)}`;
  return h("div", { class: "gpu" },
    h("div", {}, label, " ", h("span", { class: "muted" }, bytes(u.total))),
    h("div", { class: "bar", role: "img", "aria-label": text, title: text },
      h("span", { class: "claimed", style: "width:" + pct(Math.max(u.claimed, u.ours)) }),
      h("span", { class: "others", style: "width:" + pct(u.others) })),
    h("div", { class: "muted small" }, `claimed ${bytes(u.claimed)} · Corral ${bytes(u.ours)} · others ${bytes(u.others)} · free ${bytes(free)}`));
}

async function overview() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  page("Overview", body);
  every(5000, async () => {
    try {
      const [ws, ms, is] = await Promise.all([api("GET", "/api/workers"), api("GET", "/api/models"),
        api("GET", "/api/instances")]);
      const workers = ws.workers, models = ms.models, instances = is.instances;
      const ready = workers.filter((w) => w.state === "ready").length;
      const desired = models.reduce((a, m) => a + m.replicas_status.desired, 0);
      const running = models.reduce((a, m) => a + m.replicas_status.running, 0);
      const failing = instances.filter((i) => ["error", "crash_loop", "unreachable"].includes(i.state)).length;
      const health = h("div", { class: "grid", "aria-label": "Cluster health" },
        h("div", { class: "card" }, h("b", {}, `${ready}/${workers.length}`), " workers ready"),
        h("div", { class: "card" }, h("b", {}, `${running}/${desired}`), " replicas running"),
        h("div", { class: "card" }, h("b", {}, String(failing)), " instances failing"));
      const rows = workers.map((w) => {
        const bad = (w.checks || []).filter((c) => c.level === "fail" || c.level === "warn");
        return h("tr", {},
          h("td", {}, w.name), h("td", {}, state(w.state), w.state_message ? h("div", { class: "muted" }, w.state_message) : null),
          h("td", { class: "hide-narrow" }, `${w.address}:${w.port}`),
          h("td", {}, `${(w.system && w.system.cpu && w.system.cpu.cores) || "?"} cores, ` +
            `${bytes(w.system && w.system.memory && w.system.memory.available)} free RAM`),
          h("td", {}, (w.gpus || []).length ? String(w.gpus.length) : "CPU only"),
          h("td", {}, bad.length ? bad.map((c) => h("div", { class: "fix" }, state(c.level), " ", c.message,
            c.fix ? h("div", {}, h("b", {}, "Fix: "), c.fix) : null)) : state("ok")));
      });
      const gpus = [];
      for (const w of workers)
        for (const g of w.gpus || []) gpus.push(gpuBar(`${w.name}:${g.index} ${g.name}`, gpuUse(w, g, instances)));
      put(body, health,
        h("h2", {}, "Workers"),
        h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["Name", "State", "Address", "CPU and RAM", "GPUs", "Checks"]
          .map((t, n) => h("th", { scope: "col", class: n === 2 ? "hide-narrow" : null }, t)))), h("tbody", {}, rows))),
        workers.length ? null : h("p", {}, "No workers yet: start one with the join command the server printed."),
        h("h2", {}, "GPUs"),
        h("p", { class: "legend muted" }, h("span", { style: "--c: var(--claimed)" }, "claimed by Corral"),
          h("span", { style: "--c: var(--others)" }, "used by others"), h("span", { style: "--c: var(--free)" }, "free")),
        gpus.length ? h("div", { class: "grid" }, gpus.map((g) => h("div", { class: "card" }, g))) : h("p", { class: "muted" }, "No GPUs in the cluster."));
    } catch (e) { put(body, errorBox(e)); }
  });
}

/* ---- models ---- */

function specFromForm(f) {
  const spec = { name: f.name.value.trim(), replicas: parseInt(f.replicas.value, 10) };
  const src = f.source.value.trim();
  if (/^https?:\/\//.test(src)) spec.url = src; else spec.path = src;
  if (f.engine.value !== "auto") spec.engine = f.engine.value;
  if (f.ctx.value) spec.ctx = parseInt(f.ctx.value, 10);
  if (f.args.value.trim()) spec.engine_args = f.args.value.trim().split(/\s+/);
  if (f.offload.checked) spec.allow_cpu_offload = true;
  if (f.distributed.checked) spec.allow_distributed = true;
  return spec;
}

function explain(plan) {
  const parts = [h("p", { class: "explain" }, h("b", {}, plan.placed ? "Placement: " : "Cannot place: "), plan.summary || "")];
  for (const i of plan.instances || [])
    parts.push(h("div", { class: "card" }, i.summary || i.kind, i.warning ? h("div", { class: "fix" }, i.warning) : null));
  if ((plan.reasons || []).length)
    parts.push(h("ul", {}, plan.reasons.map((r) => h("li", {}, r.message, r.fix ? h("div", { class: "fix" }, h("b", {}, "Fix: "), r.fix) : null))));
  for (const w of plan.warnings || []) parts.push(h("p", { class: "fix" }, "Warning: ", w));
  return parts;
}

function deployForm() {
  const f = {
    name: h("input", { required: true, placeholder: "qwen-7b" }),
    source: h("input", { required: true, placeholder: "/models/x.gguf or https://…/x.gguf" }),
    engine: h("select", {}, ["auto", "llama.cpp", "vllm", "sglang"].map((e) => h("option", { value: e }, e))),
    replicas: h("input", { type: "number", min: "0", max: "64", value: "1" }),
    ctx: h("input", { type: "number", min: "0", placeholder: "the model's own" }),
    args: h("input", { placeholder: "-t 8" }),
    offload: h("input"), distributed: h("input"),
  };
  const out = h("div", { "aria-live": "polite" });
  const deploy = h("button", { type: "button", disabled: true, onclick: async () => {
    try {
      const m = await api("POST", "/api/models", specFromForm(f));
      toast(`Model '${m.name}' deployed`);
      location.hash = "#/model/" + encodeURIComponent(m.name);
    } catch (e) { put(out, errorBox(e)); }
  } }, "Deploy");
  const dry = async (tries) => {
    try {
      const plan = await api("POST", "/api/models/plan", specFromForm(f));
      if ((plan.waiting_for || []).length && tries < 10) {
        put(out, h("p", { class: "muted" }, `Waiting for ${plan.waiting_for.length} worker(s) to inspect the model…`));
        setTimeout(() => dry(tries + 1), 1000);
        return;
      }
      put(out, ...explain(plan));
      deploy.disabled = !plan.placed;
    } catch (e) { put(out, errorBox(e)); deploy.disabled = true; }
  };
  for (const k of Object.keys(f)) f[k].addEventListener("input", () => { deploy.disabled = true; });
  return h("form", { class: "card stack", "aria-label": "Deploy a model", onsubmit: (ev) => { ev.preventDefault(); dry(0); } },
    h("h2", {}, "Deploy a model"),
    h("div", { class: "row" }, field("Name", f.name), field("Source", f.source)),
    h("div", { class: "row" }, field("Engine", f.engine), field("Replicas", f.replicas), field("Context", f.ctx)),
    field("Engine arguments", f.args),
    check("Allow CPU offload", f.offload), check("Allow distributed", f.distributed),
    h("button", { type: "submit" }, "Check placement"), deploy, out);
}

function modelStatus(m) {
  if (m.worst_replica) return h("span", {}, state(m.worst_replica.state), " ", m.worst_replica.message || "");
  if (m.status) return h("span", { class: "fix" }, m.status);
  return state(m.replicas_status.running === m.replicas_status.desired ? "running" : "starting");
}

async function models() {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  page("Models", list, me.role === "admin" ? deployForm() : null);
  every(4000, async () => {
    try {
      const ms = (await api("GET", "/api/models")).models;
      put(list, ms.length ? h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Model", "Source", "Engine", "Replicas", "Status"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, ms.map((m) => h("tr", {},
          h("td", {}, h("a", { href: "#/model/" + encodeURIComponent(m.name) }, m.name)),
          h("td", {}, m.path || m.url), h("td", {}, m.engine_resolved || m.engine),
          h("td", {}, `${m.replicas_status.running}/${m.replicas_status.desired}`), h("td", {}, modelStatus(m)))))))
        : h("p", {}, "No models yet."));
    } catch (e) { put(list, errorBox(e)); }
  });
}

async function model(name) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const out = h("div", { "aria-live": "polite" });
  const replicas = h("input", { type: "number", min: "0", max: "64" });
  const admin = me.role === "admin";
  let armed = false;
  const del = h("button", { type: "button", class: "danger", onclick: async () => {
    if (!armed) { armed = true; del.textContent = "Confirm delete"; return; }
    try {
      await api("DELETE", "/api/models/" + encodeURIComponent(name));
      toast(`Model '${name}' deleted`);
      location.hash = "#/models";
    } catch (e) { put(out, errorBox(e)); }
  } }, "Delete model");
  const ctx = h("input", { type: "number", min: "0" }), args = h("input");
  const scale = h("form", { class: "card stack", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api("PATCH", "/api/models/" + encodeURIComponent(name), { replicas: parseInt(replicas.value, 10) });
      toast("Scaled to " + replicas.value);
    } catch (e) { put(out, errorBox(e)); }
  } }, h("h2", {}, "Scale"), field("Replicas", replicas), h("button", { type: "submit" }, "Scale"), del, out);
  const upd = h("div", { "aria-live": "polite" });
  const update = h("form", { class: "card stack", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = {};
    if (ctx.value) body.ctx = parseInt(ctx.value, 10);
    body.engine_args = args.value.trim() ? args.value.trim().split(/\s+/) : [];
    try {
      const r = await api("PATCH", "/api/models/" + encodeURIComponent(name), body);
      put(upd, h("p", {}, r.replacing ? `Rolling update: ${r.replacing} instance(s) being replaced` : "Updated"));
    } catch (e) { put(upd, errorBox(e)); }
  } }, h("h2", {}, "Update"), h("p", { class: "muted" }, "A rolling update: new instances start beside the old ones, which stop once the new ones run."),
    h("div", { class: "row" }, field("Context size", ctx), field("Engine arguments", args)), h("button", { type: "submit" }, "Update"), upd);
  page("Model " + name, body, admin ? scale : null, admin ? update : null);
  let first = true;
  every(3000, async () => {
    try {
      const [m, is] = await Promise.all([api("GET", "/api/models/" + encodeURIComponent(name)),
        api("GET", "/api/instances?model=" + encodeURIComponent(name))]);
      if (first) { replicas.value = m.replicas; ctx.value = m.ctx || ""; args.value = (m.engine_args || []).join(" "); first = false; }
      put(body, 
        h("p", {}, `${m.path || m.url} · ${m.engine_resolved || m.engine} · ${m.replicas_status.running}/${m.replicas_status.desired} running · `, modelStatus(m)),
        m.status && (m.reasons || []).length ? h("ul", {}, m.reasons.map((r) => h("li", {}, r.message, r.fix ? h("div", { class: "fix" }, h("b", {}, "Fix: "), r.fix) : null))) : null,
        h("h2", {}, "Instances"),
        is.instances.length ? h("div", { class: "scroll" }, h("table", {},
          h("thead", {}, h("tr", {}, ["Instance", "State", "Where", "Restarts", "Cause"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, is.instances.map((i) => h("tr", {},
            h("td", {}, h("a", { href: "#/instance/" + encodeURIComponent(i.id) }, i.id)),
            h("td", {}, state(i.state)),
            h("td", {}, ((i.placement && i.placement.workers) || []).map((w) => w.name).join(", ")),
            h("td", {}, String(Object.values(i.members || {}).reduce((a, r) => a + (r.restarts || 0), 0))),
            h("td", {}, i.message || "")))))) : h("p", { class: "muted" }, "No instances."));
    } catch (e) { put(body, errorBox(e)); }
  });
}

async function instance(id) {
  const info = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const log = h("pre", { class: "log", tabindex: "0", "aria-label": "Engine log" });
  page("Instance " + id, info, h("h2", {}, "Engine log"), log);
  every(2000, async () => {
    try {
      const i = (await api("GET", "/api/instances")).instances.find((x) => x.id === id);
      if (!i) { put(info, h("p", {}, "This instance is gone.")); return; }
      const d = i.download;
      put(info, 
        h("p", {}, state(i.state), " ", i.message || ""),
        h("p", { class: "muted" }, (i.placement && i.placement.summary) || ""),
        d ? h("div", { class: "card" }, h("b", {}, "Download: "), `${d.state} ${bytes(d.bytes)} of ${bytes(d.total)}` +
          (d.rate ? `, ${bytes(d.rate)}/s` : "") + (d.eta_s ? `, ${d.eta_s} s left` : ""),
          h("progress", { max: String(d.total || 1), value: String(d.bytes || 0), "aria-label": "Download progress" }),
          d.message ? h("div", { class: "fix" }, d.message) : null) : null);
    } catch (e) { put(info, errorBox(e)); }
  });
  let offset = null;
  const tail = async () => {
    try {
      const r = await api("GET", `/api/instances/${encodeURIComponent(id)}/logs?` + (offset === null ? "tail=200" : "offset=" + offset));
      if (r.data) {
        const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.append(r.data);
        if (stick) log.scrollTop = log.scrollHeight;
      }
      offset = r.offset;
    } catch (e) { if (offset === null) log.textContent = e.message; }
  };
  every(1000, tail);
}

/* ---- playground ---- */

async function sseLines(resp, onData) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (line.startsWith("data: ")) onData(line.slice(6));
    }
  }
}

async function playground() {
  const ms = (await api("GET", "/api/models")).models;
  const key = h("input", { type: "password", value: store.getItem("corral.playgroundKey") || "", placeholder: "sk-corral-…" });
  key.addEventListener("change", () => store.setItem("corral.playgroundKey", key.value.trim()));
  const makeKey = h("button", { type: "button", class: "secondary", onclick: async () => {
    try {
      const k = await api("POST", "/api/keys", { name: "playground" });
      key.value = k.key;
      store.setItem("corral.playgroundKey", k.key);
      toast("Created the key 'playground' for this browser session");
    } catch (e) { toast(e.message, true); }
  } }, "Create a playground key");
  const model = h("select", {}, ms.map((m) => h("option", { value: m.name }, m.name)));
  const system = h("textarea", { placeholder: "You are a helpful assistant." });
  const msg = h("textarea", { placeholder: "Say something" });
  const temp = h("input", { type: "number", min: "0", max: "2", step: "0.1", value: "0.7" });
  const maxTok = h("input", { type: "number", min: "1", max: "8192", value: "128" });
  const answer = h("div", { class: "card answer", "aria-live": "polite", "aria-label": "Answer" });
  const meta = h("p", { class: "muted" });
  let history = [];
  const send = h("button", { type: "submit" }, "Send");
  const chat = h("form", { class: "stack", onsubmit: async (ev) => {
    ev.preventDefault();
    const k = key.value.trim();
    if (!k) { toast("Give an API key, or create one for the playground", true); return; }
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value.trim() });
    history.push({ role: "user", content: msg.value });
    messages.push(...history);
    answer.textContent = "";
    meta.textContent = "";
    send.disabled = true;
    const t0 = performance.now();
    let first = 0, text = "";
    try {
      const r = await fetch("/v1/chat/completions", { method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + k },
        body: JSON.stringify({ model: model.value, messages, stream: true, temperature: parseFloat(temp.value),
          max_tokens: parseInt(maxTok.value, 10), stream_options: { include_usage: true } }) });
      if (!r.ok) {
        const e = (await r.json().catch(() => ({}))).error || {};
        throw new ApiError(r.status, e.message || "HTTP " + r.status);
      }
      let usage = null, finish = "";
      await sseLines(r, (data) => {
        if (data === "[DONE]") return;
        const c = JSON.parse(data);
        if (c.usage) usage = c.usage;
        const ch = (c.choices || [])[0];
        if (ch && ch.delta && ch.delta.content) {
          if (!first) first = performance.now();
          text += ch.delta.content;
          answer.textContent = text;
        }
        if (ch && ch.finish_reason) finish = ch.finish_reason;
      });
      history.push({ role: "assistant", content: text });
      meta.textContent = `finish: ${finish || "?"}` + (usage ? ` · ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` : "") +
        (first ? ` · first token after ${Math.round(first - t0)} ms` : "");
      msg.value = "";
    } catch (e) { history.pop(); put(answer, errorBox(e)); }
    send.disabled = false;
  } }, field("System prompt", system), field("Message", msg),
    h("div", { class: "row" }, field("Temperature", temp), field("Max tokens", maxTok)), send,
    h("button", { type: "button", class: "secondary", onclick: () => { history = []; answer.textContent = ""; meta.textContent = ""; } }, "New chat"),
    answer, meta);
  const input = h("textarea", { placeholder: "Text to embed" });
  const vec = h("div", { class: "card", "aria-live": "polite", "aria-label": "Embedding" });
  const embed = h("form", { class: "stack", hidden: true, onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await fetch("/v1/embeddings", { method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + key.value.trim() },
        body: JSON.stringify({ model: model.value, input: input.value }) });
      const j = await r.json();
      if (!r.ok) throw new ApiError(r.status, (j.error || {}).message || "HTTP " + r.status);
      const v = j.data[0].embedding;
      put(vec, h("p", {}, `${v.length} dimensions`), h("pre", {}, v.slice(0, 8).map((x) => x.toFixed(5)).join(", ") + (v.length > 8 ? ", …" : "")));
    } catch (e) { put(vec, errorBox(e)); }
  } }, field("Input", input), h("button", { type: "submit" }, "Embed"), vec);
  const tab = (name, panel, other, otherPanel) => h("button", { type: "button", role: "tab", "aria-selected": name === "Chat" ? "true" : "false",
    onclick: (ev) => {
      for (const b of ev.target.parentNode.children) b.setAttribute("aria-selected", String(b === ev.target));
      panel.hidden = false; otherPanel.hidden = true;
    } }, name);
  page("Playground",
    ms.length ? null : h("p", { class: "fix" }, "No model is deployed yet: deploy one under Models."),
    h("div", { class: "card stack" }, h("div", { class: "row" }, field("Model", model), field("API key", key)), makeKey),
    h("div", { class: "tabs", role: "tablist" }, tab("Chat", chat, "Embeddings", embed), tab("Embeddings", embed, "Chat", chat)),
    chat, embed);
}

/* ---- keys, users, usage, events, audit ---- */

async function keys() {
  const list = h("div");
  const name = h("input", { required: true }), modelsIn = h("input", { placeholder: "all" });
  const rpm = h("input", { type: "number", min: "0" }), tpm = h("input", { type: "number", min: "0" });
  const out = h("div", { "aria-live": "polite" });
  const load = async () => {
    const ks = (await api("GET", "/api/keys")).keys;
    put(list, ks.length ? h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Owner", "Prefix", "Models", "Limits", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, ks.map((k) => h("tr", {}, h("td", {}, k.name), h("td", {}, k.owner || ""), h("td", {}, k.prefix || ""),
        h("td", {}, (k.models || []).join(", ") || "all"), h("td", {}, `${k.rpm || "–"} rpm, ${k.tpm || "–"} tpm`),
        h("td", {}, h("button", { type: "button", class: "danger", "aria-label": "Revoke " + k.name, onclick: async () => {
          try { await api("DELETE", "/api/keys/" + encodeURIComponent(k.id)); toast(`Key '${k.name}' revoked`); load(); } catch (e) { toast(e.message, true); }
        } }, "Revoke"))))))) : h("p", {}, "No keys yet."));
  };
  page("API keys", list, h("form", { class: "card stack", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { name: name.value.trim() };
    if (modelsIn.value.trim()) body.models = modelsIn.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (rpm.value) body.rpm = parseInt(rpm.value, 10);
    if (tpm.value) body.tpm = parseInt(tpm.value, 10);
    try {
      const k = await api("POST", "/api/keys", body);
      put(out, h("div", { class: "card" }, h("p", {}, "The key, shown this once:"), h("pre", { "aria-label": "New key" }, k.key)));
      load();
    } catch (e) { put(out, errorBox(e)); }
  } }, h("h2", {}, "Create a key"), field("Key name", name), field("Models (comma-separated)", modelsIn),
    h("div", { class: "row" }, field("Requests per minute", rpm), field("Tokens per minute", tpm)),
    h("button", { type: "submit" }, "Create key"), out));
  await load();
}

async function users() {
  const list = h("div");
  const name = h("input", { required: true }), pw = h("input", { type: "password", minlength: "8", autocomplete: "new-password" });
  const role = h("select", {}, h("option", { value: "user" }, "user"), h("option", { value: "admin" }, "admin"));
  const out = h("div");
  const load = async () => {
    const us = (await api("GET", "/api/users")).users;
    put(list, h("table", {}, h("thead", {}, h("tr", {}, ["User", "Role", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, us.map((u) => h("tr", {}, h("td", {}, u.username), h("td", {}, u.role),
        h("td", {}, u.username === me.username ? "" : h("button", { type: "button", class: "danger", "aria-label": "Delete " + u.username, onclick: async () => {
          try { await api("DELETE", "/api/users/" + encodeURIComponent(u.username)); load(); } catch (e) { toast(e.message, true); }
        } }, "Delete")))))));
  };
  page("Users", list, h("form", { class: "card stack", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/api/users", { username: name.value.trim(), password: pw.value, role: role.value });
      toast(`User '${name.value}' created`);
      put(out, );
      load();
    } catch (e) { put(out, errorBox(e)); }
  } }, h("h2", {}, "Create a user"), field("User name", name), field("Initial password", pw), field("Role", role),
    h("button", { type: "submit" }, "Create user"), out));
  await load();
}

function chart(rows, label, value) {
  const max = Math.max(1, ...rows.map(value));
  return h("div", { class: "chart", role: "img", "aria-label": rows.map((r) => `${label(r)}: ${value(r)}`).join("; ") },
    rows.map((r) => h("div", { style: `height:${(100 * value(r)) / max}%`, title: `${label(r)}: ${value(r)} tokens` })));
}

async function usage() {
  const [byDay, byModel, byKey] = await Promise.all(["day", "model", "key"].map((by) => api("GET", "/api/usage?since=30d&by=" + by)));
  const tokens = (r) => r.total_tokens;
  const table = (rows, col) => h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, [col, "Requests", "Errors", "Prompt tokens", "Completion tokens"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r[col.toLowerCase()] || "–"), h("td", {}, String(r.requests)), h("td", {}, String(r.errors)),
      h("td", {}, String(r.prompt_tokens)), h("td", {}, String(r.completion_tokens)))))));
  page("Usage",
    h("p", {}, `Last 30 days: ${byDay.total.requests} requests, ${byDay.total.total_tokens} tokens.`),
    h("h2", {}, "Tokens per day"), chart(byDay.rows, (r) => r.day, tokens),
    h("h2", {}, "By model"), chart(byModel.rows, (r) => r.model, tokens), table(byModel.rows, "Model"),
    h("h2", {}, "By key"), chart(byKey.rows, (r) => r.key, tokens), table(byKey.rows, "Key"));
}

function eventRow(e) {
  return h("tr", {}, h("td", {}, e.at), h("td", {}, h("span", { class: "state " + (e.kind.split(".")[1] || "") }, e.kind)),
    h("td", {}, e.subject), h("td", {}, e.message));
}

async function events() {
  const tbody = h("tbody");
  page("Events", h("div", { class: "scroll" }, h("table", { "aria-label": "Cluster events, newest first" },
    h("thead", {}, h("tr", {}, ["When", "Kind", "Subject", "What happened"].map((t) => h("th", { scope: "col" }, t)))), tbody)));
  const list = (await api("GET", "/api/events?limit=200")).events;
  let last = 0;
  for (const e of list) { tbody.prepend(eventRow(e)); last = e.id; }
  const ctl = new AbortController();
  aborts.push(ctl);
  const follow = async () => {
    try {
      const r = await fetch("/api/events?follow=1&after=" + last, { headers: { Authorization: "Bearer " + store.getItem("corral.token") }, signal: ctl.signal });
      await sseLines(r, (data) => { const e = JSON.parse(data); last = e.id; tbody.prepend(eventRow(e)); });
    } catch (e) { if (ctl.signal.aborted) return; }
    if (!ctl.signal.aborted) setTimeout(follow, 2000);
  };
  follow();
}

async function audit() {
  const es = (await api("GET", "/api/audit?limit=300")).entries;
  page("Audit log", h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ["When", "Who", "From", "Action", "Target"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, es.map((a) => h("tr", {}, h("td", {}, a.at), h("td", {}, a.actor), h("td", {}, a.address), h("td", {}, a.action), h("td", {}, a.target)))))));
}

/* ---- routing ---- */

const routes = { overview, models, model, instance, playground, keys, usage, events, users, audit, account };

async function render() {
  for (const t of timers) clearInterval(t);
  for (const a of aborts) a.abort();
  timers = [];
  aborts = [];
  const [, name = "overview", arg] = (location.hash || "#/overview").split("/").map(decodeURIComponent);
  if (name === "login" || !store.getItem("corral.token")) { login(); return; }
  try {
    me = await api("GET", "/api/auth/me");
  } catch (e) { if (e.status !== 401) page("Corral", errorBox(e)); return; }
  $(".top").hidden = false;
  for (const a of document.querySelectorAll(".top nav a")) {
    a.hidden = a.hasAttribute("data-admin") && me.role !== "admin";
    if (a.getAttribute("href") === "#/" + name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const fn = routes[name] || overview;
  try { await fn(arg); } catch (e) { page("Corral", errorBox(e)); }
  $("#main").focus({ preventScroll: true });
}

window.addEventListener("hashchange", render);
document.addEventListener("DOMContentLoaded", () => {
  $("#logout").addEventListener("click", async () => {
    try { await api("POST", "/api/auth/logout"); } catch (e) { /* gone already */ }
    store.removeItem("corral.token");
    location.hash = "#/login";
  });
  render();
});
