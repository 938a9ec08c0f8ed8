// The overview: apps, models, replicas and live charts from GET /admin/overview.

import { enc, get, ROOT } from "./api.js";
import { chart } from "./chart.js";
import { el, fmt, pct, stateClass } from "./dom.js";
import { pipelineText, policiesText, stagesOf } from "./pipeline.js";

export const WINDOW_S = 300;

export async function fetchOverview() {
  return get(`/admin/overview?window=${WINDOW_S}`);
}

export function replicaPill(r, withId = true) {
  const state = r.connected ? r.state || "ok" : "disconnected";
  const label = withId ? `${r.id} ${state}` : state;
  return el("span", { class: `pill ${stateClass(r)}`, title: `restarts: ${r.restarts}` }, label,
    r.restarts ? ` ↻${r.restarts}` : "");
}

function appCard(app) {
  const s = app.series || { t: [] };
  return el("section", { class: "card", "data-app": app.name },
    el("div", { class: "head" },
      el("h3", {}, el("a", { href: `${ROOT}/ui/apps/${enc(app.name)}`, text: app.name })),
      el("span", { class: "pill", text: policiesText(app) })),
    el("div", { class: "kpis" },
      el("span", {}, "rps ", el("b", { text: fmt(app.now.rps, 1) })),
      el("span", {}, "p50 ", el("b", { text: fmt(app.now.p50_ms, 1, "ms") })),
      el("span", {}, "p99 ", el("b", { text: fmt(app.now.p99_ms, 1, "ms") })),
      el("span", {}, "defaults ", el("b", { text: pct(app.now.default_rate) }))),
    el("div", { class: "charts" },
      chart({ id: "throughput", title: "Throughput (requests/s)", t: s.t, series: [{ name: "rps", values: s.rps || [] }] }),
      chart({ id: "latency", title: "Latency (ms)", t: s.t, unit: "ms", series: [
        { name: "p50", values: s.p50_ms || [] }, { name: "p99", values: s.p99_ms || [] }] }),
      chart({ id: "default-rate", title: "Default rate", t: s.t, max: 1, series: [{ name: "defaults", values: s.default_rate || [] }] })));
}

export function modelCharts(model) {
  const s = model.series || { t: [] };
  return el("div", { class: "charts" },
    chart({ id: "model-qps", title: "Queries to the model (per s)", t: s.t, series: [{ name: "qps", values: s.qps || [] }] }),
    chart({ id: "batch-size", title: "Mean batch size", t: s.t, series: [{ name: "batch", values: s.batch_size || [] }] }),
    chart({ id: "queue-depth", title: "Queue depth", t: s.t, series: [{ name: "queue", values: s.queue_depth || [] }] }));
}

function modelCard(model) {
  return el("section", { class: "card", "data-model": model.name },
    el("div", { class: "head" },
      el("h3", {}, el("a", { href: `${ROOT}/ui/models/${enc(model.name)}`, text: model.name })),
      el("span", { class: "pill", text: `v${model.current_version ?? "–"}` })),
    el("div", { class: "kpis" },
      el("span", {}, "qps ", el("b", { text: fmt(model.now.qps, 1) })),
      el("span", {}, "batch ", el("b", { text: fmt(model.now.batch_size, 1) })),
      el("span", {}, "queue ", el("b", { text: String(model.now.queue_depth ?? "–") }))),
    modelCharts(model));
}

export function renderOverview(page, data) {
  const apps = el("table", { id: "apps-table" },
    el("thead", {}, el("tr", {}, ["App", "Input", "Policy", "Linked models", "SLO", "rps", "p99", "Defaults"].map((h) => el("th", { text: h })))),
    el("tbody", {}, data.apps.map((a) => el("tr", { "data-app": a.name },
      el("td", {}, el("a", { href: `${ROOT}/ui/apps/${enc(a.name)}`, text: a.name })),
      el("td", { text: a.input_type }),
      el("td", { class: "policy", text: policiesText(a) }),
      el("td", { class: "linked-models", "data-stages": stagesOf(a).length, text: pipelineText(a) || "–" }),
      el("td", { text: fmt(a.slo_micros / 1000, 1, "ms") }),
      el("td", { text: fmt(a.now.rps, 1) }),
      el("td", { text: fmt(a.now.p99_ms, 1, "ms") }),
      el("td", { text: pct(a.now.default_rate) })))));
  const models = el("table", { id: "models-table" },
    el("thead", {}, el("tr", {}, ["Model", "Current", "Versions", "Replicas (health, restarts)", "qps"].map((h) => el("th", { text: h })))),
    el("tbody", {}, data.models.map((m) => el("tr", { "data-model": m.name },
      el("td", {}, el("a", { href: `${ROOT}/ui/models/${enc(m.name)}`, text: m.name })),
      el("td", { class: "current", text: m.current_version ?? "–" }),
      el("td", { text: m.versions.join(", ") }),
      el("td", {}, m.replicas.length ? m.replicas.map((r) => replicaPill(r)) : el("span", { class: "muted", text: "none" })),
      el("td", { text: fmt(m.now.qps, 1) })))));
  const cache = data.cache || { now: {}, series: { t: [] } };
  page.replaceChildren(
    el("h1", { text: "Overview" }),
    el("p", { class: "muted", text: `${data.frontends.length} query frontend(s) reporting; charts cover the last ${Math.round(data.window_s / 60)} min, refreshed every ${data.interval_s} s.` }),
    el("h2", { text: "Apps" }),
    data.apps.length ? apps : el("p", { class: "muted", text: "No apps registered." }),
    el("h2", { text: "Models" }),
    data.models.length ? models : el("p", { class: "muted", text: "No models registered." }),
    el("h2", { text: "Apps over time" }),
    el("div", { class: "cards" }, data.apps.map(appCard)),
    el("h2", { text: "Models over time" }),
    el("div", { class: "cards" }, data.models.map(modelCard)),
    el("h2", { text: "Prediction cache" }),
    el("div", { class: "cards" }, el("section", { class: "card charts", id: "cache-card" },
      el("div", { class: "kpis" },
        el("span", {}, "hit rate ", el("b", { text: pct(cache.now.hit_rate) })),
        el("span", {}, "size ", el("b", { text: fmt((cache.now.bytes || 0) / 1024, 1, "KiB") }))),
      chart({ id: "cache-hit-rate", title: "Cache hit rate", t: cache.series.t, max: 1, series: [{ name: "hit rate", values: cache.series.hit_rate || [] }] }))),
  );
}
