// Live updates through the server's websocket subscription channel: one Subscription per
// signed-in tab (kept in the session, reused across pages), a binding token per
// connection, and a callback with the tasks that changed. The board's own writes are
// remembered so that they are not announced as someone else's.
import { api } from './api.js';
import { IG, TOPIC } from './config.js';
import { currentSession, updateSession } from './session.js';

// The server turns a Subscription off once its `end` has passed (no more events are kept
// for it), so that one left behind by a tab closed without signing out costs nothing after
// LIFETIME_HOURS. A tab makes itself a new one every ROTATE_MS (deleting the old one), long
// before its end: on its next page, or by reconnecting when it stays on one page.
const LIFETIME_HOURS = 2;
const ROTATE_MS = 3600_000;
let rotation = null;
const own = new Set(); // "id/version" written by this tab
let socket = null;
let stopped = false;
let retryDelay = 1000;

export function markOwn(task) {
  if (task?.id && task?.meta?.versionId) own.add(`${task.id}/${task.meta.versionId}`);
}

// a change this tab made itself (ask once its writes have been answered: writesPending)
export function isOwn(change) {
  return own.has(`${change.id}/${change.version}`);
}

function subscriptionBody(session) {
  const end = new Date(Date.now() + LIFETIME_HOURS * 3600_000).toISOString();
  return {
    resourceType: 'Subscription',
    status: 'requested',
    reason: `caretask board: live updates for ${session.username || 'a signed-in person'}`,
    criteria: TOPIC,
    end,
    channel: {
      type: 'websocket',
      payload: 'application/fhir+json',
      _payload: { extension: [{ url: `${IG}/backport-payload-content`, valueCode: 'id-only' }] },
    },
  };
}

async function subscriptionId() {
  const session = currentSession();
  const since = session?.subscriptionSince || 0;
  if (session?.subscriptionId && Date.now() - since < ROTATE_MS) return session.subscriptionId;
  if (session?.subscriptionId) {
    // its end is near: replaced; the old one goes (and is turned off at its end anyway)
    api('DELETE', `/Subscription/${session.subscriptionId}`).catch(() => {});
  }
  const created = await api('POST', '/Subscription', { body: subscriptionBody(session) });
  updateSession({ subscriptionId: created.body.id, subscriptionSince: Date.now() });
  return created.body.id;
}

async function bindingToken() {
  let id = await subscriptionId();
  try {
    return await api('POST', `/Subscription/${id}/$get-ws-binding-token`, {});
  } catch (error) {
    if (error.kind !== 'not-found') throw error;
    updateSession({ subscriptionId: null }); // deleted (or expired): a new one
    id = await subscriptionId();
    return api('POST', `/Subscription/${id}/$get-ws-binding-token`, {});
  }
}

function parameter(parameters, name) {
  return (parameters || []).filter((p) => p.name === name);
}

function isHandshake(bundle) {
  const status = bundle?.entry?.[0]?.resource;
  return parameter(status?.parameter, 'type')[0]?.valueCode === 'handshake';
}

// The tasks an event-notification names: [{id, version}].
function changedTasks(bundle) {
  const status = bundle?.entry?.[0]?.resource;
  if (status?.resourceType !== 'Parameters') return [];
  if (parameter(status.parameter, 'type')[0]?.valueCode !== 'event-notification') return [];
  const changed = [];
  for (const event of parameter(status.parameter, 'notification-event')) {
    const focus = (event.part || []).find((p) => p.name === 'focus')?.valueReference?.reference;
    const match = /Task\/([^/]+)\/_history\/([^/]+)$/.exec(focus || '');
    if (match) changed.push({ id: match[1], version: match[2] });
  }
  return changed;
}

// Start listening; `onChange(tasks)` is called with each notification's changed tasks;
// `onTrouble(message)` when live updates stopped working (they are retried meanwhile).
export async function startLive(onChange, onTrouble) {
  stopped = false;
  let binding;
  try {
    binding = await bindingToken();
  } catch (error) {
    if (error.kind === 'session' || error.kind === 'forbidden') {
      onTrouble('Live updates are off for this session: reload the page to see changes.');
      return;
    }
    retryLater(onChange, onTrouble);
    return;
  }
  const values = binding.body?.parameter || [];
  const token = parameter(values, 'token')[0]?.valueString;
  const url = parameter(values, 'websocket-url')[0]?.valueUrl;
  if (!token || !url) return;
  socket = new WebSocket(url);
  socket.addEventListener('open', () => {
    retryDelay = 1000;
    socket.send(`bind-with-token: ${token}`);
    clearTimeout(rotation);
    rotation = setTimeout(() => socket?.close(), ROTATE_MS); // reconnects on a new one
  });
  socket.addEventListener('message', (message) => {
    let bundle = null;
    try {
      bundle = JSON.parse(message.data);
    } catch {
      return; // the channel's own text (an error line): nothing to show
    }
    if (isHandshake(bundle)) document.body.dataset.live = 'on'; // bound: changes arrive now
    const changed = changedTasks(bundle);
    if (changed.length) onChange(changed);
  });
  socket.addEventListener('close', () => {
    socket = null;
    document.body.dataset.live = 'off';
    if (!stopped) retryLater(onChange, onTrouble);
  });
}

function retryLater(onChange, onTrouble) {
  if (stopped) return;
  const delay = retryDelay;
  retryDelay = Math.min(retryDelay * 2, 30_000);
  setTimeout(() => {
    if (!stopped && currentSession()) startLive(onChange, onTrouble);
  }, delay);
}

// Sign-out: close the socket and delete the Subscription (its events go with it).
export async function stopLive({ deleteSubscription = false } = {}) {
  stopped = true;
  clearTimeout(rotation);
  if (socket) socket.close();
  socket = null;
  const id = currentSession()?.subscriptionId;
  if (deleteSubscription && id) {
    try {
      await api('DELETE', `/Subscription/${id}`);
    } catch {
      // gone already, or the session ended: its `end` tells an operator it may be removed
    }
  }
}
