// The API key, for a server started with API_KEYS. Asked once in a dialog and kept in
// localStorage; fetch and XHR send it as X-API-Key, and it is also the cookie
// vfe_api_key, which is how EventSource, <img> and download links (that cannot send
// headers) authenticate. A 401 means the key is missing, wrong or rotated: the dialog
// asks again, and whoever waited for it retries; listeners of onKeyChange reopen streams.
import { byTestId, setText } from './dom.js';

const STORAGE = 'vfe-api-key';
const COOKIE = 'vfe_api_key';
const CHECK_URL = '/jobs?limit=1'; // any API call answers 401 to a refused key

let key = readStored();
let asking = null; // {promise, resolve} while a key is needed and none was accepted yet
let ui = null;
const listeners = new Set();
const askListeners = new Set();

function readStored() {
  try {
    return localStorage.getItem(STORAGE) || null;
  } catch {
    return null; // storage disabled: the key lasts as long as the page
  }
}

function store(value) {
  try {
    if (value) localStorage.setItem(STORAGE, value);
    else localStorage.removeItem(STORAGE);
  } catch {
    // storage disabled: nothing to keep
  }
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = value
    ? `${COOKIE}=${value}; path=/; SameSite=Strict${secure}`
    : `${COOKIE}=; path=/; SameSite=Strict; max-age=0${secure}`;
}

/** The headers that carry the key ({} when there is none). */
export function keyHeaders() {
  return key ? { 'X-API-Key': key } : {};
}

/** The key the next request will send (null: none). */
export function currentKey() {
  return key;
}

/** Whether a key is needed and the person has not given one yet. */
export function waitingForKey() {
  return asking !== null;
}

/** `listener()` runs after a new key was accepted: reopen streams, reload what failed. */
export function onKeyChange(listener) {
  listeners.add(listener);
}

/** `listener()` runs when the server refused the key and the dialog asks for one. */
export function onKeyWanted(listener) {
  askListeners.add(listener);
}

/**
 * A request sent with `usedKey` answered 401. Resolves once a key the server accepts is
 * set (at once if another key replaced `usedKey` meanwhile); the caller then retries.
 * Every caller waits on the same question: the dialog opens once.
 */
export function keyRefused(usedKey) {
  if (key !== usedKey) return Promise.resolve();
  if (!asking) {
    const refused = key !== null;
    key = null;
    store(null);
    let resolve;
    const promise = new Promise((done) => {
      resolve = done;
    });
    asking = { promise, resolve };
    show(refused ? 'The saved API key was refused (it may have been replaced). Enter the current one.' : '');
    for (const listener of askListeners) listener();
  }
  return asking.promise;
}

function show(notice) {
  if (!ui) return;
  ui.button.hidden = false;
  setText(ui.notice, notice);
  setText(ui.error, '');
  ui.input.removeAttribute('aria-invalid');
  ui.input.value = '';
  if (!ui.dialog.open) ui.dialog.showModal();
  ui.input.focus();
}

/** Check `candidate` against the server: null when accepted, else the message to show. */
async function check(candidate) {
  try {
    // Without cookies: a still-valid cookie must not vouch for the key typed in.
    const response = await fetch(CHECK_URL, {
      headers: { Accept: 'application/json', 'X-API-Key': candidate },
      credentials: 'omit',
    });
    return response.status === 401 ? 'The server refused this key. Check it and try again.' : null;
  } catch {
    return 'The server could not be reached. Check the connection and try again.';
  }
}

function accept(candidate) {
  key = candidate;
  store(candidate);
  ui.dialog.close();
  const waiting = asking;
  asking = null;
  waiting?.resolve();
  for (const listener of listeners) listener();
}

/**
 * Wire the key dialog (data-testid api-key-dialog) and the top bar's key button, which
 * brings the dialog back after Escape closed it, or changes a saved key.
 */
export function setupKeyDialog(dialog, button) {
  const form = dialog.querySelector('form');
  ui = {
    dialog,
    button,
    form,
    input: byTestId('api-key-input', dialog),
    submit: byTestId('api-key-submit', dialog),
    error: byTestId('api-key-error', dialog),
    notice: dialog.querySelector('.api-key-notice'),
  };
  if (key) store(key); // the cookie may have ended with the browser session; localStorage did not
  button.hidden = key === null;
  button.addEventListener('click', () => show(''));
  ui.input.addEventListener('input', () => {
    setText(ui.error, '');
    ui.input.removeAttribute('aria-invalid');
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const candidate = ui.input.value.trim();
    if (!candidate) {
      refuse('Enter the API key.');
      return;
    }
    if (/[^\x21-\x7e]|[",;\\]/.test(candidate)) {
      refuse('An API key is printable ASCII, without spaces, quotes, commas, semicolons or backslashes.');
      return;
    }
    ui.submit.disabled = true;
    form.setAttribute('aria-busy', 'true');
    const problem = await check(candidate);
    ui.submit.disabled = false;
    form.removeAttribute('aria-busy');
    if (problem) refuse(problem);
    else accept(candidate);
  });
}

function refuse(message) {
  setText(ui.error, message);
  ui.input.setAttribute('aria-invalid', 'true');
  ui.input.focus();
  ui.input.select();
}
