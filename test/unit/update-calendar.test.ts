import { describe, expect, it } from 'vitest';
import { checkCalendar, packageRole, releaseCalendar, secondTuesday, type ReleasedPackage } from '../../src/update/calendar.js';

describe('release calendar', () => {
  it('puts each release on the second Tuesday of its month', () => {
    // Known Patch Tuesdays.
    expect(secondTuesday(2024, 1)).toBe('2024-01-09');
    expect(secondTuesday(2024, 10)).toBe('2024-10-08');
    expect(secondTuesday(2025, 4)).toBe('2025-04-08');
    expect(secondTuesday(2026, 12)).toBe('2026-12-08');
    // A month starting on a Tuesday: the 8th; on a Wednesday: the 14th (the latest possible).
    expect(secondTuesday(2027, 6)).toBe('2027-06-08');
    expect(secondTuesday(2027, 9)).toBe('2027-09-14');
    for (let y = 2020; y < 2040; y++) {
      for (let m = 1; m <= 12; m++) {
        const d = new Date(`${secondTuesday(y, m)}T00:00:00Z`);
        expect(d.getUTCDay()).toBe(2);
        expect(d.getUTCDate()).toBeGreaterThanOrEqual(8);
        expect(d.getUTCDate()).toBeLessThanOrEqual(14);
        expect(d.getUTCMonth()).toBe(m - 1);
      }
    }
  });

  it('has planned baselines in January, April, July and October, hotpatches between, and an unplanned baseline in place of a hotpatch', () => {
    const plain = releaseCalendar(2027);
    expect(plain.map((m) => m.kind)).toEqual([
      'baseline', 'hotpatch', 'hotpatch', 'baseline', 'hotpatch', 'hotpatch',
      'baseline', 'hotpatch', 'hotpatch', 'baseline', 'hotpatch', 'hotpatch',
    ]);
    const withUnplanned = releaseCalendar(2027, [6]);
    expect(withUnplanned[5]).toEqual({ month: 6, name: 'June', releaseDate: '2027-06-08', kind: 'unplanned-baseline' });
    expect(withUnplanned.filter((m) => m.kind === 'hotpatch')).toHaveLength(7);
  });
});

const pkg = (id: string, kind: 'baseline' | 'hotpatch', releaseDate: string, more: Partial<ReleasedPackage> = {}): ReleasedPackage => ({
  id, kb: `KB50${id.replace(/\D/g, '').padEnd(5, '0').slice(0, 5)}`, kind, releaseDate, classification: 'Security', ...(kind === 'baseline' ? { planned: true } : {}), ...more,
});

describe('calendar check of a feed', () => {
  const fitting = [
    pkg('b01', 'baseline', '2027-01-12'),
    pkg('h02', 'hotpatch', '2027-02-09'),
    pkg('c02', 'baseline', '2027-02-09', { planned: false, equivalentHotpatch: 'h02' }),
    pkg('b04', 'baseline', '2027-04-13'),
    pkg('u06', 'baseline', '2027-06-08', { planned: false }),
    pkg('n03', 'hotpatch', '2027-03-23', { classification: 'Updates' }),
  ];

  it('tells a cumulative update (it names its hotpatch) from an unplanned baseline', () => {
    expect(fitting.map((p) => packageRole(p))).toEqual(['baseline', 'hotpatch', 'cumulative-update', 'baseline', 'unplanned-baseline', 'non-security']);
  });

  it('finds nothing wrong with a feed that keeps the calendar, and places every package in its month', () => {
    const c = checkCalendar(2027, fitting);
    expect(c.problems).toEqual([]);
    expect(c.months[5].kind).toBe('unplanned-baseline');
    expect(c.months[1].packages.map((p) => [p.packageId, p.role])).toEqual([['h02', 'hotpatch'], ['c02', 'cumulative-update']]);
    expect(c.months[2].packages.map((p) => p.role)).toEqual(['non-security']);
  });

  it('reports every package whose date or kind does not fit, and why', () => {
    const c = checkCalendar(2027, [
      ...fitting,
      pkg('oob', 'hotpatch', '2027-08-24'), // out of band: a Tuesday, but the fourth
      pkg('b05', 'baseline', '2027-05-11'), // planned baseline in a hotpatch month
      pkg('h07', 'hotpatch', '2027-07-13'), // hotpatch in a baseline month
      pkg('h06', 'hotpatch', '2027-06-08'), // hotpatch in the month the unplanned baseline took
      pkg('c07', 'baseline', '2027-07-13', { planned: false, equivalentHotpatch: 'h07' }), // cumulative update in a baseline month
      pkg('u10', 'baseline', '2027-10-12', { planned: false }), // unplanned baseline in a planned month
      pkg('old', 'hotpatch', '2026-08-24'), // another year: not this calendar's business
    ]);
    const byId = Object.fromEntries(c.problems.map((p) => [p.packageId, p.problem]));
    expect(Object.keys(byId).sort()).toEqual(['b05', 'c07', 'h06', 'h07', 'oob', 'u10']);
    expect(byId.oob).toMatch(/released 2027-08-24, outside the calendar: August's release day is the second Tuesday, 2027-08-10/);
    expect(byId.b05).toMatch(/planned baseline .* in May: planned baselines come in January, April, July and October/);
    expect(byId.h07).toMatch(/hotpatch .* in July: a planned baseline month has no hotpatch/);
    expect(byId.u10).toMatch(/unplanned baseline .* in October, a planned baseline's month/);
    expect(byId.h06).toMatch(/hotpatch .* in June: the unplanned baseline replaced this month's hotpatch/);
    expect(byId.c07).toMatch(/cumulative update .* in July: a planned baseline month has no hotpatch/);
  });

  it('holds a non-security package to no calendar', () => {
    const c = checkCalendar(2027, [pkg('u06', 'baseline', '2027-06-08', { planned: false }), pkg('n06', 'hotpatch', '2027-06-08', { classification: 'Updates' }), pkg('n05', 'baseline', '2027-05-27', { classification: 'FeaturePack' })]);
    expect(c.problems).toEqual([]);
    expect(c.months[5].kind).toBe('unplanned-baseline');
  });
});
