/**
 * Azure's update-management shapes (DESIGN.md §8), spelled exactly as Azure spells them: patch
 * settings, the assess result, the install parameters and the install result. The constants are
 * the single source of each enumeration: the CLI's parsing, the state file's schema and the
 * output contract all read them from here.
 */
import type { Classification, RebootBehavior } from '../package/index.js';
import type { RebootStatus } from '../agent/state.js';

export const PATCH_MODES = ['Manual', 'AutomaticByOS', 'AutomaticByPlatform'] as const;
export const ASSESSMENT_MODES = ['ImageDefault', 'AutomaticByPlatform'] as const;
export const REBOOT_SETTINGS = ['IfRequired', 'Never', 'Always'] as const;
export const OPERATION_STATUSES = ['Unknown', 'InProgress', 'Failed', 'Succeeded', 'CompletedWithWarnings'] as const;
export const ASSESSMENT_STATES = ['Unknown', 'Available'] as const;
export const INSTALLATION_STATES = ['Unknown', 'Installed', 'Failed', 'Excluded', 'NotSelected', 'Pending'] as const;

export type PatchMode = (typeof PATCH_MODES)[number];
export type AssessmentMode = (typeof ASSESSMENT_MODES)[number];
export type RebootSetting = (typeof REBOOT_SETTINGS)[number];
export type OperationStatus = (typeof OPERATION_STATUSES)[number];
export type AssessmentState = (typeof ASSESSMENT_STATES)[number];
export type InstallationState = (typeof INSTALLATION_STATES)[number];

/** Azure's `patchSettings` of a machine. */
export interface PatchSettings {
  patchMode: PatchMode;
  /** True only with patchMode AutomaticByPlatform (Azure refuses any other combination). */
  enableHotpatching: boolean;
  assessmentMode: AssessmentMode;
  automaticByPlatformSettings: { rebootSetting: RebootSetting };
}

/** An error as Azure's results carry it. */
export interface UpdateError {
  code: string;
  message: string;
}

/** What names a patch in both results. */
export interface PatchIdentity {
  patchId: string;
  name: string;
  kbId: string;
  classifications: Classification[];
  rebootBehavior: RebootBehavior;
  publishedDate: string;
}

/** One entry of `availablePatches[]`. */
export interface AvailablePatch extends PatchIdentity {
  lastModifiedDateTime: string;
  assessmentState: AssessmentState;
}

/** Azure's assess result. */
export interface AssessResult {
  status: OperationStatus;
  assessmentActivityId: string;
  rebootPending: boolean;
  criticalAndSecurityPatchCount: number;
  otherPatchCount: number;
  startDateTime: string;
  lastModifiedDateTime: string;
  availablePatches: AvailablePatch[];
  error?: UpdateError;
}

/** Azure's install parameters (`maximumDuration` is ISO 8601, e.g. PT4H). */
export interface InstallParameters {
  maximumDuration?: string;
  /** Default: the machine's automaticByPlatformSettings.rebootSetting. */
  rebootSetting?: RebootSetting;
  classificationsToInclude?: Classification[];
  kbNumbersToInclude?: string[];
  kbNumbersToExclude?: string[];
  excludeKbsRequiringReboot?: boolean;
  /** ISO 8601 date-time: patches published after it are not installed. */
  maxPatchPublishDate?: string;
}

/** One entry of the install result's `patches[]`. */
export interface InstallPatch extends PatchIdentity {
  installationState: InstallationState;
  /** Why it was excluded, not selected, left pending or failed (hp-agent's own detail). */
  reason?: string;
}

/** The status, counts and flags of Azure's install result (`apply` prints them too). */
export interface InstallOutcome {
  status: OperationStatus;
  installationActivityId: string;
  rebootStatus: RebootStatus;
  maintenanceWindowExceeded: boolean;
  excludedPatchCount: number;
  notSelectedPatchCount: number;
  pendingPatchCount: number;
  installedPatchCount: number;
  failedPatchCount: number;
}

/** Azure's install result. */
export interface UpdateInstallResult extends InstallOutcome {
  patches: InstallPatch[];
  startDateTime: string;
  lastModifiedDateTime: string;
  error?: UpdateError;
}

/** Critical and Security: what automatic patching installs, and what the assess result counts apart. */
export const CRITICAL_AND_SECURITY: readonly Classification[] = ['Critical', 'Security'];

export const isCriticalOrSecurity = (cs: readonly Classification[]): boolean => cs.some((c) => CRITICAL_AND_SECURITY.includes(c));
