// A model's page: versions (the current one marked), replicas, and the actions roll
// back / roll forward / make current (PUT .../current_version) and scale
// (PUT .../versions/{v}/replicas), each showing the API's answer; and the apps and
// stages that use the model (every stage of every app's pipeline, from the overview).

import { enc, get, put, ROOT } from "./api.js";
import { el, fmt } from "./dom.js";
import { fetchOverview, modelCharts, replicaPill } from "./overview.js";
import { usesOf } from "./pipeline.js";

export async function fetchModel(name) {
  const [model, overview] = await Promise.all([get(`/admin/models/${enc(name)}`), fetchOverview()]);
  const live = overview.models.find((m) => m.name === name) || null;
  return { model, live, uses: usesOf(name, overview.apps || []) };
}

function usedBy(uses) {
  if (!uses.length) return el("p", { class: "muted", id: "no-uses", text: "No app uses this model." });
  return el("table", { id: "used-by-table" },
    el("thead", {}, el("tr", {}, ["App", "Stage", "As arm", "Stage policy"].map((h) => el("th", { text: h })))),
    el("tbody", {}, uses.map((u) => el("tr", { "data-app": u.app, "data-stage": u.stage },
      el("td", {}, el("a", { href: `${ROOT}/ui/apps/${enc(u.app)}`, text: u.app })),
      el("td", { text: u.stages > 1 ? `${u.stage} of ${u.stages}` : "1 (the only one)" }),
      el("td", {}, el("code", { text: u.arm })),
      el("td", { text: u.policy })))));
}

// The last action's outcome, shown until the next action (it survives redrawing).
let lastResult = null;

function showResult(result) {
  lastResult = result || lastResult;
  const box = document.getElementById("action-result");
  if (!box || !lastResult) return;
  box.className = `banner ${lastResult.ok ? "success" : "error"}`;
  box.textContent = lastResult.text;
}

// Run an action; its outcome shows once the page is redrawn with what it changed.
async function act(description, call, refresh) {
  document.querySelectorAll("#page button").forEach((b) => { b.disabled = true; });
  try {
    await call();
    lastResult = { ok: true, text: `${description}: done.` };
  } catch (err) {
    lastResult = { ok: false, text: `${description} failed: ${err.message}` };
  }
  await refresh(true);
  showResult(null);
  document.querySelectorAll("#page button").forEach((b) => { b.disabled = b.dataset.never === "1"; });
}

function setCurrent(name, version, label, refresh) {
  return () => act(`${label} ${name} to version ${version}`,
    () => put(`/admin/models/${enc(name)}/current_version`, { version }), refresh);
}

// Versions and actions are drawn again only when they change (so an input being typed
// into survives the refresh); replicas every time.
let drawnSignature = null;

export function renderModel(page, { model, live, uses }, refresh, force = false) {
  const name = model.name;
  const details = model.version_details || [];
  const versions = model.versions || details.map((d) => d.version);
  const current = model.current_version;
  const at = versions.indexOf(current);
  const desired = (live && live.replicas_desired) || {};
  const signature = JSON.stringify([name, versions, current, desired]);
  if (force || signature !== drawnSignature || !document.getElementById("versions-table")) {
    drawnSignature = signature;
    const previous = at > 0 ? versions[at - 1] : null;
    const next = at >= 0 && at < versions.length - 1 ? versions[at + 1] : null;
    const rows = versions.map((v) => {
      const d = details.find((x) => x.version === v) || {};
      const count = el("input", { type: "number", min: 0, max: 64, value: desired[v] ?? d.num_replicas ?? 0,
        "aria-label": `replicas of version ${v}`, "data-version": v, class: "replicas-input" });
      const scale = el("button", { class: "scale", "data-version": v, text: "Scale",
        onclick: () => act(`scale ${name} version ${v} to ${count.value} replica(s)`,
          () => put(`/admin/models/${enc(name)}/versions/${enc(v)}/replicas`, { num_replicas: Number(count.value) }), refresh) });
      return el("tr", { "data-version": v, class: v === current ? "current-row" : "" },
        el("td", { class: v === current ? "current" : "" }, v, v === current ? " (current)" : ""),
        el("td", { text: d.registered_at ? new Date(d.registered_at * 1000).toLocaleString() : "–" }),
        el("td", { text: d.batch_size === undefined || d.batch_size < 0 ? "adaptive" : String(d.batch_size) }),
        el("td", {}, el("div", { class: "actions" }, count, scale,
          v !== current ? el("button", { class: "make-current", "data-version": v, text: "Make current",
            onclick: setCurrent(name, v, "make current", refresh) }) : null)));
    });
    page.replaceChildren(
      el("h1", {}, "Model ", el("span", { id: "model-name", text: name })),
      el("p", {}, "Input type ", el("code", { text: model.input_type }), " · current version ",
        el("b", { id: "current-version", class: "current", text: current ?? "none" })),
      el("div", { class: "actions" },
        el("button", { id: "roll-back", class: "primary", disabled: previous === null,
          "data-never": previous === null ? "1" : null,
          title: previous === null ? "no earlier version" : `make version ${previous} current`,
          text: previous === null ? "Roll back" : `Roll back to ${previous}`,
          onclick: previous === null ? null : setCurrent(name, previous, "roll back", refresh) }),
        el("button", { id: "roll-forward", class: "primary", disabled: next === null,
          "data-never": next === null ? "1" : null,
          title: next === null ? "no later version" : `make version ${next} current`,
          text: next === null ? "Roll forward" : `Roll forward to ${next}`,
          onclick: next === null ? null : setCurrent(name, next, "roll forward", refresh) })),
      el("div", { id: "action-result", class: "hidden", role: "status" }),
      el("h2", { text: "Versions" }),
      el("table", { id: "versions-table" },
        el("thead", {}, el("tr", {}, ["Version", "Registered", "Batch size", "Replicas"].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows)),
      el("h2", { text: "Used by" }),
      el("div", { id: "used-by" }),
      el("h2", { text: "Replicas" }),
      el("div", { id: "replicas" }),
      el("h2", { text: "Over time" }),
      el("div", { id: "model-charts", class: "card" }),
    );
    showResult(null);
  }
  document.getElementById("used-by").replaceChildren(usedBy(uses || []));
  const replicas = (live && live.replicas) || [];
  document.getElementById("replicas").replaceChildren(replicas.length
    ? el("table", { id: "replicas-table" },
        el("thead", {}, el("tr", {}, ["Replica", "Version", "Health", "Restarts", "In rotation"].map((h) => el("th", { text: h })))),
        el("tbody", {}, replicas.map((r) => el("tr", { "data-replica": r.id },
          el("td", { text: r.id }),
          el("td", { text: r.version }),
          el("td", {}, replicaPill(r, false)),
          el("td", { text: String(r.restarts) }),
          el("td", { text: r.in_rotation ? "yes" : "no" })))))
    : el("p", { class: "muted", text: "No replica is connected." }));
  if (live) {
    document.getElementById("replicas").append(el("p", { class: "muted",
      text: `queue depth ${live.now.queue_depth ?? "–"} · mean batch ${fmt(live.now.batch_size, 1)} · ${fmt(live.now.qps, 1)} queries/s` }));
  }
  document.getElementById("model-charts").replaceChildren(live ? modelCharts(live) : "");
}
