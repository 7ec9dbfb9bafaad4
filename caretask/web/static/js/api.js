// Calls to the FHIR API with the person's token. Every failure becomes an ApiError with
// one plain sentence of what happened and what to do: never a stack trace or raw body.
import { refreshSession } from './auth.js';
import { config } from './config.js';
import { currentSession } from './session.js';

export class ApiError extends Error {
  constructor(kind, message, status = 0, detail = '') {
    super(message);
    this.kind = kind; // network, session, forbidden, not-found, conflict, changed, invalid, busy, server
    this.status = status;
    this.detail = detail;
  }
}

// listeners told when the session has ended for good (the shell shows the sign-in banner)
const sessionEndedListeners = [];
export function onSessionEnded(listener) {
  sessionEndedListeners.push(listener);
}

function outcomeText(outcome) {
  const issue = outcome?.issue?.[0];
  const text = issue?.diagnostics || issue?.details?.text || '';
  return String(text).slice(0, 300);
}

function errorFor(status, outcome) {
  const detail = outcomeText(outcome);
  if (status === 403) {
    return new ApiError(
      'forbidden',
      'You are not allowed to do that: your account lacks the permission. Ask your administrator if you need it.',
      status, detail,
    );
  }
  if (status === 404 || status === 410) {
    return new ApiError('not-found', 'That task no longer exists (it may have been deleted).', status, detail);
  }
  if (status === 409) {
    return new ApiError('conflict', `That could not be done: ${detail || 'the task is not in the state it needs'}.`, status, detail);
  }
  if (status === 412) {
    return new ApiError(
      'changed',
      'Someone else changed this task while you had it open. The latest version is shown now: check it and try again.',
      status, detail,
    );
  }
  if (status === 429 || status === 503) {
    return new ApiError('busy', 'The server is busy right now. Wait a moment, then try again.', status, detail);
  }
  if (status >= 500) {
    return new ApiError(
      'server',
      `Something went wrong on the server (error ${status}). Try again; if it keeps happening, tell your administrator.`,
      status, detail,
    );
  }
  return new ApiError('invalid', `The server did not accept this: ${detail || `error ${status}`}.`, status, detail);
}

function sessionEnded() {
  const error = new ApiError('session', 'Your session ended. Sign in again to continue.', 401);
  for (const listener of sessionEndedListeners) listener(error);
  return error;
}

// writes on their way: a live notification of a write may arrive before its answer, so
// the board waits for them before deciding a change was someone else's
let writing = 0;
export function writesPending() {
  return writing > 0;
}

// One API call: {status, etag, location, body}. `body` is JSON (or a URLSearchParams form);
// `contentType` overrides application/fhir+json (JSON Patch).
export async function api(method, path, { body, ifMatch, contentType, representation } = {}) {
  let session = currentSession();
  if (!session) throw sessionEnded();
  if (session.refreshToken && session.expiresAt - Date.now() < 30_000) {
    await refreshSession(); // about to expire: a fresh one first, rather than a 401
  }
  const send = () => {
    const headers = {
      Accept: 'application/fhir+json',
      Authorization: `Bearer ${currentSession()?.accessToken || ''}`,
    };
    if (body !== undefined) headers['Content-Type'] = contentType || 'application/fhir+json';
    if (ifMatch) headers['If-Match'] = ifMatch;
    if (representation) headers.Prefer = 'return=representation';
    return fetch(`${config.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  };
  let answer;
  const write = method !== 'GET';
  if (write) writing += 1;
  try {
    answer = await send();
    if (answer.status === 401) {
      answer = (await refreshSession()) ? await send() : answer;
    }
  } catch {
    throw new ApiError(
      'network',
      'The server could not be reached. Check your network connection, then try again.',
    );
  } finally {
    if (write) writing -= 1;
  }
  if (answer.status === 401) throw sessionEnded();
  let parsed = null;
  const text = await answer.text().catch(() => '');
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (!answer.ok) throw errorFor(answer.status, parsed);
  return {
    status: answer.status,
    etag: answer.headers.get('ETag'),
    location: answer.headers.get('Location'),
    body: parsed,
  };
}

export const getTask = (id) => api('GET', `/Task/${encodeURIComponent(id)}`);

export function searchTasks(params) {
  return api('GET', `/Task?${new URLSearchParams(params)}`);
}

export function patchTask(id, operations, etag) {
  return api('PATCH', `/Task/${encodeURIComponent(id)}`, {
    body: operations,
    ifMatch: etag,
    contentType: 'application/json-patch+json',
    representation: true,
  });
}

export function operation(path, parameters = []) {
  return api('POST', path, {
    body: { resourceType: 'Parameters', ...(parameters.length ? { parameter: parameters } : {}) },
    representation: true,
  });
}
