// An app's page: its settings, linked models, learned weights over time and recent
// default answers (GET /admin/apps/{app} and GET /admin/apps/{app}/activity).

import { enc, get, ROOT } from "./api.js";
import { chart } from "./chart.js";
import { el, fmt, when } from "./dom.js";
import { WINDOW_S } from "./overview.js";

function modelLink(link) {
  const name = link.split(":")[0];
  return el("a", { href: `${ROOT}/ui/models/${enc(name)}`, text: link });
}

export async function fetchApp(name) {
  const [info, activity] = await Promise.all([
    get(`/admin/apps/${enc(name)}`),
    get(`/admin/apps/${enc(name)}/activity?window=${WINDOW_S}`),
  ]);
  return { info, activity };
}

export function renderApp(page, { info, activity }) {
  const arms = Object.entries(activity.weights.arms || {});
  const params = Object.entries(activity.policy_params || info.policy_params || {});
  const defaults = activity.recent_defaults || [];
  page.replaceChildren(
    el("h1", {}, "App ", el("span", { id: "app-name", text: info.name })),
    el("table", { id: "app-settings" }, el("tbody", {},
      el("tr", {}, el("th", { text: "Input type" }), el("td", { text: info.input_type })),
      el("tr", {}, el("th", { text: "SLO" }), el("td", { text: fmt(info.slo_micros / 1000, 1, "ms") })),
      el("tr", {}, el("th", { text: "Default output" }), el("td", {}, el("code", { text: JSON.stringify(info.default_output) }))),
      el("tr", {}, el("th", { text: "Cache" }), el("td", { text: info.cache_enabled ? "on" : "off" })),
      el("tr", {}, el("th", { text: "Linked models" }), el("td", { id: "linked-models" },
        info.linked_models.length ? info.linked_models.flatMap((l, i) => (i ? [", ", modelLink(l)] : [modelLink(l)])) : "none")),
      el("tr", {}, el("th", { text: "Policy" }), el("td", { id: "policy", text: activity.policy })),
      el("tr", {}, el("th", { text: "Policy parameters" }), el("td", {},
        params.length ? params.map(([k, v]) => el("div", {}, el("code", { text: `${k} = ${JSON.stringify(v)}` }))) : "none")))),
    el("h2", { text: "Weights / probabilities over time" }),
    arms.length
      ? el("div", { class: "cards" }, el("section", { class: "card charts" },
          chart({ id: "weights", title: "Probability of choosing each linked model", t: activity.weights.t, max: 1,
            series: arms.map(([arm, values]) => ({ name: arm, values })) })))
      : el("p", { class: "muted", text: "This policy has one arm: nothing to weigh." }),
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
  );
}
