// sharpwatch live page: the run list (#/) and one run (#/runs/ID), polling the REST API.
// No framework, no build step; the only library is uPlot (vendored, loaded as window.uPlot).

const API = "/api/v1";
const POLL_MS = 2000;
const SUMMARY_MAX_AGE_MS = 30000;
const TOKEN_KEY = "sharpwatch.token";
const THEME_KEY = "sharpwatch.theme";
const DEFAULT_ENTROPY_FLOOR = 0.1;
const DEFAULT_ZPRIME_PRESSURE = 0.5;
const DEFAULT_COLLAPSE_THRESHOLD = 0.01;
const STEP_PAGE = 5000;
const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 25000, 50000, 100000, 200000, 500000, 1000000];
const MAX_STEP_PAGES_PER_TICK = 40;
const CHART_METRICS = [
  "entropy", "success_rate", "zprime_raw_gt1_frac", "zprime_gt1_frac", "log_zprime_raw_p90",
  "reward_accuracy", "gt_reward", "proxy_reward", "alpha",
];
const RESOLVED_SHOWN = 8;

// ---------------------------------------------------------------------------------------------
// small helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "data") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const pStar = (g) => 1 - Math.pow(2, -1 / g);

function fmt(value, digits = 3) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  const abs = Math.abs(value);
  if (abs >= 1000) return value.toFixed(0);
  if (abs >= 100) return value.toFixed(1);
  if (abs >= 10) return value.toFixed(2);
  return value.toFixed(digits);
}

function ago(iso) {
  if (!iso) return "—";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

const localTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const badge = (value, label = value) => h("span", { class: `badge ${value}`, text: label });
const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// ---------------------------------------------------------------------------------------------
// API access: every request carries the token when one is set

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

const getToken = () => localStorage.getItem(TOKEN_KEY) || "";

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "the service is unreachable");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const data = await response.json();
      detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    } catch { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

function explain(error) {
  if (!(error instanceof ApiError)) return `Unexpected error: ${error.message || error}`;
  if (error.status === 0) return "The service is unreachable; retrying every 2 s.";
  if (error.status === 401) {
    return getToken()
      ? "The service refused the token (401): paste a valid one under “API token” (top right)."
      : "The service needs a token (401): paste one under “API token” (top right).";
  }
  if (error.status === 403) return "This token may not read this (403): use a read-only or operator token.";
  return `The service answered ${error.status}: ${error.detail}`;
}

// ---------------------------------------------------------------------------------------------
// banner, live indicator, token box, theme

const banner = { poll: null, action: null, actionTimer: null };

function renderBanner() {
  const el = document.getElementById("banner");
  const message = banner.action || (banner.poll && { text: banner.poll, kind: "error" });
  el.hidden = !message;
  if (message) {
    el.textContent = message.text;
    el.className = `banner ${message.kind === "info" ? "info" : ""}`;
  }
}

function setAction(text, kind = "error") {
  clearTimeout(banner.actionTimer);
  banner.action = text ? { text, kind } : null;
  if (text) banner.actionTimer = setTimeout(() => setAction(null), 15000);
  renderBanner();
}

function setLive(ok, error) {
  const el = document.getElementById("live");
  el.className = `live ${ok ? "ok" : "err"}`;
  el.textContent = ok ? `live · ${new Date().toLocaleTimeString()}` : "not updating";
  banner.poll = ok ? null : explain(error);
  renderBanner();
}

function setupToken() {
  const input = document.getElementById("token-input");
  const summary = document.getElementById("token-summary");
  const box = document.getElementById("token-box");
  const show = () => {
    const set = Boolean(getToken());
    summary.textContent = set ? "API token ✓" : "API token";
    summary.classList.toggle("set", set);
    input.value = getToken();
  };
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    box.open = false;
    show();
    setAction(value ? "Token saved in this browser." : "Token forgotten.", "info");
    poller.now();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    box.open = false;
    show();
    setAction("Token forgotten.", "info");
    poller.now();
  });
  show();
}

function setupTheme() {
  const saved = localStorage.getItem(THEME_KEY);
  if (saved) document.documentElement.dataset.theme = saved;
  document.getElementById("theme-toggle").addEventListener("click", () => {
    const dark = cssVar("color-scheme") === "dark";
    const next = dark ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem(THEME_KEY, next);
    view?.themeChanged?.();
  });
}

// ---------------------------------------------------------------------------------------------
// polling: one tick at a time, paused while the tab is hidden

const poller = {
  timer: null,
  busy: false,
  generation: 0,
  async tick() {
    clearTimeout(this.timer);
    if (this.busy) return;
    const generation = this.generation;
    if (!document.hidden && view) {
      this.busy = true;
      try {
        await view.refresh();
        if (generation === this.generation) setLive(true);
      } catch (error) {
        if (generation === this.generation) setLive(false, error);
      } finally {
        this.busy = false;
      }
    }
    if (generation === this.generation) this.timer = setTimeout(() => this.tick(), POLL_MS);
  },
  now() {
    clearTimeout(this.timer);
    if (this.busy) this.timer = setTimeout(() => this.now(), 50);
    else this.tick();
  },
  restart() {
    this.generation += 1;
    this.busy = false;
    this.now();
  },
};
document.addEventListener("visibilitychange", () => { if (!document.hidden) poller.now(); });

// ---------------------------------------------------------------------------------------------
// run list

async function mapLimited(items, limit, fn) {
  const queue = [...items];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await fn(queue.shift());
  });
  await Promise.all(workers);
}

class RunsView {
  constructor(root) {
    this.summaries = new Map(); // run id -> {key, at, data}
    this.lastSteps = new Map();
    this.runs = [];
    this.filter = h("input", {
      type: "search", placeholder: "filter by name or project", "aria-label": "Filter runs",
      oninput: () => this.render(),
    });
    this.status = h("select", { "aria-label": "Status", onchange: () => this.render() },
      ...["all", "running", "stopped", "finished", "failed"].map((s) => h("option", { value: s, text: s })));
    this.count = h("span", { class: "muted" });
    this.body = h("tbody", {}, h("tr", {}, h("td", { colspan: 10, class: "empty", text: "Loading runs…" })));
    const col = (text, cls) => h("th", { scope: "col", class: cls, text });
    root.append(
      h("section", { class: "panel", "aria-labelledby": "runs-title" },
        h("div", { class: "toolbar" },
          h("h1", { id: "runs-title", text: "Runs" }), this.count,
          h("span", { class: "spacer" }),
          h("label", {}, "Status", this.status), this.filter),
        h("div", { class: "table-wrap" },
          h("table", { id: "runs" },
            h("thead", {}, h("tr", {},
              col("Run"), col("Status"), col("Verdict"), col("Last step", "r"), col("Open alerts"),
              col("Entropy", "r"), col("Success", "r"), col("raw Z′ > 1", "r"),
              col("Reward acc.", "r"), col("α", "r"))),
            this.body))));
    setCrumbs([]);
  }

  async refresh() {
    const runs = [];
    let cursor = null;
    for (let page = 0; page < 10; page += 1) {
      const data = await api(`/runs?limit=500${cursor ? `&cursor=${cursor}` : ""}`);
      runs.push(...data.items);
      cursor = data.next_cursor;
      if (!cursor) break;
    }
    const now = Date.now();
    const stale = runs.filter((run) => {
      const cached = this.summaries.get(run.id);
      const key = `${run.last_step}|${run.updated_at}|${run.verdict}|${run.status}`;
      run._key = key;
      return !cached || cached.key !== key || now - cached.at > SUMMARY_MAX_AGE_MS;
    });
    await mapLimited(stale, 6, async (run) => {
      try {
        const data = await api(`/runs/${run.id}/collapse`);
        this.summaries.set(run.id, { key: run._key, at: Date.now(), data });
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 404) throw error;
      }
    });
    this.runs = runs;
    this.render();
  }

  render() {
    const text = this.filter.value.trim().toLowerCase();
    const status = this.status.value;
    const activity = (run) => Date.parse(run.last_step_at || run.created_at);
    const rows = this.runs
      .filter((run) => status === "all" || run.status === status)
      .filter((run) => !text || `${run.name} ${run.project}`.toLowerCase().includes(text))
      .sort((a, b) => activity(b) - activity(a) || b.id - a.id);
    this.count.textContent = `${rows.length} of ${this.runs.length}`;
    if (!rows.length) {
      const message = this.runs.length
        ? "No run matches the filter."
        : "No runs yet. Register one with trainer_hooks.SharpwatchClient (see the README).";
      this.body.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "empty", text: message })));
      return;
    }
    this.body.replaceChildren(...rows.map((run) => this.row(run)));
  }

  row(run) {
    const summary = this.summaries.get(run.id)?.data;
    const latest = summary?.latest || {};
    const value = (name) => latest[name]?.value ?? null;
    const floor = run.detectors?.entropy_floor?.floor ?? DEFAULT_ENTROPY_FLOOR;
    const p = pStar(run.group_size);
    const threshold = summary?.collapse_threshold ?? DEFAULT_COLLAPSE_THRESHOLD;
    const pressure = run.detectors?.zprime_pressure?.max_fraction ?? DEFAULT_ZPRIME_PRESSURE;
    const cell = (v, bad, title) => h("td", { class: `r num ${bad ? "bad" : ""}`, title }, fmt(v));
    const entropy = value("entropy");
    const success = value("success_rate");
    const zprime = value("zprime_raw_gt1_frac");
    const accuracy = value("reward_accuracy");
    const previous = this.lastSteps.get(run.id);
    this.lastSteps.set(run.id, run.last_step);
    const alerts = summary?.open_alerts || [];
    const href = `#/runs/${run.id}`;
    return h("tr", { data: { runId: run.id }, class: previous !== undefined && previous !== run.last_step ? "flash" : "" },
      h("td", {},
        h("a", { class: "run-name", href, text: run.name }),
        h("div", { class: "sub", text: `${run.project} · #${run.id} · G=${run.group_size}` },
          run.source === "imported" ? [" ", badge("imported")] : [])),
      h("td", { class: "status" }, badge(run.status)),
      h("td", { class: "verdict" }, badge(run.verdict)),
      h("td", { class: "r last-step", data: { step: run.last_step ?? "" } },
        h("span", { class: "num", text: run.last_step ?? "—" }),
        h("div", { class: "sub", title: localTime(run.last_step_at), text: ago(run.last_step_at) })),
      h("td", { class: "alerts" },
        alerts.length
          ? h("div", { class: "chips" }, alerts.map((a) => h("span", { class: `chip ${a.severity}`, title: a.message, text: a.rule })))
          : h("span", { class: "muted", text: summary ? "none" : "…" })),
      cell(entropy, entropy !== null && entropy < floor, `floor ${fmt(floor, 2)} nats`),
      cell(success, success !== null && (success < p || success > 1 - p), `p*(G) = ${fmt(p)}`),
      cell(zprime, zprime !== null && zprime >= pressure, `raw Z′ (before IAC); pressure at ${fmt(pressure, 2)}`),
      cell(accuracy, accuracy !== null && accuracy < threshold, `Model Collapse threshold ${threshold}`),
      h("td", { class: "r num", title: run.alpha_pinned ? "α pinned by an operator" : undefined },
        fmt(value("alpha") ?? run.alpha), run.alpha_pinned ? h("span", { class: "pin", text: " 📌" }) : null));
  }

  destroy() {}
}

// ---------------------------------------------------------------------------------------------
// charts (uPlot) with horizontal threshold lines and vertical step marks drawn by a hook

function chartSpecs(run, summary) {
  const floor = run.detectors?.entropy_floor?.floor ?? DEFAULT_ENTROPY_FLOOR;
  const p = pStar(run.group_size);
  const pressure = run.detectors?.zprime_pressure?.max_fraction ?? DEFAULT_ZPRIME_PRESSURE;
  const threshold = summary?.collapse_threshold ?? DEFAULT_COLLAPSE_THRESHOLD;
  return [
    {
      key: "entropy", title: "Entropy (nats)",
      note: `Mean token entropy; the entropy_floor rule fires below ${fmt(floor, 2)} nats.`,
      series: [{ metric: "entropy", label: "entropy", color: "--s1" }],
      hlines: [{ y: floor, label: `floor ${fmt(floor, 2)}` }],
      min: 0,
    },
    {
      key: "success", title: "Success rate vs p*(G)",
      note: `G = ${run.group_size}: groups teach nothing below p*(G) = ${fmt(p)} (or above 1 − p*).`,
      series: [
        { metric: "success_rate", label: "success rate", color: "--s1" },
      ],
      hlines: [{ y: p, label: "p*(G)" }, { y: 1 - p, label: "1 − p*(G)" }],
      min: 0, max: 1,
    },
    {
      key: "zprime", title: "Z′ pressure (raw and calibrated)",
      note: "Share of queries with Z′(q) > 1. Raw: from the advantages before IAC, the policy's own " +
        "over-sharpening pressure (the zprime_pressure rule and the α controller read it). " +
        "Calibrated: after IAC, grows with α by construction.",
      series: [
        { metric: "zprime_raw_gt1_frac", label: "raw share Z′ > 1", color: "--s1" },
        { metric: "zprime_gt1_frac", label: "calibrated share Z′ > 1", color: "--s3", width: 1, dash: [4, 3] },
        { metric: "log_zprime_raw_p90", label: "raw log Z′ p90 (right)", color: "--s2", scale: "y2", width: 1 },
      ],
      hlines: [{ y: pressure, label: `pressure ${fmt(pressure, 2)}` }],
      min: 0, max: 1, y2: true,
    },
    {
      key: "reward", title: "Reward accuracy and the Model Collapse Step",
      note: `Label-free runs: pseudo vs oracle reward agreement; collapse below ${threshold}.`,
      series: [
        { metric: "reward_accuracy", label: "reward accuracy", color: "--s1" },
        { metric: "gt_reward", label: "gt reward", color: "--s3", width: 1 },
        { metric: "proxy_reward", label: "proxy reward", color: "--s4", width: 1, dash: [4, 3] },
      ],
      hlines: [{ y: threshold, label: "collapse threshold" }],
      min: 0,
      empty: "no reward accuracy reported: the trainer sends it when it has oracle rewards (label-free runs)",
    },
    {
      key: "alpha", title: "IAC α",
      note: "Calibration strength in effect, as the trainer reports it (α commands move it).",
      series: [{ metric: "alpha", label: "α", color: "--s1", stepped: true }],
      hlines: [],
      min: 0,
    },
  ];
}

class Chart {
  constructor(spec, parent) {
    this.spec = spec;
    this.marks = [];
    this.zoomed = false;
    this.data = null;
    this.plotEl = h("div", { class: "plot", role: "img", "aria-label": spec.title });
    this.noData = h("div", { class: "nodata", text: spec.empty || "no data yet" });
    this.plotEl.append(this.noData);
    this.noteEl = h("p", { class: "note", text: spec.note });
    this.el = h("figure", { class: "chart", data: { chart: spec.key, points: 0 } },
      h("h3", { text: spec.title }), this.noteEl, this.plotEl);
    this.el.style.margin = "0";
    parent.append(this.el);
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(this.plotEl);
  }

  options(width) {
    const muted = cssVar("--muted");
    const grid = cssVar("--grid");
    const spec = this.spec;
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: "11px system-ui" };
    const range = (lo, hi) => (_u, min, max) => {
      let a = min ?? 0;
      let b = max ?? 1;
      for (const line of spec.hlines) { a = Math.min(a, line.y); b = Math.max(b, line.y); }
      if (lo !== undefined) a = Math.min(lo, a);
      if (hi !== undefined && b <= hi) b = hi;
      if (a === b) b = a + 1;
      const pad = (b - a) * 0.05;
      return [lo !== undefined && a >= lo ? a : a - pad, hi !== undefined && b <= hi ? b : b + pad];
    };
    const series = [{ label: "step", value: (_u, v) => (v === null ? "—" : String(v)) }];
    for (const s of spec.series) {
      series.push({
        label: s.label, stroke: cssVar(s.color), width: s.width ?? 2, dash: s.dash,
        scale: s.scale ?? "y", spanGaps: true, points: { show: false },
        paths: s.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
        value: (_u, v) => fmt(v),
      });
    }
    const stepAxis = {
      ...axis, label: "step", labelSize: 16, labelFont: "11px system-ui",
      incrs: STEP_INCRS, // steps are integers: never a tick at 2.5
      values: (_u, splits) => {
        this.el.dataset.xticks = splits.join(",");
        return splits.map((v) => (Number.isInteger(v) ? String(v) : ""));
      },
    };
    const axes = [stepAxis, { ...axis, size: 48 }];
    const scales = { x: { time: false }, y: { range: range(spec.min, spec.max) } };
    if (spec.y2) {
      axes.push({ ...axis, scale: "y2", side: 1, grid: { show: false }, size: 44 });
      scales.y2 = { range: (_u, min, max) => [Math.min(0, min ?? 0), Math.max(1, max ?? 1)] };
    }
    return {
      width, height: 220, series, axes, scales,
      cursor: { drag: { x: true, y: false }, points: { size: 6 } },
      legend: { live: true },
      hooks: {
        draw: [(u) => this.drawMarks(u)],
        setSelect: [(u) => { if (u.select.width > 0) this.zoomed = true; }],
      },
    };
  }

  drawMarks(u) {
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    const dpr = window.devicePixelRatio || 1;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.lineWidth = 1.5 * dpr;
    const markColor = cssVar("--mark");
    for (const line of this.spec.hlines) {
      const y = u.valToPos(line.y, "y", true);
      ctx.strokeStyle = markColor;
      ctx.fillStyle = markColor;
      ctx.setLineDash([6 * dpr, 4 * dpr]);
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.textBaseline = "bottom";
      ctx.fillText(line.label, left + width - 4 * dpr, y - 2 * dpr);
    }
    for (const mark of this.marks) {
      const x = u.valToPos(mark.x, "x", true);
      if (x < left || x > left + width) continue;
      const color = cssVar(mark.color);
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.setLineDash(mark.dash ? [3 * dpr, 3 * dpr] : []);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.textAlign = x > left + width * 0.7 ? "right" : "left";
      ctx.textBaseline = "top";
      const dx = ctx.textAlign === "right" ? -4 * dpr : 4 * dpr;
      ctx.fillText(mark.label, x + dx, top + 4 * dpr + (mark.row || 0) * 14 * dpr);
    }
    ctx.restore();
  }

  update(steps, columns, marks) {
    this.marks = marks;
    const data = [steps, ...this.spec.series.map((s) => columns[s.metric])];
    const points = data[1].reduce((n, v) => n + (v === null ? 0 : 1), 0);
    const any = data.slice(1).some((col) => col.some((v) => v !== null));
    this.el.dataset.points = String(points);
    this.noData.hidden = any;
    this.data = data;
    if (!any) return;
    if (!this.plot) {
      this.plot = new uPlot(this.options(this.plotEl.clientWidth || 400), data, this.plotEl);
      this.plot.over.addEventListener("dblclick", () => { this.zoomed = false; });
    } else {
      this.plot.setData(data, !this.zoomed);
    }
  }

  fit() {
    if (!this.plot) return;
    const width = this.plotEl.clientWidth;
    if (width && Math.abs(width - this.plot.width) > 1) this.plot.setSize({ width, height: 220 });
  }

  rebuild() {
    this.plot?.destroy();
    this.plot = null;
    if (this.data && this.data.slice(1).some((col) => col.some((v) => v !== null))) {
      this.plot = new uPlot(this.options(this.plotEl.clientWidth || 400), this.data, this.plotEl);
    }
  }

  destroy() {
    this.resize.disconnect();
    this.plot?.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// one run

class RunView {
  constructor(root, id) {
    this.id = id;
    this.steps = new Map(); // step -> metrics
    this.nextFrom = 0;
    this.charts = null;
    this.run = null;
    this.title = h("h1", { text: `Run #${id}` });
    this.badges = h("div", { class: "chips" });
    this.facts = h("div", { class: "facts" });
    this.reason = h("input", {
      id: "stop-reason", type: "text", maxlength: 1024, "aria-label": "Reason for stopping",
      placeholder: "reason (optional)",
    });
    this.stopButton = h("button", { id: "stop-run", type: "button", class: "danger", onclick: () => this.stop(), text: "Stop run" });
    this.stopNote = h("div", { class: "sub", id: "stop-note" });
    this.overview = h("section", { class: "panel overview", id: "run-overview", "aria-label": "Run state" });
    this.tiles = h("div", { class: "tiles", id: "tiles" });
    this.chartBox = h("div", { class: "charts", id: "charts" });
    this.alertsBody = h("tbody");
    this.commandsBody = h("tbody");
    this.notifyBody = h("tbody");
    this.notifyCount = h("span", { class: "muted" });
    this.alertCount = h("span", { class: "muted" });
    this.allAlerts = false;
    this.moreAlerts = h("button", {
      type: "button", class: "ghost more", hidden: true,
      onclick: () => { this.allAlerts = !this.allAlerts; this.renderAlerts(this.alerts || []); },
    });
    this.commandCount = h("span", { class: "muted" });
    const col = (text, cls) => h("th", { scope: "col", class: cls, text });
    root.append(h("div", { class: "stack" },
      h("section", { class: "panel run-head", "aria-label": "Run" },
        h("div", { class: "title" }, h("div", { class: "toolbar" }, this.title, this.badges), this.facts),
        h("div", { class: "stop-box" },
          h("div", { class: "row" }, this.reason, this.stopButton), this.stopNote)),
      this.overview,
      this.tiles,
      this.chartBox,
      h("section", { class: "panel", "aria-labelledby": "alerts-title" },
        h("h2", { id: "alerts-title" }, "Alerts ", this.alertCount),
        h("div", { class: "table-wrap" }, h("table", { id: "alerts" },
          h("thead", {}, h("tr", {}, col("Severity"), col("Rule"), col("Status"), col("Steps"), col("Message"), col("Roll back to", "r"))),
          this.alertsBody)),
        this.moreAlerts),
      h("section", { class: "panel", "aria-labelledby": "commands-title" },
        h("h2", { id: "commands-title" }, "Commands ", this.commandCount),
        h("div", { class: "table-wrap" }, h("table", { id: "commands" },
          h("thead", {}, h("tr", {}, col("Issued"), col("Kind"), col("Source"), col("Status"), col("Reason"), col("Steps", "r"))),
          this.commandsBody))),
      h("section", { class: "panel", "aria-labelledby": "notify-title" },
        h("h2", { id: "notify-title" }, "Notifications ", this.notifyCount),
        h("div", { class: "table-wrap" }, h("table", { id: "notifications" },
          h("thead", {}, h("tr", {}, col("Created"), col("Event"), col("Channel"), col("Status"), col("Last error"), col("Tries", "r"))),
          this.notifyBody)))));
    setCrumbs([{ text: `Run #${id}` }]);
  }

  async refresh() {
    const id = this.id;
    const [run, summary, alerts, commands, deliveries] = await Promise.all([
      api(`/runs/${id}`),
      api(`/runs/${id}/collapse`),
      api(`/runs/${id}/alerts?limit=200`),
      api(`/runs/${id}/commands/history?limit=100`),
      // An ingest token may not read the fleet's deliveries: the panel says so, the page stays.
      api(`/notifications/deliveries?run_id=${id}&limit=50`).catch(() => null),
    ]);
    if (run.last_step !== null && (this.run === null || run.last_step >= this.nextFrom || run.updated_at !== this.run.updated_at)) {
      await this.loadSteps();
    }
    this.run = run;
    this.summary = summary;
    this.commands = commands.items;
    this.renderHead(run, summary, commands.items);
    this.renderTiles(run, summary);
    this.renderCharts(run, summary);
    this.renderAlerts(alerts.items);
    this.renderCommands(commands.items);
    this.renderNotifications(deliveries);
    this.renderOverview(run, alerts.items, commands.items);
  }

  // Above the fold: the verdict and why, the best step, open alerts, pending commands.
  renderOverview(run, alerts, commands) {
    const why = run.failure_reason
      ? ["failed", run.failure_reason]
      : run.stop_reason
        ? ["stop reason", run.stop_reason]
        : null;
    const open = alerts.filter((a) => a.status === "open")
      .sort((a, b) => (a.severity === b.severity ? b.last_step - a.last_step : a.severity === "critical" ? -1 : 1));
    const pending = commands.filter((c) => c.status === "pending" || c.status === "delivered");
    const shown = 4;
    const more = (n) => (n > shown ? h("li", { class: "muted", text: `+ ${n - shown} more below` }) : null);
    this.overview.replaceChildren(
      h("div", { class: "ov-verdict" },
        h("div", { class: "ov-label", text: "Verdict" }),
        h("div", { id: "ov-verdict" }, badge(run.verdict)),
        h("div", { class: "ov-label", text: "Best step" }),
        h("div", { class: "num", id: "ov-best-step", text: run.best_step ?? "—" })),
      h("div", { class: "ov-why" },
        h("div", { class: "ov-label", text: why ? why[0] : "Status" }),
        h("div", { id: "ov-reason", class: why ? "reason" : "muted", text: why ? why[1] : `run is ${run.status}; nothing stopped it` })),
      h("div", { class: "ov-list" },
        h("div", { class: "ov-label", text: `Open alerts ${open.length}` }),
        h("ul", { id: "ov-alerts" },
          ...(open.length ? open.slice(0, shown).map((a) => h("li", { data: { rule: a.rule } },
            badge(a.severity), " ", h("code", { text: a.rule }), h("span", { class: "muted", text: ` since step ${a.first_step}` }))) : [h("li", { class: "muted", text: "none: every rule is quiet" })]),
          more(open.length))),
      h("div", { class: "ov-list" },
        h("div", { class: "ov-label", text: `Pending commands ${pending.length}` }),
        h("ul", { id: "ov-commands" },
          ...(pending.length ? pending.slice(0, shown).map((c) => h("li", { data: { commandId: c.id } },
            badge(c.status), " ", h("code", { text: c.kind === "adjust_alpha" ? `adjust_alpha → ${fmt(c.alpha, 2)}` : c.kind }),
            h("span", { class: "muted", text: ` #${c.id} from the ${c.source}` }))) : [h("li", { class: "muted", text: "none" })]),
          more(pending.length))),
    );
  }

  async loadSteps() {
    const metrics = CHART_METRICS.join(",");
    for (let page = 0; page < MAX_STEP_PAGES_PER_TICK; page += 1) {
      const data = await api(`/runs/${this.id}/steps?cursor=${this.nextFrom}&limit=${STEP_PAGE}&metrics=${metrics}`);
      for (const record of data.items) this.steps.set(record.step, record.metrics);
      if (data.items.length) this.nextFrom = Math.max(this.nextFrom, data.items[data.items.length - 1].step + 1);
      if (data.next_cursor === null || data.next_cursor === undefined) break;
      this.nextFrom = Math.max(this.nextFrom, Number(data.next_cursor));
    }
  }

  renderHead(run, summary, commands) {
    this.title.textContent = run.name;
    document.title = `${run.name} · sharpwatch`;
    setCrumbs([{ text: run.project }, { text: run.name }]);
    this.badges.replaceChildren(badge(run.status), h("span", { id: "run-verdict" }, badge(run.verdict)),
      ...(run.source === "imported"
        ? [h("span", { id: "run-imported", title: "replayed from past logs by sharpwatch import" }, badge("imported"))]
        : []));
    const fact = (label, value, id) => h("span", {}, `${label} `, h("b", { class: "num", id, text: value }));
    const p = pStar(run.group_size);
    this.facts.replaceChildren(...[
      fact("run", `#${run.id}`),
      fact("project", run.project),
      fact("last step", run.last_step ?? "—", "run-last-step"),
      h("span", { title: localTime(run.last_step_at), text: ago(run.last_step_at) }),
      fact("G", run.group_size),
      fact("p*(G)", fmt(p)),
      fact("β", fmt(run.kl_beta)),
      fact("α", fmt(run.alpha)),
      h("span", { id: "run-alpha-pin", data: { pinned: run.alpha_pinned ? "true" : "false" },
        title: run.alpha_pinned
          ? "an operator's adjust_alpha pinned α: the controller sends none until an operator releases it (PATCH the run with {\"alpha_pinned\": false})"
          : "the α controller may adjust α" },
        run.alpha_pinned ? "α pinned by operator" : "α automatic"),
      fact("Model Collapse Step", run.model_collapse_step ?? "—", "run-mcs"),
      fact("best step", run.best_step ?? "—"),
      run.stop_reason ? fact("stop reason", run.stop_reason) : null,
      run.failure_reason ? fact("failed", run.failure_reason, "run-failure") : null,
    ].filter(Boolean));
    const outstanding = commands.find((c) => c.kind === "early_stop" && (c.status === "pending" || c.status === "delivered"));
    const canStop = run.status === "running" && !outstanding;
    this.stopButton.disabled = !canStop || this.stopping === true;
    this.reason.disabled = !canStop;
    this.stopNote.textContent = outstanding
      ? `stop requested: command #${outstanding.id} is ${outstanding.status}`
      : run.status !== "running"
        ? `run is ${run.status}`
        : "sends early_stop to the trainer (operator token)";
  }

  renderTiles(run, summary) {
    const latest = summary.latest || {};
    const floor = run.detectors?.entropy_floor?.floor ?? DEFAULT_ENTROPY_FLOOR;
    const p = pStar(run.group_size);
    const pressure = run.detectors?.zprime_pressure?.max_fraction ?? DEFAULT_ZPRIME_PRESSURE;
    const tile = (key, label, metric, alarm, hint) => {
      const point = latest[metric];
      const v = point?.value ?? null;
      return h("div", { class: `tile ${v !== null && alarm(v) ? "alarm" : ""}`, data: { metric } },
        h("div", { class: "k", text: label }),
        h("div", { class: "v", text: fmt(v) }),
        h("div", { class: "s", text: point ? `step ${point.step} · ${hint}` : hint }));
    };
    this.tiles.replaceChildren(
      tile("entropy", "Entropy (nats)", "entropy", (v) => v < floor, `floor ${fmt(floor, 2)}`),
      tile("success", "Success rate", "success_rate", (v) => v < p || v > 1 - p, `p*(G) ${fmt(p)}`),
      tile("zprime", "Share raw Z′ > 1", "zprime_raw_gt1_frac", (v) => v >= pressure, `before IAC · pressure ${fmt(pressure, 2)}`),
      tile("zprime-calibrated", "Share calibrated Z′ > 1", "zprime_gt1_frac", () => false, "after IAC · grows with α"),
      tile("reward", "Reward accuracy", "reward_accuracy", (v) => v < summary.collapse_threshold, `collapse < ${summary.collapse_threshold}`),
      tile("alpha", "IAC α", "alpha", () => false, run.alpha_pinned ? "pinned by an operator" : "calibration strength"),
    );
  }

  renderCharts(run, summary) {
    if (!this.charts) {
      this.charts = chartSpecs(run, summary).map((spec) => new Chart(spec, this.chartBox));
    }
    const steps = [...this.steps.keys()].sort((a, b) => a - b);
    const columns = {};
    for (const metric of CHART_METRICS) columns[metric] = steps.map((s) => this.steps.get(s)[metric] ?? null);
    const marks = [];
    if (run.best_step !== null) marks.push({ x: run.best_step, label: `best step ${run.best_step}`, color: "--best", dash: true, row: 1 });
    if (run.model_collapse_step !== null) marks.push({ x: run.model_collapse_step, label: `Model Collapse Step ${run.model_collapse_step}`, color: "--mark" });
    for (const chart of this.charts) chart.update(steps, columns, marks);
  }

  renderAlerts(alerts) {
    const open = alerts.filter((a) => a.status === "open").length;
    this.alertCount.textContent = `${open} open · ${alerts.length} total`;
    if (!alerts.length) {
      this.alertsBody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty", text: "No alerts: every rule is quiet." })));
      return;
    }
    this.alerts = alerts;
    const sorted = [...alerts].sort((a, b) => (a.status === b.status ? b.id - a.id : a.status === "open" ? -1 : 1));
    const hidden = Math.max(0, alerts.length - open - RESOLVED_SHOWN);
    const shown = this.allAlerts ? sorted : sorted.slice(0, open + RESOLVED_SHOWN);
    this.moreAlerts.hidden = hidden === 0;
    this.moreAlerts.textContent = this.allAlerts ? "Show fewer" : `Show ${hidden} older resolved alerts`;
    this.alertsBody.replaceChildren(...shown.map((a) => h("tr", { data: { alertId: a.id, rule: a.rule } },
      h("td", {}, badge(a.severity)),
      h("td", { class: "rule", text: a.rule }),
      h("td", {}, badge(a.status)),
      h("td", { class: "num", text: a.resolved_step !== null ? `${a.first_step}–${a.resolved_step}` : `${a.first_step}–${a.last_step}` }),
      h("td", { class: "msg" }, h("div", { text: a.message }), h("div", { class: "action", text: `→ ${a.action}` })),
      h("td", { class: "r num", text: a.rollback_step ?? "—" }))));
  }

  renderCommands(commands) {
    this.commandCount.textContent = `${commands.length}`;
    if (!commands.length) {
      this.commandsBody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty", text: "No commands sent to this run." })));
      return;
    }
    this.commandsBody.replaceChildren(...commands.map((c) => {
      const detail = [];
      if (c.alpha !== null) detail.push(`α → ${fmt(c.alpha, 2)}`);
      if (c.best_step !== null) detail.push(`best ${c.best_step}`);
      if (c.ack_detail) detail.push(c.ack_detail);
      const steps = [c.issued_step !== null ? `at ${c.issued_step}` : null, c.applied_step !== null ? `applied ${c.applied_step}` : null].filter(Boolean).join(" · ");
      return h("tr", { data: { commandId: c.id, kind: c.kind } },
        h("td", { title: localTime(c.created_at), text: ago(c.created_at) }),
        h("td", { class: "rule", text: c.kind }),
        h("td", { text: c.source }),
        h("td", {}, badge(c.status)),
        h("td", { class: "msg" }, h("div", { text: c.reason }), detail.length ? h("div", { class: "action", text: detail.join(" · ") }) : null),
        h("td", { class: "r num", text: steps || "—" }));
    }));
  }

  // The outbox for this run (issue 20): dead letters stand out; `retry` is in the API.
  renderNotifications(deliveries) {
    if (deliveries === null) {
      this.notifyCount.textContent = "";
      this.notifyBody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty", text: "Notifications need a read or operator token." })));
      return;
    }
    const items = deliveries.items;
    const dead = items.filter((d) => d.status === "dead").length;
    this.notifyCount.textContent = dead ? `${items.length} · ${dead} dead` : `${items.length}`;
    if (!items.length) {
      this.notifyBody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty", text: "No notifications for this run (subscribe a channel: see README, Notifications)." })));
      return;
    }
    this.notifyBody.replaceChildren(...items.map((d) => h("tr", { data: { deliveryId: d.id, status: d.status } },
      h("td", { title: localTime(d.created_at), text: ago(d.created_at) }),
      h("td", { class: "rule", text: d.event }),
      h("td", { class: "num", text: `#${d.channel_id}` }),
      h("td", {}, badge(d.status === "sent" ? "applied" : d.status === "dead" ? "rejected" : "pending", d.status)),
      h("td", { class: "msg", text: d.last_error || "—" }),
      h("td", { class: "r num", text: `${d.attempts}` }))));
  }

  async stop() {
    const run = this.run;
    if (!run) return;
    const reason = this.reason.value.trim() || "stopped by an operator from the live page";
    const question = `Stop run “${run.name}” (#${run.id})?\n\nThe trainer receives an early_stop command at its next poll.`;
    if (!window.confirm(question)) return;
    this.stopping = true;
    this.stopButton.disabled = true;
    const body = { kind: "early_stop", reason };
    if (run.best_step !== null) body.best_step = run.best_step;
    try {
      const command = await api(`/runs/${run.id}/commands`, { method: "POST", body });
      this.reason.value = "";
      setAction(`Stop requested: early_stop command #${command.id} is ${command.status}.`, "info");
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        setAction("This action needs an operator token: paste one under “API token” (top right) to stop a run.");
      } else if (error instanceof ApiError && error.status === 409) {
        setAction(`A stop is already outstanding for this run: ${error.detail}`);
      } else {
        setAction(`The stop was not sent. ${explain(error)}`);
      }
    } finally {
      this.stopping = false;
      poller.now();
    }
  }

  themeChanged() {
    for (const chart of this.charts || []) chart.rebuild();
  }

  destroy() {
    for (const chart of this.charts || []) chart.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// routing

let view = null;

function setCrumbs(parts) {
  const nav = document.getElementById("crumbs");
  const items = [h("a", { href: "#/", text: "Runs" })];
  for (const part of parts) items.push(" / ", h("span", { text: part.text }));
  nav.replaceChildren(...(parts.length ? items : []));
}

function mount() {
  view?.destroy();
  const main = document.getElementById("main");
  main.replaceChildren();
  const match = location.hash.match(/^#\/runs\/(\d+)\/?$/);
  document.title = "sharpwatch";
  view = match ? new RunView(main, Number(match[1])) : new RunsView(main);
  setAction(null);
  poller.restart();
}

function start() {
  setupToken();
  setupTheme();
  window.addEventListener("hashchange", mount);
  mount();
}

if (window.uPlot) start();
else window.addEventListener("load", start);
