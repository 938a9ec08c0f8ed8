// An app as a pipeline of stages (an app's "pipeline" in the admin API: every stage in
// order, stage 1's arms being its links): how the pages write one, which version each
// arm answers with now, and the learned weights of a stage over time.

import { el } from "./dom.js";

// Policies whose weights are learned from feedback (the others are set by hand).
export const LEARNING = new Set(["exp3", "exp4"]);

// Every stage of an app in order; an answer without "pipeline" (an older management
// frontend) is one stage: its links under its policy.
export function stagesOf(app) {
  if (Array.isArray(app.pipeline) && app.pipeline.length) return app.pipeline;
  return [{
    arms: app.linked_models || [],
    policy: app.policy || "single",
    policy_params: app.policy_params || {},
    policy_epoch: app.policy_epoch || "",
  }];
}

function stageText(stage) {
  const arms = stage.arms.length ? stage.arms.join(" | ") : "(no arms)";
  return stage.arms.length > 1 || stage.policy !== "single" ? `${arms} (${stage.policy})` : arms;
}

// "feat → clf-a | clf-b (exp4)"; an app of one stage keeps its links' list, "a, b".
export function pipelineText(app) {
  const stages = stagesOf(app);
  if (stages.length === 1) return stages[0].arms.join(", ");
  return stages.map(stageText).join(" → ");
}

// "single → exp4" for a pipeline, the one policy otherwise.
export function policiesText(app) {
  return stagesOf(app).map((s) => s.policy).join(" → ");
}

// The version an arm answers with now: pinned ("m:3"), else its model's current one.
export function resolvedVersion(arm, models) {
  const at = arm.indexOf(":");
  if (at >= 0) return { model: arm.slice(0, at), version: arm.slice(at + 1), pinned: true };
  const model = models.find((m) => m.name === arm);
  return { model: arm, version: model ? model.current_version ?? null : null, pinned: false };
}

// Where a model is used: [{app, stage (from 1), arm, policy, stages}] for every arm of
// every stage of every app that names it.
export function usesOf(modelName, apps) {
  const uses = [];
  for (const app of apps) {
    const stages = stagesOf(app);
    stages.forEach((stage, i) => {
      for (const arm of stage.arms) {
        if (arm.split(":")[0] === modelName) {
          uses.push({ app: app.name, stage: i + 1, arm, policy: stage.policy, stages: stages.length });
        }
      }
    });
  }
  return uses;
}

export function paramsCell(params) {
  const entries = Object.entries(params || {});
  return entries.length
    ? entries.map(([k, v]) => el("div", {}, el("code", { text: `${k} = ${JSON.stringify(v)}` })))
    : "–";
}

// The learned weights of later stages, sampled at each refresh while the page is open
// (GET .../policy/state?stage=N answers the weights now, not their history). A stage
// whose policy epoch changes (policy changed or reset) starts a new history.
const MAX_SAMPLES = 150;
const histories = new Map();

export function recordWeights(app, stageNo, stage, state, now = Date.now() / 1000) {
  const epoch = stage.policy_epoch;
  const key = `${app}\u0000${stageNo}`;
  let history = histories.get(key);
  if (!history || history.epoch !== epoch) {
    history = { epoch, t: [], arms: {} };
    histories.set(key, history);
  }
  const arms = Object.entries((state && state.arms) || {})
    .filter(([arm, a]) => a.linked !== false && stage.arms.includes(arm));
  const n = history.t.length;
  history.t.push(now);
  for (const [arm] of arms) if (!history.arms[arm]) history.arms[arm] = new Array(n).fill(null);
  for (const [arm, values] of Object.entries(history.arms)) {
    const entry = arms.find(([name]) => name === arm);
    values.push(entry ? entry[1].probability : null);
  }
  if (history.t.length > MAX_SAMPLES) {
    const drop = history.t.length - MAX_SAMPLES;
    history.t.splice(0, drop);
    for (const values of Object.values(history.arms)) values.splice(0, drop);
  }
  return history;
}
