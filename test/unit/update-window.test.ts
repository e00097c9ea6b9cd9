import { describe, expect, it } from 'vitest';
import { parseOffPeakWindow as parseWindow } from '../../src/update/settings.js';
import {
  daysSinceRelease,
  installDeadline,
  isInWindow,
  localToInstant,
  nextWindow,
  nextWindowStart,
  windowAt,
  windowFrom,
  withinInstallDays,
} from '../../src/update/window.js';

const at = (iso: string) => new Date(iso);
const iso = (d: Date | undefined) => d?.toISOString();
const HOUR = 3_600_000;

describe('off-peak window', () => {
  it('refuses a time zone that is not one', () => {
    expect(() => windowAt(at('2027-01-12T23:30:00Z'), 'Mars/Olympus_Mons')).toThrow(expect.objectContaining({ code: 'BAD_TIME_ZONE' }));
  });

  it('crosses midnight in the machine\'s zone: start inclusive, end exclusive', () => {
    const tz = 'Europe/Rome'; // CET, +01:00 in winter
    const w = windowAt(at('2027-01-12T23:30:00Z'), tz);
    expect(iso(w?.start)).toBe('2027-01-12T21:00:00.000Z');
    expect(iso(w?.end)).toBe('2027-01-13T05:00:00.000Z');
    expect(isInWindow(at('2027-01-12T21:00:00Z'), tz)).toBe(true);
    expect(isInWindow(at('2027-01-12T20:59:59Z'), tz)).toBe(false);
    expect(isInWindow(at('2027-01-13T04:59:59Z'), tz)).toBe(true);
    expect(isInWindow(at('2027-01-13T05:00:00Z'), tz)).toBe(false);
    // Just after midnight local: the window that opened the evening before.
    expect(iso(windowAt(at('2027-01-12T23:10:00Z'), tz)?.start)).toBe('2027-01-12T21:00:00.000Z');
    expect(iso(windowAt(at('2027-01-13T01:00:00Z'), tz)?.start)).toBe('2027-01-12T21:00:00.000Z');
    // Another zone, another instant: 22:00 in New York (EST, -05:00) is 03:00Z.
    expect(iso(windowAt(at('2027-01-13T04:00:00Z'), 'America/New_York')?.start)).toBe('2027-01-13T03:00:00.000Z');
    expect(isInWindow(at('2027-01-13T04:00:00Z'), 'Asia/Kolkata')).toBe(false); // 09:30 in India
  });

  it('finds the next window start after an instant, inside a window or not', () => {
    const tz = 'UTC';
    expect(iso(nextWindowStart(at('2027-02-09T10:00:00Z'), tz))).toBe('2027-02-09T22:00:00.000Z');
    expect(iso(nextWindowStart(at('2027-02-09T22:00:00Z'), tz))).toBe('2027-02-10T22:00:00.000Z'); // strictly after
    expect(iso(nextWindowStart(at('2027-02-10T03:00:00Z'), tz))).toBe('2027-02-10T22:00:00.000Z');
    expect(iso(windowFrom(at('2027-02-10T03:00:00Z'), tz).start)).toBe('2027-02-09T22:00:00.000Z'); // the current one
    expect(iso(windowFrom(at('2027-02-10T07:00:00Z'), tz).start)).toBe('2027-02-10T22:00:00.000Z');
    // A daytime window (not crossing midnight) works the same.
    const day = parseWindow('12:00-14:00');
    expect(iso(nextWindow(at('2027-02-09T13:00:00Z'), tz, day).start)).toBe('2027-02-10T12:00:00.000Z');
    expect(isInWindow(at('2027-02-09T13:59:00Z'), tz, day)).toBe(true);
    // Half-hour zones: 22:00 in Kolkata (+05:30) is 16:30Z.
    expect(iso(nextWindowStart(at('2027-02-09T00:00:00Z'), 'Asia/Kolkata'))).toBe('2027-02-09T16:30:00.000Z');
  });

  it('follows daylight saving time: 7 hours the night the clocks go forward, 9 the night they go back', () => {
    const tz = 'Europe/Rome'; // 2027: forward on 28 March 02:00→03:00, back on 31 October 03:00→02:00
    const spring = windowAt(at('2027-03-27T23:00:00Z'), tz)!;
    expect(iso(spring.start)).toBe('2027-03-27T21:00:00.000Z'); // 22:00 CET
    expect(iso(spring.end)).toBe('2027-03-28T04:00:00.000Z'); // 06:00 CEST
    expect(spring.end.getTime() - spring.start.getTime()).toBe(7 * HOUR);
    const autumn = windowAt(at('2027-10-30T23:00:00Z'), tz)!;
    expect(iso(autumn.start)).toBe('2027-10-30T20:00:00.000Z'); // 22:00 CEST
    expect(iso(autumn.end)).toBe('2027-10-31T05:00:00.000Z'); // 06:00 CET
    expect(autumn.end.getTime() - autumn.start.getTime()).toBe(9 * HOUR);
    // The evening after the change, 22:00 is an hour later in UTC than before it.
    expect(iso(nextWindowStart(spring.start, tz))).toBe('2027-03-28T20:00:00.000Z');
    // New York changes on other days (14 March, 7 November 2027).
    expect(iso(windowAt(at('2027-03-14T05:00:00Z'), 'America/New_York')?.end)).toBe('2027-03-14T10:00:00.000Z'); // 06:00 EDT
  });

  it('starts a window whose local start the clocks skip at the end of the gap, and one they show twice at its first occurrence', () => {
    const tz = 'Europe/Rome';
    // 02:30 does not exist on 28 March 2027: the clocks jump from 02:00 CET to 03:00 CEST (01:00Z).
    expect(iso(localToInstant(tz, 2027, 3, 28, 150))).toBe('2027-03-28T01:00:00.000Z');
    const w = parseWindow('02:30-04:00');
    expect(iso(windowAt(at('2027-03-28T01:30:00Z'), tz, w)?.start)).toBe('2027-03-28T01:00:00.000Z');
    // 02:30 happens twice on 31 October 2027 (CEST 00:30Z, then CET 01:30Z): the first.
    expect(iso(localToInstant(tz, 2027, 10, 31, 150))).toBe('2027-10-31T00:30:00.000Z');
    // Lord Howe Island moves its clocks by 30 minutes (02:00→02:30 on 3 October 2027).
    expect(iso(localToInstant('Australia/Lord_Howe', 2027, 10, 3, 135))).toBe('2027-10-02T15:30:00.000Z');
  });
});

describe('30 days after release', () => {
  it('counts 30 days from the start of the release day (UTC)', () => {
    expect(iso(installDeadline('2027-02-09'))).toBe('2027-03-11T00:00:00.000Z');
    expect(withinInstallDays('2027-02-09', at('2027-02-09T22:00:00Z'))).toBe(true);
    expect(withinInstallDays('2027-02-09', at('2027-03-10T23:59:59Z'))).toBe(true);
    expect(withinInstallDays('2027-02-09', at('2027-03-11T00:00:00Z'))).toBe(false);
    expect(withinInstallDays('2027-02-09', at('2027-02-08T23:00:00Z'))).toBe(false); // not released yet
    expect(daysSinceRelease('2027-02-09', at('2027-02-09T22:00:00Z'))).toBe(0);
    expect(daysSinceRelease('2027-02-09', at('2027-02-13T01:00:00Z'))).toBe(4);
  });
});
