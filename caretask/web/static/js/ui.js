// Small DOM helpers, the two message regions (notices: polite; alerts: assertive), and how
// FHIR values read to people. Text always goes in as text, never as HTML.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

const $ = (id) => document.getElementById(id);
export { $ };

// A passing message ("Note added.", "3 tasks changed — view updated"): replaces the last.
export function notify(text, { action } = {}) {
  const region = $('notices');
  region.replaceChildren(
    el('div', { class: 'notice' },
      el('span', { text }),
      action ? el('button', { type: 'button', class: 'link', onclick: action.run, text: action.label }) : null,
      el('button', {
        type: 'button', class: 'dismiss', 'aria-label': 'Dismiss message',
        onclick: () => region.replaceChildren(),
      }, '×')),
  );
}

// After an action: if the control that had focus is gone or hidden (a claimed row's
// button, Complete once the task is complete, a removed label's ×), focus moves to the
// notice's action, else to `fallback`, so that a keyboard user keeps their place.
export function keepFocus(fallback) {
  const active = document.activeElement;
  const lost = !active || active === document.body || !active.isConnected
    || active.offsetParent === null;
  if (!lost) return;
  const target = document.querySelector('#notices button.link')
    || (typeof fallback === 'string' ? $(fallback) : fallback) || $('main');
  target?.focus();
}

// A failure: what happened and how to recover, with a button that does it when there is one.
export function showError(text, { action } = {}) {
  const region = $('alerts');
  region.replaceChildren(
    el('div', { class: 'alert' },
      el('span', { text }),
      action ? el('button', { type: 'button', onclick: action.run, text: action.label }) : null,
      el('button', {
        type: 'button', class: 'dismiss', 'aria-label': 'Dismiss error',
        onclick: () => region.replaceChildren(),
      }, '×')),
  );
}

export function clearError() {
  $('alerts').replaceChildren();
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });

export function formatDateTime(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : dateTime.format(date);
}

export function formatDate(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : dateOnly.format(date);
}

// yyyy-mm-dd of a dateTime in this browser's zone, for <input type="date">
export function dateInputValue(value) {
  const date = new Date(value);
  if (!value || Number.isNaN(date.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

// the end of a chosen day in this browser's zone, as a FHIR instant
export function endOfDay(day) {
  return new Date(`${day}T23:59:59`).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function startOfDay(day) {
  return new Date(`${day}T00:00:00`).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function referenceText(reference, session) {
  if (!reference) return '';
  if (session && reference.reference === session.fhirUser) return 'You';
  return reference.display || reference.reference || '';
}

export function labelsOf(task) {
  return (task.input || [])
    .map((input, index) => ({ index, input }))
    .filter(({ input }) => input?.type?.text === 'label' && typeof input.valueString === 'string');
}

export function groupOf(task) {
  const extension = (task.extension || []).find((e) => e.url === 'http://schemas.canvasmedical.com/fhir/extensions/task-group');
  return extension?.valueReference || null;
}

export function dueOf(task) {
  return task.restriction?.period?.end || null;
}

export const STATUS_NAMES = {
  draft: 'Draft', requested: 'Requested', received: 'Received', accepted: 'Accepted',
  rejected: 'Rejected', ready: 'Ready', cancelled: 'Cancelled', 'in-progress': 'In progress',
  'on-hold': 'On hold', failed: 'Failed', completed: 'Completed',
  'entered-in-error': 'Entered in error',
};

export function statusName(code) {
  return STATUS_NAMES[code] || code || '';
}

// a reference typed by a person: "Patient/x", or a bare id given the type
export function normalizeReference(text, type) {
  const value = text.trim();
  if (!value) return '';
  if (value.startsWith(`${type}/`)) return value;
  return `${type}/${value}`;
}

// The failure of an action as a message (and the session-ended sign-in button is shown
// by the shell): a plain sentence, never an exception's text.
export function errorMessage(error) {
  if (error && typeof error.kind === 'string') return error.message;
  return 'Something went wrong in the board. Reload the page and try again.';
}
