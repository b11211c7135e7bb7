// Talking to the vfe server: JSON requests, uploads with progress, SSE listeners, and
// reading its errors ({"detail": "text"} or, for 422, a list of {loc, msg, type}).
// Requests carry the API key when there is one; a 401 asks for a key (auth.js), then
// the request is sent again with it.
import { currentKey, keyHeaders, keyRefused } from './auth.js';

/** Send with the current key; on a 401, wait for an accepted key and send again. */
async function withKey(send) {
  for (;;) {
    const usedKey = currentKey();
    const answer = await send(keyHeaders());
    if (answer.status !== 401) return answer;
    await keyRefused(usedKey);
  }
}

/**
 * A request whose answer is JSON. Never throws: a network failure gives status 0.
 * Resolves to {ok, status, body} (body is null when the answer is not JSON).
 */
export function request(method, url, data) {
  return withKey(async (auth) => {
    const init = { method, headers: { Accept: 'application/json', ...auth } };
    if (data !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(data);
    }
    try {
      const response = await fetch(url, init);
      const body = await response.json().catch(() => null);
      return { ok: response.ok, status: response.status, body };
    } catch {
      return { ok: false, status: 0, body: null };
    }
  });
}

export const getJSON = (url) => request('GET', url);

/**
 * POST a FormData with XMLHttpRequest, which (unlike fetch) reports upload progress:
 * onProgress(loaded, total) while the body is sent. Resolves like `request`. A 401
 * sends the whole body again once a key is accepted.
 */
export function upload(url, formData, onProgress) {
  return withKey((auth) => send(url, formData, onProgress, auth));
}

function send(url, formData, onProgress, auth) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.responseType = 'text';
    xhr.setRequestHeader('Accept', 'application/json');
    for (const [name, value] of Object.entries(auth)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: the status alone describes the failure
      }
      resolve({ ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status, body });
    });
    const failed = () => resolve({ ok: false, status: 0, body: null });
    xhr.addEventListener('error', failed);
    xhr.addEventListener('abort', failed);
    xhr.send(formData);
  });
}

/**
 * Call handlers[name](data) for each named event of an EventSource, with its JSON data
 * parsed. An event whose data is not JSON is ignored.
 */
export function listen(source, handlers) {
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      handler(data);
    });
  }
}

/** The API field a 422 error is about (loc ["body", "interval", ...]), or null. */
function errorField(error) {
  const loc = Array.isArray(error?.loc) ? error.loc : [];
  return typeof loc[1] === 'string' ? loc[1] : null;
}

/** pydantic prefixes model-level messages with "Value error, ": people need not read it. */
function errorMsg(error) {
  return String(error?.msg ?? 'invalid').replace(/^Value error, /, '');
}

/** One line saying what went wrong, for any failed answer. */
export function errorText({ status, body }) {
  if (status === 0) return 'The server could not be reached. Check the connection and try again.';
  const detail = body?.detail;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((error) => {
        const field = errorField(error);
        return field ? `${field}: ${errorMsg(error)}` : errorMsg(error);
      })
      .join('; ');
  }
  return `The request failed (HTTP ${status}).`;
}

/** The per-field messages of a 422 answer: [{field, message}]. */
export function fieldErrors({ body }) {
  if (!Array.isArray(body?.detail)) return [];
  return body.detail
    .map((error) => ({ field: errorField(error), message: errorMsg(error) }))
    .filter((error) => error.field !== null);
}

/** Where a frame's image is served; built from its parts rather than trusting a URL. */
export function frameUrl(frame) {
  return `/frames/${encodeURIComponent(frame.job_id)}/${encodeURIComponent(frame.filename)}`;
}

/** The zip of all of a job's frames. */
export function zipUrl(jobId) {
  return `/job/${encodeURIComponent(jobId)}/frames.zip`;
}
