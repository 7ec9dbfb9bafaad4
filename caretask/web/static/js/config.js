// What the server rendered into the page: where the API is, and the board's OAuth client.
const data = document.body.dataset;

export const config = Object.freeze({
  page: data.page,
  base: data.base,
  clientId: data.clientId,
  scope: data.scope,
  redirectUri: `${data.base}/app/callback`,
});

export const TOPIC = 'http://caretask.dev/fhir/SubscriptionTopic/task-changed';
export const IG = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
export const GROUP_EXTENSION = 'http://schemas.canvasmedical.com/fhir/extensions/task-group';
// the statuses of work still to do (R4 task-status); Canvas uses requested for all of them
export const OPEN_STATUSES = [
  'draft', 'requested', 'received', 'accepted', 'ready', 'in-progress', 'on-hold',
];
export const DONE_STATUSES = ['completed', 'cancelled', 'rejected', 'failed', 'entered-in-error'];
