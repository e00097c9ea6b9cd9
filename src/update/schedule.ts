/** `hp-agent schedule`: the release calendar of a year (calendar.ts), with a feed's packages placed on it. */
import { now } from '../clock.js';
import { withSession } from '../agent/session.js';
import { checkCalendar, type CalendarCheck } from './calendar.js';
import { describeSource, readFeedIndex, type FeedSource } from './feed/source.js';

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
    const index = await readFeedIndex(source, s.layout.trustedKeys, at, s.signal);
    return { ...checkCalendar(year, index.packages), feed: describeSource(source) };
  });
}
