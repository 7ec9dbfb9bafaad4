// The redirect target of the sign-in page: finish the code exchange, then go back.
import { finishSignIn, SignInError, startSignIn } from './auth.js';
import { config } from './config.js';
import { $ } from './ui.js';

export async function initCallback() {
  try {
    const next = await finishSignIn();
    location.replace(next);
  } catch (error) {
    const text = error instanceof SignInError ? error.message : 'The sign-in could not be finished.';
    $('callback-status').textContent = `${text} Sign in again to continue.`;
    const retry = $('callback-retry');
    retry.hidden = false;
    retry.addEventListener('click', () => startSignIn(`${config.base}/app/`));
    retry.focus();
  }
}
