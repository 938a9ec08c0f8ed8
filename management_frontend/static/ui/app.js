// An app's page: its settings, linked models, its pipeline (every stage's arms with the
// version each answers with now, policy and params; for a pipeline, each stage's time,
// defaults and errors now and its time over the window), learned weights over time and
// recent default answers (GET /admin/apps/{app}, GET /admin/apps/{app}/activity,
// GET /admin/models, and GET /admin/apps/{app}/policy/state?stage=N for every later
// stage whose policy learns).

import { enc, get, ROOT } from "./api.js";
import { chart } from "./chart.js";
import { append, el, fmt, when } from "./dom.js";
import { WINDOW_S } from "./overview.js";
import { LEARNING, paramsCell, recordWeights, resolvedVersion, stagesOf } from "./pipeline.js";

function modelLink(link) {
  const name = link.split(":")[0];
  return el("a", { href: `${ROOT}/ui/models/${enc(name)}`, text: link });
}

export async function fetchApp(name) {
  const [info, activity, models] = await Promise.all([
    get(`/admin/apps/${enc(name)}`),
    get(`/admin/apps/${enc(name)}/activity?window=${WINDOW_S}`),
    get("/admin/models"),
  ]);
  // The app's own answer has its pipeline; the activity has it too (the same records).
  const stages = stagesOf(info.pipeline ? info : { ...info, pipeline: activity.pipeline });
  // Stage 1's weights come with the activity (over the whole window); a later stage's
  // learned weights are read now and kept while the page is open.
  const learned = await Promise.all(stages.map(async (stage, i) => {
    if (i === 0 || !LEARNING.has(stage.policy)) return null;
    try {
      const state = await get(`/admin/apps/${enc(name)}/policy/state?stage=${i + 1}`);
      return { history: recordWeights(name, i + 1, stage, state), error: null };
    } catch (err) {
      return { history: null, error: err.message };
    }
  }));
  return { info, activity, models: models || [], stages, learned };
}

function armCell(arm, models) {
  const { model, version, pinned } = resolvedVersion(arm, models);
  const note = pinned ? " (pinned)" : version === null ? " (no current version)" : ` → v${version}`;
  return el("div", { class: "arm", "data-arm": arm },
    el("a", { href: `${ROOT}/ui/models/${enc(model)}`, text: arm }),
    el("span", { class: "muted", text: note }));
}

// A pipeline's live numbers of stage n (the activity's "stages"), or null: an app of one
// stage, or an older management frontend, has none.
function liveStage(live, n) {
  return (live || []).find((s) => s.stage === n) || null;
}

function pipelineTable(stages, models, live) {
  const numbers = stages.length > 1;
  const heads = ["Stage", "Models (version answering now)", "Policy", "Policy parameters"];
  if (numbers) heads.push("Time p50 / p99 (now)", "Defaults/s", "Errors/s");
  return el("table", { id: "pipeline-table" },
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", { text: h })))),
    el("tbody", {}, stages.map((stage, i) => {
      const now = (liveStage(live, i + 1) || {}).now || {};
      return el("tr", { "data-stage": i + 1 },
        el("td", { class: "stage-number", text: String(i + 1) }),
        el("td", { class: "stage-arms" }, stage.arms.length ? stage.arms.map((a) => armCell(a, models)) : "none"),
        el("td", { class: "stage-policy", text: stage.policy }),
        el("td", { class: "stage-params" }, paramsCell(stage.policy_params)),
        numbers ? el("td", { class: "stage-time", text: `${fmt(now.p50_ms, 1)} / ${fmt(now.p99_ms, 1, "ms")}` }) : null,
        numbers ? el("td", { class: "stage-defaults", text: fmt(now.defaults_per_s, 2) }) : null,
        numbers ? el("td", { class: "stage-errors", text: fmt(now.errors_per_s, 2) }) : null);
    })));
}

// One chart per stage of its time per request (p50, p99) over the window.
function stageTimes(stages, live) {
  return el("div", { class: "cards", id: "stage-times" }, el("section", { class: "card charts" },
    stages.map((stage, i) => {
      const n = i + 1;
      const s = (liveStage(live, n) || {}).series || { t: [] };
      return chart({ id: `stage-latency-${n}`, title: `Stage ${n} (${stage.arms.join(" | ")}): time per request (ms)`,
        t: s.t, unit: "ms", series: [{ name: "p50", values: s.p50_ms || [] }, { name: "p99", values: s.p99_ms || [] }] });
    })));
}

function stageWeights(stage, i, learned) {
  const n = i + 1;
  const what = stage.policy === "exp4" ? "weight of each arm in the combined answer" : "probability of choosing each arm";
  const title = `Stage ${n} (${stage.arms.join(" | ")}, ${stage.policy}): ${what}`;
  if (!learned || learned.error) {
    return el("p", { class: "muted", "data-stage-weights": n,
      text: `Stage ${n}: its learned weights could not be read${learned ? `: ${learned.error}` : ""}.` });
  }
  const h = learned.history;
  return chart({ id: `weights-stage-${n}`, title, t: h.t, max: 1,
    series: Object.entries(h.arms).map(([arm, values]) => ({ name: arm, values })) });
}

export function renderApp(page, { info, activity, models, stages, learned }) {
  const arms = Object.entries(activity.weights.arms || {});
  const pipeline = stages.length > 1;
  const later = stages.map((stage, i) => [stage, i]).filter(([stage, i]) => i > 0 && LEARNING.has(stage.policy));
  const params = Object.entries(activity.policy_params || info.policy_params || {});
  const defaults = activity.recent_defaults || [];
  page.replaceChildren();
  append(page, [
    el("h1", {}, "App ", el("span", { id: "app-name", text: info.name })),
    el("table", { id: "app-settings" }, el("tbody", {},
      el("tr", {}, el("th", { text: "Input type" }), el("td", { text: info.input_type })),
      el("tr", {}, el("th", { text: "SLO" }), el("td", { text: fmt(info.slo_micros / 1000, 1, "ms") })),
      el("tr", {}, el("th", { text: "Default output" }), el("td", {}, el("code", { text: JSON.stringify(info.default_output) }))),
      el("tr", {}, el("th", { text: "Cache" }), el("td", { text: info.cache_enabled ? "on" : "off" })),
      el("tr", {}, el("th", { text: pipeline ? "Linked models (stage 1)" : "Linked models" }), el("td", { id: "linked-models" },
        info.linked_models.length ? info.linked_models.flatMap((l, i) => (i ? [", ", modelLink(l)] : [modelLink(l)])) : "none")),
      el("tr", {}, el("th", { text: pipeline ? "Policy (stage 1)" : "Policy" }), el("td", { id: "policy", text: activity.policy })),
      el("tr", {}, el("th", { text: pipeline ? "Policy parameters (stage 1)" : "Policy parameters" }), el("td", {},
        params.length ? params.map(([k, v]) => el("div", {}, el("code", { text: `${k} = ${JSON.stringify(v)}` }))) : "none")))),
    el("h2", { text: pipeline ? `Pipeline (${stages.length} stages)` : "Pipeline (one stage)" }),
    el("p", { class: "muted", text: pipeline
      ? "Each stage's outputs are the next stage's inputs; the last stage answers. One SLO covers them all."
      : "One stage: the linked models under the app's policy." }),
    pipelineTable(stages, models, activity.stages),
    pipeline && activity.stages ? el("h2", { text: "Time per stage" }) : null,
    pipeline && activity.stages ? stageTimes(stages, activity.stages) : null,
    el("h2", { text: pipeline ? "Stage 1: weights / probabilities over time" : "Weights / probabilities over time" }),
    arms.length
      ? el("div", { class: "cards" }, el("section", { class: "card charts" },
          chart({ id: "weights", title: "Probability of choosing each linked model", t: activity.weights.t, max: 1,
            series: arms.map(([arm, values]) => ({ name: arm, values })) })))
      : el("p", { class: "muted", text: "This policy has one arm: nothing to weigh." }),
    later.length ? el("h2", { text: "Learned weights of later stages (since this page opened)" }) : null,
    later.length
      ? el("div", { class: "cards", id: "stage-weights" }, el("section", { class: "card charts" },
          later.map(([stage, i]) => stageWeights(stage, i, learned[i]))))
      : null,
    el("h2", { text: `Recent default answers (${defaults.length})` }),
    defaults.length
      ? el("table", { id: "defaults-table" },
          el("thead", {}, el("tr", {}, ["Time", "Query id", "Request id", "Reason", "Frontend"].map((h) => el("th", { text: h })))),
          el("tbody", {}, defaults.map((d) => el("tr", {},
            el("td", { text: when(d.t) }),
            el("td", { text: String(d.query_id) }),
            el("td", { text: d.request_id ?? "–" }),
            el("td", { text: d.reason }),
            el("td", { text: d.frontend ?? "–" })))))
      : el("p", { class: "muted", id: "no-defaults", text: "No default answers in the window." }),
  ]);
}
