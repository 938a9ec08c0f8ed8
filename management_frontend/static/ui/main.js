// The dashboard's entry point: read the page from the path, draw it, and refresh it
// every REFRESH_MS from the admin API. Errors from the API are shown in the banner.

import { ROOT } from "./api.js";
import { fetchApp, renderApp } from "./app.js";
import { el } from "./dom.js";
import { fetchModel, renderModel } from "./model.js";
import { fetchOverview, renderOverview } from "./overview.js";

const REFRESH_MS = 2000;

function route(pathname) {
  const path = pathname.slice(ROOT.length).replace(/\/+$/, "");
  let m = path.match(/^\/ui\/apps\/([^/]+)$/);
  if (m) return { kind: "app", name: decodeURIComponent(m[1]) };
  m = path.match(/^\/ui\/models\/([^/]+)$/);
  if (m) return { kind: "model", name: decodeURIComponent(m[1]) };
  return { kind: "overview" };
}

function crumbs(where) {
  const nav = document.getElementById("crumbs");
  if (where.kind === "overview") nav.replaceChildren("Overview");
  else nav.replaceChildren(el("a", { href: `${ROOT}/ui`, text: "Overview" }), ` / ${where.kind} `, el("b", { text: where.name }));
  document.title = where.kind === "overview" ? "Schooner dashboard" : `${where.name} - Schooner dashboard`;
}

function showError(err) {
  const banner = document.getElementById("error");
  if (err) {
    banner.textContent = err.status ? `${err.message} (HTTP ${err.status})` : err.message;
    banner.classList.remove("hidden");
  } else {
    banner.classList.add("hidden");
    banner.textContent = "";
  }
}

async function start() {
  const where = route(window.location.pathname);
  crumbs(where);
  const page = document.getElementById("page");
  const status = document.getElementById("status");
  let timer = null;

  async function refresh(force = false) {
    clearTimeout(timer);
    try {
      if (where.kind === "app") renderApp(page, await fetchApp(where.name));
      else if (where.kind === "model") renderModel(page, await fetchModel(where.name), refresh, force);
      else renderOverview(page, await fetchOverview());
      showError(null);
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    } catch (err) {
      showError(err);
      status.textContent = "update failed";
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }
  await refresh(true);
}

start();
