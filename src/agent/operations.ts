/**
 * What the agent's commands do, on top of a Session: install a baseline, apply or revert a
 * hotpatch level, reboot, boot, and report. Results use Azure's field names (DESIGN.md §8).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HpError } from '../errors.js';
import { nowIso } from '../clock.js';
import { openPackage, type BaselineManifest, type Classification, type RebootBehavior, type HotpatchManifest, type Manifest } from '../package/index.js';
import { baselineStaged, checkInstalledFiles, installedBaselineManifest, stageBaseline } from './baseline.js';
import { homeLayout, writeBaselinePointer } from './home.js';
import { killPoint } from './kill-point.js';
import { planReboot, previewReboot, runReboot, savedIntent, startReboot, type RebootPlan, type RebootResult } from './reboot.js';
import { applyLevel, checkHotpatchFits, hotpatchWarnings, levelManifest, previousLevel, type PlannedProcessResult, type ProcessResult } from './hotpatch.js';
import type { InlineWarning } from '../elf/index.js';
import { serviceAlive } from './services.js';
import type { Session } from './session.js';
import { beginOperation, endOperation, pendingOperation, transitionReboot, type RebootStatus } from './state.js';
import { liveLockHolder } from './lock.js';
import { computeStatus, levelOutput, type LevelOutput, type RunningOperation, type StatusReport } from './status.js';
import { checkStorable, storedManifest, storedPackageDir, storePackage } from './store.js';
import { updateStatus } from '../update/config.js';
import type { InstallationState, InstallOutcome, OperationStatus } from '../update/azure.js';

export type { InstallationState, OperationStatus } from '../update/azure.js';

export interface PatchEntry {
  patchId: string;
  name: string;
  kbId: string;
  classifications: Classification[];
  rebootBehavior: RebootBehavior;
  installationState: InstallationState;
}

export interface InstallResult extends InstallOutcome {
  /** The same value as installationActivityId (Azure's name for the operation's id), which every command (and history) uses. */
  activityId: string;
  patches: PatchEntry[];
  startDateTime: string;
  /** hp-agent's own detail: what happened in each process (hotpatches). */
  processes: ProcessResult[];
  /** Hotpatch level reached. */
  hotpatchLevel?: LevelOutput;
  error?: { code: string; message: string };
  /** Hotpatches: functions whose inlined copies in their callers the patch does not reach. */
  warnings?: InlineWarning[];
}

function historyResult(st: OperationStatus): 'Succeeded' | 'Failed' | 'CompletedWithWarnings' {
  return st === 'Succeeded' || st === 'CompletedWithWarnings' ? st : 'Failed';
}

function patchEntry(m: Manifest, state: InstallationState): PatchEntry {
  return { patchId: m.id, name: m.title, kbId: m.kb, classifications: [m.classification], rebootBehavior: m.rebootBehavior, installationState: state };
}

function result(start: string, activity: string, rebootStatus: RebootStatus, m: Manifest, state: InstallationState, processes: ProcessResult[] = []): InstallResult {
  const failed = processes.filter((p) => p.outcome === 'Failed' || p.outcome === 'Skipped').length;
  const status: OperationStatus = state === 'Failed' ? 'Failed' : failed > 0 ? 'CompletedWithWarnings' : 'Succeeded';
  return {
    status,
    installationActivityId: activity,
    activityId: activity,
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

export interface PackageApplyOptions {
  pids?: number[];
  allowUnsigned?: boolean;
  /** Install a baseline released before the one running or installed (refused otherwise). */
  allowDowngrade?: boolean;
  onProgress?: (done: number, total: number) => void;
}

type OpenedPackage = Awaited<ReturnType<typeof openPackage>>;
type Opened<M> = OpenedPackage & { manifest: M };

/**
 * Opens and verifies the package and refuses an id stored with other content (first, whatever the
 * package would do), then does `work`. A refusal is recorded in the history with `activity`
 * (`record` false: a dry run, which records nothing).
 */
async function withVerifiedPackage<T>(s: Session, file: string, o: PackageApplyOptions, activity: string, record: boolean, work: (pkg: OpenedPackage, stored: boolean) => Promise<T>): Promise<T> {
  let pkg;
  try {
    pkg = await openPackage(file, { trustDir: homeLayout(s.home).trustedKeys, allowUnsigned: o.allowUnsigned, signal: s.signal });
    // The last point where a signal stops the command before it changes anything.
    s.signal.throwIfAborted();
  } catch (e) {
    if (record) await s.record({ action: 'refuse', result: 'Refused', detail: { package: file, code: (e as HpError).code, message: (e as Error).message }, activityId: activity });
    throw e;
  }
  const m = pkg.manifest;
  s.log.info('package verified', { id: m.id, kb: m.kb, kind: m.kind, signer: pkg.signer?.keyId });
  try {
    const { stored } = checkStorable(s.home, pkg);
    return await work(pkg, stored);
  } catch (e) {
    if (record && e instanceof HpError) {
      await s.record({ action: 'refuse', packageId: m.id, kb: m.kb, result: 'Refused', detail: { code: e.code, message: e.message }, activityId: activity });
    }
    throw e;
  }
}

/** `hp-agent apply <package>`: a baseline is staged (reboot required); a hotpatch goes live. */
export async function applyPackage(s: Session, file: string, o: PackageApplyOptions = {}): Promise<InstallResult> {
  await repairInterrupted(s);
  const start = nowIso();
  const activity = randomUUID();
  return withVerifiedPackage(s, file, o, activity, true, (pkg) =>
    pkg.manifest.kind === 'baseline' ? installBaseline(s, pkg as Opened<BaselineManifest>, o, start, activity) : applyHotpatch(s, pkg as Opened<HotpatchManifest>, o, start, activity));
}

/** `apply --dry-run`: what apply would do, refused as it would be. Nothing is written or recorded. */
export interface ApplyPlan {
  dryRun: true;
  /** The package, in the installation state the apply would leave it. */
  patches: PatchEntry[];
  /** The reboot status the apply would leave. */
  rebootStatus: RebootStatus;
  /** True for a baseline: it would be staged for the next reboot and nothing running would change. */
  rebootRequired: boolean;
  /** A baseline: whether its files are on disk already (`staged`), so only the pointer would change. */
  baseline?: { baselineId: string; staged: boolean; alreadyRunning: boolean };
  /** A hotpatch: the level the processes would be brought to, and from which. */
  hotpatchLevel?: LevelOutput & { from?: LevelOutput };
  processes: PlannedProcessResult[];
  /** A hotpatch: functions whose inlined copies in their callers the patch would not reach. */
  warnings?: InlineWarning[];
  /** An interrupted operation the real run would finish first (the plan is of the machine as it is now). */
  interruptedOperation?: { kind: string; startedAt: string };
  runningOperation?: RunningOperation;
}

export async function planApply(s: Session, file: string, o: PackageApplyOptions = {}): Promise<ApplyPlan> {
  return withVerifiedPackage(s, file, o, '', false, (pkg, stored) =>
    pkg.manifest.kind === 'baseline' ? planBaseline(s, pkg as Opened<BaselineManifest>, o) : planHotpatch(s, pkg as Opened<HotpatchManifest>, o, stored));
}

function planBaseline(s: Session, pkg: Opened<BaselineManifest>, o: PackageApplyOptions): Promise<ApplyPlan> {
  const m = pkg.manifest;
  const running = s.state.activeBaseline?.id === m.baselineId;
  if (!running && !o.allowDowngrade) checkNotDowngrade(s, m);
  const staged = baselineStaged(s.home, m);
  // Refused as the apply would refuse it: installed files it describes must be as described.
  if (!running && !staged) checkInstalledFiles(m);
  return Promise.resolve({
    dryRun: true,
    patches: [patchEntry(m, running ? 'Installed' : 'Pending')],
    rebootStatus: running ? s.state.rebootStatus : 'Required',
    rebootRequired: !running,
    baseline: { baselineId: m.baselineId, staged, alreadyRunning: running },
    processes: [],
    ...operationNow(s),
  });
}

async function planHotpatch(s: Session, pkg: Opened<HotpatchManifest>, o: PackageApplyOptions, stored: boolean): Promise<ApplyPlan> {
  const { m, previous } = hotpatchLevelChange(s, pkg);
  // The store is not written: a package not stored yet lends its patch objects from a
  // temporary folder laid out as the store would hold them.
  const payloadDir = stored ? undefined : await unpackPayload(pkg.payload);
  let processes: PlannedProcessResult[];
  try {
    processes = await applyLevel({ home: s.home, log: s.log, manifest: m, previous, baselineId: m.baselineId, pids: o.pids, dryRun: true, payloadDir });
  } finally {
    if (payloadDir) await fs.promises.rm(payloadDir, { recursive: true, force: true });
  }
  // Say where the patch objects will be (in the store), not the temporary copy, gone by now.
  if (payloadDir) for (const p of processes) for (const patch of p.plan?.patches ?? []) patch.path = path.join(storedPackageDir(s.home, m.id), path.relative(payloadDir, patch.path));
  const anyGood = processes.length === 0 || processes.some((p) => p.outcome !== 'Failed' && p.outcome !== 'Skipped');
  const from = s.state.hotpatch?.baselineId === m.baselineId ? levelOutput(s.state.hotpatch) : undefined;
  return {
    dryRun: true,
    patches: [patchEntry(m, anyGood ? 'Installed' : 'Failed')],
    rebootStatus: s.state.rebootStatus === 'Required' ? 'Required' : 'NotNeeded',
    rebootRequired: false,
    hotpatchLevel: { ...levelRef(m), ...(from ? { from } : {}) },
    processes,
    warnings: hotpatchWarnings(s.home, m),
    ...operationNow(s),
  };
}

/** A verified package's payload files in a new temporary folder (outside the agent's home), by their payload paths. */
async function unpackPayload(payload: ReadonlyMap<string, Buffer>): Promise<string> {
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'hp-agent-plan-'));
  for (const [name, data] of payload) {
    const file = path.join(dir, name);
    await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await fs.promises.writeFile(file, data, { mode: 0o600 });
  }
  return dir;
}

async function installBaseline(s: Session, pkg: Opened<BaselineManifest>, o: PackageApplyOptions, start: string, activity: string): Promise<InstallResult> {
  const m = pkg.manifest;
  if (s.state.activeBaseline?.id === m.baselineId) {
    return result(start, activity, s.state.rebootStatus, m, 'Installed');
  }
  if (!o.allowDowngrade) checkNotDowngrade(s, m);
  await storePackage(s.home, pkg);
  const { alreadyThere } = await stageBaseline(s.home, pkg);
  await writeBaselinePointer(s.home, 'pending', m.baselineId);
  s.state.pendingBaseline = { id: m.baselineId, kb: m.kb, packageId: m.id, installedAt: nowIso() };
  if (s.state.rebootStatus !== 'Required') s.state = transitionReboot(s.state, 'Required');
  await s.save();
  await s.record({ action: 'install', packageId: m.id, kb: m.kb, result: 'Succeeded', detail: { baselineId: m.baselineId, rebootRequired: true, staged: !alreadyThere }, activityId: activity });
  s.log.info('baseline staged; reboot required', { baselineId: m.baselineId });
  return result(start, activity, s.state.rebootStatus, m, 'Pending');
}

/**
 * A baseline released before the one the machine runs (or has installed for the next reboot)
 * would take the machine back at the next reboot, fixes and all: refused unless asked for with
 * --allow-downgrade. (A hotpatch below the applied level is refused the same way, as superseded.)
 */
function checkNotDowngrade(s: Session, m: BaselineManifest): void {
  for (const [ref, how] of [[s.state.pendingBaseline, 'is installed for the next reboot'], [s.state.activeBaseline, 'runs']] as const) {
    if (!ref || ref.id === m.baselineId) continue;
    const newer = installedBaselineManifest(s.home, ref.id);
    if (!newer || newer.releaseDate <= m.releaseDate) continue;
    throw new HpError(
      'BASELINE_DOWNGRADE',
      `baseline ${m.baselineId} (${m.kb}, released ${m.releaseDate}) is older than baseline ${ref.id} (${newer.kb}, released ${newer.releaseDate}), which this machine ${how}: installing it would downgrade the machine at the next reboot. Give --allow-downgrade to install it anyway. Nothing was changed`,
      { baselineId: m.baselineId, newerBaseline: ref.id },
    );
  }
}

/**
 * The level change a hotpatch asks for, once everything installed has been checked (refused here
 * the same way for an apply and its dry run): the level to go to and the one to come from.
 */
function hotpatchLevelChange(s: Session, pkg: Opened<HotpatchManifest>): { m: HotpatchManifest; previous: HotpatchManifest | undefined } {
  const m = pkg.manifest;
  if (s.state.enrollment !== 'Enabled') {
    throw new HpError('NOT_ENROLLED', `hotpatch enrollment is ${s.state.enrollment}: ${m.kb} can only be installed as part of the next baseline (reboot). Nothing was changed`);
  }
  checkHotpatchFits(s.home, m, { activeBaseline: s.state.activeBaseline?.id, pendingBaseline: s.state.pendingBaseline?.id, current: s.state.hotpatch }, pkg.payload);
  const current = s.state.hotpatch?.baselineId === m.baselineId ? levelManifest(s.home, s.state.hotpatch) : undefined;
  // Processes may be at any lower level (one patched before, one started since): re-point from
  // whatever the previous level of this baseline was; the engine reads each process's truth.
  return { m, previous: current && current.id !== m.id ? current : previousLevel(s.home, m.baselineId, m.sequence) };
}

async function applyHotpatch(s: Session, pkg: Opened<HotpatchManifest>, o: PackageApplyOptions, start: string, activity: string): Promise<InstallResult> {
  const { m, previous } = hotpatchLevelChange(s, pkg);
  await storePackage(s.home, pkg);
  const processes = await underLevelIntent(s, { baselineId: m.baselineId, packageId: m.id }, () =>
    applyLevel({ home: s.home, log: s.log, manifest: m, previous, baselineId: m.baselineId, pids: o.pids, onProgress: o.onProgress }));
  killPoint('level:after-processes');
  const failed = processes.filter((p) => p.outcome === 'Failed' || p.outcome === 'Skipped');
  const anyGood = processes.length === 0 || failed.length < processes.length;
  if (anyGood) s.state.hotpatch = { baselineId: m.baselineId, sequence: m.sequence, packageId: m.id, kb: m.kb, appliedAt: nowIso() };
  s.state = await endOperation(s.home, s.state);
  // A hotpatch needs no reboot (Azure: NotNeeded); one still pending from a baseline stays Required.
  const r = result(start, activity, s.state.rebootStatus === 'Required' ? 'Required' : 'NotNeeded', m, anyGood ? 'Installed' : 'Failed', processes);
  if (anyGood) r.hotpatchLevel = { baselineId: m.baselineId, sequence: m.sequence, packageId: m.id, kbId: m.kb };
  r.warnings = hotpatchWarnings(s.home, m);
  await s.record({ action: 'apply', packageId: m.id, kb: m.kb, result: historyResult(r.status), detail: { sequence: m.sequence, processes: processes.map((p) => ({ pid: p.pid, outcome: p.outcome, reason: p.reason, pauseUs: p.pauseUs })) }, activityId: activity });
  return r;
}

export interface RevertResult {
  status: OperationStatus;
  activityId: string;
  from: LevelOutput;
  /** The previous level, or the plain baseline (sequence 0). */
  to: LevelOutput | { baselineId: string; sequence: 0 };
  processes: ProcessResult[];
}

/** The applied level `id` names and the one a revert goes back to; refuses anything else. */
function revertLevels(s: Session, id: string): { current: HotpatchManifest; target: HotpatchManifest | undefined } {
  const current = levelManifest(s.home, s.state.hotpatch);
  if (!s.state.hotpatch || !current) throw new HpError('NOTHING_TO_REVERT', `no hotpatch is applied; nothing was changed`);
  if (current.id !== id && current.kb !== id) {
    throw new HpError('NOT_CURRENT_LEVEL', `${id} is not the applied hotpatch (that is ${current.id}, ${current.kb}); only the current level can be reverted. Nothing was changed`);
  }
  return { current, target: previousLevel(s.home, current.baselineId, current.sequence) };
}

/** A hotpatch level as the output names it. */
const levelRef = (m: HotpatchManifest): LevelOutput => levelOutput({ baselineId: m.baselineId, sequence: m.sequence, packageId: m.id, kb: m.kb });

/** `revert --dry-run`: what revert would do, refused as it would be. Nothing is written or recorded. */
export interface RevertPlan {
  dryRun: true;
  from: RevertResult['from'];
  to: RevertResult['to'];
  processes: PlannedProcessResult[];
  interruptedOperation?: { kind: string; startedAt: string };
  runningOperation?: RunningOperation;
}

export async function planRevert(s: Session, id: string, o: { pids?: number[] } = {}): Promise<RevertPlan> {
  const { current, target } = revertLevels(s, id);
  const processes = await applyLevel({ home: s.home, log: s.log, manifest: target, previous: current, baselineId: current.baselineId, pids: o.pids, dryRun: true });
  return { dryRun: true, from: levelRef(current), to: target ? levelRef(target) : { baselineId: current.baselineId, sequence: 0 }, processes, ...operationNow(s) };
}

/** `hp-agent revert <package>`: live rollback to the previous level, or to the plain baseline. */
export async function revertPackage(s: Session, id: string, o: { pids?: number[] } = {}): Promise<RevertResult> {
  await repairInterrupted(s);
  const activity = randomUUID();
  let levels;
  try {
    levels = revertLevels(s, id);
  } catch (e) {
    const err = e as HpError;
    await s.record({ action: 'refuse', result: 'Refused', detail: { command: `revert ${id}`, code: err.code, message: err.message }, activityId: activity });
    throw e;
  }
  const { current, target } = levels;
  s.signal.throwIfAborted();
  // A process whose functions went back a level was reverted (applyLevel says what it changed).
  const processes = (
    await underLevelIntent(s, { baselineId: current.baselineId, packageId: target?.id }, () =>
      applyLevel({ home: s.home, log: s.log, manifest: target, previous: current, baselineId: current.baselineId, pids: o.pids }))
  ).map((p): ProcessResult => (p.outcome === 'Patched' ? { ...p, outcome: 'Reverted' } : p));
  killPoint('level:after-processes');
  const failed = processes.filter((p) => p.outcome === 'Failed' || p.outcome === 'Skipped').length;
  const status: OperationStatus = failed === 0 ? 'Succeeded' : failed < processes.length ? 'CompletedWithWarnings' : 'Failed';
  if (status !== 'Failed') {
    s.state.hotpatch = target ? { baselineId: target.baselineId, sequence: target.sequence, packageId: target.id, kb: target.kb, appliedAt: nowIso() } : undefined;
  }
  s.state = await endOperation(s.home, s.state);
  await s.record({ action: 'revert', packageId: current.id, kb: current.kb, result: historyResult(status), detail: { to: target?.id ?? `baseline ${current.baselineId}`, processes: processes.map((p) => ({ pid: p.pid, outcome: p.outcome, reason: p.reason })) }, activityId: activity });
  return {
    status,
    activityId: activity,
    from: levelRef(current),
    to: target ? levelRef(target) : { baselineId: current.baselineId, sequence: 0 },
    processes,
  };
}

/** `hp-agent reboot`: stop the services, switch to the installed baseline, start them again. */
export async function reboot(s: Session): Promise<RebootResult> {
  const repaired = await repairInterrupted(s);
  // An interrupted reboot, now finished, is the reboot that was asked for.
  if (repaired?.reboot && repaired.reboot.kind === 'reboot') return { ...repaired.reboot, repaired: { kind: repaired.kind, startedAt: repaired.startedAt } };
  s.signal.throwIfAborted();
  return startReboot(s, planReboot(s, 'reboot'));
}

/**
 * `reboot --dry-run` / `boot --dry-run`: which services would be stopped and started, which
 * baseline would run, which hotpatch level would be re-applied. An interrupted reboot is what the
 * run would finish instead. Reads only.
 */
export function planRebootRun(s: Session, mode: 'reboot' | 'boot'): RebootPlan & ReturnType<typeof operationNow> {
  const op = pendingOperation(s.state);
  const plan = op?.kind === 'reboot' ? previewReboot(s, savedIntent(s, op), { startedAt: op.startedAt }) : previewReboot(s, planReboot(s, mode));
  return { ...plan, ...operationNow(s) };
}

/** `hp-agent boot`: the machine powered on — start the installed baseline's services (the missing ones, if some run). */
export async function boot(s: Session): Promise<RebootResult> {
  const repaired = await repairInterrupted(s);
  // A finished interrupted reboot or boot started every service already.
  if (repaired?.reboot) return { ...repaired.reboot, repaired: { kind: repaired.kind, startedAt: repaired.startedAt } };
  return startReboot(s, planReboot(s, 'boot'));
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
  /** The finished reboot, for an interrupted reboot or boot. */
  reboot?: RebootResult;
}

/**
 * A previous run was killed in the middle of an operation (its intent is still in the state):
 * finish it. Level changes and reboots are idempotent — every process is brought to the
 * intended level from whatever its memory shows, every service found by its executable — so
 * finishing is doing it again. The intent stays recorded until the work is done: a repair that
 * is killed too leaves it for the next run.
 */
export async function repairInterrupted(s: Session): Promise<RepairResult | undefined> {
  const op = pendingOperation(s.state);
  if (!op) return undefined;
  s.log.warn('repairing an interrupted operation', { operation: op });
  const out: RepairResult = { kind: op.kind, startedAt: op.startedAt };
  killPoint('repair:before-work');
  if (op.kind === 'level') {
    const intent = op.detail as LevelIntent;
    const target = intent.packageId ? storedManifest(s.home, intent.packageId) : undefined;
    const manifest = target?.kind === 'hotpatch' ? target : undefined;
    // Processes may be at the old level, the new one, or in between: the engine reads each.
    // The interrupted run had not saved its new level yet, so the recorded one is where it came from.
    const recorded = levelManifest(s.home, s.state.hotpatch);
    const previous = recorded && recorded.id !== manifest?.id ? recorded : manifest ? previousLevel(s.home, manifest.baselineId, manifest.sequence) : undefined;
    out.processes = await applyLevel({ home: s.home, log: s.log, manifest, previous, baselineId: intent.baselineId });
    killPoint('repair:after-processes');
    s.state.hotpatch = manifest ? { baselineId: manifest.baselineId, sequence: manifest.sequence, packageId: manifest.id, kb: manifest.kb, appliedAt: nowIso() } : undefined;
    s.state = await endOperation(s.home, s.state);
  } else if (op.kind === 'reboot') {
    out.reboot = await runReboot(s, savedIntent(s, op));
  } else {
    s.state = await endOperation(s.home, s.state);
  }
  await s.record({ action: 'repair', result: 'Succeeded', detail: { operation: op.kind, startedAt: op.startedAt } });
  return out;
}

/**
 * Records the intent of a level change, then does `work`. A refusal (nothing was changed) clears
 * the intent again: no interrupted operation is left behind where none was started. Any other
 * failure leaves it for the next run to finish.
 */
async function underLevelIntent<T>(s: Session, intent: LevelIntent, work: () => Promise<T>): Promise<T> {
  s.state = await beginOperation(s.home, s.state, 'level', intent);
  try {
    return await work();
  } catch (e) {
    if (e instanceof HpError && e.unchanged) s.state = await endOperation(s.home, s.state);
    throw e;
  }
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
    update: updateStatus(st),
    ...operationNow(s),
  });
}

/**
 * The recorded operation is under way if the agent holding the lock is alive (it is doing it, or
 * will repair it first thing); with no live holder, the agent that recorded it was interrupted.
 */
function operationNow(s: Session): { interruptedOperation?: { kind: string; startedAt: string }; runningOperation?: RunningOperation } {
  const op = s.state.operation;
  const holder = liveLockHolder(s.home);
  if (!op) return {};
  const at = { kind: op.kind, startedAt: op.startedAt };
  return holder ? { runningOperation: { ...at, pid: holder.pid, command: holder.command } } : { interruptedOperation: at };
}
