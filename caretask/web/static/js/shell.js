// What every page shares: who is signed in, the views' navigation, signing in and out, and
// what a page shows when the session has ended.
import { onSessionEnded } from './api.js';
import { startSignIn } from './auth.js';
import { config } from './config.js';
import { stopLive } from './live.js';
import { clearSession, currentSession } from './session.js';
import { $, notify, showError } from './ui.js';

function signIn() {
  startSignIn(location.href).catch(() =>
    showError('The sign-in could not start in this browser. Reload the page and try again.'));
}

function showSignedOut(text) {
  $('content').hidden = true;
  $('views').hidden = true;
  $('session').hidden = true;
  if (text) $('signed-out-text').textContent = text;
  $('signed-out').hidden = false;
  $('sign-in').focus();
}

// The page's session, or null after showing the sign-in panel (pages that need one).
export function setUpShell({ needsSession = true } = {}) {
  $('sign-in').addEventListener('click', signIn);
  $('sign-out').addEventListener('click', async () => {
    await stopLive({ deleteSubscription: true });
    clearSession();
    showSignedOut('You are signed out. Sign in to see your tasks again.');
    notify('You are signed out.');
  });
  onSessionEnded(() => {
    stopLive();
    clearSession();
    showError('Your session ended. Sign in again to continue.', {
      action: { label: 'Sign in again', run: signIn },
    });
    showSignedOut('Your session ended. Sign in again to continue where you were.');
  });
  const session = currentSession();
  if (!session && needsSession) {
    showSignedOut();
    return null;
  }
  if (session) {
    $('who').textContent = session.username || session.fhirUser || 'you';
    $('session').hidden = false;
    $('views').hidden = false;
  }
  $('content').hidden = false;
  return session;
}

export function markCurrentView(view) {
  for (const link of document.querySelectorAll('#views a')) {
    if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

export function taskUrl(id) {
  return `${config.base}/app/tasks/${encodeURIComponent(id)}`;
}
