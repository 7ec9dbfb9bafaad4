// The board's entry point: the page the server rendered decides what runs.
import { initBoard } from './board.js';
import { initCallback } from './callback.js';
import { config } from './config.js';
import { initNewTask } from './newtask.js';
import { adoptSession } from './session.js';
import { setUpShell } from './shell.js';
import { initTask } from './task.js';
import { showError } from './ui.js';

function start() {
  adoptSession();
  if (config.page === 'callback') {
    setUpShell({ needsSession: false });
    return initCallback();
  }
  if (config.page === 'missing') {
    setUpShell({ needsSession: false });
    return undefined;
  }
  const session = setUpShell();
  if (!session) return undefined;
  if (config.page === 'board') return initBoard(session);
  if (config.page === 'task') return initTask(session);
  if (config.page === 'new') return initNewTask(session);
  return undefined;
}

// a bug of the board itself: a plain sentence on the page, not the exception (which the
// browser still logs in its console, where the browser tests look for it)
const BUG = 'Something went wrong in the board. Reload the page and try again.';
window.addEventListener('unhandledrejection', () => showError(BUG));
window.addEventListener('error', () => showError(BUG));

Promise.resolve(start()).catch((error) => {
  showError(BUG);
  throw error;
});
