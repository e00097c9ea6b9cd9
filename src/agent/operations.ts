/**
 * What the agent's commands do, on top of a Session: install a baseline, apply or revert a
 * hotpatch level, reboot, boot, and report. Results use Azure's field names (DESIGN.md §8).
 */
import { randomUUID } from 'node:crypto';
import { HpError } from '../errors.js';
import { openPackage, trustDir, type BaselineManifest, type HotpatchManifest, type Manifest } from '../package/index.js';
import { installedBaselineManifest, stageBaseline, startServices, stopServices } from './baseline.js';
import { writeBaselinePointer } from './home.js';
import { applyLevel, checkHotpatchFits, levelManifest, previousLevel, type ProcessResult } from './hotpatch.js';
import { serviceAlive } from './services.js';
import type { Session } from './session.js';
import { beginOperation, endOperation, pendingOperation, transitionReboot } from './state.js';
import { computeStatus, type StatusReport } from './status.js';
import { storedManifest, storePackage } from './store.js';

export type InstallationState = 'Unknown' | 'Installed' | 'Failed' | 'Excluded' | 'NotSelected' | 'Pending';
export type OperationStatus = 'Unknown' | 'InProgress' | 'Failed' | 'Succeeded' | 'CompletedWithWarnings';

export interface PatchEntry {
  patchId: string;
  name: string;
  kbId: string;
  classifications: string[];
  rebootBehavior: string;
  installationState: InstallationState;
}

export interface InstallResult {
  status: OperationStatus;
  installationActivityId: string;
  rebootStatus: string;
  maintenanceWindowExceeded: boolean;
  excludedPatchCount: number;
  notSelectedPatchCount: number;
  pendingPatchCount: number;
  installedPatchCount: number;
  failedPatchCount: number;
  patches: PatchEntry[];
  startDateTime: string;
  /** hp-agent's own detail: what happened in each process (hotpatches). */
  processes: ProcessResult[];
  /** Hotpatch level reached: baseline id and sequence. */
  hotpatchLevel?: { baselineId: string; sequence: number; packageId: string };
  error?: { code: string; message: string };
}

function historyResult(st: OperationStatus): 'Succeeded' | 'Failed' | 'CompletedWithWarnings' {
  return st === 'Succeeded' || st === 'CompletedWithWarnings' ? st : 'Failed';
}

function patchEntry(m: Manifest, state: InstallationState): PatchEntry {
  return { patchId: m.id, name: m.title, kbId: m.kb, classifications: [m.classification], rebootBehavior: m.rebootBehavior, installationState: state };
}

function result(start: string, activity: string, rebootStatus: string, m: Manifest, state: InstallationState, processes: ProcessResult[] = []): InstallResult {
  const failed = processes.filter((p) => p.outcome === 'Failed' || p.outcome === 'Skipped').length;
  const status: OperationStatus = state === 'Failed' ? 'Failed' : failed > 0 ? 'CompletedWithWarnings' : 'Succeeded';
  return {
    status,
    installationActivityId: activity,
    rebootStatus,
    maintenanceWindowExceeded: false,
    excludedPatchCount: 0,
    notSelectedPatchCount: 0,
    pendingPatchCount: state === 'Pending' ? 1 : 0,
    installedPatchCount: state === 'Installed' ? 1 : 0,
    failedPatchCount: state === 'Failed' ? 1 : 0,
    patches: [patchEntry(m, state)],
    startDateTime: start,
    processes,
  };
}

export interface ApplyOptions {
  pids?: number[];
  allowUnsigned?: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** `hp-agent apply <package>`: a baseline is staged (reboot required); a hotpatch goes live. */
export async function applyPackage(s: Session, file: string, o: ApplyOptions = {}): Promise<InstallResult> {
  await repairInterrupted(s);
  const start = new Date().toISOString();
  const activity = randomUUID();
  let pkg;
  try {
    pkg = await openPackage(file, { trustDir: trustDir(s.home), allowUnsigned: o.allowUnsigned, signal: s.signal });
    // The last point where a signal stops the command before it changes anything.
    s.signal.throwIfAborted();
  } catch (e) {
    await s.record({ action: 'refuse', result: 'Refused', detail: { package: file, code: (e as HpError).code, message: (e as Error).message }, activityId: activity });
    throw e;
  }
  const m = pkg.manifest;
  s.log.info('package verified', { id: m.id, kb: m.kb, kind: m.kind, signer: pkg.signer?.keyId });
  try {
    return m.kind === 'baseline' ? await installBaseline(s, pkg as typeof pkg & { manifest: BaselineManifest }, start, activity) : await applyHotpatch(s, pkg as typeof pkg & { manifest: HotpatchManifest }, o, start, activity);
  } catch (e) {
    if (e instanceof HpError) {
      await s.record({ action: 'refuse', packageId: m.id, kb: m.kb, result: 'Refused', detail: { code: e.code, message: e.message }, activityId: activity });
    }
    throw e;
  }
}

async function installBaseline(s: Session, pkg: Awaited<ReturnType<typeof openPackage>> & { manifest: BaselineManifest }, start: string, activity: string): Promise<InstallResult> {
  const m = pkg.manifest;
  if (s.state.activeBaseline?.id === m.baselineId) {
    return result(start, activity, s.state.rebootStatus, m, 'Installed');
  }
  await storePackage(s.home, pkg);
  const { alreadyThere } = await stageBaseline(s.home, pkg);
  await writeBaselinePointer(s.home, 'pending', m.baselineId);
  s.state.pendingBaseline = { id: m.baselineId, kb: m.kb, packageId: m.id, installedAt: new Date().toISOString() };
  if (s.state.rebootStatus !== 'Required') s.state = transitionReboot(s.state, 'Required');
  await s.save();
  await s.record({ action: 'install', packageId: m.id, kb: m.kb, result: 'Succeeded', detail: { baselineId: m.baselineId, rebootRequired: true, staged: !alreadyThere }, activityId: activity });
  s.log.info('baseline staged; reboot required', { baselineId: m.baselineId });
  return result(start, activity, s.state.rebootStatus, m, 'Pending');
}

async function applyHotpatch(s: Session, pkg: Awaited<ReturnType<typeof openPackage>> & { manifest: HotpatchManifest }, o: ApplyOptions, start: string, activity: string): Promise<InstallResult> {
  const m = pkg.manifest;
  if (s.state.enrollment !== 'Enabled') {
    throw new HpError('NOT_ENROLLED', `hotpatch enrollment is ${s.state.enrollment}: ${m.kb} can only be installed as part of the next baseline (reboot). Nothing was changed`);
  }
  checkHotpatchFits(s.home, m, { activeBaseline: s.state.activeBaseline?.id, pendingBaseline: s.state.pendingBaseline?.id, current: s.state.hotpatch });
  await storePackage(s.home, pkg);
  s.state = await beginOperation(s.home, s.state, 'level', { baselineId: m.baselineId, packageId: m.id } satisfies LevelIntent);
  const current = s.state.hotpatch?.baselineId === m.baselineId ? levelManifest(s.home, s.state.hotpatch) : undefined;
  // Processes may be at any lower level (one patched before, one started since): re-point from
  // whatever the previous level of this baseline was; the engine reads each process's truth.
  const previous = current && current.id !== m.id ? current : previousLevel(s.home, m.baselineId, m.sequence);
  const processes = await applyLevel({ home: s.home, log: s.log, manifest: m, previous, baselineId: m.baselineId, pids: o.pids, onProgress: o.onProgress });
  const failed = processes.filter((p) => p.outcome === 'Failed' || p.outcome === 'Skipped');
  const anyGood = processes.length === 0 || failed.length < processes.length;
  if (anyGood) s.state.hotpatch = { baselineId: m.baselineId, sequence: m.sequence, packageId: m.id, kb: m.kb, appliedAt: new Date().toISOString() };
  s.state = await endOperation(s.home, s.state);
  const r = result(start, activity, s.state.rebootStatus, m, anyGood ? 'Installed' : 'Failed', processes);
  r.hotpatchLevel = anyGood ? { baselineId: m.baselineId, sequence: m.sequence, packageId: m.id } : undefined;
  await s.record({ action: 'apply', packageId: m.id, kb: m.kb, result: historyResult(r.status), detail: { sequence: m.sequence, processes: processes.map((p) => ({ pid: p.pid, outcome: p.outcome, reason: p.reason, pauseUs: p.pauseUs })) }, activityId: activity });
  return r;
}

export interface RevertResult {
  status: OperationStatus;
  activityId: string;
  from: { packageId: string; kb: string; sequence: number };
  to: { packageId: string; kb: string; sequence: number } | { baseline: string };
  processes: ProcessResult[];
}

/** `hp-agent revert <package>`: live rollback to the previous level, or to the plain baseline. */
export async function revertPackage(s: Session, id: string, o: { pids?: number[] } = {}): Promise<RevertResult> {
  await repairInterrupted(s);
  const activity = randomUUID();
  const level = s.state.hotpatch;
  const current = levelManifest(s.home, level);
  const refuse = async (e: HpError) => {
    await s.record({ action: 'refuse', result: 'Refused', detail: { command: `revert ${id}`, code: e.code, message: e.message }, activityId: activity });
    return e;
  };
  if (!level || !current) throw await refuse(new HpError('NOTHING_TO_REVERT', `no hotpatch is applied; nothing was changed`));
  if (current.id !== id && current.kb !== id) {
    throw await refuse(new HpError('NOT_CURRENT_LEVEL', `${id} is not the applied hotpatch (that is ${current.id}, ${current.kb}); only the current level can be reverted. Nothing was changed`));
  }
  const target = previousLevel(s.home, current.baselineId, current.sequence);
  s.signal.throwIfAborted();
  s.state = await beginOperation(s.home, s.state, 'level', { baselineId: current.baselineId, packageId: target?.id } satisfies LevelIntent);
  const processes = await applyLevel({ home: s.home, log: s.log, manifest: target, previous: current, baselineId: current.baselineId, pids: o.pids });
  const failed = processes.filter((p) => p.outcome === 'Failed' || p.outcome === 'Skipped').length;
  const status: OperationStatus = failed === 0 ? 'Succeeded' : failed < processes.length ? 'CompletedWithWarnings' : 'Failed';
  if (status !== 'Failed') {
    s.state.hotpatch = target ? { baselineId: target.baselineId, sequence: target.sequence, packageId: target.id, kb: target.kb, appliedAt: new Date().toISOString() } : undefined;
  }
  s.state = await endOperation(s.home, s.state);
  await s.record({ action: 'revert', packageId: current.id, kb: current.kb, result: historyResult(status), detail: { to: target?.id ?? `baseline ${current.baselineId}`, processes: processes.map((p) => ({ pid: p.pid, outcome: p.outcome, reason: p.reason })) }, activityId: activity });
  return {
    status,
    activityId: activity,
    from: { packageId: current.id, kb: current.kb, sequence: current.sequence },
    to: target ? { packageId: target.id, kb: target.kb, sequence: target.sequence } : { baseline: current.baselineId },
    processes,
  };
}

export interface RebootResult {
  rebootStatus: string;
  activityId: string;
  fromBaseline?: string;
  toBaseline?: string;
  stopped: { name: string; pid: number; how: string }[];
  started: { name: string; pid: number; readyMs: number }[];
  /** First service stopped → last service ready. */
  downtimeMs: number;
  hotpatch?: { packageId: string; sequence: number; processes: ProcessResult[] };
}

/** After services start on a baseline, bring them to that baseline's installed hotpatch level. */
async function reapplyLevel(s: Session): Promise<RebootResult['hotpatch']> {
  const level = s.state.hotpatch;
  if (!level || level.baselineId !== s.state.activeBaseline?.id) return undefined;
  const m = levelManifest(s.home, level);
  if (!m) return undefined;
  const processes = await applyLevel({ home: s.home, log: s.log, manifest: m, previous: previousLevel(s.home, m.baselineId, m.sequence), baselineId: m.baselineId });
  return { packageId: m.id, sequence: m.sequence, processes };
}

/** `hp-agent reboot`: stop the services, switch to the installed baseline, start them again. */
export async function reboot(s: Session): Promise<RebootResult> {
  await repairInterrupted(s);
  s.signal.throwIfAborted();
  return doReboot(s);
}

async function doReboot(s: Session): Promise<RebootResult> {
  const activity = randomUUID();
  const from = s.state.activeBaseline?.id;
  const pending = s.state.pendingBaseline;
  if (s.state.rebootStatus === 'Required') s.state = transitionReboot(s.state, 'Started');
  s.state = await beginOperation(s.home, s.state, 'reboot');
  const t0 = performance.now();
  const stopped = await stopServices(s.home, s.state.services);
  s.state.services = [];
  if (pending) {
    s.state.activeBaseline = pending;
    s.state.pendingBaseline = undefined;
    await writeBaselinePointer(s.home, 'active', pending.id);
    await writeBaselinePointer(s.home, 'pending', undefined);
    // A hotpatch is for one baseline: a new baseline starts at level 0.
    if (s.state.hotpatch && s.state.hotpatch.baselineId !== pending.id) s.state.hotpatch = undefined;
  }
  await s.save();
  let started: Awaited<ReturnType<typeof startServices>> = [];
  try {
    if (s.state.activeBaseline) started = await startServices(s.home, s.state.activeBaseline.id, []);
  } catch (e) {
    if (s.state.rebootStatus === 'Started') s.state = transitionReboot(s.state, 'Failed');
    s.state = await endOperation(s.home, s.state);
    await s.record({ action: 'reboot', result: 'Failed', detail: { message: (e as Error).message }, activityId: activity });
    throw e;
  }
  const downtimeMs = Math.round(performance.now() - t0);
  s.state.services = started.map(({ readyMs: _r, ...rec }) => rec);
  if (s.state.rebootStatus === 'Started') s.state = transitionReboot(s.state, 'Completed');
  s.state = await endOperation(s.home, s.state);
  const hotpatch = await reapplyLevel(s);
  await s.record({ action: 'reboot', result: 'Succeeded', detail: { from, to: s.state.activeBaseline?.id, downtimeMs }, activityId: activity });
  return {
    rebootStatus: s.state.rebootStatus,
    activityId: activity,
    fromBaseline: from,
    toBaseline: s.state.activeBaseline?.id,
    stopped,
    started: started.map((x) => ({ name: x.name, pid: x.pid, readyMs: x.readyMs })),
    downtimeMs,
    hotpatch,
  };
}

/** `hp-agent boot`: the machine powered on — start the installed baseline's services. */
export async function boot(s: Session): Promise<RebootResult> {
  await repairInterrupted(s);
  const alive = s.state.services.filter((r) => serviceAlive(r));
  if (alive.length > 0 && !s.state.pendingBaseline) {
    // Already up: starting missing services only.
    const started = s.state.activeBaseline ? await startServices(s.home, s.state.activeBaseline.id, alive) : [];
    s.state.services = [...alive, ...started.map(({ readyMs: _r, ...rec }) => rec)];
    await s.save();
    return { rebootStatus: s.state.rebootStatus, activityId: randomUUID(), toBaseline: s.state.activeBaseline?.id, stopped: [], started: started.map((x) => ({ name: x.name, pid: x.pid, readyMs: x.readyMs })), downtimeMs: 0, hotpatch: await reapplyLevel(s) };
  }
  return doReboot(s);
}

/** What a level change set out to do, recorded before it starts (for repair). */
interface LevelIntent {
  baselineId: string;
  /** The level to reach; undefined = the plain baseline. */
  packageId?: string;
}

export interface RepairResult {
  kind: string;
  startedAt: string;
  processes?: ProcessResult[];
}

/**
 * A previous run was killed in the middle of an operation (its intent is still in the state):
 * finish it. Level changes and reboots are idempotent — every process is brought to the
 * intended level from whatever its memory shows — so finishing is doing it again.
 */
export async function repairInterrupted(s: Session): Promise<RepairResult | undefined> {
  const op = pendingOperation(s.state);
  if (!op) return undefined;
  s.log.warn('repairing an interrupted operation', { operation: op });
  s.state = await endOperation(s.home, s.state);
  const out: RepairResult = { kind: op.kind, startedAt: op.startedAt };
  if (op.kind === 'level') {
    const intent = op.detail as LevelIntent;
    const target = intent.packageId ? storedManifest(s.home, intent.packageId) : undefined;
    const manifest = target?.kind === 'hotpatch' ? target : undefined;
    // Processes may be at the old level, the new one, or in between: the engine reads each.
    // The interrupted run had not saved its new level yet, so the recorded one is where it came from.
    const recorded = levelManifest(s.home, s.state.hotpatch);
    const previous = recorded && recorded.id !== manifest?.id ? recorded : manifest ? previousLevel(s.home, manifest.baselineId, manifest.sequence) : undefined;
    out.processes = await applyLevel({ home: s.home, log: s.log, manifest, previous, baselineId: intent.baselineId });
    s.state.hotpatch = manifest ? { baselineId: manifest.baselineId, sequence: manifest.sequence, packageId: manifest.id, kb: manifest.kb, appliedAt: new Date().toISOString() } : undefined;
    await s.save();
  } else if (op.kind === 'reboot') {
    await doReboot(s);
  }
  await s.record({ action: 'repair', result: 'Succeeded', detail: { operation: op.kind, startedAt: op.startedAt } });
  return out;
}

/** `hp-agent status`, from ground truth. */
export async function status(s: Session): Promise<StatusReport> {
  const st = s.state;
  const kb = (ref?: { id: string; kb: string }) => (ref ? { id: ref.id, kb: ref.kb } : undefined);
  return computeStatus({
    home: s.home,
    enrollment: st.enrollment,
    rebootStatus: st.rebootStatus,
    activeBaseline: kb(st.activeBaseline),
    pendingBaseline: kb(st.pendingBaseline),
    hotpatch: st.hotpatch,
    services: st.services.map((r) => ({ name: r.name, pid: r.pid, baselineId: r.baselineId, alive: serviceAlive(r) })),
    interruptedOperation: st.operation && { kind: st.operation.kind, startedAt: st.operation.startedAt },
  });
}

export { installedBaselineManifest, storedManifest };
