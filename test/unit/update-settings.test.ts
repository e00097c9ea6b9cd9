import { describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { applySettingChanges, defaultUpdateSettings, enrollmentAfterSettings, parseOffPeakWindow, settleEnrollment } from '../../src/update/settings.js';

const usageMessage = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(HpError);
    expect((e as HpError).code).toBe('USAGE');
    return (e as Error).message;
  }
  throw new Error('not refused');
};

describe('patch settings', () => {
  it('defaults to automatic patching with hotpatching on, 22:00-06:00 off-peak', () => {
    const s = defaultUpdateSettings();
    expect(s.patchSettings).toEqual({ patchMode: 'AutomaticByPlatform', enableHotpatching: true, assessmentMode: 'ImageDefault', automaticByPlatformSettings: { rebootSetting: 'IfRequired' } });
    expect(s.offPeak).toEqual({ start: '22:00', end: '06:00' });
    expect(s.timeZone).toBeUndefined();
  });

  it('applies every key with Azure spellings', () => {
    const s = applySettingChanges(defaultUpdateSettings(), [
      ['enableHotpatching', 'false'],
      ['patchMode', 'Manual'],
      ['assessmentMode', 'AutomaticByPlatform'],
      ['automaticByPlatformSettings.rebootSetting', 'Never'],
      ['timeZone', 'Europe/Rome'],
      ['offPeakWindow', '01:30-04:00'],
    ]);
    expect(s).toEqual({
      patchSettings: { patchMode: 'Manual', enableHotpatching: false, assessmentMode: 'AutomaticByPlatform', automaticByPlatformSettings: { rebootSetting: 'Never' } },
      timeZone: 'Europe/Rome',
      offPeak: { start: '01:30', end: '04:00' },
    });
    expect(applySettingChanges(s, [['timeZone', 'system']]).timeZone).toBeUndefined();
  });

  it('refuses hotpatching without AutomaticByPlatform, whichever key makes the combination', () => {
    const base = defaultUpdateSettings();
    expect(usageMessage(() => applySettingChanges(base, [['patchMode', 'Manual']]))).toMatch(/enableHotpatching true requires patchMode AutomaticByPlatform.*set enableHotpatching false as well.*Nothing was changed/);
    const manual = applySettingChanges(base, [['enableHotpatching', 'false'], ['patchMode', 'AutomaticByOS']]);
    expect(usageMessage(() => applySettingChanges(manual, [['enableHotpatching', 'true']]))).toMatch(/set patchMode AutomaticByPlatform as well/);
    expect(manual.patchSettings.patchMode).toBe('AutomaticByOS');
  });

  it('refuses unknown keys, misspelled values, repeated keys, bad zones and windows', () => {
    const base = defaultUpdateSettings();
    expect(usageMessage(() => applySettingChanges(base, [['rebootSetting', 'Never']]))).toMatch(/unknown setting "rebootSetting"/);
    expect(usageMessage(() => applySettingChanges(base, [['patchMode', 'automaticbyplatform']]))).toMatch(/one of Manual, AutomaticByOS, AutomaticByPlatform/);
    expect(usageMessage(() => applySettingChanges(base, [['enableHotpatching', 'yes']]))).toMatch(/one of true, false/);
    expect(usageMessage(() => applySettingChanges(base, [['patchMode', 'Manual'], ['patchMode', 'Manual']]))).toMatch(/given twice/);
    expect(usageMessage(() => applySettingChanges(base, [['timeZone', 'Mars/Olympus']]))).toMatch(/IANA/);
    for (const w of ['22:00', '24:00-06:00', '22:00-22:00', '2200-0600']) expect(() => parseOffPeakWindow(w)).toThrow(HpError);
  });
});

describe('hotpatch enrollment', () => {
  const on = defaultUpdateSettings().patchSettings;
  const off = { ...on, enableHotpatching: false };
  const offManual = { ...off, patchMode: 'Manual' as const };
  const at = '2026-12-02T10:00:00.000Z';

  it('off: Disabled (AutomaticByPlatform) or Not enrolled; on again: Pending from the running baseline; off while pending: Canceled', () => {
    expect(enrollmentAfterSettings({ enrollment: 'Enabled' }, on, off, at, '2026.10').enrollment).toBe('Disabled');
    expect(enrollmentAfterSettings({ enrollment: 'Enabled' }, on, offManual, at, '2026.10').enrollment).toBe('Not enrolled');
    expect(enrollmentAfterSettings({ enrollment: 'Disabled' }, off, offManual, at, '2026.10').enrollment).toBe('Not enrolled');
    const pending = enrollmentAfterSettings({ enrollment: 'Disabled' }, off, on, at, '2026.10');
    expect(pending.enrollment).toBe('Pending');
    expect(pending.detail).toMatchObject({ since: at, fromBaselineId: '2026.10' });
    expect(pending.detail?.reason).toMatch(/next baseline/);
    expect(enrollmentAfterSettings({ enrollment: 'Pending' }, on, off, at, '2026.10').enrollment).toBe('Canceled');
    expect(enrollmentAfterSettings({ enrollment: 'Canceled' }, off, on, at, '2026.10').enrollment).toBe('Pending');
    // Unchanged hotpatching leaves it as it is.
    expect(enrollmentAfterSettings({ enrollment: 'Enabled' }, on, { ...on, assessmentMode: 'AutomaticByPlatform' }, at, '2026.10')).toEqual({ enrollment: 'Enabled' });
  });

  it('a Pending machine is enrolled by the next hotpatch baseline it boots, not by a cumulative update nor the same baseline', () => {
    const kinds: Record<string, { releaseDate: string; equivalentHotpatch?: string }> = {
      '2026.10': { releaseDate: '2026-10-13' },
      '2026.10.2': { releaseDate: '2026-12-08', equivalentHotpatch: '2026.10-hp2' },
      '2026.11': { releaseDate: '2027-01-12' },
    };
    const state = (active: string) => ({ enrollment: 'Pending' as const, activeBaseline: { id: active, kb: 'KB5046001', packageId: active, installedAt: at }, enrollmentDetail: { reason: 'x', since: at, fromBaselineId: '2026.10' } });
    expect(settleEnrollment(state('2026.10'), (id) => kinds[id], at)).toBeUndefined();
    expect(settleEnrollment(state('2026.10.2'), (id) => kinds[id], at)).toBeUndefined();
    expect(settleEnrollment(state('2026.11'), (id) => kinds[id], at)?.enrollment).toBe('Enabled');
    expect(settleEnrollment({ ...state('2026.11'), enrollment: 'Disabled' }, (id) => kinds[id], at)).toBeUndefined();
  });
});
