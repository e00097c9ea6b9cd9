/**
 * One schema per command: what `hp-agent <command> --json` prints on success (every failure
 * prints `errorOutput`). Built from the shared pieces in shared.ts; a new field goes in the one
 * schema that prints it (or the shared piece, when several do).
 */
import { z } from 'zod';
import { CLASSIFICATIONS, ManifestSchema } from '../package/manifest.js';
import { ASSESSMENT_MODES, ASSESSMENT_STATES, PATCH_MODES, REBOOT_SETTINGS } from '../update/azure.js';
import { feedEntrySchema } from '../update/feed/index-format.js';
import {
  activityId,
  address,
  baselineId,
  baselineRef,
  changePlan,
  classification,
  changeSite,
  dateTime,
  enrollment,
  errorBody,
  hexBytes,
  inlineWarning,
  installationState,
  jumpKind,
  keyId,
  kbId,
  levelRef,
  operationRef,
  operationStatus,
  packageId,
  patchEntry,
  pid,
  plainBaselineRef,
  plannedProcessResult,
  processResult,
  rebootBehavior,
  rebootStatus,
  runningOperationRef,
  serviceRef,
  siteAction,
  siteForm,
  switchMode,
  trustedKey,
} from './shared.js';

// ---- apply ----------------------------------------------------------------------------------------

/** The counts and flags of Azure's install result (apply's and install's). */
const installOutcome = {
  rebootStatus,
  maintenanceWindowExceeded: z.boolean(),
  excludedPatchCount: z.number().int().nonnegative(),
  notSelectedPatchCount: z.number().int().nonnegative(),
  pendingPatchCount: z.number().int().nonnegative(),
  installedPatchCount: z.number().int().nonnegative(),
  failedPatchCount: z.number().int().nonnegative(),
};

/** Azure's install result (DESIGN.md §8), plus what happened in each process. */
export const applyResultOutput = z.strictObject({
  status: operationStatus,
  /** Azure's name for the operation id; the same value as `activityId`. */
  installationActivityId: activityId,
  activityId,
  ...installOutcome,
  patches: z.array(patchEntry),
  startDateTime: dateTime,
  processes: z.array(processResult),
  /** The hotpatch level reached (hotpatches that went live somewhere). */
  hotpatchLevel: levelRef.optional(),
  error: z.strictObject({ code: z.string(), message: z.string() }).optional(),
  /** Hotpatches: functions the compiler also inlined into callers the package does not patch. */
  warnings: z.array(inlineWarning).optional(),
});

/** The state the machine is in while a dry run plans: an interrupted operation the real run would finish first, or a live agent's. */
const dryRunContext = {
  interruptedOperation: operationRef.optional(),
  runningOperation: runningOperationRef.optional(),
};

/** `apply --dry-run`: what apply would do; nothing was written or recorded. */
export const applyPlanOutput = z.strictObject({
  dryRun: z.literal(true),
  /** The package, in the installation state the apply would leave it. */
  patches: z.array(patchEntry),
  /** The reboot status the apply would leave. */
  rebootStatus,
  /** A baseline: staged for the next reboot, nothing running would change. */
  rebootRequired: z.boolean(),
  baseline: z.strictObject({ baselineId, staged: z.boolean(), alreadyRunning: z.boolean() }).optional(),
  /** A hotpatch: the level the processes would be brought to, and the level they are at (`from`). */
  hotpatchLevel: levelRef.extend({ from: levelRef.optional() }).optional(),
  processes: z.array(plannedProcessResult),
  warnings: z.array(inlineWarning).optional(),
  ...dryRunContext,
});

/** `apply` prints applyResultOutput, `apply --dry-run` applyPlanOutput. */
export const applyOutput = z.union([applyResultOutput, applyPlanOutput]);

// ---- revert ---------------------------------------------------------------------------------------

export const revertResultOutput = z.strictObject({
  status: operationStatus,
  activityId,
  from: levelRef,
  /** The previous level, or the plain baseline (sequence 0). */
  to: z.union([levelRef, plainBaselineRef]),
  processes: z.array(processResult),
});

/** `revert --dry-run`: what revert would do; nothing was written or recorded. */
export const revertPlanOutput = z.strictObject({
  dryRun: z.literal(true),
  from: levelRef,
  to: z.union([levelRef, plainBaselineRef]),
  processes: z.array(plannedProcessResult),
  ...dryRunContext,
});

/** `revert` prints revertResultOutput, `revert --dry-run` revertPlanOutput. */
export const revertOutput = z.union([revertResultOutput, revertPlanOutput]);

// ---- status ---------------------------------------------------------------------------------------

const functionStatus = z.strictObject({
  object: z.string(),
  function: z.string(),
  state: z.enum(['original', 'patched', 'foreign', 'modified']),
  form: siteForm,
  packageId: packageId.optional(),
  expectedPackageId: packageId.optional(),
});

const processStatus = z.strictObject({
  pid,
  comm: z.string(),
  /** The baseline whose files the process mapped ("a+b" for several, "unknown" for none known). */
  baselineId,
  hotpatchSequence: z.number().int().nonnegative(),
  compliant: z.boolean(),
  reasons: z.array(z.string()),
  files: z.array(z.strictObject({ path: z.string(), buildId: z.string().optional(), deleted: z.boolean() })),
  functions: z.array(functionStatus),
});

// ---- update management (Azure's shapes, DESIGN.md §8) -----------------------------------------------

export const patchSettings = z.strictObject({
  patchMode: z.enum(PATCH_MODES),
  enableHotpatching: z.boolean(),
  assessmentMode: z.enum(ASSESSMENT_MODES),
  automaticByPlatformSettings: z.strictObject({ rebootSetting: z.enum(REBOOT_SETTINGS) }),
});

const hhmm = z.string().regex(/^\d{2}:\d{2}$/);
const offPeakWindow = z.strictObject({ start: hhmm, end: hhmm }).describe('local time of the machine\'s time zone; an end before the start spans midnight');

/** `config`, `config show`, `config set`: the settings and the enrollment (with `changed` after a set). */
export const configOutput = z.strictObject({
  patchSettings,
  /** IANA name: the configured one, or the system's. */
  timeZone: z.string(),
  timeZoneSource: z.enum(['system', 'configured']),
  offPeakWindow,
  enrollment,
  enrollmentReason: z.string().optional(),
  enrollmentSince: dateTime.optional(),
  changed: z.array(z.string()).optional(),
});

const updateError = z.strictObject({ code: z.string(), message: z.string() });

/** What names a patch in the assess and install results. */
const patchIdentity = {
  patchId: packageId,
  name: z.string(),
  kbId,
  classifications: z.array(classification),
  rebootBehavior,
  publishedDate: dateTime,
};

export const availablePatch = z.strictObject({
  ...patchIdentity,
  lastModifiedDateTime: dateTime,
  assessmentState: z.enum(ASSESSMENT_STATES),
});

/** Azure's assess result. */
export const assessOutput = z.strictObject({
  status: operationStatus,
  assessmentActivityId: activityId,
  rebootPending: z.boolean(),
  criticalAndSecurityPatchCount: z.number().int().nonnegative(),
  otherPatchCount: z.number().int().nonnegative(),
  startDateTime: dateTime,
  lastModifiedDateTime: dateTime,
  availablePatches: z.array(availablePatch),
  error: updateError.optional(),
});

export const installPatch = z.strictObject({
  ...patchIdentity,
  installationState,
  /** Why it was excluded, not selected, left pending or failed. */
  reason: z.string().optional(),
});

/** Azure's install result. */
export const installResultOutput = z.strictObject({
  status: operationStatus,
  installationActivityId: activityId,
  ...installOutcome,
  patches: z.array(installPatch),
  startDateTime: dateTime,
  lastModifiedDateTime: dateTime,
  error: updateError.optional(),
});

/** `install --dry-run`: each patch in the state the install would leave it (planned ones `Installed`), nothing downloaded or written. */
export const installPlanOutput = z.strictObject({
  dryRun: z.literal(true),
  patches: z.array(installPatch.extend({ estimatedMs: z.number().int().nonnegative().optional() })),
  /** The reboot status the install would leave. */
  rebootStatus,
  maintenanceWindowExceeded: z.boolean(),
});

export const installOutput = z.union([installResultOutput, installPlanOutput]);

/** `feed build`: the index written. */
export const feedBuildOutput = z.strictObject({
  dir: z.string(),
  index: z.string(),
  signature: z.string(),
  generatedAt: dateTime,
  expiresAt: dateTime,
  packages: z.array(feedEntrySchema),
});

/** `feed serve`: printed once the server listens. */
export const feedServeOutput = z.strictObject({ dir: z.string(), url: z.string(), port: z.number().int().positive() });

/** The last assessment, as status shows it (the portal's "last assessed"). */
const lastAssessment = z.strictObject({
  status: operationStatus,
  assessmentActivityId: activityId,
  startDateTime: dateTime,
  lastModifiedDateTime: dateTime,
  criticalAndSecurityPatchCount: z.number().int().nonnegative(),
  otherPatchCount: z.number().int().nonnegative(),
  kbIds: z.array(kbId),
});

export const statusOutput = z.strictObject({
  enrollment,
  enrollmentReason: z.string().optional(),
  enrollmentSince: dateTime.optional(),
  patchSettings: patchSettings.optional(),
  timeZone: z.string().optional(),
  offPeakWindow: offPeakWindow.optional(),
  lastAssessment: lastAssessment.optional(),
  installedBaseline: baselineRef.optional(),
  pendingBaseline: baselineRef.optional(),
  runningBaselines: z.array(baselineId),
  rebootPending: z.boolean(),
  rebootPendingReasons: z.array(z.string()),
  rebootStatus,
  hotpatch: levelRef.extend({ appliedAt: dateTime.optional() }).optional(),
  compliant: z.boolean(),
  processes: z.array(processStatus),
  services: z.array(serviceRef.extend({ baselineId, alive: z.boolean() })),
  interruptedOperation: operationRef.optional(),
  runningOperation: operationRef.extend({ pid, command: z.string() }).optional(),
  /** `status --check` only. */
  check: z.strictObject({ healthy: z.boolean(), problems: z.array(z.string()) }).optional(),
});

// ---- history --------------------------------------------------------------------------------------

export const historyEntry = z.strictObject({
  time: dateTime,
  action: z.string(),
  packageId: packageId.optional(),
  kbId: kbId.optional(),
  result: z.enum(['Succeeded', 'Failed', 'CompletedWithWarnings', 'Refused']),
  /** What the action did, as it recorded it (free-form). */
  detail: z.record(z.string(), z.unknown()).optional(),
  activityId,
});

export const historyOutput = z.strictObject({
  /** Newest first. */
  entries: z.array(historyEntry),
  /** Lines of the history file that were not a valid entry and were skipped. */
  corruptLines: z.number().int().nonnegative(),
});

// ---- reboot and boot ------------------------------------------------------------------------------

export const rebootResultOutput = z.strictObject({
  kind: z.enum(['reboot', 'boot']),
  status: z.enum(['Succeeded', 'CompletedWithWarnings']),
  rebootStatus,
  activityId,
  fromBaselineId: baselineId.optional(),
  toBaselineId: baselineId.optional(),
  stopped: z.array(serviceRef.extend({ how: z.string(), why: z.string().optional() })),
  started: z.array(serviceRef.extend({ readyMs: z.number().nonnegative() })),
  kept: z.array(serviceRef.extend({ how: z.enum(['running', 'adopted']) })),
  downtimeMs: z.number().nonnegative(),
  /** The hotpatch level re-applied to the services started. */
  hotpatch: levelRef.extend({ status: z.enum(['Succeeded', 'CompletedWithWarnings', 'Failed']), processes: z.array(processResult) }).optional(),
  /** This run finished an operation an interrupted agent had begun. */
  repaired: operationRef.optional(),
});

/** `reboot --dry-run` / `boot --dry-run`: the services it would stop, start and keep; nothing was done. */
export const rebootPlanOutput = z.strictObject({
  dryRun: z.literal(true),
  kind: z.enum(['reboot', 'boot']),
  /** The interrupted reboot the run would finish (instead of starting a new one). */
  finishes: z.strictObject({ startedAt: dateTime }).optional(),
  fromBaselineId: baselineId.optional(),
  toBaselineId: baselineId.optional(),
  /** The reboot status the run would leave. */
  rebootStatus,
  /** `running` false: already gone, nothing to signal; `how`: an externally managed service's restart command. */
  stop: z.array(serviceRef.extend({ running: z.boolean(), why: z.string().optional(), how: z.string().optional() })),
  /** `restart`: started by that command (an externally managed service). */
  start: z.array(z.strictObject({ name: z.string(), baselineId, file: z.string(), restart: z.array(z.string()).optional() })),
  keep: z.array(serviceRef.extend({ how: z.enum(['running', 'adopted']) })),
  /** The hotpatch level that would be re-applied to the services' processes. */
  hotpatch: levelRef.optional(),
  /** The old baseline's level, which a switch of baseline leaves behind. */
  hotpatchDropped: levelRef.optional(),
  ...dryRunContext,
});

/** `reboot` prints rebootResultOutput, `reboot --dry-run` rebootPlanOutput. */
export const rebootOutput = z.union([rebootResultOutput, rebootPlanOutput]);

/** `boot` prints what `reboot` prints (kind "boot"). */
export const bootOutput = rebootOutput;

// ---- try ------------------------------------------------------------------------------------------

const trySite = changeSite;

const tryCommon = {
  pid,
  mode: switchMode,
  /** Zero-stop: first write → last write read back, µs (nothing stopped). */
  switchUs: z.number().nonnegative().optional(),
  /** Zero-stop with a new patch: the thread borrowed to map it, and for how long it was held. */
  borrowed: z.array(z.strictObject({ tid: z.number().int().positive(), heldUs: z.number().nonnegative(), interruptedSyscall: z.boolean() })).optional(),
  /** First thread stopped → last resumed, µs (0 in zero-stop mode). */
  pauseUs: z.number().nonnegative(),
  /** Every stop of the change, retried attempts included, µs (pauseUs is the final attempt's). */
  totalStoppedUs: z.number().nonnegative().optional(),
  /** Threads stopped or held. */
  threads: z.number().int().nonnegative(),
  /** Of those, held asleep in epoll_wait & co. (never interrupted, so never cut short) instead of stopped. */
  held: z.number().int().nonnegative().optional(),
  attempts: z.number().int().nonnegative(),
  realtime: z.boolean(),
  object: z.strictObject({ path: z.string(), buildId: z.string().optional() }),
  sites: z.array(trySite),
  warnings: z.array(inlineWarning).optional(),
};

export const tryApplyOutput = z.strictObject({
  ...tryCommon,
  patch: z.strictObject({ path: z.string(), buildId: z.string().optional(), base: address, size: z.number().int().positive(), mapping: z.string(), reused: z.boolean().optional() }),
  bindings: z.array(z.strictObject({ name: z.string(), address, from: z.string() })),
});

export const tryRevertOutput = z.strictObject(tryCommon);

/** Several processes (`--pid` repeated, `--all`): one result each, and the run's status. */
export const tryManyOutput = z.strictObject({
  status: operationStatus,
  processes: z.array(
    z.union([tryApplyOutput.extend({ ok: z.literal(true) }), tryRevertOutput.extend({ ok: z.literal(true) }), z.strictObject({ pid, ok: z.literal(false), error: errorBody })]),
  ),
  warnings: z.array(inlineWarning),
});

/** `try --dry-run` (with or without --revert) on one process: its plan; nothing was mapped, written or recorded. */
export const tryPlanOutput = changePlan.extend({ warnings: z.array(inlineWarning).optional() });

/** `try --dry-run` on several processes: each one's plan, or why it would be refused. */
export const tryManyPlanOutput = z.strictObject({
  dryRun: z.literal(true),
  status: operationStatus,
  processes: z.array(z.union([changePlan.extend({ ok: z.literal(true) }), z.strictObject({ pid, ok: z.literal(false), error: errorBody })])),
  warnings: z.array(inlineWarning),
});

/**
 * `try` prints tryApplyOutput, `try --revert` tryRevertOutput; on several processes tryManyOutput;
 * with --dry-run tryPlanOutput (one process) or tryManyPlanOutput.
 */
export const tryOutput = z.union([tryApplyOutput, tryRevertOutput, tryManyOutput, tryPlanOutput, tryManyPlanOutput]);

// ---- pack, keygen, trust --------------------------------------------------------------------------

export const packOutput = z.strictObject({
  path: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().positive(),
  keyId,
  manifest: ManifestSchema,
  warnings: z.array(inlineWarning).optional(),
});

export const keygenOutput = z.strictObject({ keyId, privateKey: z.string(), publicKey: z.string() });

export const trustAddOutput = trustedKey;
export const trustListOutput = z.strictObject({ keys: z.array(trustedKey) });
export const trustRemoveOutput = z.strictObject({ keyId, name: z.string().nullable(), removed: z.literal(true) });

// ---- errors ---------------------------------------------------------------------------------------

// ---- schedule ------------------------------------------------------------------------------------

const releaseDate = z.string().regex(/^\d{4}-\d{2}-\d{2}$/).describe('a calendar date, YYYY-MM-DD');

/** The release calendar of a year, and with --feed the feed's packages placed on it. */
export const scheduleOutput = z.strictObject({
  year: z.number().int(),
  /** The feed read (folder or URL), with --feed. */
  feed: z.string().optional(),
  months: z.array(
    z.strictObject({
      month: z.number().int().min(1).max(12),
      name: z.string(),
      /** The second Tuesday. */
      releaseDate,
      kind: z.enum(['baseline', 'hotpatch', 'unplanned-baseline']),
      packages: z.array(
        z.strictObject({
          packageId,
          kbId,
          releaseDate,
          classification: z.enum(CLASSIFICATIONS),
          role: z.enum(['baseline', 'hotpatch', 'unplanned-baseline', 'cumulative-update', 'non-security']),
        }),
      ),
    }),
  ),
  /** Packages of the year whose date or kind does not fit the calendar, and why. */
  problems: z.array(z.strictObject({ packageId, kbId, releaseDate, problem: z.string() })),
});

// ---- run -----------------------------------------------------------------------------------------

/** One line of `hp-agent run --json`: one action of the automatic patching loop, with its reason. */
export const runOutput = z.strictObject({
  /** The agent's now (the simulated clock's, in a simulation). */
  time: dateTime,
  action: z.enum(['start', 'stop', 'assess', 'skip', 'install', 'service', 'rollback', 'reboot', 'catch-up', 'error']),
  /** Why: which window, which rule. */
  reason: z.string(),
  result: z.enum(['Succeeded', 'Failed', 'CompletedWithWarnings']).optional(),
  kbId: kbId.optional(),
  packageId: packageId.optional(),
  classification: z.enum(CLASSIFICATIONS).optional(),
  releaseDate: releaseDate.optional(),
  daysSinceRelease: z.number().int().optional(),
  /** Whether the action keeps the rule: installed within 30 days of the release. */
  withinDays: z.boolean().optional(),
  /** The off-peak window it ran in. */
  window: z.strictObject({ start: dateTime, end: dateTime }).optional(),
  service: z.string().optional(),
  pids: z.array(pid).optional(),
  healthy: z.boolean().optional(),
  detail: z.string().optional(),
  rebootStatus: rebootStatus.optional(),
  kbIds: z.array(kbId).optional(),
  criticalAndSecurityPatchCount: z.number().int().nonnegative().optional(),
  otherPatchCount: z.number().int().nonnegative().optional(),
});

export const errorOutput = z.strictObject({ error: errorBody });
