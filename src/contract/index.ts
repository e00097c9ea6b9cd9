/**
 * The output contract: every command's `--json`, as zod schemas (commands.ts, built from the
 * shared pieces in shared.ts), and the JSON Schema of each, generated from them. The build writes
 * those into the package's schemas/ folder (scripts/write-schemas.mjs): schemas/<command>.json.
 */
import { z } from 'zod';
import * as c from './commands.js';

/** Command (as typed, "trust add" → trust-add) → the schema of what it prints with --json. */
export const OUTPUT_SCHEMAS = {
  apply: c.applyOutput,
  revert: c.revertOutput,
  status: c.statusOutput,
  history: c.historyOutput,
  reboot: c.rebootOutput,
  boot: c.bootOutput,
  try: c.tryOutput,
  pack: c.packOutput,
  keygen: c.keygenOutput,
  'trust-add': c.trustAddOutput,
  'trust-list': c.trustListOutput,
  'trust-remove': c.trustRemoveOutput,
  config: c.configOutput,
  assess: c.assessOutput,
  install: c.installOutput,
  'feed-build': c.feedBuildOutput,
  'feed-serve': c.feedServeOutput,
  schedule: c.scheduleOutput,
  run: c.runOutput,
  error: c.errorOutput,
} as const;

export type OutputCommand = keyof typeof OUTPUT_SCHEMAS;
export type Output<C extends OutputCommand> = z.output<(typeof OUTPUT_SCHEMAS)[C]>;

/** The JSON Schema (draft 2020-12) of one command's output. */
export function outputJsonSchema(command: OutputCommand): Record<string, unknown> {
  const schema = z.toJSONSchema(OUTPUT_SCHEMAS[command], { io: 'output', unrepresentable: 'throw' });
  return { ...schema, title: `hp-agent ${command.replace('-', ' ')} --json` };
}

export * from './commands.js';
export * as shared from './shared.js';
