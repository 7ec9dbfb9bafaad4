// One scenario step through @medplum/core's MedplumClient, as a Medplum app would call it.
// stdin: {"action", "baseUrl", "clientId", "clientSecret", "headers"?, ...}; stdout: one
// JSON object, {"error": ...} when the client threw (so the test can say what went wrong).
import { MedplumClient } from '@medplum/core';

const input = JSON.parse(await new Response(process.stdin).text());

const medplum = new MedplumClient({
  baseUrl: input.baseUrl,
  // caretask serves FHIR at its root and OAuth at /auth/token/, not Medplum's paths
  fhirUrlPath: '',
  tokenUrl: 'auth/token/',
  // every read must reach the server: the tests look at what it stored
  cacheTime: 0,
  fetch: globalThis.fetch,
});
// extra headers for every request (Prefer: return=representation in the canvas profile)
const options = input.headers ? { headers: input.headers } : {};

// the Task's identity as the client holds it; nulls when the server sent no body
function summary(task) {
  return { id: task?.id ?? null, versionId: task?.meta?.versionId ?? null, status: task?.status ?? null };
}

async function created() {
  const task = await medplum.createResource(input.task, options);
  if (!task?.id) {
    throw new Error(`create gave the client no Task (${JSON.stringify(task)}): the 201 had no body`);
  }
  return task;
}

const actions = {
  async login() {
    return { authenticated: medplum.isAuthenticated(0), token: Boolean(medplum.getAccessToken()) };
  },
  async create() {
    return summary(await medplum.createResource(input.task, options));
  },
  async read() {
    return summary(await medplum.readResource('Task', input.id, options));
  },
  async search() {
    const tasks = await medplum.searchResources('Task', input.query, options);
    return { ids: tasks.map((task) => task.id) };
  },
  async pages() {
    const pages = [];
    for await (const page of medplum.searchResourcePages('Task', input.query, options)) {
      pages.push(page.map((task) => task.id));
    }
    return { pages };
  },
  async update() {
    const task = await created();
    const updated = await medplum.updateResource({ ...task, status: input.status }, options);
    return { created: summary(task), updated: summary(updated) };
  },
  async history() {
    const bundle = await medplum.readHistory('Task', input.id, options);
    return {
      type: bundle.type,
      versions: (bundle.entry ?? []).map((entry) => entry.resource?.meta?.versionId),
    };
  },
};

let result;
try {
  await medplum.startClientLogin(input.clientId, input.clientSecret);
  result = await actions[input.action]();
} catch (err) {
  result = { error: String(err?.message ?? err), outcome: err?.outcome ?? null };
}
process.stdout.write(JSON.stringify(result));
