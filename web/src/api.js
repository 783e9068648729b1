// How the page talks to the agent: the same HTTP API as the CLI, with the same rights.
//
// Served by the agent itself (its TCP port), the page sends the agent's token, which the user
// types once; it is kept in this tab's sessionStorage (never a cookie, never a URL). Served by
// `probing PID ui`, the page sends that server's secret, which came in the URL's fragment (never
// sent to a server) and is then taken out of the address bar.

const SECRET_KEY = "probing-ui-secret";
const TOKEN_KEY = "probing-token";

function takeSecretFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const secret = params.get("s");
  if (secret) {
    sessionStorage.setItem(SECRET_KEY, secret);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(SECRET_KEY) || "";
}

const uiSecret = takeSecretFromFragment();
let token = sessionStorage.getItem(TOKEN_KEY) || "";

export function setToken(value) {
  token = value;
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export const throughUiServer = () => uiSecret !== "";

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
  // The target (or the `probing ui` server) no longer answers.
  get gone() {
    return this.status === 0 || this.status === 502 || this.type === "TargetGone";
  }
  get unauthorized() {
    return this.status === 401;
  }
}

export async function call(method, path, body, { timeoutMs = 30000 } = {}) {
  const headers = {};
  if (uiSecret) headers["X-Probing-Ui-Secret"] = uiSecret;
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let reply;
  try {
    reply = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: abort.signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw abort.signal.aborted
      ? new ApiError(0, "Timeout", `no answer in ${timeoutMs / 1000} s`)
      : new ApiError(0, "Unreachable", "cannot reach the agent: the target may have exited");
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await reply.json();
  } catch {
    data = null;
  }
  if (!reply.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(reply.status, error.type || "HTTP " + reply.status, error.message || reply.statusText);
  }
  return data;
}

export const health = () => call("GET", "/health", undefined, { timeoutMs: 5000 });

// {columns, rows} of one statement.
export const query = (sql, options) => call("POST", "/query", { sql }, options);

// The rows of a query as objects.
export async function rows(sql) {
  const r = await query(sql);
  return r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])));
}

// A string as an SQL literal.
export const literal = (s) => "'" + String(s).replaceAll("'", "''") + "'";
