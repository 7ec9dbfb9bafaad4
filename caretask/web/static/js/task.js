// A task's page: its facts, notes as a timeline, the history of its changes, and the
// actions. Every change is a JSON Patch with If-Match: a 412 means someone else changed
// the task first, and the page shows the latest version instead of overwriting it.
import { api, getTask, operation, patchTask, writesPending } from './api.js';
import { OPEN_STATUSES } from './config.js';
import { isOwn, markOwn, startLive } from './live.js';
import { markCurrentView } from './shell.js';
import {
  $, clearError, dateInputValue, dueOf, el, endOfDay, errorMessage, formatDate, formatDateTime,
  groupOf, keepFocus, labelsOf, normalizeReference, notify, referenceText, showError, statusName,
} from './ui.js';

let session = null;
let taskId = '';
let task = null;
let etag = null;

function text(id, value) {
  $(id).textContent = value || '—';
}

function renderLabels() {
  const list = $('t-labels');
  const labels = labelsOf(task);
  if (!labels.length) {
    list.replaceChildren(el('li', { class: 'none', text: 'No labels' }));
    return;
  }
  list.replaceChildren(...labels.map(({ index, input }) => el('li', {},
    el('span', { text: input.valueString }),
    el('button', {
      type: 'button',
      class: 'remove',
      'aria-label': `Remove label ${input.valueString}`,
      onclick: () => removeLabel(index, input.valueString),
    }, '×'))));
}

function renderNotes() {
  const notes = [...(task.note || [])].reverse(); // newest first
  $('notes').replaceChildren(...(notes.length ? notes.map((note) => el('li', {},
    el('p', { class: 'meta' },
      el('span', { text: referenceText(note.authorReference, session) || 'Unknown author' }),
      note.time ? el('time', { datetime: note.time, text: ` · ${formatDateTime(note.time)}` }) : null),
    el('p', { class: 'note-text', text: note.text || '' }))) : [el('li', { class: 'none', text: 'No notes yet.' })]));
}

function render() {
  const open = OPEN_STATUSES.includes(task.status);
  const mine = task.owner?.reference && task.owner.reference === session.fhirUser;
  document.title = `${task.description || 'Task'} · caretask`;
  $('task-title').textContent = task.description || '(no description)';
  text('t-status', statusName(task.status));
  text('t-patient', referenceText(task.for));
  text('t-owner', task.owner ? referenceText(task.owner, session) : 'Nobody');
  const due = dueOf(task);
  const overdue = open && due && new Date(due) < new Date();
  text('t-due', due ? `${formatDate(due)}${overdue ? ' (overdue)' : ''}` : '');
  $('t-due').classList.toggle('overdue', Boolean(overdue));
  text('t-team', referenceText(groupOf(task)));
  text('t-requester', referenceText(task.requester, session));
  text('t-authored', formatDateTime(task.authoredOn));
  text('t-version', task.meta?.versionId ? `${task.meta.versionId}, ${formatDateTime(task.meta.lastUpdated)}` : '');
  renderLabels();
  renderNotes();
  $('claim').hidden = !open || Boolean(task.owner);
  $('release').hidden = !open || !mine;
  $('complete').hidden = !open;
  $('cancel').hidden = !open;
  if (document.activeElement !== $('due-date')) $('due-date').value = due ? dateInputValue(due) : '';
  $('task').setAttribute('aria-busy', 'false');
  document.body.dataset.loaded = 'true';
}

// what changed from one version to the next, in words
function differences(before, after) {
  if (!before) {
    // the oldest version shown: the first, or the oldest of a long history's last page
    return after.meta?.versionId === '1' ? ['Created'] : ['Earlier changes are not shown'];
  }
  const out = [];
  if (before.status !== after.status) out.push(`Status ${statusName(before.status)} → ${statusName(after.status)}`);
  const owner = (t) => t.owner?.reference || '';
  if (owner(before) !== owner(after)) {
    out.push(owner(after) ? `Owner → ${referenceText(after.owner, session)}` : 'Released (no owner)');
  }
  if (dueOf(before) !== dueOf(after)) out.push(dueOf(after) ? `Due date → ${formatDate(dueOf(after))}` : 'Due date removed');
  if ((before.description || '') !== (after.description || '')) out.push('Description changed');
  if ((before.for?.reference || '') !== (after.for?.reference || '')) out.push('Patient changed');
  const labels = (t) => new Set(labelsOf(t).map(({ input }) => input.valueString));
  const a = labels(before);
  const b = labels(after);
  for (const label of b) if (!a.has(label)) out.push(`Label added: ${label}`);
  for (const label of a) if (!b.has(label)) out.push(`Label removed: ${label}`);
  const added = (after.note || []).slice((before.note || []).length);
  for (const note of added) {
    const author = referenceText(note.authorReference, session);
    out.push(author ? `Note added by ${author}` : 'Note added');
  }
  return out.length ? out : ['Updated'];
}

function renderHistory(bundle) {
  const entries = (bundle.entry || []).filter((e) => e.resource || e.request);
  const items = entries.map((entry, index) => {
    const older = entries[index + 1]?.resource || null; // newest first
    const resource = entry.resource;
    const when = resource?.meta?.lastUpdated || entry.response?.lastModified;
    const what = resource ? differences(older, resource) : ['Deleted'];
    const version = resource?.meta?.versionId || '';
    return el('li', {},
      el('p', { class: 'meta' },
        el('span', { text: version ? `Version ${version}` : 'Change' }),
        when ? el('time', { datetime: when, text: ` · ${formatDateTime(when)}` }) : null),
      el('ul', { class: 'changes' }, what.map((line) => el('li', { text: line }))));
  });
  $('history').replaceChildren(...(items.length ? items : [el('li', { class: 'none', text: 'No history.' })]));
}

async function loadHistory() {
  try {
    const answer = await api('GET', `/Task/${encodeURIComponent(taskId)}/_history?_count=50`);
    renderHistory(answer.body);
  } catch (error) {
    if (error.kind !== 'session') {
      $('history').replaceChildren(el('li', { class: 'none', text: `The history could not be loaded. ${errorMessage(error)}` }));
    }
  }
}

async function load() {
  try {
    const answer = await getTask(taskId);
    task = answer.body;
    etag = answer.etag;
    render();
  } catch (error) {
    $('task').setAttribute('aria-busy', 'false');
    document.body.dataset.loaded = 'true'; // loaded: with what went wrong
    if (error.kind === 'not-found') {
      $('task-title').textContent = 'Task not found';
      showError('This task does not exist, or it was deleted. Go back to the board to find your work.');
    } else if (error.kind !== 'session') {
      showError(errorMessage(error), { action: { label: 'Try again', run: () => load() } });
    }
    return;
  }
  await loadHistory();
}

// apply an answer that carries the new version of the task
function took(answer, message) {
  task = answer.body;
  etag = answer.etag || (task?.meta?.versionId ? `W/"${task.meta.versionId}"` : null);
  markOwn(task);
  render();
  notify(message);
  keepFocus('task-title');
  loadHistory();
}

async function change(operations, message) {
  clearError();
  try {
    took(await patchTask(taskId, operations, etag), message);
    return true;
  } catch (error) {
    if (error.kind === 'session') return false;
    showError(errorMessage(error));
    if (error.kind === 'changed' || error.kind === 'not-found' || error.kind === 'conflict') await load();
    keepFocus('task-title');
    return false;
  }
}

async function runOperation(name, message) {
  clearError();
  try {
    took(await operation(`/Task/${encodeURIComponent(taskId)}/$${name}`), message);
  } catch (error) {
    if (error.kind === 'session') return;
    if (error.kind === 'conflict') {
      showError('Someone else owns this task now, so it cannot be claimed. The latest version is shown.');
    } else {
      showError(errorMessage(error));
    }
    await load();
    keepFocus('task-title');
  }
}

function setStatus(status, message) {
  return change([
    { op: 'test', path: '/status', value: task.status },
    { op: 'replace', path: '/status', value: status },
  ], message);
}

function addToList(path, list, value) {
  return list && list.length ? { op: 'add', path: `${path}/-`, value } : { op: 'add', path, value: [value] };
}

function removeLabel(index, label) {
  change([
    { op: 'test', path: `/input/${index}/valueString`, value: label },
    { op: 'remove', path: `/input/${index}` },
  ], `Label “${label}” removed.`);
}

function setDue(day) {
  const end = endOfDay(day);
  if (!task.restriction) return [{ op: 'add', path: '/restriction', value: { period: { end } } }];
  if (!task.restriction.period) return [{ op: 'add', path: '/restriction/period', value: { end } }];
  return [{ op: 'add', path: '/restriction/period/end', value: end }];
}

function onSubmit(id, handler) {
  $(id).addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = $(id);
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await handler(new FormData(form), form);
    } finally {
      button.disabled = false;
    }
  });
}

let waiting = [];
let timer = null;

// another person's (or system's) change of this task: once this tab's own writes are
// answered, a version it neither wrote nor shows yet is reloaded in place
function changedElsewhere(tasks) {
  waiting.push(...tasks.filter((t) => t.id === taskId));
  if (waiting.length && !timer) timer = setTimeout(settle, 150);
}

async function settle() {
  if (writesPending()) {
    timer = setTimeout(settle, 100);
    return;
  }
  const current = Number(task?.meta?.versionId || 0);
  const newer = waiting.filter((t) => !isOwn(t) && Number(t.version) > current);
  waiting = [];
  timer = null;
  if (!newer.length) return;
  await load();
  notify('This task was changed by someone else — showing the latest version.');
}

export async function initTask(current) {
  session = current;
  taskId = $('task').dataset.taskId;
  markCurrentView(null);
  $('claim').addEventListener('click', () => runOperation('claim', 'You claimed this task.'));
  $('release').addEventListener('click', () => runOperation('release', 'You released this task: it has no owner now.'));
  $('complete').addEventListener('click', () => setStatus('completed', 'Task completed.'));
  $('cancel').addEventListener('click', () => setStatus('cancelled', 'Task cancelled.'));
  onSubmit('note-form', async (form, element) => {
    const value = String(form.get('text') || '').trim();
    if (!value) return;
    const note = { text: value, time: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') };
    if (session.fhirUser) note.authorReference = { reference: session.fhirUser };
    if (await change([addToList('/note', task.note, note)], 'Note added.')) element.reset();
  });
  onSubmit('assign-form', async (form, element) => {
    const owner = normalizeReference(String(form.get('owner') || ''), 'Practitioner');
    if (!owner) return;
    if (await change([{ op: 'add', path: '/owner', value: { reference: owner } }], `Task reassigned to ${owner}.`)) element.reset();
  });
  onSubmit('due-form', async (form) => {
    const day = String(form.get('due') || '');
    if (day) await change(setDue(day), `Due date changed to ${formatDate(endOfDay(day))}.`);
  });
  onSubmit('label-form', async (form, element) => {
    const label = String(form.get('label') || '').trim();
    if (!label) return;
    const input = { type: { text: 'label' }, valueString: label };
    if (await change([addToList('/input', task.input, input)], `Label “${label}” added.`)) element.reset();
  });
  await load();
  startLive(changedElsewhere, (message) => notify(message));
}
