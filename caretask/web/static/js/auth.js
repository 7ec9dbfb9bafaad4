// Sign-in: OAuth 2.0 authorization code with PKCE (S256), as SMART App Launch's standalone
// launch does it. The verifier and state stay in this tab's sessionStorage until the
// callback checks them.
import { config } from './config.js';
import { currentSession, saveSession, sessionFromToken } from './session.js';

const PENDING = 'caretask.pkce';

function base64url(bytes) {
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(size) {
  const bytes = new Uint8Array(size);
  crypto.getRandomValues(bytes);
  return base64url(bytes);
}

async function challengeOf(verifier) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

export class SignInError extends Error {}

// Go to the server's sign-in page; come back to `returnTo` afterwards.
export async function startSignIn(returnTo = location.href) {
  const verifier = randomString(48);
  const state = randomString(24);
  // only a path of this board is a place to come back to
  const back = returnTo.startsWith(`${config.base}/app/`) ? returnTo : `${config.base}/app/`;
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, returnTo: back }));
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: config.clientId,
    redirect_uri: config.redirectUri,
    scope: config.scope,
    state,
    code_challenge: await challengeOf(verifier),
    code_challenge_method: 'S256',
  });
  location.assign(`${config.base}/auth/authorize?${query}`);
}

// The callback: check the state, exchange the code with the verifier; the place to go next.
export async function finishSignIn() {
  const query = new URLSearchParams(location.search);
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING) || 'null');
  } catch {
    pending = null;
  }
  sessionStorage.removeItem(PENDING); // one use only
  history.replaceState(null, '', location.pathname); // the code leaves the address bar
  if (query.get('error')) {
    throw new SignInError(`The sign-in was not completed (${query.get('error').slice(0, 60)}).`);
  }
  if (!pending || !query.get('state') || query.get('state') !== pending.state) {
    throw new SignInError(
      'This sign-in was not started from this tab, or it was already used.',
    );
  }
  if (!query.get('code')) throw new SignInError('The sign-in answer carried no code.');
  const body = new URLSearchParams({
    grant_type: 'authorization_code',
    code: query.get('code'),
    redirect_uri: config.redirectUri,
    client_id: config.clientId,
    code_verifier: pending.verifier,
  });
  let answer;
  try {
    answer = await fetch(`${config.base}/auth/token/`, { method: 'POST', body });
  } catch {
    throw new SignInError('The server could not be reached to finish signing in.');
  }
  if (!answer.ok) {
    throw new SignInError(
      answer.status >= 500 || answer.status === 429
        ? 'The server could not finish signing you in just now.'
        : 'The sign-in code was refused (it may have expired).',
    );
  }
  saveSession(sessionFromToken(await answer.json()));
  return pending.returnTo;
}

let refreshing = null;

// A new access token from the refresh token (which rotates); false if there is none or it
// was refused. Concurrent callers share one request.
export function refreshSession() {
  if (!refreshing) {
    refreshing = doRefresh().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function doRefresh() {
  const session = currentSession();
  if (!session?.refreshToken) return false;
  const body = new URLSearchParams({
    grant_type: 'refresh_token',
    refresh_token: session.refreshToken,
    client_id: config.clientId,
  });
  try {
    const answer = await fetch(`${config.base}/auth/token/`, { method: 'POST', body });
    if (!answer.ok) return false;
    saveSession(sessionFromToken(await answer.json(), session));
    return true;
  } catch {
    return false;
  }
}
