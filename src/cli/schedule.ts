/** `hp-agent schedule`: the release calendar of a year, checked against a feed. */
import type { Argv } from 'yargs';
import type { Output } from '../contract/index.js';
import type { PackageRole } from '../update/calendar.js';
import type { FeedSource } from '../update/feed/source.js';
import { schedule, type ScheduleReport } from '../update/schedule.js';
import { printer, table } from './output.js';
import { feedOption } from './update.js';
import { wholeNumber } from './usage.js';

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
