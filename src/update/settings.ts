/**
 * The machine's patch settings (Azure's `patchSettings`, plus the time zone and off-peak window
 * automatic patching uses) and hotpatch enrollment.
 *
 * Enrollment follows the product's rules:
 *   Enabled       hotpatching on, and the machine runs a baseline hotpatches are built on;
 *   Pending       hotpatching turned on again: hotpatches wait until the next baseline is
 *                 installed and booted (a baseline released after the one running then);
 *   Disabled      hotpatching turned off with patchMode AutomaticByPlatform: the monthly security
 *                 fixes arrive as cumulative updates that need a reboot;
 *   Not enrolled  hotpatching off with any other patchMode (Azure allows it only with AutomaticByPlatform);
 *   Canceled      hotpatching turned off while its enrollment was still Pending.
 * Every function here is pure: it returns a new state and never writes.
 */
import { z } from 'zod';
import { HpError } from '../errors.js';
import type { AgentState, Enrollment } from '../agent/state.js';
import { ASSESSMENT_MODES, PATCH_MODES, REBOOT_SETTINGS, type PatchSettings } from './azure.js';

const HH_MM = /^([01]\d|2[0-3]):([0-5]\d)$/;

export const offPeakSchema = z.object({ start: z.string().regex(HH_MM), end: z.string().regex(HH_MM) });

export const patchSettingsSchema = z.object({
  patchMode: z.enum(PATCH_MODES),
  enableHotpatching: z.boolean(),
  assessmentMode: z.enum(ASSESSMENT_MODES),
  automaticByPlatformSettings: z.object({ rebootSetting: z.enum(REBOOT_SETTINGS) }),
});

/** A Windows Server Azure Edition image's defaults: automatic patching with hotpatching on. */
export const DEFAULT_PATCH_SETTINGS: PatchSettings = {
  patchMode: 'AutomaticByPlatform',
  enableHotpatching: true,
  assessmentMode: 'ImageDefault',
  automaticByPlatformSettings: { rebootSetting: 'IfRequired' },
};

export const DEFAULT_OFF_PEAK = { start: '22:00', end: '06:00' } as const;

export const updateSettingsSchema = z.object({
  patchSettings: patchSettingsSchema,
  /** IANA name; absent: the system's. */
  timeZone: z.string().optional(),
  /** Local time of the machine's time zone; a window whose end is before its start spans midnight. */
  offPeak: offPeakSchema,
});

export type UpdateSettings = z.infer<typeof updateSettingsSchema>;
export type OffPeak = z.infer<typeof offPeakSchema>;

export const defaultUpdateSettings = (): UpdateSettings => ({
  patchSettings: structuredClone(DEFAULT_PATCH_SETTINGS),
  offPeak: { ...DEFAULT_OFF_PEAK },
});

/** The machine's settings: as saved, or the defaults. */
export const updateSettingsOf = (state: Pick<AgentState, 'updateSettings'>): UpdateSettings => state.updateSettings ?? defaultUpdateSettings();

/** Why the enrollment is what it is, and since when (kept next to it in the state). */
export const enrollmentDetailSchema = z.object({
  reason: z.string(),
  since: z.string(),
  /** Pending: the baseline that ran when hotpatching was turned on (the next one enrolls). */
  fromBaselineId: z.string().optional(),
});
export type EnrollmentDetail = z.infer<typeof enrollmentDetailSchema>;

/** The system's IANA time zone. */
export function systemTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

/** The time zone automatic patching uses: the configured one, else the system's. */
export const effectiveTimeZone = (s: UpdateSettings): string => s.timeZone ?? systemTimeZone();

export function isValidTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

/** The keys `hp-agent config set` accepts, as Azure names them (plus hp-agent's own two). */
export const SETTING_KEYS = [
  'patchMode',
  'enableHotpatching',
  'assessmentMode',
  'automaticByPlatformSettings.rebootSetting',
  'timeZone',
  'offPeakWindow',
] as const;
export type SettingKey = (typeof SETTING_KEYS)[number];

const bad = (message: string) => new HpError('USAGE', message);

function oneOf<T extends string>(key: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) throw bad(`${key} must be one of ${allowed.join(', ')} (exact spelling), got "${value}"`);
  return value as T;
}

/** "22:00-06:00" → {start, end}. */
export function parseOffPeakWindow(text: string): OffPeak {
  const m = /^(\d{2}:\d{2})-(\d{2}:\d{2})$/.exec(text);
  if (!m || !HH_MM.test(m[1]) || !HH_MM.test(m[2]) || m[1] === m[2]) {
    throw bad(`offPeakWindow must be two different local times HH:MM-HH:MM (e.g. 22:00-06:00; an end before the start spans midnight), got "${text}"`);
  }
  return { start: m[1], end: m[2] };
}

/**
 * The settings with `changes` applied (all or none): every value checked, then the combination,
 * as Azure checks it — enableHotpatching true needs patchMode AutomaticByPlatform. USAGE errors
 * say what was refused; the caller saves nothing then.
 */
export function applySettingChanges(current: UpdateSettings, changes: readonly (readonly [string, string])[]): UpdateSettings {
  const next: UpdateSettings = structuredClone(current);
  const seen = new Set<string>();
  for (const [key, value] of changes) {
    if (!(SETTING_KEYS as readonly string[]).includes(key)) throw bad(`unknown setting "${key}": the settings are ${SETTING_KEYS.join(', ')}`);
    if (seen.has(key)) throw bad(`${key} was given twice; give each setting once`);
    seen.add(key);
    const ps = next.patchSettings;
    switch (key as SettingKey) {
      case 'patchMode':
        ps.patchMode = oneOf(key, value, PATCH_MODES);
        break;
      case 'enableHotpatching':
        ps.enableHotpatching = oneOf(key, value, ['true', 'false']) === 'true';
        break;
      case 'assessmentMode':
        ps.assessmentMode = oneOf(key, value, ASSESSMENT_MODES);
        break;
      case 'automaticByPlatformSettings.rebootSetting':
        ps.automaticByPlatformSettings.rebootSetting = oneOf(key, value, REBOOT_SETTINGS);
        break;
      case 'timeZone':
        if (value === 'system') delete next.timeZone;
        else if (!isValidTimeZone(value)) throw bad(`timeZone must be an IANA time zone name (e.g. Europe/Rome, UTC) or "system", got "${value}"`);
        else next.timeZone = value;
        break;
      case 'offPeakWindow':
        next.offPeak = parseOffPeakWindow(value);
        break;
    }
  }
  if (next.patchSettings.enableHotpatching && next.patchSettings.patchMode !== 'AutomaticByPlatform') {
    throw bad(
      `enableHotpatching true requires patchMode AutomaticByPlatform (this would leave patchMode ${next.patchSettings.patchMode}), as on Azure: ` +
        (seen.has('patchMode') ? 'set enableHotpatching false as well' : 'set patchMode AutomaticByPlatform as well') +
        '. Nothing was changed',
    );
  }
  return next;
}

/**
 * The enrollment once hotpatching was switched (or not) from `before` to `after`, at `at`, on a
 * machine running `runningBaselineId`.
 */
export function enrollmentAfterSettings(
  state: Pick<AgentState, 'enrollment'>,
  before: PatchSettings,
  after: PatchSettings,
  at: string,
  runningBaselineId: string | undefined,
): { enrollment: Enrollment; detail?: EnrollmentDetail } {
  const was = state.enrollment;
  if (after.enableHotpatching) {
    if (before.enableHotpatching && (was === 'Enabled' || was === 'Pending')) return { enrollment: was };
    return {
      enrollment: 'Pending',
      detail: {
        reason: `hotpatching turned on at ${at}: hotpatches apply again once the next baseline${runningBaselineId ? ` (one after ${runningBaselineId})` : ''} is installed and booted; until then security fixes arrive as cumulative updates`,
        since: at,
        ...(runningBaselineId ? { fromBaselineId: runningBaselineId } : {}),
      },
    };
  }
  if (!before.enableHotpatching && was !== 'Enabled' && was !== 'Pending') {
    // Still off: only the patch mode can move it between Disabled and Not enrolled.
    if (was === 'Canceled') return { enrollment: was };
    const e: Enrollment = after.patchMode === 'AutomaticByPlatform' ? 'Disabled' : 'Not enrolled';
    return e === was ? { enrollment: was } : { enrollment: e, detail: offDetail(e, after, at) };
  }
  if (was === 'Pending') {
    return { enrollment: 'Canceled', detail: { reason: `hotpatching turned off at ${at} while its enrollment was pending: canceled; security fixes arrive as cumulative updates that need a reboot`, since: at } };
  }
  const e: Enrollment = after.patchMode === 'AutomaticByPlatform' ? 'Disabled' : 'Not enrolled';
  return { enrollment: e, detail: offDetail(e, after, at) };
}

function offDetail(e: Enrollment, after: PatchSettings, at: string): EnrollmentDetail {
  const why = e === 'Disabled' ? 'hotpatching turned off' : `hotpatching off (patchMode ${after.patchMode}: hotpatching needs AutomaticByPlatform)`;
  return { reason: `${why} at ${at}: security fixes arrive as cumulative updates that need a reboot; turning it on again waits for the next baseline`, since: at };
}

/** What a baseline package is, for enrollment: a hotpatch baseline, or a cumulative update beside a hotpatch. */
export interface BaselineKind {
  releaseDate: string;
  /** Set on a cumulative update: the hotpatch whose fixes it carries (no hotpatch is built on it). */
  equivalentHotpatch?: string;
}

/**
 * A Pending enrollment becomes Enabled once the machine runs the next baseline: a hotpatch
 * baseline other than the one that ran when hotpatching was turned on. `describe` says what an
 * installed baseline is (undefined: unknown, nothing changes).
 */
export function settleEnrollment(
  state: Pick<AgentState, 'enrollment' | 'activeBaseline'> & { enrollmentDetail?: EnrollmentDetail },
  describe: (baselineId: string) => BaselineKind | undefined,
  at: string,
): { enrollment: Enrollment; detail?: EnrollmentDetail } | undefined {
  if (state.enrollment !== 'Pending') return undefined;
  const active = state.activeBaseline?.id;
  if (!active || active === state.enrollmentDetail?.fromBaselineId) return undefined;
  const kind = describe(active);
  if (!kind || kind.equivalentHotpatch) return undefined;
  return { enrollment: 'Enabled', detail: { reason: `enrolled at ${at}: baseline ${active} was installed and booted after hotpatching was turned on`, since: at } };
}
