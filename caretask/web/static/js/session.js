// The signed-in person's tokens, in sessionStorage: gone when the tab closes, and never
// shared with other tabs or kept on disk as localStorage would be.
const KEY = 'caretask.session';

export function currentSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    return session && session.accessToken ? session : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function updateSession(changes) {
  const session = currentSession();
  if (session) saveSession({ ...session, ...changes });
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

// Which tab a session belongs to: window.name lives as long as the tab and, unlike
// sessionStorage, is not copied into a tab opened from this one.
const TAB_PREFIX = 'caretask-tab:';

function newTabId() {
  const id = crypto.getRandomValues(new Uint32Array(2)).join('-');
  window.name = `${TAB_PREFIX}${id}`;
  return id;
}

// A tab opened from a signed-in one starts with a copy of its session. The refresh token
// rotates (the server revokes a session whose refresh token is used twice) and the
// live-update Subscription is deleted at sign-out, so both stay the first tab's: the copy
// keeps the access token only, and signs in again when it expires.
export function adoptSession() {
  const session = currentSession();
  if (!session) return;
  const mark = window.name.startsWith(TAB_PREFIX) ? window.name.slice(TAB_PREFIX.length) : null;
  if (session.tab && session.tab === mark) return;
  saveSession({ ...session, refreshToken: null, subscriptionId: null, tab: newTabId() });
}

// a token answer (the authorization code or refresh grant) as the session keeps it
export function sessionFromToken(answer, previous = null) {
  return {
    tab: previous?.tab || newTabId(),
    accessToken: answer.access_token,
    refreshToken: answer.refresh_token || previous?.refreshToken || null,
    expiresAt: Date.now() + (Number(answer.expires_in) || 3600) * 1000,
    scope: answer.scope || previous?.scope || '',
    fhirUser: answer.fhirUser || previous?.fhirUser || null,
    username: answer.username || previous?.username || null,
    teams: answer.teams || previous?.teams || [],
    subscriptionId: previous?.subscriptionId || null,
    subscriptionSince: previous?.subscriptionSince || 0,
  };
}
