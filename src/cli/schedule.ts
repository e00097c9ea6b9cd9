/** `hp-agent schedule`: the release calendar of a year, checked against a feed. */
import type { Argv } from 'yargs';
import { now } from '../clock.js';
import type { Output } from '../contract/index.js';
import { withSession } from '../agent/session.js';
import { trustDir } from '../package/index.js';
import { checkCalendar, type CalendarCheck, type PackageRole } from '../update/calendar.js';
import { describeSource, readFeedIndex, type FeedSource } from '../update/feed/source.js';
import { printer, table } from './output.js';
import { feedOption } from './update.js';
import { wholeNumber } from './usage.js';

export interface ScheduleOptions {
  home?: string;
  /** Default: the current year (HP_AGENT_NOW's, when set). */
  year?: number;
  /** A feed whose packages are placed on the calendar and checked. */
  feed?: FeedSource;
}

export type ScheduleReport = CalendarCheck & { feed?: string };

/** The calendar of the year, with a feed's packages placed on it and the ones that do not fit. */
export async function schedule(o: ScheduleOptions): Promise<ScheduleReport> {
  const at = now();
  const year = o.year ?? at.getUTCFullYear();
  const source = o.feed;
  if (source === undefined) return checkCalendar(year, []);
  return withSession({ command: 'schedule', home: o.home, readOnly: true }, async (s) => {
    const index = await readFeedIndex(source, trustDir(s.home), at, s.signal);
    return { ...checkCalendar(year, index.packages), feed: describeSource(source) };
  });
}

const KIND_WORDS = { baseline: 'BASELINE', hotpatch: 'hotpatch', 'unplanned-baseline': 'UNPLANNED BASELINE' } as const;
const ROLE_SHORT: Record<PackageRole, string> = { baseline: '', 'unplanned-baseline': '', hotpatch: '', 'cumulative-update': 'cu ', 'non-security': 'non-security ' };

function scheduleHuman(r: ScheduleReport): string {
  const rows = r.months.map((m) => [
    m.name,
    m.releaseDate,
    KIND_WORDS[m.kind],
    m.packages.map((p) => `${ROLE_SHORT[p.role]}${p.kbId} ${p.packageId}${p.releaseDate === m.releaseDate ? '' : ` on ${p.releaseDate}`}`).join(', ') || (r.feed ? '(none in the feed)' : ''),
  ]);
  const header = r.feed ? ['MONTH', 'RELEASE DAY', 'RELEASE', 'IN THE FEED'] : ['MONTH', 'RELEASE DAY', 'RELEASE'];
  const lines = [
    `Release calendar ${r.year}: second Tuesday of each month; planned baselines in January, April, July and October; an unplanned baseline replaces a month's hotpatch`,
    '',
    table(header, r.feed ? rows : rows.map((x) => x.slice(0, 3))),
  ];
  if (r.feed) {
    lines.push('', r.problems.length === 0 ? `every security release in ${r.feed} fits the calendar` : `does not fit the calendar (${r.problems.length}):`);
    for (const p of r.problems) lines.push(`  ${p.kbId} ${p.packageId}: ${p.problem}`);
  }
  return lines.join('\n');
}

export function scheduleCommand(y: Argv): Argv {
  return y.command(
    'schedule',
    'The release calendar of a year (baseline, hotpatch or unplanned baseline each month), checked against a feed',
    (c) =>
      c
        .option('year', { requiresArg: true, coerce: wholeNumber('--year', 'a year', 1970, 9999), describe: 'the year (default: this year)' })
        .option('feed', { ...feedOption, demandOption: false, describe: 'a feed (folder or http(s) URL): place its packages on the calendar and report those that do not fit' })
        .option('json', { type: 'boolean', default: false, describe: 'print one JSON object (stable field names)' }),
    async (a) => {
      const args = a as unknown as { year?: number; feed?: FeedSource; json: boolean };
      const out = printer(args.json);
      try {
        const r = await schedule({ year: args.year, feed: args.feed });
        const body: Output<'schedule'> = r;
        out.result(body, () => scheduleHuman(r));
      } catch (e) {
        process.exitCode = out.error(e);
      }
    },
  );
}
