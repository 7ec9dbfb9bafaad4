// One scenario step through fhir-kit-client, as an app using it would call it.
// stdin: {"action", "baseUrl", "clientId", "clientSecret", "headers"?, ...}; stdout: one
// JSON object, {"error": ...} when the client threw (so the test can say what went wrong).
import { Client } from 'fhir-kit-client';

const input = JSON.parse(await new Response(process.stdin).text());

const client = new Client({ baseUrl: input.baseUrl });
// extra headers for every request (Prefer: return=representation in the canvas profile)
const options = input.headers ? { headers: input.headers } : {};

// fhir-kit-client finds the token endpoint (SMART configuration or CapabilityStatement)
// but has no client-credentials grant of its own: the app posts the form and sets the token
async function login() {
  const auth = await client.smartAuthMetadata();
  const response = await fetch(auth.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: input.clientId,
      client_secret: input.clientSecret,
    }),
  });
  if (response.status !== 200) {
    throw new Error(`token endpoint ${auth.tokenUrl} answered ${response.status}`);
  }
  client.bearerToken = (await response.json()).access_token;
  return auth.tokenUrl;
}

// the Task's identity as the client holds it; nulls when the server sent no body
function summary(task) {
  return { id: task?.id ?? null, versionId: task?.meta?.versionId ?? null, status: task?.status ?? null };
}

async function created() {
  const task = await client.create({ resourceType: 'Task', body: input.task, options });
  if (!task?.id) {
    throw new Error(`create gave the client no Task (${JSON.stringify(task)}): the 201 had no body`);
  }
  return task;
}

const actions = {
  async login(tokenUrl) {
    const bundle = await client.search({ resourceType: 'Task', searchParams: { _count: 1 }, options });
    return { tokenUrl, bundleType: bundle.type };
  },
  async create() {
    return summary(await client.create({ resourceType: 'Task', body: input.task, options }));
  },
  async read() {
    return summary(await client.read({ resourceType: 'Task', id: input.id, options }));
  },
  async search() {
    const bundle = await client.search({ resourceType: 'Task', searchParams: input.query, options });
    return { ids: (bundle.entry ?? []).map((entry) => entry.resource.id) };
  },
  async pages() {
    const pages = [];
    let bundle = await client.search({ resourceType: 'Task', searchParams: input.query, options });
    // a bound, so that a next link that never ends fails the test instead of hanging it
    while (bundle && pages.length < 50) {
      pages.push((bundle.entry ?? []).map((entry) => entry.resource.id));
      bundle = await client.nextPage({ bundle, options });
    }
    return { pages };
  },
  async update() {
    const task = await created();
    const updated = await client.update({
      resourceType: 'Task',
      id: task.id,
      body: { ...task, status: input.status },
      options,
    });
    return { created: summary(task), updated: summary(updated) };
  },
  async history() {
    const bundle = await client.history({ resourceType: 'Task', id: input.id, options });
    return {
      type: bundle.type,
      versions: (bundle.entry ?? []).map((entry) => entry.resource?.meta?.versionId),
    };
  },
};

let result;
try {
  const tokenUrl = await login();
  result = await actions[input.action](tokenUrl);
} catch (err) {
  const detail = err?.response ? ` ${JSON.stringify(err.response.data)}` : '';
  result = { error: `${String(err?.message ?? err)}${detail}` };
}
process.stdout.write(JSON.stringify(result));
