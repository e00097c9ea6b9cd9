import { describe, expect, it } from 'vitest';
import { applicablePatches, type MachineView } from '../../src/update/applicable.js';
import type { FeedEntry } from '../../src/update/feed/index-format.js';

const base = { sha256: '0'.repeat(64), size: 1, title: 't', classification: 'Security' as const };
const baseline = (id: string, releaseDate: string, extra: Partial<FeedEntry> = {}): FeedEntry => ({ ...base, file: `${id}.hpkg`, id, kb: 'KB5000001', kind: 'baseline', releaseDate, rebootBehavior: 'AlwaysRequiresReboot', baselineId: id, planned: true, ...extra });
const hotpatch = (id: string, baselineId: string, sequence: number, releaseDate: string, extra: Partial<FeedEntry> = {}): FeedEntry => ({ ...base, file: `${id}.hpkg`, id, kb: 'KB5000002', kind: 'hotpatch', releaseDate, rebootBehavior: 'NeverReboots', baselineId, sequence, ...extra });

const feed: FeedEntry[] = [
  baseline('2026.10', '2026-10-13'),
  hotpatch('2026.10-hp1', '2026.10', 1, '2026-11-10'),
  baseline('2026.10.1', '2026-11-10', { planned: false, equivalentHotpatch: '2026.10-hp1' }),
  hotpatch('2026.10-hp2', '2026.10', 2, '2026-12-08', { classification: 'Critical' }),
  baseline('2026.10.2', '2026-12-08', { planned: false, equivalentHotpatch: '2026.10-hp2' }),
  baseline('2026.11', '2027-01-12'),
  hotpatch('2026.11-hp1', '2026.11', 1, '2027-02-09'),
  baseline('2026.11.1', '2027-02-09', { planned: false, equivalentHotpatch: '2026.11-hp1' }),
];

const machine = (m: Partial<MachineView>): MachineView => ({ enrollment: 'Enabled', hotpatchSequence: 0, runningLevels: [], ...m });
const ids = (m: MachineView, now: string) => applicablePatches(feed, m, new Date(now)).map((e) => e.id);
const on = (id: string, releaseDate: string) => ({ id, releaseDate });

describe('what applies', () => {
  it('an enrolled machine: the latest hotpatch of the baseline it runs, never a superseded one or a cumulative update', () => {
    expect(ids(machine({ activeBaseline: on('2026.10', '2026-10-13') }), '2026-10-20T00:00:00Z')).toEqual([]);
    expect(ids(machine({ activeBaseline: on('2026.10', '2026-10-13') }), '2026-11-11T00:00:00Z')).toEqual(['2026.10-hp1']);
    expect(ids(machine({ activeBaseline: on('2026.10', '2026-10-13') }), '2026-12-20T00:00:00Z')).toEqual(['2026.10-hp2']);
    expect(ids(machine({ activeBaseline: on('2026.10', '2026-10-13'), hotpatchSequence: 2, runningLevels: [2, 2] }), '2026-12-20T00:00:00Z')).toEqual([]);
  });

  it('a process below the recorded level (started later) makes the level applicable again', () => {
    expect(ids(machine({ activeBaseline: on('2026.10', '2026-10-13'), hotpatchSequence: 2, runningLevels: [2, 0] }), '2026-12-20T00:00:00Z')).toEqual(['2026.10-hp2']);
  });

  it('a hotpatch for another baseline is not offered: its baseline is, first', () => {
    expect(ids(machine({ activeBaseline: on('2026.10', '2026-10-13'), hotpatchSequence: 1, runningLevels: [1] }), '2027-02-10T00:00:00Z')).toEqual(['2026.11', '2026.10-hp2']);
    // Staged for the next reboot: installed, not offered again; hotpatches of the new one wait for the reboot.
    expect(ids(machine({ activeBaseline: on('2026.10', '2026-10-13'), pendingBaseline: on('2026.11', '2027-01-12'), hotpatchSequence: 2 }), '2027-02-10T00:00:00Z')).toEqual([]);
  });

  it('not enrolled: only the latest cumulative update, no hotpatch', () => {
    for (const enrollment of ['Disabled', 'Not enrolled', 'Canceled'] as const) {
      expect(ids(machine({ enrollment, activeBaseline: on('2026.10', '2026-10-13') }), '2026-12-20T00:00:00Z')).toEqual(['2026.10.2']);
      expect(ids(machine({ enrollment, activeBaseline: on('2026.10.2', '2026-12-08') }), '2026-12-20T00:00:00Z')).toEqual([]);
      expect(ids(machine({ enrollment, activeBaseline: on('2026.10.2', '2026-12-08') }), '2027-02-10T00:00:00Z')).toEqual(['2026.11.1']);
    }
  });

  it('pending: cumulative updates until the next baseline, which it takes over a later cumulative update', () => {
    expect(ids(machine({ enrollment: 'Pending', activeBaseline: on('2026.10', '2026-10-13') }), '2026-12-20T00:00:00Z')).toEqual(['2026.10.2']);
    expect(ids(machine({ enrollment: 'Pending', activeBaseline: on('2026.10.2', '2026-12-08') }), '2027-02-10T00:00:00Z')).toEqual(['2026.11']);
  });

  it('a machine with nothing installed gets the latest baseline', () => {
    expect(ids(machine({}), '2026-12-20T00:00:00Z')).toEqual(['2026.10']);
  });
});
