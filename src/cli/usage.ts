/**
 * Usage errors, found while yargs parses — before any command's handler runs. A command that
 * writes into running processes must never start on a misspelled option or a value it cannot
 * use: every check of the command line lives in the builders (coerce and check), so a handler
 * only ever sees arguments that are whole and valid. Each failure is HpError USAGE: exit 2.
 */
import fs from 'node:fs';
import type { z } from 'zod';
import { HpError } from '../errors.js';
import { fileKind } from '../package/read.js';

export const usage = (message: string) => new HpError('USAGE', message);

/** Highest PID Linux can hand out (PID_MAX_LIMIT on 64-bit). */
const PID_MAX = 4_194_304;

/**
 * yargs reports an unknown `--dry-run` as "dry-run, dryRun" (it expands every name to camelCase
 * as well): keep the name the user typed.
 */
export function tidyYargsMessage(msg: string): string {
  const m = /^(Unknown arguments?): (.*)$/.exec(msg);
  if (!m) return msg;
  const names = m[2].split(', ');
  const kept = names.filter((n) => !(/[A-Z]/.test(n) && names.some((o) => o !== n && o.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()) === n)));
  return `${kept.length === 1 ? 'Unknown argument' : 'Unknown arguments'}: ${kept.join(', ')}`;
}

/** yargs' .fail(): a usage error ends the parse (thrown), so no handler runs after it. */
export function failUsage(msg: string | undefined | null, err: Error | undefined): never {
  // A handler's own exception (they catch theirs; this would be a bug) is not a usage error.
  if (!msg && err && err.name !== 'YError') throw err;
  throw usage(tidyYargsMessage(msg ?? err?.message ?? 'bad usage'));
}

function one(flag: string, v: unknown): unknown {
  if (Array.isArray(v)) throw usage(`${flag} was given ${v.length} times; give it once`);
  return v;
}

/** A whole decimal number min..max; yargs hands over a number or, for other text, the text. */
function toWhole(flag: string, what: string, v: unknown, min: number, max: number): number {
  const text = String(v);
  const n = typeof v === 'number' ? v : /^\s*-?\d+\s*$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw usage(`${flag} expects ${what} (a whole number from ${min} to ${max}), got "${text}"`);
  }
  return n;
}

/** coerce for an option that takes one whole number. */
export const wholeNumber = (flag: string, what: string, min: number, max = Number.MAX_SAFE_INTEGER) => (v: unknown) => toWhole(flag, what, one(flag, v), min, max);

/** coerce for a repeatable option of whole numbers (`--pid 1 --pid 2`, `--pid 1 2`). */
export const wholeNumbers = (flag: string, what: string, min: number, max = Number.MAX_SAFE_INTEGER) => (v: unknown) =>
  (Array.isArray(v) ? v : [v]).map((x) => toWhole(flag, what, x, min, max));

export const pidValue = (flag = '--pid') => wholeNumber(flag, 'a process ID', 1, PID_MAX);
export const pidValues = (flag = '--pid') => wholeNumbers(flag, 'process IDs', 1, PID_MAX);

/** coerce for a file the command reads: it must exist and be a regular file (else exit 2). */
export const existingFile = (what: string) => (v: unknown) => {
  const file = String(one(what, v));
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw usage(`${what} ${file} cannot be read: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (!st.isFile()) throw usage(`${what} ${file} is ${fileKind(st)}, not a regular file`);
  return file;
};

/** coerce for a text value that must satisfy one field schema of the manifest (--kb, --release-date…). */
export const schemaValue = (flag: string, schema: z.ZodType<string>) => (v: unknown) => {
  const text = String(one(flag, v));
  const r = schema.safeParse(text);
  if (!r.success) throw usage(`${flag}: ${r.error.issues[0]?.message ?? 'not valid'}, got "${text}"`);
  return r.data;
};

/** coerce for a text value that must not be empty (`--out ''`). */
export const nonEmpty = (flag: string) => (v: unknown) => {
  const text = String(one(flag, v));
  if (text === '') throw usage(`${flag} must not be empty`);
  return text;
};
