/**
 * ISO 8601 durations as Azure's maximumDuration takes them (`PT4H`, `PT1H30M`, `P1D`, `PT90S`).
 * Days, hours, minutes and seconds only: years, months and weeks have no fixed length (or are
 * not what a maintenance window is measured in), so they are refused rather than guessed.
 */
import { HpError } from '../errors.js';

const DURATION = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d{1,3})?)S)?)?$/;

/** Milliseconds of an ISO 8601 duration; USAGE for anything malformed, empty or zero. */
export function parseDuration(text: string, what = 'maximumDuration'): number {
  const m = DURATION.exec(text);
  const bad = () => new HpError('USAGE', `${what} "${text}" is not an ISO 8601 duration of days, hours, minutes and seconds (e.g. PT4H, PT1H30M, PT90S, P1D)`);
  if (!m || text.endsWith('T') || m.slice(1).every((g) => g === undefined)) throw bad();
  const [d, h, min, s] = m.slice(1).map((g) => (g === undefined ? 0 : Number(g)));
  const ms = Math.round((((d * 24 + h) * 60 + min) * 60 + s) * 1000);
  if (!Number.isSafeInteger(ms)) throw bad();
  if (ms === 0) throw new HpError('USAGE', `${what} "${text}" is a window of no time: nothing could be installed in it`);
  return ms;
}

/** A duration in milliseconds, written back as ISO 8601 (PT…). */
export function formatDuration(ms: number): string {
  const s = ms / 1000;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = Math.round((s % 60) * 1000) / 1000;
  return `PT${h ? `${h}H` : ''}${m ? `${m}M` : ''}${rest || (!h && !m) ? `${rest}S` : ''}`;
}
