// Checks a command's --json output against the output contract twice: with the zod schema
// (src/contract) and with the JSON Schema the package ships (schemas/<command>.json, written by
// the build from the same zod schemas), so a mistake in either — or in the generation — fails.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { expect } from 'vitest';
import { OUTPUT_SCHEMAS, type OutputCommand } from '../src/contract/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ajv = new Ajv2020({ allErrors: true, strict: false });
// ajv-formats is CommonJS: its function is the default export, or (as Node's ESM sees it) that export's default.
const formats = addFormats as unknown as ((a: Ajv2020) => void) & { default?: (a: Ajv2020) => void };
(formats.default ?? formats)(ajv);

/** The shipped JSON Schema of a command's output, compiled once. */
const compiled = new Map<OutputCommand, ReturnType<typeof ajv.compile>>();
export function shippedValidator(command: OutputCommand) {
  let v = compiled.get(command);
  if (!v) {
    v = ajv.compile(JSON.parse(fs.readFileSync(path.join(root, 'schemas', `${command}.json`), 'utf8')));
    compiled.set(command, v);
  }
  return v;
}

/** Problems of `value` as `command`'s output, by either schema; [] when it conforms. */
export function contractProblems(command: OutputCommand, value: unknown): string[] {
  const problems: string[] = [];
  const z = OUTPUT_SCHEMAS[command].safeParse(value);
  if (!z.success) problems.push(...z.error.issues.map((i) => `zod ${i.path.join('.') || '(root)'}: ${i.message}`));
  const v = shippedValidator(command);
  if (!v(value)) problems.push(...(v.errors ?? []).map((e) => `json-schema ${e.instancePath || '(root)'}: ${e.message} ${JSON.stringify(e.params)}`));
  return problems;
}

export function expectConforms(command: OutputCommand, value: unknown): void {
  expect(value, `${command} printed no JSON`).toBeDefined();
  expect(contractProblems(command, value), `${command} --json: ${JSON.stringify(value)}`).toEqual([]);
}
