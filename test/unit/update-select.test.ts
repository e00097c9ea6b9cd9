import { describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { formatDuration, parseDuration } from '../../src/update/duration.js';
import type { FeedEntry } from '../../src/update/feed/index-format.js';
import { estimateMs, HOTPATCH_BASE_ESTIMATE_MS, HOTPATCH_PER_PROCESS_MS, STAGE_ESTIMATE_MS } from '../../src/update/install.js';
import { checkInstallParameters, normalizeKb, selectPatches, unknownKbs } from '../../src/update/select.js';

const e = (id: string, kb: string, kind: 'baseline' | 'hotpatch', classification: FeedEntry['classification'], releaseDate: string): FeedEntry => ({
  file: `${id}.hpkg`, sha256: '0'.repeat(64), size: 1, id, kb, kind, title: id, classification, releaseDate,
  rebootBehavior: kind === 'baseline' ? 'AlwaysRequiresReboot' : 'NeverReboots', baselineId: id,
});
const list = [e('b', 'KB5046002', 'baseline', 'Security', '2027-01-12'), e('h', 'KB5046102', 'hotpatch', 'Critical', '2026-12-08'), e('u', 'KB5046202', 'hotpatch', 'Updates', '2027-03-09')];
const states = (p: Parameters<typeof selectPatches>[1]) => selectPatches(list, checkInstallParameters(p)).map((s) => s.state);

describe('install selection', () => {
  it('takes everything without filters', () => expect(states({ rebootSetting: 'IfRequired' })).toEqual(['Selected', 'Selected', 'Selected']));
  it('classifications', () => expect(states({ rebootSetting: 'IfRequired', classificationsToInclude: ['Critical', 'Security'] })).toEqual(['Selected', 'Selected', 'NotSelected']));
  it('KBs to include add to the classifications', () => expect(states({ rebootSetting: 'IfRequired', classificationsToInclude: ['Critical'], kbNumbersToInclude: ['5046202'] })).toEqual(['NotSelected', 'Selected', 'Selected']));
  it('KBs to include alone', () => expect(states({ rebootSetting: 'IfRequired', kbNumbersToInclude: ['KB5046102'] })).toEqual(['NotSelected', 'Selected', 'NotSelected']));
  it('exclusion wins', () => expect(states({ rebootSetting: 'IfRequired', kbNumbersToInclude: ['KB5046102'], kbNumbersToExclude: ['KB5046102'] })).toEqual(['NotSelected', 'Excluded', 'NotSelected']));
  it('patches needing a reboot', () => expect(states({ rebootSetting: 'IfRequired', excludeKbsRequiringReboot: true })).toEqual(['Excluded', 'Selected', 'Selected']));
  it('publish date', () => expect(states({ rebootSetting: 'IfRequired', maxPatchPublishDate: '2027-01-12T00:00:00Z' })).toEqual(['Selected', 'Selected', 'NotSelected']));

  it('refuses malformed KBs, unknown classifications, bad dates and durations; names KBs the feed lacks', () => {
    for (const bad of [() => normalizeKb('KB12', 'x'), () => checkInstallParameters({ rebootSetting: 'Never', classificationsToInclude: ['security' as never] }), () => checkInstallParameters({ rebootSetting: 'Never', maxPatchPublishDate: '2027-01-12' }), () => checkInstallParameters({ rebootSetting: 'Never', maximumDuration: '4H' })]) {
      expect(bad).toThrow(HpError);
    }
    expect(unknownKbs({ rebootSetting: 'Never', kbNumbersToInclude: ['KB5046102', 'KB5999999'] }, list)).toEqual(['KB5999999']);
  });
});

describe('durations and estimates', () => {
  it('parses ISO 8601 durations of days, hours, minutes, seconds and refuses the rest', () => {
    expect(parseDuration('PT4H')).toBe(4 * 3_600_000);
    expect(parseDuration('PT1H30M')).toBe(5_400_000);
    expect(parseDuration('P1DT2S')).toBe(86_402_000);
    expect(parseDuration('PT0.5S')).toBe(500);
    for (const bad of ['4H', 'PT', 'P', 'PT-1H', 'P1M', 'P1W', 'PT0S', 'pt4h', 'PT4H ', 'P1Y']) expect(() => parseDuration(bad), bad).toThrow(/ISO 8601|no time/);
    expect(formatDuration(5_400_000)).toBe('PT1H30M');
  });

  it('estimates a hotpatch by its processes and a baseline by the measured reboot', () => {
    expect(estimateMs(list[1], false, { processes: 3 })).toBe(HOTPATCH_BASE_ESTIMATE_MS + 3 * HOTPATCH_PER_PROCESS_MS);
    expect(estimateMs(list[0], true, { processes: 0, rebootDowntimeMs: 400 })).toBe(STAGE_ESTIMATE_MS + 800);
    expect(estimateMs(list[0], false, { processes: 0, rebootDowntimeMs: 400 })).toBe(STAGE_ESTIMATE_MS);
  });
});
