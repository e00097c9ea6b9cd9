/**
 * The machine's off-peak window and the 30-day rule of automatic patching (DESIGN.md §8): Azure
 * installs Critical and Security updates only in off-peak hours of the machine's time zone, within
 * 30 days of their release.
 *
 * A window is two wall-clock times in an IANA time zone (settings.ts; default 22:00–06:00: it
 * crosses midnight), so its length follows daylight saving time: 22:00–06:00 in Europe/Rome lasts 7 hours
 * the night the clocks go forward and 9 the night they go back. A wall time the clocks skip
 * (02:30 on the spring-forward night) is taken as the first instant after the gap; a wall time
 * that happens twice (on the fall-back night) as its first occurrence. Time zones come from the
 * ICU data Node carries (Intl), so nothing is downloaded and rules are as current as Node.
 *
 * Pure: every function takes the instant it judges; nothing here reads the clock.
 */
import { HpError } from '../errors.js';
import { DEFAULT_OFF_PEAK, type OffPeak } from './settings.js';

/** An update is installed within this many days of its release. */
export const INSTALL_WITHIN_DAYS = 30;

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;

/** `HH:MM` (settings.ts checked it) → minutes after midnight. */
const minuteOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    } catch {
      throw new HpError('BAD_TIME_ZONE', `"${timeZone}" is not an IANA time zone this system knows (e.g. Europe/Rome, America/New_York, UTC)`);
    }
    formatters.set(timeZone, f);
  }
  return f;
}

/** The wall clock at instant t in the zone, as if it were UTC (ms): comparable, and for arithmetic. */
function wallMs(t: number, timeZone: string): number {
  const p: Record<string, number> = {};
  for (const part of formatter(timeZone).formatToParts(new Date(t))) if (part.type !== 'literal') p[part.type] = Number(part.value);
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
}

/** The local calendar day of instant t: [year, month 1-12, day]. */
export function localDate(t: Date, timeZone: string): [number, number, number] {
  const w = new Date(wallMs(t.getTime(), timeZone));
  return [w.getUTCFullYear(), w.getUTCMonth() + 1, w.getUTCDate()];
}

/**
 * The instant the zone's clocks show `minute` on local day y-m-d (the day may overflow: Date.UTC
 * normalises it). A time the clocks skip gives the first instant after the gap; a time they show
 * twice, the first.
 */
export function localToInstant(timeZone: string, y: number, m: number, d: number, minute: number): Date {
  const wanted = Date.UTC(y, m - 1, d, 0, minute);
  // Offsets of the zone around that wall time (at most a day away from any real offset).
  const offsets = new Set([wanted - DAY_MS, wanted, wanted + DAY_MS].map((t) => wallMs(t, timeZone) - t));
  const exact = [...offsets].map((o) => wanted - o).filter((t) => wallMs(t, timeZone) === wanted);
  if (exact.length) return new Date(Math.min(...exact));
  // In a gap: the first instant whose wall clock is at or past the wanted time, found by bisection
  // between the instants the offsets before and after the change give (minute precision).
  let lo = wanted - Math.max(...offsets);
  let hi = wanted - Math.min(...offsets);
  while (hi - lo > MINUTE_MS) {
    const mid = lo + Math.floor((hi - lo) / 2 / MINUTE_MS) * MINUTE_MS;
    if (wallMs(mid, timeZone) >= wanted) hi = mid;
    else lo = mid;
  }
  return new Date(hi);
}

export interface WindowSpan {
  start: Date;
  end: Date;
}

/** The window that opens on local day y-m-d. */
function windowOpeningOn(timeZone: string, w: OffPeak, y: number, m: number, d: number): WindowSpan {
  const [start, end] = [minuteOf(w.start), minuteOf(w.end)];
  return { start: localToInstant(timeZone, y, m, d, start), end: localToInstant(timeZone, y, m, d + (end <= start ? 1 : 0), end) };
}

/** Windows opening from the local day before `t` on, in order (enough to judge any instant near t). */
function windowsNear(t: Date, timeZone: string, w: OffPeak, days = 3): WindowSpan[] {
  const [y, m, d] = localDate(t, timeZone);
  return Array.from({ length: days }, (_, i) => windowOpeningOn(timeZone, w, y, m, d - 1 + i));
}

/** The window `at` lies in (start inclusive, end exclusive), if any. */
export function windowAt(at: Date, timeZone: string, w: OffPeak = DEFAULT_OFF_PEAK): WindowSpan | undefined {
  return windowsNear(at, timeZone, w).find((s) => s.start <= at && at < s.end);
}

export const isInWindow = (at: Date, timeZone: string, w: OffPeak = DEFAULT_OFF_PEAK): boolean => windowAt(at, timeZone, w) !== undefined;

/** The first window that opens strictly after `after`. */
export function nextWindow(after: Date, timeZone: string, w: OffPeak = DEFAULT_OFF_PEAK): WindowSpan {
  const next = windowsNear(after, timeZone, w, 4).find((s) => s.start > after);
  if (!next) throw new HpError('INTERNAL', `no off-peak window found after ${after.toISOString()} in ${timeZone}`);
  return next;
}

export const nextWindowStart = (after: Date, timeZone: string, w: OffPeak = DEFAULT_OFF_PEAK): Date => nextWindow(after, timeZone, w).start;

/** The window `at` is in, else the next one: where work that is due at `at` can run. */
export const windowFrom = (at: Date, timeZone: string, w: OffPeak = DEFAULT_OFF_PEAK): WindowSpan => windowAt(at, timeZone, w) ?? nextWindow(at, timeZone, w);

/** When a release (its date, YYYY-MM-DD) was published: the start of that day, UTC. */
export const releaseInstant = (releaseDate: string): Date => new Date(`${releaseDate}T00:00:00Z`);

/** The end of the 30 days after a release (exclusive): automatic patching installs before it. */
export const installDeadline = (releaseDate: string): Date => new Date(releaseInstant(releaseDate).getTime() + INSTALL_WITHIN_DAYS * DAY_MS);

/** Whether an installation at `at` keeps the 30-day rule for an update released on `releaseDate`. */
export const withinInstallDays = (releaseDate: string, at: Date): boolean => at >= releaseInstant(releaseDate) && at < installDeadline(releaseDate);

/** Whole days from the release to `at` (0 on the release day). */
export const daysSinceRelease = (releaseDate: string, at: Date): number => Math.floor((at.getTime() - releaseInstant(releaseDate).getTime()) / DAY_MS);
