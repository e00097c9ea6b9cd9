/**
 * Which of a feed's packages apply to a machine (pure): the rules of the hotpatch program.
 *
 * - Only what is released by now is offered (a feed may carry a whole year ahead).
 * - Whole-file updates (baselines, and the cumulative updates that carry a month's hotpatch as
 *   whole files) are cumulative: only the latest one released after what the machine has
 *   installed is offered. An enrolled machine follows the baselines (hotpatches carry the months
 *   between); any other follows every cumulative update, except that a Pending machine takes
 *   the next baseline when there is one (that enrolls it).
 * - Hotpatches apply to an enrolled machine, for the baseline it runs: only the latest level is
 *   offered (it contains the earlier ones), and only while the recorded level or a process of
 *   that baseline (read from its memory) is below it. A hotpatch for another baseline is not
 *   offered: its baseline is.
 */
import type { Enrollment } from '../agent/state.js';
import type { FeedEntry } from './feed/index-format.js';

export interface MachineView {
  enrollment: Enrollment;
  /** The baseline the machine runs and the one staged for the next reboot, with their release dates when known. */
  activeBaseline?: { id: string; releaseDate?: string };
  pendingBaseline?: { id: string; releaseDate?: string };
  /** The hotpatch level recorded for the active baseline (0: none). */
  hotpatchSequence: number;
  /** The level each process of the active baseline runs, from its memory. */
  runningLevels: number[];
}

const newest = (es: FeedEntry[]): FeedEntry | undefined =>
  [...es].sort((a, b) => b.releaseDate.localeCompare(a.releaseDate) || b.id.localeCompare(a.id))[0];

/** The entries released on or before `now` (release dates are calendar days, UTC). */
export const releasedBy = (entries: readonly FeedEntry[], now: Date): FeedEntry[] => entries.filter((e) => e.releaseDate <= now.toISOString().slice(0, 10));

/** The whole-file update the machine lacks, if any. */
export function applicableBaseline(entries: readonly FeedEntry[], m: MachineView): FeedEntry | undefined {
  const installed = [m.activeBaseline, m.pendingBaseline].filter((b): b is NonNullable<typeof b> => b !== undefined);
  const since = installed.map((b) => b.releaseDate ?? entries.find((e) => e.id === b.id)?.releaseDate ?? '').sort().at(-1) ?? '';
  const newer = entries.filter((e) => e.kind === 'baseline' && e.releaseDate > since && !installed.some((b) => b.id === e.baselineId));
  const baselines = newer.filter((e) => !e.equivalentHotpatch);
  if (m.enrollment === 'Enabled') return newest(baselines);
  if (m.enrollment === 'Pending') return newest(baselines) ?? newest(newer);
  return newest(newer);
}

/** The hotpatch level the machine lacks for the baseline it runs, if any. */
export function applicableHotpatch(entries: readonly FeedEntry[], m: MachineView): FeedEntry | undefined {
  if (m.enrollment !== 'Enabled' || !m.activeBaseline) return undefined;
  const active = m.activeBaseline.id;
  const latest = entries.filter((e) => e.kind === 'hotpatch' && e.baselineId === active).sort((a, b) => (b.sequence ?? 0) - (a.sequence ?? 0))[0];
  if (!latest) return undefined;
  const level = latest.sequence ?? 0;
  const behind = m.hotpatchSequence < level || m.runningLevels.some((l) => l < level);
  return behind ? latest : undefined;
}

/** Everything that applies, the whole-file update first (the order install follows). */
export function applicablePatches(entries: readonly FeedEntry[], m: MachineView, now: Date): FeedEntry[] {
  const released = releasedBy(entries, now);
  return [applicableBaseline(released, m), applicableHotpatch(released, m)].filter((e): e is FeedEntry => e !== undefined);
}
