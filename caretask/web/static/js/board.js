// The lists: My tasks, My teams' queue, Unassigned, Overdue; filters, sort, paging; claim
// and claim next; refreshed in place when someone else changes a task.
import { operation, searchTasks, writesPending } from './api.js';
import { OPEN_STATUSES } from './config.js';
import { isOwn, markOwn, startLive } from './live.js';
import { markCurrentView, taskUrl } from './shell.js';
import {
  $, clearError, dueOf, el, endOfDay, errorMessage, formatDate, labelsOf, normalizeReference,
  keepFocus, notify, referenceText, showError, startOfDay, statusName,
} from './ui.js';

const VIEWS = {
  mine: {
    title: 'My tasks',
    help: 'Open tasks you own.',
    criteria: (session) => [['owner', session.fhirUser]],
  },
  team: {
    title: "My teams' queue",
    help: "Open tasks of your teams that nobody has claimed yet. Claim next takes the first one.",
    criteria: (session) => [['group', session.teams.join(',')], ['owner:missing', 'true']],
  },
  unassigned: {
    title: 'Unassigned',
    help: 'Open tasks that nobody owns.',
    criteria: () => [['owner:missing', 'true']],
  },
  overdue: {
    title: 'Overdue',
    help: 'Open tasks whose due date has passed.',
    criteria: () => [['due', `lt${new Date().toISOString().replace(/\.\d{3}Z$/, 'Z')}`]],
  },
};
const SORTS = new Set(['due', '-due', '-authored-on', '-_lastUpdated']);
const COUNTS = new Set(['25', '50', '100']);
const STATUSES = new Set(['open', 'requested', 'in-progress', 'on-hold', 'completed', 'cancelled', 'any']);
const FILTER_FIELDS = ['label', 'status', 'patient', 'due_from', 'due_to', 'sort', 'count'];

let session = null;
let shown = []; // the tasks on screen
let loading = null;

// the board's own address holds the view, filters and page: links and Back work
function readState() {
  const query = new URLSearchParams(location.search);
  const view = VIEWS[query.get('view')] ? query.get('view') : 'mine';
  const pick = (name, allowed, fallback) => (allowed.has(query.get(name)) ? query.get(name) : fallback);
  const offset = Math.max(0, Number.parseInt(query.get('offset') || '0', 10) || 0);
  return {
    view,
    label: (query.get('label') || '').trim(),
    status: pick('status', STATUSES, 'open'),
    patient: (query.get('patient') || '').trim(),
    due_from: /^\d{4}-\d{2}-\d{2}$/.test(query.get('due_from') || '') ? query.get('due_from') : '',
    due_to: /^\d{4}-\d{2}-\d{2}$/.test(query.get('due_to') || '') ? query.get('due_to') : '',
    sort: pick('sort', SORTS, 'due'),
    count: pick('count', COUNTS, '25'),
    offset,
  };
}

function writeState(state, { push = true } = {}) {
  const query = new URLSearchParams({ view: state.view });
  for (const name of FILTER_FIELDS) {
    const defaults = { status: 'open', sort: 'due', count: '25' };
    if (state[name] && state[name] !== defaults[name]) query.set(name, state[name]);
  }
  if (state.offset) query.set('offset', String(state.offset));
  const url = `${location.pathname}?${query}`;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
}

// the search's filters (what claim next takes too), without paging
function criteria(state) {
  const pairs = [...VIEWS[state.view].criteria(session)];
  if (state.status === 'open') pairs.push(['status', OPEN_STATUSES.join(',')]);
  else if (state.status !== 'any') pairs.push(['status', state.status]);
  if (state.label) pairs.push(['label', state.label]);
  if (state.patient) pairs.push(['patient', normalizeReference(state.patient, 'Patient')]);
  if (state.due_from) pairs.push(['due', `ge${startOfDay(state.due_from)}`]);
  if (state.due_to) pairs.push(['due', `le${endOfDay(state.due_to)}`]);
  pairs.push(['_sort', state.sort]);
  return pairs;
}

function fillForm(state) {
  $('f-view').value = state.view;
  $('f-label').value = state.label;
  $('f-status').value = state.status;
  $('f-patient').value = state.patient;
  $('f-due-from').value = state.due_from;
  $('f-due-to').value = state.due_to;
  $('f-sort').value = state.sort;
  $('f-count').value = state.count;
}

function offsetOf(bundle, relation) {
  const link = (bundle.link || []).find((l) => l.relation === relation);
  if (!link) return null;
  const query = link.url.includes('?') ? link.url.slice(link.url.indexOf('?') + 1) : '';
  return Number.parseInt(new URLSearchParams(query).get('_offset') || '0', 10) || 0;
}

function claimButton(task) {
  if (task.owner || !OPEN_STATUSES.includes(task.status)) return null;
  return el('button', {
    type: 'button',
    class: 'small',
    'aria-label': `Claim: ${task.description || 'task'}`,
    onclick: () => claim(task),
  }, 'Claim');
}

function row(task) {
  const due = dueOf(task);
  const open = OPEN_STATUSES.includes(task.status);
  const overdue = open && due && new Date(due) < new Date();
  const labels = labelsOf(task).map(({ input }) => el('li', { text: input.valueString }));
  return el('tr', { class: overdue ? 'overdue' : null, 'data-task-id': task.id },
    el('th', { scope: 'row', 'data-label': 'Task' },
      el('a', { href: taskUrl(task.id), text: task.description || '(no description)' })),
    el('td', { 'data-label': 'Patient', text: referenceText(task.for) || '—' }),
    el('td', { 'data-label': 'Due' }, due ? formatDate(due) : '—',
      overdue ? el('span', { class: 'badge overdue-badge', text: 'overdue' }) : null),
    el('td', { 'data-label': 'Status', text: statusName(task.status) }),
    el('td', { 'data-label': 'Owner', text: referenceText(task.owner, session) || 'Nobody' }),
    el('td', { 'data-label': 'Labels' }, labels.length ? el('ul', { class: 'labels' }, labels) : '—'),
    el('td', { class: 'row-actions' }, claimButton(task)),
  );
}

function render(state, bundle) {
  const tasks = (bundle.entry || []).map((e) => e.resource).filter((r) => r?.resourceType === 'Task');
  shown = tasks;
  const body = $('tasks').querySelector('tbody');
  if (!tasks.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: '7', class: 'empty', text: 'No tasks here.' })));
  } else {
    body.replaceChildren(...tasks.map(row));
  }
  const total = typeof bundle.total === 'number' ? bundle.total : null;
  const first = tasks.length ? state.offset + 1 : 0;
  const last = state.offset + tasks.length;
  $('summary').textContent = total === null
    ? `Showing ${first}–${last}.`
    : `Showing ${first}–${last} of ${total} task${total === 1 ? '' : 's'}.`;
  $('page-info').textContent = tasks.length ? `${first}–${last}` : '';
  const next = offsetOf(bundle, 'next');
  const previous = state.offset > 0 ? Math.max(0, state.offset - Number(state.count)) : null;
  const nextButton = $('next-page');
  const prevButton = $('prev-page');
  nextButton.disabled = next === null;
  prevButton.disabled = previous === null;
  nextButton.dataset.offset = next ?? '';
  prevButton.dataset.offset = previous ?? '';
  $('tasks').setAttribute('aria-busy', 'false');
  document.body.dataset.loaded = 'true';
  performance.mark('caretask:tasks-rendered'); // for benchmarks.board, in the browser's clock
}

async function load({ quiet = false } = {}) {
  const state = readState();
  const view = VIEWS[state.view];
  document.title = `${view.title} · caretask`;
  $('view-title').textContent = view.title;
  $('tasks-caption').textContent = view.title;
  $('view-help').textContent = view.help;
  const queue = (state.view === 'team' && session.teams.length) || state.view === 'unassigned';
  $('claim-next').hidden = !queue;
  markCurrentView(state.view);
  fillForm(state);
  if (state.view === 'team' && !session.teams.length) {
    render(state, { entry: [], total: 0 });
    $('summary').textContent = 'You are not on any team, so there is no team queue to show.';
    return;
  }
  if (!session.fhirUser && state.view === 'mine') {
    render(state, { entry: [], total: 0 });
    $('summary').textContent = 'Your account is not linked to a practitioner, so it owns no tasks.';
    return;
  }
  const params = [...criteria(state), ['_count', state.count]];
  if (state.offset) params.push(['_offset', String(state.offset)]);
  if (!quiet) $('tasks').setAttribute('aria-busy', 'true');
  const request = searchTasks(params);
  loading = request;
  lastLoad = Date.now();
  try {
    const answer = await request;
    if (loading !== request) return; // a newer load is on its way
    if (!quiet) clearError();
    render(state, answer.body);
  } catch (error) {
    if (loading !== request) return;
    $('tasks').setAttribute('aria-busy', 'false');
    document.body.dataset.loaded = 'true'; // loaded: with what went wrong
    if (error.kind !== 'session') {
      showError(errorMessage(error), { action: { label: 'Try again', run: () => load() } });
    }
  }
}

async function claim(task) {
  clearError();
  try {
    const answer = await operation(`/Task/${encodeURIComponent(task.id)}/$claim`);
    markOwn(answer.body);
    notify(`You claimed “${task.description || 'the task'}”.`, {
      action: { label: 'Open it', run: () => location.assign(taskUrl(task.id)) },
    });
  } catch (error) {
    if (error.kind === 'conflict') {
      showError('Someone else claimed this task first. The list is updated.');
    } else if (error.kind !== 'session') {
      showError(errorMessage(error));
    }
  }
  await load({ quiet: true });
  keepFocus('main');
}

async function claimNext() {
  clearError();
  const state = readState();
  const search = new URLSearchParams(criteria(state)).toString();
  try {
    const answer = await operation('/Task/$claim-next', [{ name: 'criteria', valueString: search }]);
    markOwn(answer.body);
    location.assign(taskUrl(answer.body.id));
  } catch (error) {
    if (error.kind === 'not-found') {
      notify('Nothing left to claim here: every matching task has an owner.');
    } else if (error.kind !== 'session') {
      showError(errorMessage(error));
    }
  }
}

let pending = [];
let timer = null;
let lastLoad = 0;
// changes to tasks not on screen (one may have entered the view) refresh the list at most
// this often: every task write anywhere is an event here
const QUIET_MS = 2000;

// someone else's changes: gathered for a moment (and until this tab's own writes are
// answered, so that they are known as its own), then one refresh and one notice
function changed(tasks) {
  pending.push(...tasks);
  if (!timer) timer = setTimeout(settle, 150);
}

async function settle() {
  timer = null;
  if (writesPending()) {
    timer = setTimeout(settle, 100);
    return;
  }
  pending = pending.filter((t) => !isOwn(t));
  if (!pending.length) return;
  const ids = new Set(pending.map((t) => t.id));
  const before = shown.filter((t) => ids.has(t.id));
  const wait = before.length ? 0 : lastLoad + QUIET_MS - Date.now();
  if (wait > 0) {
    timer = setTimeout(settle, wait);
    return;
  }
  pending = [];
  await load({ quiet: true });
  const after = shown.filter((t) => ids.has(t.id));
  // only changes to tasks that were or now are in the view are worth a word
  const touched = new Map([...before, ...after].map((t) => [t.id, t]));
  if (touched.size === 1) {
    const [task] = touched.values();
    notify(`Task “${task.description || task.id}” was changed by someone else — view updated.`);
  } else if (touched.size > 1) {
    notify(`${touched.size} tasks changed — view updated.`);
  }
}

export async function initBoard(current) {
  session = current;
  const state = readState();
  writeState(state, { push: false });
  // on a phone the filters fold away unless some are set: the list comes first
  const active = FILTER_FIELDS.some((name) => !['status', 'sort', 'count'].includes(name) && state[name]);
  if (window.matchMedia('(max-width: 40rem)').matches && !active) $('filters-box').open = false;
  $('filters').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = new FormData($('filters'));
    const next = { view: readState().view, offset: 0 };
    for (const name of FILTER_FIELDS) next[name] = String(form.get(name) || '').trim();
    writeState(next);
    load();
  });
  $('clear-filters').addEventListener('click', () => {
    writeState({ view: readState().view, offset: 0 });
    load();
  });
  for (const id of ['next-page', 'prev-page']) {
    $(id).addEventListener('click', () => {
      const offset = $(id).dataset.offset;
      if (offset === '') return;
      writeState({ ...readState(), offset: Number(offset) });
      load().then(() => $('view-title').scrollIntoView({ block: 'start' }));
    });
  }
  $('claim-next').addEventListener('click', claimNext);
  window.addEventListener('popstate', () => load());
  await load(); // the list first: live updates can wait the few ms it takes
  startLive(changed, (text) => notify(text));
}
