// Calls to the admin API with the session cookie. Every call carries X-Schooner-UI: 1,
// the header the server asks of cookie-authenticated changes (CSRF defence in depth).

const meta = document.querySelector('meta[name="schooner-root"]');
export const ROOT = meta ? meta.getAttribute("content") : "";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body) {
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    headers: { "X-Schooner-UI": "1", Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(ROOT + path, init);
  } catch (err) {
    throw new ApiError(0, "unreachable", `the management frontend did not answer (${err.message})`);
  }
  if (response.status === 401) {
    // The session ended (expired, logged out elsewhere, or the token was rotated).
    window.location.reload();
    throw new ApiError(401, "unauthorized", "the session has ended: log in again");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.message ? data.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, data && data.error ? data.error : "error", message);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const put = (path, body) => call("PUT", path, body);

export function enc(name) {
  return encodeURIComponent(name);
}
