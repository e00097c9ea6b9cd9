/**
 * The agent's one notion of "now". Update management is judged by dates (release calendar,
 * off-peak windows, the 30-day rule, history), and tests must replay a year against real
 * processes in seconds: `HP_AGENT_NOW=<ISO date-time>` fixes now for a one-shot command, and the
 * automatic loop passes its simulated time explicitly. Everything that records or compares a
 * date of the update model asks this module, never `new Date()`. (Lock ages and pause timings
 * measure real time and keep using the system clock.)
 */
import { HpError } from './errors.js';

export const NOW_ENV = 'HP_AGENT_NOW';

/** Parses an ISO 8601 date-time with an explicit zone (`Z` or ±hh:mm); refuses anything else. */
export function parseIsoDateTime(text: string, what = 'date-time'): Date {
  const m = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/.exec(text);
  const d = new Date(text);
  if (!m || Number.isNaN(d.getTime())) {
    throw new HpError('BAD_DATE_TIME', `${what} "${text}" is not an ISO 8601 date-time with a zone (e.g. 2026-12-08T23:00:00Z)`);
  }
  return d;
}

/** Now: HP_AGENT_NOW when set (validated), else the system clock. */
export function now(): Date {
  const fixed = process.env[NOW_ENV];
  return fixed ? parseIsoDateTime(fixed, NOW_ENV) : new Date();
}

export const nowIso = (): string => now().toISOString();
