// The page: models (from /ui/data/models and /ui/data/live), live activity
// charts, the playground, and load, unload and pull. Plain DOM, no framework.
"use strict";

const LIVE_EVERY_MS = 2000; // /ui/data/live: loaded models, queue, activity
const MODELS_EVERY_MS = 10000; // /ui/data/models: the stores' listing

const state = { models: [], running: [], activity: null, queue: 0, playing: false };
const $ = (id) => document.getElementById(id);

function make(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
  return (n / 1000 ** i).toFixed(i ? 1 : 0) + " " + units[i];
}

function ago(iso) {
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (s < 90) return "just now";
  if (s < 5400) return Math.round(s / 60) + " minutes ago";
  if (s < 129600) return Math.round(s / 3600) + " hours ago";
  return Math.round(s / 86400) + " days ago";
}

function countdown(iso) {
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (s > 10 * 365 * 86400) return "kept loaded";
  if (s <= 0) return "now";
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `in ${h}:${String(m).padStart(2, "0")}:${sec}` : `in ${m}:${sec}`;
}

async function getJSON(url, options) {
  const response = await EmberKey.request(url, options);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error.message || body.error : text || response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

function post(url, body) {
  return getJSON(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function setStatus(ok, text) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("down", !ok);
}

// -- views -------------------------------------------------------------------

function showView() {
  delete drawn.activity; // a view shown again is drawn afresh
  const view = (location.hash || "#models").slice(1);
  for (const section of document.querySelectorAll(".view")) {
    section.classList.toggle("hidden", section.id !== "view-" + view);
  }
  for (const link of document.querySelectorAll(".tabs a[data-view]")) {
    link.classList.toggle("active", link.dataset.view === view);
  }
  if (view === "activity") renderActivity();
}

// -- models ------------------------------------------------------------------

function kindOf(model) {
  return (model.capabilities || []).includes("rerank") ? "rerank" : "embedding";
}

// Tables are rebuilt only when their data changed, so a button stays put under the pointer.
const drawn = {};
function changed(name, data) {
  const signature = JSON.stringify(data);
  if (drawn[name] === signature) return false;
  drawn[name] = signature;
  return true;
}

function renderRunning() {
  $("t-loaded").textContent = state.running.length;
  if (!changed("running", state.running)) return;
  const body = $("running").tBodies[0];
  body.replaceChildren();
  for (const m of state.running) {
    const unload = make("button", { class: "small secondary", type: "button" }, "Unload");
    unload.addEventListener("click", () => loadModel(m.name, 0, unload));
    const memory = m.size_vram ? `${bytes(m.size)} (${bytes(m.size_vram)} VRAM)` : bytes(m.size);
    body.append(
      make(
        "tr",
        { "data-model": m.name },
        make("td", { class: "name" }, m.name),
        make("td", {}, make("span", { class: "badge " + (m.device === "CPU" ? "cpu" : "gpu") }, m.device)),
        make("td", {}, memory),
        make("td", {}, m.context_length.toLocaleString() + " tokens"),
        make("td", { class: "countdown", "data-expires": m.expires_at }, countdown(m.expires_at)),
        make("td", { class: "actions" }, unload),
      ),
    );
  }
  $("running").classList.toggle("hidden", !state.running.length);
  $("running-empty").classList.toggle("hidden", state.running.length > 0);
}

function renderAvailable() {
  const loaded = new Set(state.running.map((m) => m.name));
  if (!changed("available", [state.models, [...loaded]])) return;
  const body = $("available").tBodies[0];
  body.replaceChildren();
  for (const m of state.models) {
    const load = make("button", { class: "small", type: "button" }, loaded.has(m.name) ? "Loaded" : "Load");
    load.disabled = loaded.has(m.name);
    load.addEventListener("click", () => loadModel(m.name, null, load));
    const d = m.details || {};
    body.append(
      make(
        "tr",
        { "data-model": m.name },
        make("td", { class: "name" }, m.name),
        make("td", {}, make("span", { class: "badge source" }, m.source)),
        make("td", {}, make("span", { class: "badge " + kindOf(m) }, kindOf(m))),
        make("td", {}, d.family || "–"),
        make("td", {}, d.parameter_size || "–"),
        make("td", {}, d.quantization_level || "–"),
        make("td", {}, bytes(m.size)),
        make("td", { class: "muted" }, ago(m.modified_at)),
        make("td", { class: "actions" }, load),
      ),
    );
  }
  $("available").classList.toggle("hidden", !state.models.length);
  $("available-empty").classList.toggle("hidden", state.models.length > 0);
  renderModelChoices();
}

function renderModelChoices() {
  const select = $("play-model");
  const chosen = select.value;
  const names = state.models.map((m) => m.name);
  if (names.join("\n") === Array.from(select.options, (o) => o.value).join("\n")) return;
  select.replaceChildren(...state.models.map((m) => make("option", { value: m.name }, `${m.name} (${kindOf(m)})`)));
  const firstEmbedding = state.models.find((m) => kindOf(m) === "embedding");
  if (names.includes(chosen)) select.value = chosen;
  else if (firstEmbedding) select.value = firstEmbedding.name;
  renderPlayMode();
}

async function loadModel(name, keepAlive, button) {
  button.disabled = true;
  const body = { model: name };
  if (keepAlive !== null) body.keep_alive = keepAlive;
  try {
    await post("/ui/data/load", body);
  } catch (error) {
    alert(`${keepAlive === 0 ? "Unload" : "Load"} of ${name} failed: ${error.message}`);
  }
  await refreshLive();
  renderAvailable();
}

async function refreshModels() {
  try {
    state.models = (await getJSON("/ui/data/models")).models;
    renderAvailable();
  } catch (error) {
    setStatus(false, "models: " + error.message);
  }
}

async function refreshLive() {
  try {
    const live = await getJSON("/ui/data/live");
    const before = state.running.map((m) => m.name).join();
    state.running = live.running;
    state.activity = live.activity;
    state.queue = live.queue_depth;
    setStatus(true, `running · v${live.version}`);
    renderRunning();
    if (before !== state.running.map((m) => m.name).join()) renderAvailable();
    renderActivity();
  } catch (error) {
    setStatus(false, error.message.startsWith("Failed") ? "not reachable" : error.message);
  }
}

function tickCountdowns() {
  for (const cell of document.querySelectorAll("[data-expires]")) {
    cell.textContent = countdown(cell.dataset.expires);
  }
}

// -- pull --------------------------------------------------------------------

async function pull(event) {
  event.preventDefault();
  const name = $("pull-name").value.trim();
  const button = event.submitter || $("pull-form").querySelector("button");
  const fill = $("pull-fill");
  const status = $("pull-status");
  $("pull-progress").classList.remove("hidden");
  fill.style.width = "0%";
  status.textContent = "starting…";
  button.disabled = true;
  try {
    const response = await EmberKey.request("/api/pull", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: name, stream: true }),
    });
    if (!response.ok) throw new Error(`${response.status}: ${(await response.json()).error}`);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let failed = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
        if (line.error) failed = line.error;
        else showPull(line, fill, status);
      }
    }
    if (failed) throw new Error(failed);
    fill.style.width = "100%";
    status.textContent = `${name}: success`;
    await refreshModels();
  } catch (error) {
    status.textContent = `${name}: ${error.message}`;
    $("pull-progress").classList.add("failed");
  } finally {
    button.disabled = false;
  }
}

function showPull(line, fill, status) {
  $("pull-progress").classList.remove("failed");
  if (line.total) {
    const share = Math.min(1, (line.completed || 0) / line.total);
    fill.style.width = (share * 100).toFixed(1) + "%";
    status.textContent = `${line.status} · ${bytes(line.completed || 0)} of ${bytes(line.total)}`;
  } else {
    status.textContent = line.status;
  }
}

// -- activity ----------------------------------------------------------------

function renderActivity() {
  const activity = state.activity;
  $("t-queue").textContent = state.queue;
  if (!activity) return;
  const models = Object.entries(activity.models);
  const now = activity.recent;
  $("t-rps").textContent = EmberCharts.format(now.rps, "");
  $("t-tps").textContent = EmberCharts.format(now.tps, "");
  $("t-p50").textContent = now.requests ? EmberCharts.format(now.p50, "ms") : "–";
  $("t-p95").textContent = now.requests ? EmberCharts.format(now.p95, "ms") : "–";
  $("activity-empty").classList.toggle("hidden", models.length > 0);
  if ($("view-activity").classList.contains("hidden")) return; // draw only what is seen
  if (!changed("activity", activity.models)) return;
  const since = Math.round(activity.window_seconds / 60) + " min ago";
  const steps = activity.window_seconds / activity.slot_seconds;
  const cards = models.map(([name, m]) => {
    // The answer lists only the steps that saw requests: the others are zeros.
    const pick = (key) => {
      const values = new Array(steps).fill(0);
      for (const slot of m.series) {
        const index = (slot.t - activity.first_slot) / activity.slot_seconds;
        if (index >= 0 && index < steps) values[index] = slot[key];
      }
      return values;
    };
    return make(
      "div",
      { class: "panel model-card", "data-model": name },
      make(
        "h3",
        {},
        name,
        make(
          "span",
          { class: "hint" },
          `${m.in_flight} in flight · last ${activity.recent_seconds} s: ${m.recent.requests} requests, ` +
            `p50 ${EmberCharts.format(m.recent.p50, "ms")}, p95 ${EmberCharts.format(m.recent.p95, "ms")}`,
        ),
      ),
      make(
        "div",
        { class: "charts" },
        EmberCharts.line("Throughput", [
          { label: "texts/s", values: pick("tps"), cls: "s1" },
          { label: "requests/s", values: pick("rps"), cls: "s2" },
        ], "", since),
        EmberCharts.line("Latency", [
          { label: "p95", values: pick("p95"), cls: "s3" },
          { label: "p50", values: pick("p50"), cls: "s1" },
        ], "ms", since),
        EmberCharts.line("Tokens per step", [{ label: "tokens", values: pick("tokens"), cls: "s4" }], "", since),
      ),
    );
  });
  $("model-activity").replaceChildren(...cards);
}

// -- playground --------------------------------------------------------------

function chosenModel() {
  return state.models.find((m) => m.name === $("play-model").value);
}

function renderPlayMode() {
  const model = chosenModel();
  const kind = model ? kindOf(model) : "embedding";
  $("play-kind").textContent = model ? kind : "";
  $("play-kind").className = "badge " + kind;
  $("embed-inputs").classList.toggle("hidden", kind === "rerank");
  $("rerank-inputs").classList.toggle("hidden", kind !== "rerank");
  $("play-run").textContent = kind === "rerank" ? "Rerank" : "Compare";
}

function lines(id) {
  return $(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
}

async function play(event) {
  event.preventDefault();
  const model = chosenModel();
  if (!model) return;
  $("play-error").textContent = "";
  $("play-run").disabled = true;
  try {
    if (kindOf(model) === "rerank") await rerank(model.name);
    else await compare(model.name);
  } catch (error) {
    $("play-error").textContent = error.message;
  } finally {
    $("play-run").disabled = false;
    refreshLive();
  }
}

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.max(Math.sqrt(na * nb), 1e-12);
}

// -1 deep blue, 0 pale, 1 ember orange.
function heat(value) {
  const t = Math.max(-1, Math.min(1, value));
  const [r, g, b] = t >= 0 ? [255 - 24 * t, 247 - 130 * t, 237 - 205 * t] : [255 + 215 * t, 247 + 110 * t, 237 + 5 * t];
  return `rgb(${r.toFixed(0)}, ${g.toFixed(0)}, ${b.toFixed(0)})`;
}

function short(text) {
  return text.length > 24 ? text.slice(0, 23) + "…" : text;
}

async function compare(name) {
  const texts = lines("play-texts");
  if (!texts.length) throw new Error("type at least one text");
  const answer = await post("/ui/data/embed", { model: name, input: texts });
  const vectors = answer.embeddings;
  const tokens = answer.token_counts.reduce((a, b) => a + b, 0);
  $("embed-facts").textContent =
    `${vectors.length} vectors of ${answer.dimensions} dimensions · ${tokens} tokens ` +
    `(${answer.token_counts.join(", ")}) · ${(answer.total_duration / 1e6).toFixed(1)} ms`;
  const table = $("heatmap");
  const head = make("tr", {}, make("th", {}));
  texts.forEach((t, j) => head.append(make("th", { class: "col", title: t }, short(t))));
  const rows = [make("thead", {}, head)];
  const body = make("tbody");
  texts.forEach((t, i) => {
    const row = make("tr", {}, make("th", { class: "row-head", title: t }, short(t), make("span", { class: "tokens" }, `${answer.token_counts[i]} tok`)));
    texts.forEach((_, j) => {
      const value = cosine(vectors[i], vectors[j]);
      const cell = make("td", { class: "cell", "data-i": i, "data-j": j, "data-value": value.toFixed(6), title: `${t} · ${texts[j]}` }, value.toFixed(3));
      cell.style.background = heat(value);
      cell.classList.toggle("strong", Math.abs(value) > 0.75);
      row.append(cell);
    });
    body.append(row);
  });
  rows.push(body);
  table.replaceChildren(...rows);
  $("embed-result").classList.remove("hidden");
  $("rerank-result").classList.add("hidden");
}

async function rerank(name) {
  const query = $("play-query").value.trim();
  const passages = lines("play-passages");
  if (!query || !passages.length) throw new Error("type a query and at least one passage");
  const answer = await post("/api/rerank", { model: name, query, documents: passages });
  const scores = answer.results.map((r) => r.relevance_score);
  const low = Math.min(0, ...scores);
  const high = Math.max(...scores);
  $("rerank-facts").textContent =
    `${passages.length} passages · ${answer.prompt_eval_count} tokens · ${(answer.total_duration / 1e6).toFixed(1)} ms`;
  const items = answer.results.map((r, rank) => {
    const bar = make("div", { class: "score-bar" });
    bar.style.width = (high > low ? ((r.relevance_score - low) / (high - low)) * 100 : 100).toFixed(1) + "%";
    return make(
      "li",
      { "data-index": r.index, "data-score": r.relevance_score },
      make("span", { class: "rank" }, rank + 1),
      make("span", { class: "passage" }, passages[r.index]),
      make("div", { class: "score-track" }, bar),
      make("span", { class: "score" }, r.relevance_score.toFixed(4)),
    );
  });
  $("ranked").replaceChildren(...items);
  $("rerank-result").classList.remove("hidden");
  $("embed-result").classList.add("hidden");
}

// -- start -------------------------------------------------------------------

function every(ms, work) {
  // Polls only while the tab is visible: a hidden page costs the server nothing.
  setInterval(() => {
    if (!document.hidden) work();
  }, ms);
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", showView);
  $("pull-form").addEventListener("submit", pull);
  $("play-form").addEventListener("submit", play);
  $("play-model").addEventListener("change", renderPlayMode);
  showView();
  refreshLive().then(refreshModels);
  every(LIVE_EVERY_MS, refreshLive);
  every(MODELS_EVERY_MS, refreshModels);
  setInterval(tickCountdowns, 1000);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshLive();
  });
});
