/** `hp-agent config`: the machine's patch settings and its hotpatch enrollment, shown or changed. */
import { nowIso } from '../clock.js';
import type { Enrollment } from '../agent/state.js';
import { withSession, type Session } from '../agent/session.js';
import type { AssessResult, OperationStatus, PatchSettings } from './azure.js';
import { applySettingChanges, effectiveTimeZone, enrollmentAfterSettings, updateSettingsOf, type OffPeak } from './settings.js';
import type { UpdateRunOptions } from './assess.js';

export interface ConfigReport {
  patchSettings: PatchSettings;
  timeZone: string;
  /** Whether the time zone is the system's (no zone configured) or set with config. */
  timeZoneSource: 'system' | 'configured';
  offPeakWindow: OffPeak;
  enrollment: Enrollment;
  enrollmentReason?: string;
  enrollmentSince?: string;
  /** config set: the keys whose value changed. */
  changed?: string[];
}

export function configReport(s: Pick<Session, 'state'>): ConfigReport {
  const u = updateSettingsOf(s.state);
  const d = s.state.enrollmentDetail;
  return {
    patchSettings: u.patchSettings,
    timeZone: effectiveTimeZone(u),
    timeZoneSource: u.timeZone ? 'configured' : 'system',
    offPeakWindow: u.offPeak,
    enrollment: s.state.enrollment,
    ...(d ? { enrollmentReason: d.reason, enrollmentSince: d.since } : {}),
  };
}

/** What status shows of the update model: settings, the enrollment's reason, the last assessment. */
export interface UpdateStatus {
  enrollmentReason?: string;
  enrollmentSince?: string;
  patchSettings: PatchSettings;
  timeZone: string;
  offPeakWindow: OffPeak;
  lastAssessment?: {
    status: OperationStatus;
    assessmentActivityId: string;
    startDateTime: string;
    lastModifiedDateTime: string;
    criticalAndSecurityPatchCount: number;
    otherPatchCount: number;
    kbIds: string[];
  };
}

export function updateStatus(state: Session['state']): UpdateStatus {
  const c = configReport({ state });
  const a = state.lastAssessment as (AssessResult & Record<string, unknown>) | undefined;
  return {
    ...(c.enrollmentReason ? { enrollmentReason: c.enrollmentReason, enrollmentSince: c.enrollmentSince } : {}),
    patchSettings: c.patchSettings,
    timeZone: c.timeZone,
    offPeakWindow: c.offPeakWindow,
    ...(a
      ? {
          lastAssessment: {
            status: a.status,
            assessmentActivityId: a.assessmentActivityId,
            startDateTime: a.startDateTime,
            lastModifiedDateTime: a.lastModifiedDateTime,
            criticalAndSecurityPatchCount: a.criticalAndSecurityPatchCount ?? 0,
            otherPatchCount: a.otherPatchCount ?? 0,
            kbIds: (a.availablePatches ?? []).map((p) => p.kbId),
          },
        }
      : {}),
  };
}

export async function showConfig(home: string | undefined, o: UpdateRunOptions = {}): Promise<ConfigReport> {
  return withSession({ command: 'config show', home, verbose: o.verbose, readOnly: true }, async (s) => configReport(s));
}

/** Applies every KEY VALUE pair or none (USAGE: nothing changed); an enrollment move is recorded. */
export async function setConfig(home: string | undefined, changes: [string, string][], o: UpdateRunOptions = {}): Promise<ConfigReport> {
  return withSession({ command: `config set ${changes.map((c) => c.join(' ')).join(' ')}`, home, verbose: o.verbose, wait: o.wait }, async (s) => {
    const before = updateSettingsOf(s.state);
    const after = applySettingChanges(before, changes);
    const at = nowIso();
    const moved = enrollmentAfterSettings(s.state, before.patchSettings, after.patchSettings, at, s.state.activeBaseline?.id);
    const changed = changes.map(([k]) => k).filter((k) => settingText(before, k) !== settingText(after, k));
    const enrollmentBefore = s.state.enrollment;
    s.state.updateSettings = after;
    s.state.enrollment = moved.enrollment;
    if (moved.detail) s.state.enrollmentDetail = moved.detail;
    await s.save();
    if (changed.length) {
      const moves = moved.enrollment !== enrollmentBefore;
      await s.record({
        action: moves ? (after.patchSettings.enableHotpatching ? 'enroll' : 'unenroll') : 'config',
        result: 'Succeeded',
        time: at,
        detail: { changed: changed.map((k) => `${k}=${settingText(after, k)}`), ...(moves ? { enrollment: `${enrollmentBefore} -> ${moved.enrollment}`, reason: moved.detail?.reason } : {}) },
      });
    }
    return { ...configReport(s), changed };
  });
}

function settingText(u: ReturnType<typeof updateSettingsOf>, key: string): string {
  const ps = u.patchSettings;
  switch (key) {
    case 'patchMode':
      return ps.patchMode;
    case 'enableHotpatching':
      return String(ps.enableHotpatching);
    case 'assessmentMode':
      return ps.assessmentMode;
    case 'automaticByPlatformSettings.rebootSetting':
      return ps.automaticByPlatformSettings.rebootSetting;
    case 'timeZone':
      return u.timeZone ?? 'system';
    default:
      return `${u.offPeak.start}-${u.offPeak.end}`;
  }
}
