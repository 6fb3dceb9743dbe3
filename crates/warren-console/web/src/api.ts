// The console is a client of Warren's public API, like an SDK: control-plane calls carry the
// API key; a sandbox's agent is reached through this same origin with the sandbox-routing
// headers and the sandbox's own token, so the browser never talks to a sandbox's address.

import { session } from "./session";

/** An API answer that was not a success, with the server's own message and code. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The agent's port behind the routing headers (the Hopx agent, as in `public_host`). */
const AGENT_PORT = "7777";

async function failure(res: Response): Promise<ApiError> {
  let code = `HTTP_${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body = await res.json();
    // Warren's envelope: {error: {code, message}, code, message}; agents: {error, code, message}.
    code = body.code ?? body.error?.code ?? code;
    message = body.message ?? body.error?.message ?? (typeof body.error === "string" ? body.error : message);
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message);
}

/** The code of a call whose connection broke before the answer. */
const INTERRUPTED = "CONNECTION_INTERRUPTED";

/** `fetch`, with a read retried once when its connection breaks. Chromium drops HTTP/2 requests
 * in flight when the machine's network interfaces change, which a browser on the Warren host
 * itself sees whenever a sandbox starts or stops; a change is never retried blindly. */
async function fetchRetryingReads(path: string, init: RequestInit): Promise<Response> {
  const read = !init.method || init.method === "GET";
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetch(path, init);
    } catch (e) {
      if (read && attempt === 0) {
        await new Promise((r) => setTimeout(r, 300));
        continue;
      }
      throw new ApiError(
        0,
        INTERRUPTED,
        read
          ? `The connection broke (${e}).`
          : "The connection broke before the answer came (a browser on the Warren machine itself loses requests when a sandbox's network appears or goes). The action may have been done: look before repeating it.",
      );
    }
  }
}

/** `toSandbox`: an agent call, whose 401 is about the sandbox's token, not the signed-in key. */
async function send(path: string, init: RequestInit, headers: Record<string, string>, toSandbox = false): Promise<Response> {
  const res = await fetchRetryingReads(path, { ...init, headers });
  if (!res.ok) {
    const err = await failure(res);
    if (err.status === 401 && !toSandbox && session.key()) session.refused();
    throw err;
  }
  return res;
}

function keyHeaders(): Record<string, string> {
  const key = session.key();
  return key ? { "X-API-Key": key } : {};
}

/** A control-plane call with the signed-in key; JSON in and out. */
export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method };
  const headers = keyHeaders();
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const res = await send(path, init, headers);
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as T;
}

/** Checks a key without keeping it: the sandboxes list answers any valid key, the key list only
 * an admin's. */
export async function checkKey(key: string): Promise<{ admin: boolean }> {
  const headers = { "X-API-Key": key };
  const res = await fetch("/v1/sandboxes?limit=1", { headers });
  if (!res.ok) throw await failure(res);
  return { admin: (await fetch("/v1/admin/keys", { headers })).ok };
}

type Token = { token: string; expires: number };
const tokens = new Map<string, Token>();

/** The sandbox's agent token (minted for the key's owner), cached until shortly before expiry. */
export async function sandboxToken(id: string): Promise<string> {
  const cached = tokens.get(id);
  if (cached && cached.expires - Date.now() > 60_000) return cached.token;
  const t = await api<{ auth_token: string; token_expires_at?: string }>(
    "POST",
    `/v1/sandboxes/${encodeURIComponent(id)}/token/refresh`,
  );
  const expires = t.token_expires_at ? Date.parse(t.token_expires_at) : Date.now() + 5 * 60_000;
  tokens.set(id, { token: t.auth_token, expires });
  return t.auth_token;
}

/** A call to the sandbox's agent; the raw response (files are bytes, the rest JSON). A token
 * refused (expired early, the server restarted with new keys) is replaced once. */
export async function agentFetch(id: string, method: string, path: string, body?: BodyInit, contentType?: string): Promise<Response> {
  const call = async () => {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${await sandboxToken(id)}`,
      "E2b-Sandbox-Id": id,
      "E2b-Sandbox-Port": AGENT_PORT,
    };
    if (contentType) headers["Content-Type"] = contentType;
    return send(path, { method, body }, headers, true);
  };
  try {
    return await call();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401) || !tokens.has(id)) throw e;
    tokens.delete(id);
    return call();
  }
}

export async function agent<T = any>(id: string, method: string, path: string, body?: unknown): Promise<T> {
  const res = await agentFetch(
    id,
    method,
    path,
    body === undefined ? undefined : JSON.stringify(body),
    body === undefined ? undefined : "application/json",
  );
  return (await res.json()) as T;
}

/** The terminal's WebSocket: the token travels as a subprotocol (browsers cannot set headers on
 * a WebSocket, and a URL would put it in logs and history). */
export async function terminalSocket(id: string): Promise<WebSocket> {
  const token = await sandboxToken(id);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return new WebSocket(`${scheme}//${location.host}/console/terminal/${encodeURIComponent(id)}`, [
    "warren.console",
    `warren.token.${token}`,
  ]);
}

export type Sandbox = {
  id: string;
  status: string;
  template_name?: string;
  isolation: string;
  created_at: string;
  expires_at?: string;
  timeout_seconds?: number;
  status_reason?: string;
  resources: { vcpu: number; memory_mb: number; disk_mb: number };
  internet_access: boolean;
  volumes?: { name: string; path: string; read_only: boolean }[];
};

export type Volume = { id: string; name: string; size_mb: number; used_mb?: number; created_at: string };

export type Template = {
  id: string;
  name: string;
  display_name: string;
  description?: string;
  status?: string;
  build_id?: string;
  is_public?: boolean;
  is_active?: boolean;
  organization_id?: string;
  created_at?: string;
  error_message?: string;
};
