/* Wenming operator dashboard (no build step, no CDN: ECharts is vendored under /static/vendor).
 *
 * The live stream: one `snapshot` event, then `panel` events numbered <epoch>.<seq> without gaps.
 * Each panel event must be seq == last + 1: a gap would be a missed update, a repeat a doubled one;
 * both are counted in window.wmDashboard.stats. The panels and the last id are kept in
 * sessionStorage, so a reloaded page shows them at once and resumes the stream exactly after it.
 */
"use strict";

(function () {
  const TOKEN_KEY = "wm.dashboard.token";
  const STATE_KEY = "wm.dashboard.stream";
  const LANG_KEY = "wm.dashboard.lang";
  const JOURNAL_MAX = 5000;
  const RENEW_MS = 5 * 60 * 1000;

  const S = {
    token: sessionStorage.getItem(TOKEN_KEY),
    lang: localStorage.getItem(LANG_KEY) || "zh",
    dict: {},
    me: null,
    meta: null,
    nodes: {},
    node: null,
    panels: {},
    epoch: null,
    seq: 0,
    lastId: null,
    journal: [],
    stats: { applied: 0, gaps: 0, dups: 0, resets: 0, snapshots: 0, reconnects: 0 },
    es: null,
    charts: {},
    dirty: new Set(),
    renderTimer: null,
    renewTimer: null,
    retryTimer: null,
  };

  // ------------------------------------------------------------------ helpers
  const $ = (sel, root) => (root || document).querySelector(sel);
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function t(key, vars) {
    let s = S.dict[key] ?? key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
    return s;
  }
  const within = (path, area) => path === area || path.startsWith(area + "/");
  const depth = (path) => path.split("/").length;
  const cut = (path, level) => path.split("/").slice(0, level).join("/");
  const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString(S.lang === "zh" ? "zh-CN" : "en"));

  function nodeName(path) {
    const n = S.nodes[path];
    const code = path.split("/").pop();
    let name = n ? n.name : null;
    if (!name && depth(path) === 4) {
      const parent = S.nodes[cut(path, 3)];
      name = (parent ? parent.name : "") + code.replace(/^g/, "") + (S.lang === "zh" ? "网格" : "");
    }
    name = name || code;
    return S.lang === "zh" ? name : `${name} · ${code}`;
  }
  function categoryName(code) {
    const c = S.meta && S.meta.categories[code];
    return c ? (S.lang === "zh" ? c.name : c.name_en || code) : code;
  }
  function departmentName(code) {
    const d = S.meta && S.meta.departments[code];
    return d ? (S.lang === "zh" ? d.name : d.name_en || code) : code || "–";
  }

  // ------------------------------------------------------------------ i18n
  async function loadLang(lang) {
    const r = await fetch(`/static/i18n/${lang}.json`, { cache: "no-cache" });
    S.dict = await r.json();
    S.lang = lang;
    localStorage.setItem(LANG_KEY, lang);
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
      node.setAttribute("placeholder", t(node.dataset.i18nPlaceholder));
    }
    $("#lang").textContent = lang === "zh" ? "EN" : "中文";
    setStream($("#stream").dataset.state);
    renderAll();
  }

  // ------------------------------------------------------------------ API and session
  async function api(path, opts) {
    const headers = Object.assign({ Authorization: `Bearer ${S.token}` }, (opts && opts.headers) || {});
    return fetch(path, Object.assign({}, opts, { headers, credentials: "same-origin" }));
  }

  async function openSession() {
    const r = await api("/v1/session", { method: "POST" });
    if (!r.ok) {
      const err = new Error(r.status === 401 ? "login.invalid" : r.status === 403 ? "login.forbidden" : "login.failed");
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  async function login(token) {
    S.token = token;
    const me = await openSession();
    sessionStorage.setItem(TOKEN_KEY, token);
    S.me = me;
    const r = await api("/v1/meta");
    if (!r.ok) throw new Error("login.failed");
    S.meta = await r.json();
    S.nodes = Object.fromEntries(S.meta.nodes.map((n) => [n.path, n]));
    S.node = S.nodes[me.area] ? me.area : cut(me.area, 3);
    restore();
    $("#login").hidden = true;
    $("#board").hidden = false;
    $("#who").hidden = false;
    $("#logout").hidden = false;
    $("#p-health").hidden = !me.health;
    renderWho();
    renderAll();
    connect();
    clearInterval(S.renewTimer);
    S.renewTimer = setInterval(() => openSession().catch(onSessionLost), RENEW_MS);
  }

  function onSessionLost(err) {
    if (err && err.status === 401) logout();
  }

  function logout() {
    if (S.es) S.es.close();
    S.es = null;
    clearInterval(S.renewTimer);
    clearTimeout(S.retryTimer);
    fetch("/v1/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(STATE_KEY);
    S.token = null;
    S.me = null;
    S.panels = {};
    S.lastId = null;
    S.epoch = null;
    S.seq = 0;
    $("#board").hidden = true;
    $("#who").hidden = true;
    $("#logout").hidden = true;
    $("#login").hidden = false;
    setStream("idle");
  }

  // ------------------------------------------------------------------ the stream
  function persist() {
    const state = {
      v: 1, area: S.me.area, lastId: S.lastId, epoch: S.epoch, seq: S.seq,
      panels: S.panels, journal: S.journal.slice(-JOURNAL_MAX), stats: S.stats,
    };
    try {
      sessionStorage.setItem(STATE_KEY, JSON.stringify(state));
    } catch (e) {
      /* storage full: the next load starts from a fresh snapshot */
    }
  }

  function restore() {
    let state = null;
    try {
      state = JSON.parse(sessionStorage.getItem(STATE_KEY) || "null");
    } catch (e) {
      state = null;
    }
    if (!state || state.v !== 1 || state.area !== S.me.area) return;
    Object.assign(S, { lastId: state.lastId, epoch: state.epoch, seq: state.seq, panels: state.panels || {} });
    S.journal = state.journal || [];
    S.stats = Object.assign(S.stats, state.stats || {});
    S.journal.push(`reload:${S.lastId}`);
  }

  function setStream(state) {
    const box = $("#stream");
    box.dataset.state = state;
    $("#stream-label").textContent = t(`stream.${state}`);
    $("#stream-seq").textContent = S.lastId ? `#${S.seq}` : "";
    box.title = S.lastId ? `id ${S.lastId} · gaps ${S.stats.gaps} · doubled ${S.stats.dups}` : "";
  }

  function connect() {
    if (S.es) S.es.close();
    const url = new URL("/v1/stream", location.origin);
    if (S.lastId) url.searchParams.set("last_event_id", S.lastId);
    const es = new EventSource(url.toString(), { withCredentials: true });
    S.es = es;
    es.addEventListener("open", () => setStream("live"));
    es.addEventListener("snapshot", onSnapshot);
    es.addEventListener("panel", onPanel);
    es.addEventListener("error", () => {
      if (S.es !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // Refused (e.g. the session cookie expired): renew the session, then resume by id.
        setStream("offline");
        clearTimeout(S.retryTimer);
        S.retryTimer = setTimeout(() => {
          S.stats.reconnects += 1;
          openSession().then(connect, (err) => (err.status === 401 ? logout() : connect()));
        }, 1500);
      } else {
        setStream("reconnecting"); // EventSource retries by itself, sending Last-Event-ID
      }
    });
  }

  function onSnapshot(ev) {
    const data = JSON.parse(ev.data);
    if (data.reason !== "fresh") S.stats.resets += 1;
    S.stats.snapshots += 1;
    S.panels = data.panels;
    S.epoch = data.epoch;
    S.seq = data.seq;
    S.lastId = ev.lastEventId;
    S.journal.push(`snapshot:${ev.lastEventId}:${data.reason}`);
    persist();
    setStream("live");
    for (const p of Object.keys(S.panels)) S.dirty.add(p);
    scheduleRender();
  }

  function onPanel(ev) {
    const [epoch, seqText] = ev.lastEventId.split(".");
    const seq = Number(seqText);
    if (epoch !== S.epoch) {
      // Cannot happen by design (a new epoch always opens with a snapshot): count it as a gap.
      S.stats.gaps += 1;
      S.epoch = epoch;
    } else if (seq <= S.seq) {
      S.stats.dups += 1;
      return;
    } else if (seq !== S.seq + 1) {
      S.stats.gaps += 1;
    }
    const msg = JSON.parse(ev.data);
    S.panels[msg.panel] = msg.data;
    S.seq = seq;
    S.lastId = ev.lastEventId;
    S.stats.applied += 1;
    S.journal.push(seq);
    persist();
    setStream("live");
    S.dirty.add(msg.panel);
    scheduleRender();
  }

  // ------------------------------------------------------------------ rendering
  function scheduleRender() {
    if (S.renderTimer) return;
    S.renderTimer = setTimeout(() => {
      S.renderTimer = null;
      const dirty = new Set(S.dirty);
      S.dirty.clear();
      if (dirty.has("counters") || dirty.has("overdue")) {
        renderCounters();
        renderOverdue();
      }
      if (dirty.has("ranking")) renderRanking();
      if (dirty.has("trend")) renderTrend();
      if (dirty.has("redblack")) renderRedBlack();
      if (dirty.has("volunteer")) renderVolunteer();
      if (dirty.has("health")) renderHealth();
    }, 30);
  }

  function renderAll() {
    if (!S.me) return;
    renderWho();
    renderCrumbs();
    renderCounters();
    renderOverdue();
    renderRanking();
    renderTrend();
    renderRedBlack();
    renderVolunteer();
    renderHealth();
  }

  function renderWho() {
    if (!S.me) return;
    $("#who-name").textContent = S.lang === "zh" ? S.me.name : S.me.name_en || S.me.department;
    $("#who-area").textContent = nodeName(S.me.area);
  }

  function drill(path) {
    S.node = path;
    renderCrumbs();
    renderCounters();
    renderOverdue();
  }

  function renderCrumbs() {
    const nav = $("#crumbs");
    nav.replaceChildren();
    const top = S.nodes[S.me.area] ? S.me.area : cut(S.me.area, 3);
    const parts = S.node.split("/");
    for (let lvl = depth(top); lvl <= parts.length; lvl++) {
      const path = parts.slice(0, lvl).join("/");
      if (lvl > depth(top)) nav.append(el("span", { class: "sep" }, "›"));
      nav.append(
        lvl === parts.length
          ? el("span", { class: "here", dataset: { node: path } }, nodeName(path))
          : el("a", { dataset: { node: path }, onclick: () => drill(path) }, nodeName(path)),
      );
    }
  }

  function childrenOf(path) {
    const n = S.nodes[path];
    if (n) return n.children;
    return [];
  }

  function counterRows() {
    const panel = S.panels.counters;
    const rows = (panel && panel.rows) || [];
    const level = depth(S.node) + 1;
    const zero = () => ({ found: 0, assigned: 0, closed: 0, overdue: 0 });
    const byChild = new Map(childrenOf(S.node).map((c) => [c, zero()]));
    const total = zero();
    let here = null;
    for (const r of rows) {
      if (!within(r.node, S.node)) continue;
      for (const k of Object.keys(total)) total[k] += r[k];
      if (depth(r.node) < level) {
        here = here || zero();
        for (const k of Object.keys(here)) here[k] += r[k];
        continue;
      }
      const child = cut(r.node, level);
      if (!byChild.has(child)) byChild.set(child, zero());
      const acc = byChild.get(child);
      for (const k of Object.keys(acc)) acc[k] += r[k];
    }
    return { byChild, total, here };
  }

  function renderCounters() {
    if (!S.me) return;
    const panel = S.panels.counters;
    $("#counters-day").textContent = panel && panel.day ? panel.day : "";
    const { byChild, total, here } = counterRows();
    for (const k of Object.keys(total)) $(`[data-kpi="${k}"] .value`).textContent = fmt(total[k]);
    const tbody = $("#counters-table tbody");
    const previous = new Map([...tbody.querySelectorAll("tr[data-node]")].map((tr) => [tr.dataset.node, tr.dataset.sum]));
    const canDrill = depth(S.node) < 3;
    const rows = [];
    const cells = (v) => ["found", "assigned", "closed", "overdue"].map((k) => el("td", { class: "n", dataset: { field: k } }, fmt(v[k])));
    for (const [path, v] of byChild) {
      const sum = `${v.found}/${v.assigned}/${v.closed}/${v.overdue}`;
      const changed = previous.has(path) && previous.get(path) !== sum;
      rows.push(
        el(
          "tr",
          { class: [canDrill ? "drill" : "", changed ? "flash" : ""].join(" ").trim() || null, dataset: { node: path, sum }, onclick: canDrill ? () => drill(path) : null },
          el("td", { class: "name" }, nodeName(path)),
          cells(v),
        ),
      );
    }
    if (here) rows.push(el("tr", { dataset: { node: S.node + "/." } }, el("td", {}, `${nodeName(S.node)}（${t("row.here")}）`), cells(here)));
    rows.push(el("tr", { class: "total", dataset: { total: S.node } }, el("td", {}, t("row.total")), cells(total)));
    tbody.replaceChildren(...rows);
    drawCountersChart(byChild);
  }

  function chart(id) {
    if (typeof echarts === "undefined") return null;
    if (!S.charts[id]) S.charts[id] = echarts.init(document.getElementById(id), null, { renderer: "canvas" });
    return S.charts[id];
  }
  const axisStyle = { axisLabel: { color: "#93a4bf" }, axisLine: { lineStyle: { color: "#24385a" } }, splitLine: { lineStyle: { color: "#24385a" } } };

  function drawCountersChart(byChild) {
    const c = chart("counters-chart");
    if (!c) return;
    const names = [...byChild.keys()].map(nodeName);
    const series = ["found", "assigned", "closed", "overdue"].map((k, i) => ({
      name: t(`c.${k}`),
      type: "bar",
      data: [...byChild.values()].map((v) => v[k]),
      itemStyle: { color: ["#4fa3ff", "#ffb84d", "#3ccf8e", "#ff6b5b"][i] },
    }));
    c.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { textStyle: { color: "#e6edf7" } },
      grid: { left: 40, right: 10, bottom: 60, top: 40 },
      xAxis: Object.assign({ type: "category", data: names, axisLabel: { color: "#93a4bf", rotate: names.length > 8 ? 40 : 0 } }),
      yAxis: Object.assign({ type: "value", minInterval: 1 }, axisStyle),
      series,
    }, true);
  }

  function overText(deadline) {
    const ms = Date.now() - Date.parse(deadline);
    if (ms <= 0) return "0";
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${t("over.d", { n: d })} ${t("over.h", { n: h })}`;
    if (h) return `${t("over.h", { n: h })} ${t("over.m", { n: m })}`;
    if (m) return `${t("over.m", { n: m })} ${t("over.s", { n: s % 60 })}`;
    return t("over.s", { n: s });
  }

  function renderOverdue() {
    if (!S.me) return;
    const panel = S.panels.overdue;
    const rows = ((panel && panel.rows) || []).filter((r) => within(r.grid_path, S.node));
    $("#overdue-count").textContent = panel ? t("overdue.count", { n: rows.length }) : "";
    $("#overdue-empty").hidden = rows.length > 0;
    const when = (iso) => new Date(iso).toLocaleString(S.lang === "zh" ? "zh-CN" : "en-GB", { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    $("#overdue-table tbody").replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          { dataset: { issue: r.issue_id, step: r.overdue_step } },
          el("td", {}, categoryName(r.category)),
          el("td", {}, nodeName(r.grid_path), r.location ? el("div", { class: "sub" }, r.location) : null),
          el("td", {}, departmentName(r.responsible_unit)),
          el("td", {}, r.owner || "–"),
          el("td", {}, r.deadline ? when(r.deadline) : "–"),
          el("td", { class: "over", dataset: { deadline: r.deadline || "" } }, r.deadline ? overText(r.deadline) : "–"),
          el(
            "td",
            {},
            el("span", { class: `esc s${Math.min(3, r.overdue_step)}` }, `${t(`esc.${r.escalation_level}`)} · ${t("esc.step", { n: r.overdue_step })}`),
            r.escalated_to ? el("div", { class: "sub" }, nodeName(r.escalated_to)) : null,
          ),
        ),
      ),
    );
  }

  function tickOverdue() {
    for (const td of document.querySelectorAll("#overdue-table td.over[data-deadline]")) {
      if (td.dataset.deadline) td.textContent = overText(td.dataset.deadline);
    }
  }

  function subjectName(subject, level) {
    return level === "unit" ? departmentName(subject) : nodeName(subject);
  }

  function renderRanking() {
    const panel = S.panels.ranking;
    const rows = (panel && panel.township) || [];
    $("#ranking-day").textContent = panel && panel.day ? `${panel.day} · ${t("of", { n: (panel.of || {}).township || 0 })}` : "";
    $("#ranking-empty").hidden = rows.length > 0;
    $("#ranking-chart").hidden = rows.length === 0;
    const c = rows.length ? chart("ranking-chart") : null;
    if (!c) return;
    const sorted = [...rows].sort((a, b) => b.rank - a.rank);
    c.resize();
    c.setOption({
      animation: false,
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      grid: { left: 10, right: 50, top: 10, bottom: 20, containLabel: true },
      xAxis: Object.assign({ type: "value", scale: true }, axisStyle),
      yAxis: { type: "category", data: sorted.map((r) => `${r.rank}. ${subjectName(r.subject, "township")}`), axisLabel: { color: "#e6edf7" } },
      series: [{
        type: "bar",
        name: t("score"),
        data: sorted.map((r) => r.score),
        label: { show: true, position: "right", color: "#e6edf7" },
        itemStyle: { color: "#4fa3ff" },
      }],
    }, true);
  }

  function renderTrend() {
    const panel = S.panels.trend;
    const series = (panel && panel.series) || {};
    const names = Object.keys(series);
    $("#trend-empty").hidden = names.length > 0;
    $("#trend-chart").hidden = names.length === 0;
    const c = names.length ? chart("trend-chart") : null;
    if (!c) return;
    c.resize();
    c.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { type: "scroll", textStyle: { color: "#e6edf7" } },
      grid: { left: 10, right: 20, top: 40, bottom: 20, containLabel: true },
      xAxis: Object.assign({ type: "category", data: panel.days.map((d) => d.slice(5)) }, axisStyle),
      yAxis: Object.assign({ type: "value", scale: true }, axisStyle),
      series: names.map((s) => ({ name: nodeName(s), type: "line", data: series[s], connectNulls: true, smooth: true })),
    }, true);
  }

  function renderRedBlack() {
    const panel = S.panels.redblack;
    const has = panel && panel.available !== false && ((panel.red || []).length || (panel.black || []).length);
    $("#redblack-empty").hidden = Boolean(has);
    for (const kind of ["red", "black"]) {
      const list = (panel && panel[kind]) || [];
      $(`#${kind}-list`).replaceChildren(
        ...list.map((r) => el("li", { dataset: { subject: r.subject } }, nodeName(r.subject), el("span", { class: "score" }, fmt(r.score)))),
      );
      $(`#${kind}-list`).parentElement.hidden = !has;
    }
  }

  function renderVolunteer() {
    const panel = S.panels.volunteer;
    const box = $("#volunteer-tiles");
    const ok = panel && panel.available !== false && panel.total;
    $("#volunteer-empty").hidden = Boolean(ok);
    if (!ok) {
      box.replaceChildren();
      return;
    }
    const tot = panel.total;
    const period = (key, p) =>
      el(
        "div",
        { class: "period", dataset: { period: p } },
        el("h3", {}, t(key)),
        el(
          "dl",
          {},
          el("dt", {}, t("v.activities")), el("dd", {}, fmt(tot[p])),
          el("dt", {}, t("v.held")), el("dd", {}, fmt(tot[`${p}_held`])),
          el("dt", {}, t("v.participants")), el("dd", {}, fmt(tot[`${p}_people`])),
          el("dt", {}, t("v.hours")), el("dd", {}, fmt(tot[`${p}_hours`])),
        ),
      );
    box.replaceChildren(period("v.today", "today"), period("v.month", "month"));
  }

  function renderHealth() {
    if (!S.me || !S.me.health) return;
    const panel = S.panels.health;
    const ok = panel && panel.available;
    $('[data-health="deadletter"] .value').textContent = ok ? fmt(panel.deadletter) : "–";
    $('[data-health="outbox"] .value').textContent = ok ? fmt(panel.outbox_backlog) : "–";
    $("#topics-table tbody").replaceChildren(
      ...(ok ? panel.topics : []).map((r) =>
        el("tr", { dataset: { topic: r.topic } }, el("td", {}, r.topic), el("td", { class: "n" }, fmt(r.eps)), el("td", { class: "n" }, fmt(r.end))),
      ),
    );
    $("#groups-table tbody").replaceChildren(
      ...(ok ? panel.groups : []).map((g) =>
        el("tr", { dataset: { group: g.group } }, el("td", {}, g.service), el("td", {}, g.group), el("td", { class: "n" }, fmt(g.lag))),
      ),
    );
  }

  // ------------------------------------------------------------------ start
  window.wmDashboard = {
    get stats() { return Object.assign({}, S.stats); },
    get lastId() { return S.lastId; },
    get seq() { return S.seq; },
    get epoch() { return S.epoch; },
    journal: () => S.journal.slice(),
    panels: () => JSON.parse(JSON.stringify(S.panels)),
    drill,
  };

  document.addEventListener("DOMContentLoaded", async () => {
    await loadLang(S.lang);
    $("#lang").addEventListener("click", () => loadLang(S.lang === "zh" ? "en" : "zh"));
    $("#logout").addEventListener("click", logout);
    $("#login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $("#login-error").textContent = "";
      try {
        await login($("#token").value.trim());
        $("#token").value = "";
      } catch (err) {
        $("#login-error").textContent = t(err.message);
      }
    });
    window.addEventListener("resize", () => Object.values(S.charts).forEach((c) => c.resize()));
    setInterval(() => {
      $("#clock").textContent = new Date().toLocaleString(S.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
      tickOverdue();
    }, 1000);
    if (S.token) {
      try {
        await login(S.token);
      } catch (err) {
        if (err.status === 401 || err.status === 403) logout();
        else $("#login-error").textContent = t(err.message);
      }
    }
  });
})();
