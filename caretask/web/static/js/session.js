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

// a token answer (the authorization code or refresh grant) as the session keeps it
export function sessionFromToken(answer, previous = null) {
  return {
    accessToken: answer.access_token,
    refreshToken: answer.refresh_token || previous?.refreshToken || null,
    expiresAt: Date.now() + (Number(answer.expires_in) || 3600) * 1000,
    scope: answer.scope || previous?.scope || '',
    fhirUser: answer.fhirUser || previous?.fhirUser || null,
    username: answer.username || previous?.username || null,
    teams: answer.teams || previous?.teams || [],
    subscriptionId: previous?.subscriptionId || null,
  };
}
