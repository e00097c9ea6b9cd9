/**
 * The release calendar (DESIGN.md §8, issue 13 §5), as Hotpatch for Windows Server Azure Edition
 * keeps it: every month's security release comes on its second Tuesday ("Patch Tuesday"); in
 * January, April, July and October it is a planned baseline (a cumulative update that needs a
 * reboot), in the other months a hotpatch of the current baseline; when a fix cannot ship as a
 * hotpatch, an unplanned baseline replaces that month's hotpatch. Beside each hotpatch the feed
 * carries the same month's fixes as a cumulative update that needs a reboot, for machines that are
 * not enrolled in hotpatching.
 *
 * Pure: dates are calendar dates (YYYY-MM-DD, the manifests' releaseDate), compared in UTC.
 */
import type { Classification } from '../package/index.js';
import { isCriticalOrSecurity } from './azure.js';

export const MONTH_NAMES = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'] as const;

/** Months (1-12) whose release is a planned baseline. */
export const PLANNED_BASELINE_MONTHS: readonly number[] = [1, 4, 7, 10];

/** What a month's security release is. */
export type MonthKind = 'baseline' | 'hotpatch' | 'unplanned-baseline';

export interface CalendarMonth {
  /** 1-12. */
  month: number;
  name: (typeof MONTH_NAMES)[number];
  /** The month's release day, the second Tuesday: YYYY-MM-DD. */
  releaseDate: string;
  kind: MonthKind;
}

const pad = (n: number) => String(n).padStart(2, '0');
export const isoDate = (y: number, m: number, d: number) => `${y}-${pad(m)}-${pad(d)}`;

/** The second Tuesday of `month` (1-12) of `year`, YYYY-MM-DD. */
export function secondTuesday(year: number, month: number): string {
  const firstWeekday = new Date(Date.UTC(year, month - 1, 1)).getUTCDay(); // 0 = Sunday, 2 = Tuesday
  const firstTuesday = 1 + ((2 - firstWeekday + 7) % 7);
  return isoDate(year, month, firstTuesday + 7);
}

export const isPlannedBaselineMonth = (month: number) => PLANNED_BASELINE_MONTHS.includes(month);

/**
 * The year's calendar: one release per month. `unplannedMonths` are the months where an unplanned
 * baseline replaced the hotpatch (known only once it shipped: a feed tells, see checkCalendar).
 */
export function releaseCalendar(year: number, unplannedMonths: Iterable<number> = []): CalendarMonth[] {
  const unplanned = new Set(unplannedMonths);
  return MONTH_NAMES.map((name, i) => {
    const month = i + 1;
    const kind: MonthKind = isPlannedBaselineMonth(month) ? 'baseline' : unplanned.has(month) ? 'unplanned-baseline' : 'hotpatch';
    return { month, name, releaseDate: secondTuesday(year, month), kind };
  });
}

/** What the calendar check needs of a package (a manifest, or a feed's entry for one). */
export interface ReleasedPackage {
  id: string;
  kb: string;
  kind: 'baseline' | 'hotpatch';
  /** Baselines: planned (calendar) or unplanned (a zero-day fix that could not be a hotpatch). */
  planned?: boolean;
  /** A cumulative update: the hotpatch whose fixes it carries as whole files (a reboot). */
  equivalentHotpatch?: string;
  releaseDate: string;
  classification: Classification;
}

/**
 * What a package is on the calendar:
 * - `baseline`, `unplanned-baseline`, `hotpatch`: the month's security release;
 * - `cumulative-update`: a baseline that names its equivalent hotpatch — that month's fixes as a
 *   reboot update, for machines not enrolled in hotpatching;
 * - `non-security`: a classification other than Critical and Security; such updates are not
 *   security releases and keep no calendar (they are listed, never held to the second Tuesday).
 */
export type PackageRole = MonthKind | 'cumulative-update' | 'non-security';

export interface PlacedPackage {
  packageId: string;
  kbId: string;
  releaseDate: string;
  classification: Classification;
  role: PackageRole;
}

export interface CalendarProblem {
  packageId: string;
  kbId: string;
  releaseDate: string;
  /** Why it does not fit. */
  problem: string;
}

export interface CalendarCheck {
  year: number;
  months: (CalendarMonth & { packages: PlacedPackage[] })[];
  /** Packages of the year that do not fit the calendar (date or kind). */
  problems: CalendarProblem[];
}

const monthOf = (date: string) => Number(date.slice(5, 7));
const yearOf = (date: string) => Number(date.slice(0, 4));

/** The role a package plays on the calendar. */
export function packageRole(p: ReleasedPackage): PackageRole {
  if (!isCriticalOrSecurity([p.classification])) return 'non-security';
  if (p.kind === 'hotpatch') return 'hotpatch';
  if (p.equivalentHotpatch) return 'cumulative-update';
  return p.planned ? 'baseline' : 'unplanned-baseline';
}

const ROLE_WORDS: Record<PackageRole, string> = {
  baseline: 'a planned baseline',
  'unplanned-baseline': 'an unplanned baseline',
  hotpatch: 'a hotpatch',
  'cumulative-update': 'a cumulative update',
  'non-security': 'a non-security update',
};

/**
 * The year's calendar with the packages of `year` placed on it, and every package that does not
 * fit: a security release that is not on its month's second Tuesday, a planned baseline outside
 * January/April/July/October, a hotpatch (or its cumulative update) in a baseline month or in the
 * month an unplanned baseline replaced, an unplanned baseline in a planned baseline's month.
 */
export function checkCalendar(year: number, packages: readonly ReleasedPackage[]): CalendarCheck {
  const ofYear = packages.filter((p) => yearOf(p.releaseDate) === year);
  const placed = ofYear.map((p) => ({ p, role: packageRole(p) }));
  const unplannedMonths = placed.filter((x) => x.role === 'unplanned-baseline').map((x) => monthOf(x.p.releaseDate));
  const calendar = releaseCalendar(year, unplannedMonths.filter((m) => !isPlannedBaselineMonth(m)));
  const problems: CalendarProblem[] = [];
  const report = (p: ReleasedPackage, problem: string) => problems.push({ packageId: p.id, kbId: p.kb, releaseDate: p.releaseDate, problem });
  for (const { p, role } of placed) {
    if (role === 'non-security') continue;
    const month = calendar[monthOf(p.releaseDate) - 1];
    const what = `${ROLE_WORDS[role]} (${p.classification})`;
    if (p.releaseDate !== month.releaseDate) {
      report(p, `${what} released ${p.releaseDate}, outside the calendar: ${month.name}'s release day is the second Tuesday, ${month.releaseDate}`);
      continue;
    }
    if (role === 'baseline' && month.kind !== 'baseline') {
      report(p, `${what} in ${month.name}: planned baselines come in January, April, July and October`);
    } else if (role === 'unplanned-baseline' && month.kind === 'baseline') {
      report(p, `${what} in ${month.name}, a planned baseline's month: an unplanned baseline replaces a hotpatch month's release`);
    } else if ((role === 'hotpatch' || role === 'cumulative-update') && month.kind !== 'hotpatch') {
      const why = month.kind === 'baseline' ? 'a planned baseline month has no hotpatch' : 'the unplanned baseline replaced this month\'s hotpatch';
      report(p, `${what} in ${month.name}: ${why}`);
    }
  }
  const months = calendar.map((m) => ({
    ...m,
    packages: placed
      .filter((x) => monthOf(x.p.releaseDate) === m.month)
      .map(({ p, role }) => ({ packageId: p.id, kbId: p.kb, releaseDate: p.releaseDate, classification: p.classification, role })),
  }));
  return { year, months, problems };
}
