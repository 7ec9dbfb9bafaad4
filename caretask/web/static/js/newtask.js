// Create a task: the person is its requester; the new task's page opens.
import { api } from './api.js';
import { GROUP_EXTENSION } from './config.js';
import { markOwn } from './live.js';
import { markCurrentView, taskUrl } from './shell.js';
import { $, clearError, el, endOfDay, errorMessage, normalizeReference, showError } from './ui.js';

export function initNewTask(session) {
  markCurrentView('new');
  const teams = $('n-team');
  for (const team of session.teams || []) teams.append(el('option', { value: team, text: team }));
  if (session.teams?.length) teams.value = session.teams[0];
  if (!session.fhirUser) $('n-mine').disabled = true;
  document.body.dataset.loaded = 'true';
  $('new-task').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearError();
    const form = new FormData($('new-task'));
    const task = {
      resourceType: 'Task',
      status: 'requested',
      intent: 'unknown',
      description: String(form.get('description') || '').trim(),
    };
    if (session.fhirUser) task.requester = { reference: session.fhirUser };
    const patient = normalizeReference(String(form.get('patient') || ''), 'Patient');
    if (patient) task.for = { reference: patient };
    const due = String(form.get('due') || '');
    if (due) task.restriction = { period: { end: endOfDay(due) } };
    const team = String(form.get('team') || '');
    if (team) task.extension = [{ url: GROUP_EXTENSION, valueReference: { reference: team } }];
    const labels = String(form.get('labels') || '').split(',').map((l) => l.trim()).filter(Boolean);
    if (labels.length) task.input = labels.map((label) => ({ type: { text: 'label' }, valueString: label }));
    if (form.get('mine') && session.fhirUser) task.owner = { reference: session.fhirUser };
    const button = $('new-task').querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const answer = await api('POST', '/Task', { body: task, representation: true });
      markOwn(answer.body);
      const id = answer.body?.id || (answer.location || '').split('/').pop();
      location.assign(taskUrl(id));
    } catch (error) {
      if (error.kind !== 'session') showError(errorMessage(error));
      button.disabled = false;
    }
  });
}
