// The public API, on the same origin: the same endpoints, tokens and errors as any client.
import * as session from "./session.js";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// Called when the API says the token is no longer good (401): the app goes to log in.
let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

function authHeaders() {
  const token = session.token();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export async function errorFrom(response) {
  let code = "http_" + response.status;
  let message = response.statusText || `the server answered ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not the platform's error JSON (a proxy's page): keep the status line.
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new ApiError(response.status, code, message, Number.isFinite(retry) ? retry : undefined);
}

export async function request(method, path, { json, body, headers = {}, auth = true } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "omit" };
  if (auth) Object.assign(init.headers, authHeaders());
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "the platform cannot be reached; check the connection");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (error.status === 401 && auth) onUnauthorized(error);
    throw error;
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response;
}

export const signUp = (fields) => request("POST", "/auth/signup", { json: fields, auth: false });

export async function logIn(email, password) {
  const answer = await request("POST", "/auth/login", { json: { email, password }, auth: false });
  return session.save(answer.token, answer.expires_in, email);
}

export async function logOut() {
  try {
    // The API may offer a logout that revokes the token; without one, forgetting it is all.
    await request("POST", "/auth/logout");
  } catch {
    // 404 (no such route) or 401 (already expired): the token is forgotten either way.
  } finally {
    session.forget();
  }
}

export const listTasks = (max, order = 1) => request("GET", `/tasks?max=${max}&order=${order}`);
export const getTask = (id) => request("GET", `/tasks/${encodeURIComponent(id)}`);
export const deleteTask = (id) => request("DELETE", `/tasks/${encodeURIComponent(id)}`);
export const submitUrl = (url) => request("POST", "/tasks", { json: { url } });
export const submitUpload = (uploadId) => request("POST", "/tasks", { json: { upload: uploadId } });

// A file of the API (a clip, an original) as a Blob, fetched with the bearer token: the
// token never goes into a URL, so the player and the download use a blob: URL.
export async function fetchBlob(link) {
  const response = await request("GET", link, { headers: { Accept: "*/*" } });
  return response.blob();
}

// The multipart upload (`file` field), with upload progress (fetch has none).
export function uploadMultipart(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open("POST", "/tasks");
    const token = session.token();
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", async () => {
      const response = new Response(xhr.responseText, {
        status: xhr.status,
        headers: { "Content-Type": "application/json", "Retry-After": xhr.getResponseHeader("Retry-After") || "" },
      });
      if (xhr.status >= 200 && xhr.status < 300) resolve(await response.json());
      else reject(await errorFrom(response));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "the upload was interrupted")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the upload was stopped")));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { done, abort: () => xhr.abort() };
}

// Whether a tus 1.0 server answers at /uploads (it sends Tus-Version to OPTIONS).
let tusProbe = null;
export function tusAvailable() {
  tusProbe ??= fetch("/uploads", { method: "OPTIONS", credentials: "omit" })
    .then((response) => response.headers.has("Tus-Version"))
    .catch(() => false);
  return tusProbe;
}
