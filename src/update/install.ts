/**
 * `hp-agent install`: install what an assessment finds, by Azure's install parameters, through
 * the agent's own operations — a baseline or cumulative update is the apply of its package
 * (staged) and a reboot as the reboot setting allows; a hotpatch is the apply of its package
 * (live). The order is the program's: a missing baseline first, then the latest hotpatch of
 * the baseline that runs after it. With a maximum duration, no update is started that cannot
 * finish inside the window (estimated from the package: the measured downtime of this machine's
 * reboots, or the number of processes a hotpatch changes); what is left stays Pending.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { HpError, isErrorCode } from '../errors.js';
import { readHistory } from '../agent/history.js';
import { installedBaselineManifest } from '../agent/baseline.js';
import { applyPackage, reboot, status as readStatus } from '../agent/operations.js';
import { transitionReboot, type RebootStatus } from '../agent/state.js';
import { withSession, type Session } from '../agent/session.js';
import { applicableBaseline, applicableHotpatch, releasedBy, type MachineView } from './applicable.js';
import { machineView, patchIdentity, type UpdateRunOptions } from './assess.js';
import type { InstallParameters, InstallPatch, OperationStatus, UpdateInstallResult } from './azure.js';
import { formatDuration, parseDuration } from './duration.js';
import { updateSettingsOf } from './settings.js';
import type { FeedEntry } from './feed/index-format.js';
import { describeSource, downloadPackage, readFeedIndex, type FeedSource } from './feed/source.js';
import { checkInstallParameters, selectPatch, unknownKbs } from './select.js';

/** Staging a baseline's files, and a hotpatch's fixed cost, before per-process work. */
export const STAGE_ESTIMATE_MS = 5_000;
export const HOTPATCH_BASE_ESTIMATE_MS = 2_000;
export const HOTPATCH_PER_PROCESS_MS = 100;
/** A reboot this machine never measured: assume a slow one. */
export const UNMEASURED_REBOOT_MS = 10 * 60_000;

export interface Estimates {
  /** The longest reboot measured on this machine lately (undefined: none measured). */
  rebootDowntimeMs?: number;
  /** Processes of the running baseline a hotpatch would change. */
  processes: number;
}

/** How long installing `e` may take (pure). `reboots`: whether the install reboots for it. */
export function estimateMs(e: FeedEntry, reboots: boolean, est: Estimates): number {
  if (e.kind === 'hotpatch') return HOTPATCH_BASE_ESTIMATE_MS + HOTPATCH_PER_PROCESS_MS * est.processes;
  return STAGE_ESTIMATE_MS + (reboots ? rebootEstimateMs(est.rebootDowntimeMs) : 0);
}

/** A reboot: twice the longest measured one (a margin for a slower start), or the unmeasured guess. */
export const rebootEstimateMs = (measuredMs: number | undefined): number => (measuredMs === undefined ? UNMEASURED_REBOOT_MS : 2 * measuredMs);

/** The longest of this machine's last ten measured reboots (the agent records each one's downtime). */
export async function measuredRebootMs(home: string): Promise<number | undefined> {
  const { entries } = await readHistory(home, { sinceDays: Infinity });
  const ms = entries
    // A boot only starts services: its time is not a reboot's downtime.
    .filter((e) => e.action === 'reboot' && e.detail?.mode === 'reboot' && typeof e.detail.downtimeMs === 'number' && e.detail.downtimeMs > 0)
    .slice(0, 10)
    .map((e) => e.detail!.downtimeMs as number);
  return ms.length ? Math.max(...ms) : undefined;
}

/** A view of the machine once baseline `b` is booted (for the dry run's plan of what follows). */
export function viewAfterBoot(m: MachineView, b: { baselineId: string; releaseDate?: string; equivalentHotpatch?: string }): MachineView {
  const enrolls = m.enrollment === 'Pending' && !b.equivalentHotpatch;
  return { enrollment: enrolls ? 'Enabled' : m.enrollment, activeBaseline: { id: b.baselineId, releaseDate: b.releaseDate }, hotpatchSequence: 0, runningLevels: [] };
}

/**
 * A baseline staged by an earlier install that did not reboot (`Never`) is rebooted onto now,
 * when the reboot setting allows and the reboot fits in the window: "if required" is the
 * machine's need, not only this install's.
 */
function rebootsForStaged(stagedBefore: boolean, rebootAllowed: boolean, fits: boolean): 'reboot' | 'window' | undefined {
  if (!stagedBefore || !rebootAllowed) return undefined;
  return fits ? 'reboot' : 'window';
}

export interface InstallOptions extends UpdateRunOptions {
  /** Milliseconds since the install began (default: the monotonic clock; a simulation passes its own). */
  elapsedMs?: () => number;
  /** Processes changed so far by a hotpatch (as apply reports it). */
  onProgress?: (done: number, total: number) => void;
  /** Each patch as its installation state becomes known. */
  onPatch?: (p: InstallPatch) => void;
}

const patchOf = (e: FeedEntry, installationState: InstallPatch['installationState'], reason?: string): InstallPatch => ({ ...patchIdentity(e), installationState, ...(reason ? { reason } : {}) });

/**
 * Whether `e` is left out, and how (undefined: it goes in): the install parameters first, then
 * whether its estimate fits what is left of the window.
 */
function gate(e: FeedEntry, p: InstallParameters, ms: number, fits: (ms: number) => boolean): InstallPatch | undefined {
  const sel = selectPatch(e, p);
  if (sel.state !== 'Selected') return patchOf(e, sel.state, sel.reason);
  if (!fits(ms)) return patchOf(e, 'Pending', `its estimate (${formatDuration(ms)}) does not fit in what is left of the maximum duration ${p.maximumDuration}`);
  return undefined;
}

const noLongerApplies = (e: FeedEntry, after: MachineView) => patchOf(e, 'NotSelected', `no longer applies: the machine runs baseline ${after.activeBaseline?.id} now`);

/** Install within a session (the caller holds the lock). Bad parameters: USAGE before anything runs. */
export async function installIn(s: Session, source: FeedSource, params: InstallParameters, now: Date, o: InstallOptions = {}): Promise<UpdateInstallResult> {
  const p = checkInstallParameters(params);
  const windowMs = p.maximumDuration !== undefined ? parseDuration(p.maximumDuration) : undefined;
  const rebootSetting = p.rebootSetting ?? updateSettingsOf(s.state).patchSettings.automaticByPlatformSettings.rebootSetting;
  const t0 = performance.now();
  const elapsed = o.elapsedMs ?? (() => performance.now() - t0);
  const start = now.toISOString();
  const activity = randomUUID();

  const index = await readFeedIndex(source, s.layout.trustedKeys, now, s.signal);
  const unknown = unknownKbs(p, index.packages);
  if (unknown.length) throw new HpError('USAGE', `the feed ${describeSource(source)} lists no ${unknown.join(', ')}: check the KB numbers. Nothing was installed`, { kbIds: unknown });
  const released = releasedBy(index.packages, now);
  s.signal.throwIfAborted();

  const patches: InstallPatch[] = [];
  const done = (x: InstallPatch) => {
    patches.push(x);
    o.onPatch?.(x);
  };
  let exceeded = false;
  let rebooted: RebootStatus | undefined;
  let error: { code: string; message: string } | undefined;
  const rebootMs = await measuredRebootMs(s.home);
  const fits = (ms: number) => windowMs === undefined || elapsed() + ms <= windowMs;

  /** Downloads and applies one package; Installed or Failed. */
  const install = async (e: FeedEntry): Promise<boolean> => {
    let file: string | undefined;
    try {
      file = await downloadPackage(source, e, s.layout.downloads, s.signal);
      const r = await applyPackage(s, file, { onProgress: o.onProgress });
      if (r.status === 'Failed') throw new HpError(r.error && isErrorCode(r.error.code) ? r.error.code : 'INSTALL_FAILED', r.error?.message ?? `${e.kb} failed in every process`);
      done(patchOf(e, 'Installed', r.status === 'CompletedWithWarnings' ? 'installed, but some processes could not be changed (see the history)' : undefined));
      return true;
    } catch (err) {
      // SIGINT/SIGTERM stop the install at this safe point (what is done stays done).
      if (!(err instanceof HpError) || err.code === 'INTERRUPTED') throw err;
      error ??= { code: err.code, message: err.message };
      done(patchOf(e, 'Failed', err.message));
      return false;
    } finally {
      if (file) await fs.promises.rm(file, { force: true });
    }
  };

  const doReboot = async () => {
    if (s.state.rebootStatus !== 'Required') s.state = transitionReboot(s.state, 'Required');
    await s.save();
    try {
      rebooted = (await reboot(s)).rebootStatus;
    } catch (err) {
      if (!(err instanceof HpError) || err.code === 'INTERRUPTED') throw err;
      rebooted = 'Failed';
      error ??= { code: err.code, message: err.message };
    }
  };

  // 1. The whole-file update the machine lacks.
  const before = machineView(s, await readStatus(s));
  const baseline = applicableBaseline(released, before);
  const rebootAllowed = rebootSetting !== 'Never';
  if (baseline) {
    const gated = gate(baseline, p, estimateMs(baseline, rebootAllowed, { rebootDowntimeMs: rebootMs, processes: 0 }), fits);
    if (gated) {
      exceeded ||= gated.installationState === 'Pending';
      done(gated);
    } else if ((await install(baseline)) && rebootAllowed) {
      await doReboot();
    }
  }
  if (rebooted === undefined) {
    const staged = rebootsForStaged(s.state.pendingBaseline !== undefined, rebootAllowed, fits(rebootEstimateMs(rebootMs)));
    if (staged === 'reboot') await doReboot();
    exceeded ||= staged === 'window';
  }

  // 2. The latest hotpatch of the baseline that runs now.
  const st = await readStatus(s);
  const after = machineView(s, st);
  const oldHotpatch = applicableHotpatch(released, before);
  const hotpatch = applicableHotpatch(released, after);
  if (oldHotpatch && oldHotpatch.id !== hotpatch?.id) done(noLongerApplies(oldHotpatch, after));
  if (hotpatch) {
    const processes = st.processes.filter((x) => x.baselineId === after.activeBaseline?.id).length;
    const gated = gate(hotpatch, p, estimateMs(hotpatch, false, { processes }), fits);
    if (gated) {
      exceeded ||= gated.installationState === 'Pending';
      done(gated);
    } else await install(hotpatch);
  }

  // 3. Always: reboot once everything is in, if this install has not rebooted already.
  const installed = patches.filter((x) => x.installationState === 'Installed').length;
  if (rebootSetting === 'Always' && installed > 0 && rebooted === undefined) await doReboot();
  if (windowMs !== undefined && elapsed() > windowMs) exceeded = true;

  const count = (state: InstallPatch['installationState']) => patches.filter((x) => x.installationState === state).length;
  const failed = count('Failed');
  const pending = count('Pending');
  const statusOf: OperationStatus = failed > 0 && installed === 0 ? 'Failed' : failed > 0 || pending > 0 || rebooted === 'Failed' ? 'CompletedWithWarnings' : 'Succeeded';
  const rebootStatus: RebootStatus = rebooted ?? (s.state.rebootStatus === 'Required' ? 'Required' : 'NotNeeded');
  const result: UpdateInstallResult = {
    status: statusOf,
    installationActivityId: activity,
    rebootStatus,
    maintenanceWindowExceeded: exceeded,
    excludedPatchCount: count('Excluded'),
    notSelectedPatchCount: count('NotSelected'),
    pendingPatchCount: pending,
    installedPatchCount: installed,
    failedPatchCount: failed,
    patches,
    startDateTime: start,
    lastModifiedDateTime: new Date(now.getTime() + Math.round(elapsed())).toISOString(),
    ...(error ? { error } : {}),
  };
  await s.record({
    action: 'installation',
    result: statusOf === 'Failed' ? 'Failed' : statusOf === 'CompletedWithWarnings' ? 'CompletedWithWarnings' : 'Succeeded',
    time: result.lastModifiedDateTime,
    activityId: activity,
    // What the portal's history shows first: the KBs installed and the reboot.
    detail: {
      kbIds: patches.filter((x) => x.installationState === 'Installed').map((x) => x.kbId),
      rebootStatus,
      installedPatchCount: installed,
      pendingPatchCount: pending,
      failedPatchCount: failed,
      excludedPatchCount: result.excludedPatchCount,
      notSelectedPatchCount: result.notSelectedPatchCount,
      maintenanceWindowExceeded: exceeded,
      ...(error ? { code: error.code, message: error.message } : {}),
      feed: describeSource(source),
    },
  });
  return result;
}

/** `hp-agent install`: one agent run. */
export async function install(home: string | undefined, source: FeedSource, params: InstallParameters, now: Date, o: InstallOptions = {}): Promise<UpdateInstallResult> {
  const p = checkInstallParameters(params);
  return withSession({ command: 'install', home, wait: o.wait, verbose: o.verbose }, (s) => installIn(s, source, p, now, o));
}

/** `install --dry-run`: what install would do, in order, with each step's estimate. */
export interface InstallPlan {
  dryRun: true;
  patches: (InstallPatch & { estimatedMs?: number })[];
  rebootStatus: RebootStatus;
  maintenanceWindowExceeded: boolean;
}

/**
 * The plan of an install, from the same rules and estimates (the window is spent by the
 * estimates): reads the feed and the processes, downloads and writes nothing.
 */
export async function planInstallIn(s: Session, source: FeedSource, params: InstallParameters, now: Date): Promise<InstallPlan> {
  const p = checkInstallParameters(params);
  const windowMs = p.maximumDuration !== undefined ? parseDuration(p.maximumDuration) : undefined;
  const rebootSetting = p.rebootSetting ?? updateSettingsOf(s.state).patchSettings.automaticByPlatformSettings.rebootSetting;
  const index = await readFeedIndex(source, s.layout.trustedKeys, now, s.signal);
  const unknown = unknownKbs(p, index.packages);
  if (unknown.length) throw new HpError('USAGE', `the feed ${describeSource(source)} lists no ${unknown.join(', ')}: check the KB numbers. Nothing was installed`, { kbIds: unknown });
  const released = releasedBy(index.packages, now);
  const st = await readStatus(s);
  const before = machineView(s, st);
  let spent = 0;
  const fits = (ms: number) => windowMs === undefined || spent + ms <= windowMs;
  const patches: InstallPlan['patches'] = [];
  let exceeded = false;
  let rebootStatus: RebootStatus = s.state.rebootStatus === 'Required' ? 'Required' : 'NotNeeded';
  let after = before;
  const take = (e: FeedEntry, ms: number): boolean => {
    const gated = gate(e, p, ms, fits);
    if (gated) {
      exceeded ||= gated.installationState === 'Pending';
      patches.push({ ...gated, estimatedMs: ms });
      return false;
    }
    spent += ms;
    patches.push({ ...patchOf(e, 'Installed'), estimatedMs: ms });
    return true;
  };
  const baseline = applicableBaseline(released, before);
  if (baseline) {
    const reboots = rebootSetting !== 'Never';
    if (take(baseline, estimateMs(baseline, reboots, { rebootDowntimeMs: await measuredRebootMs(s.home), processes: 0 }))) {
      rebootStatus = reboots ? 'Completed' : 'Required';
      if (reboots) after = viewAfterBoot(before, baseline);
    }
  }
  const pendingId = s.state.pendingBaseline?.id;
  if (after === before && pendingId) {
    const ms = rebootEstimateMs(await measuredRebootMs(s.home));
    const staged = rebootsForStaged(true, rebootSetting !== 'Never', fits(ms));
    if (staged === 'reboot') {
      spent += ms;
      rebootStatus = 'Completed';
      const m = installedBaselineManifest(s.home, pendingId);
      after = viewAfterBoot(before, { baselineId: pendingId, releaseDate: m?.releaseDate, equivalentHotpatch: m?.equivalentHotpatch });
    }
    exceeded ||= staged === 'window';
  }
  const oldHotpatch = applicableHotpatch(released, before);
  const hotpatch = applicableHotpatch(released, after);
  if (oldHotpatch && oldHotpatch.id !== hotpatch?.id) patches.push(noLongerApplies(oldHotpatch, after));
  // After a reboot the new baseline's processes are its services, one process each.
  const processes = after === before ? st.processes.filter((x) => x.baselineId === before.activeBaseline?.id).length : s.state.services.length;
  if (hotpatch && take(hotpatch, estimateMs(hotpatch, false, { processes })) && rebootSetting === 'Always' && rebootStatus !== 'Completed') rebootStatus = 'Completed';
  return { dryRun: true, patches, rebootStatus, maintenanceWindowExceeded: exceeded };
}

/** `hp-agent install --dry-run`: reads only (no lock, nothing written). */
export async function planInstall(home: string | undefined, source: FeedSource, params: InstallParameters, now: Date, o: UpdateRunOptions = {}): Promise<InstallPlan> {
  const p = checkInstallParameters(params);
  return withSession({ command: 'install --dry-run', home, verbose: o.verbose, readOnly: true }, (s) => planInstallIn(s, source, p, now));
}
