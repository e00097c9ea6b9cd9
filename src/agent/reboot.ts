/**
 * The (simulated) reboot and boot: stop the recorded services, switch to the installed baseline,
 * start its services, bring them to the baseline's installed hotpatch level.
 *
 * Every step is repairable (issue 11 §2). The intent — which services are stopped, which baseline
 * is switched to, and each service launched, recorded as soon as its PID is known together with
 * the log offset from which it must write READY — is saved in state.operation before the step
 * acts, and cleared only once the whole reboot, the level re-apply included, is done. A run that
 * finds the intent (repairInterrupted) calls runReboot with it again, and every step is written so
 * that doing it twice is doing it once:
 *
 * - a service to stop is identified by PID + start time: one already gone is not signalled again;
 * - the baseline pointers are switched only if they are not switched yet;
 * - before a service is started, every live process running its executable with its arguments is
 *   looked for (services.findServiceProcesses): the one recorded (in state.services, or launched
 *   by this reboot with its PID) is kept — adopted, after waiting for its READY from the recorded
 *   log offset — and any other is a duplicate nobody would stop (a killed agent's launch whose PID
 *   it never learnt), so it is stopped before anything is started;
 * - the hotpatch level is re-applied from what each process's memory shows.
 */
import { randomUUID } from 'node:crypto';
import { HpError } from '../errors.js';
import { nowIso } from '../clock.js';
import { serviceSpecs } from './baseline.js';
import { writeBaselinePointer } from './home.js';
import { applyLevel, levelManifest, previousLevel, type ProcessResult } from './hotpatch.js';
import { killPoint } from './kill-point.js';
import { findExternalServiceProcesses, findServiceProcesses, restartExternalService, serviceAlive, startService, stopService, waitServiceReady, type ServiceRecord, type ServiceSpec } from './services.js';
import type { Session } from './session.js';
import { beginOperation, endOperation, transitionReboot, type BaselineRef, type Operation, type RebootStatus } from './state.js';
import { levelOutput, type LevelOutput } from './status.js';
import { settledEnrollmentState } from '../update/enrollment.js';

export type RebootMode = 'reboot' | 'boot';

/** What a reboot set out to do; state.operation.detail of kind "reboot". */
export interface RebootIntent {
  mode: RebootMode;
  activityId: string;
  /** The baseline that ran before. */
  from?: string;
  /** The installed baseline to switch to; undefined: stay on the active one. */
  switchTo?: BaselineRef;
  /** The services to stop, as recorded when the reboot began. */
  stop: ServiceRecord[];
  /** Every service this reboot launched, as soon as its PID was known. */
  launched: (ServiceRecord & { logOffset: number })[];
}

export interface StoppedService {
  name: string;
  pid: number;
  how: string;
  /** Set for a process that ran a service but that no record named (a duplicate). */
  why?: string;
}

export interface LevelReapply extends LevelOutput {
  /** Succeeded, CompletedWithWarnings (some processes failed) or Failed (every one failed). */
  status: 'Succeeded' | 'CompletedWithWarnings' | 'Failed';
  processes: ProcessResult[];
}

export interface RebootResult {
  /** 'boot' that found every service running changed nothing but the missing ones. */
  kind: RebootMode;
  /** Succeeded; CompletedWithWarnings when the services run but the hotpatch level could not be re-applied everywhere. */
  status: 'Succeeded' | 'CompletedWithWarnings';
  rebootStatus: RebootStatus;
  activityId: string;
  fromBaselineId?: string;
  toBaselineId?: string;
  stopped: StoppedService[];
  started: { name: string; pid: number; readyMs: number }[];
  /** Services that were already running and were kept (boot), or that an interrupted agent had launched (adopted). */
  kept: { name: string; pid: number; how: 'running' | 'adopted' }[];
  /** First service stopped → last service ready (0 when nothing was stopped or started). */
  downtimeMs: number;
  hotpatch?: LevelReapply;
  /** This run finished a reboot an interrupted agent had begun. */
  repaired?: { kind: string; startedAt: string };
}

/** The intent of a new reboot (`reboot`) or boot (`boot`) from the current state. */
export function planReboot(s: Session, mode: RebootMode): RebootIntent {
  const pending = s.state.pendingBaseline;
  // A boot with no new baseline keeps what runs and starts what is missing; anything else
  // stops every recorded service first.
  const stop = mode === 'reboot' || pending ? s.state.services : [];
  return { mode, activityId: randomUUID(), from: s.state.activeBaseline?.id, switchTo: pending, stop, launched: [] };
}

/** Records the intent and runs it. */
export async function startReboot(s: Session, intent: RebootIntent): Promise<RebootResult> {
  let next = s.state;
  if (next.rebootStatus === 'Required') next = transitionReboot(next, 'Started');
  s.state = await beginOperation(s.home, next, 'reboot', intent);
  killPoint('reboot:intent-saved');
  return runReboot(s, intent);
}

/**
 * The intent of an interrupted reboot, as saved; one saved by an older agent (no `stop` list)
 * is completed as a reboot of everything recorded.
 */
export function savedIntent(s: Session, op: Operation): RebootIntent {
  const d = (op.detail ?? {}) as Partial<RebootIntent>;
  return {
    mode: d.mode === 'boot' ? 'boot' : 'reboot',
    activityId: d.activityId ?? randomUUID(),
    from: d.from,
    switchTo: d.switchTo ?? s.state.pendingBaseline,
    stop: Array.isArray(d.stop) ? d.stop : s.state.services,
    launched: Array.isArray(d.launched) ? d.launched : [],
  };
}

const same = (a: { pid: number; startTime: number }, b: { pid: number; startTime: number }) => a.pid === b.pid && a.startTime === b.startTime;

/**
 * The services the state records once the intent's have been stopped: not those (an externally
 * managed one is never stopped by a signal: it stays until its restart), nor one that died meanwhile.
 */
function servicesLeft(services: ServiceRecord[], stop: ServiceRecord[]): ServiceRecord[] {
  return services.filter((r) => (r.managedBy === 'external' || !stop.some((x) => same(x, r))) && serviceAlive(r));
}

/**
 * What becomes of one service of the baseline, from the processes that run it: the one the state
 * records is kept; else one this reboot launched (an interrupted agent's) is adopted; every
 * other is a duplicate to stop; with none kept, the service is started.
 */
function serviceDecision(spec: ServiceSpec, services: ServiceRecord[], intent: RebootIntent, running: { pid: number; startTime: number }[]) {
  const recorded = services.find((r) => r.name === spec.name && r.baselineId === spec.baselineId && running.some((p) => same(p, r)));
  const ours = recorded ? undefined : intent.launched.find((r) => r.name === spec.name && running.some((p) => same(p, r)));
  const keep = recorded ?? ours;
  return { recorded, ours, duplicates: running.filter((x) => !keep || !same(x, keep)) };
}

const DUPLICATE = 'ran the service but no record named it (left by an interrupted agent)';

/** A dry run of a reboot or boot (`--dry-run`): what runReboot would do with `intent`. */
export interface RebootPlan {
  dryRun: true;
  kind: RebootMode;
  /** The interrupted reboot the run would finish (instead of starting a new one). */
  finishes?: { startedAt: string };
  fromBaselineId?: string;
  toBaselineId?: string;
  /** The reboot status the run would leave. */
  rebootStatus: RebootStatus;
  /**
   * Services that would be stopped (`running` false: already gone, nothing to signal); `how` for
   * an externally managed one, which its restart command stops (never a signal).
   */
  stop: { name: string; pid: number; running: boolean; why?: string; how?: string }[];
  /** Services that would be started (their processes get the hotpatch level); `restart`: by that command (externally managed). */
  start: { name: string; baselineId: string; file: string; restart?: string[] }[];
  /** Services that would keep running as they are (boot), or be adopted from an interrupted agent. */
  keep: { name: string; pid: number; how: 'running' | 'adopted' }[];
  /** The hotpatch level that would be re-applied to the services' processes. */
  hotpatch?: LevelOutput;
  /** The level of the old baseline, which a switch of baseline leaves behind (a new baseline starts at level 0). */
  hotpatchDropped?: LevelOutput;
}

/** What runReboot would do with `intent`, decided the way it decides; reads only. */
export function previewReboot(s: Session, intent: RebootIntent, finishes?: { startedAt: string }): RebootPlan {
  // Step 1 signals no externally managed service: its restart command (step 3) restarts it.
  const stop: RebootPlan['stop'] = intent.stop.filter((r) => r.managedBy !== 'external').map((r) => ({ name: r.name, pid: r.pid, running: serviceAlive(r) }));
  const services = servicesLeft(s.state.services, intent.stop);
  const to = intent.switchTo;
  const active = to ?? s.state.activeBaseline;
  const level = s.state.hotpatch;
  const start: RebootPlan['start'] = [];
  const keep: RebootPlan['keep'] = [];
  for (const spec of active ? serviceSpecs(s.home, active.id) : []) {
    if (spec.managedBy === 'external') {
      // A reboot runs its restart command; a boot never starts it, it records the one running.
      if (intent.mode === 'reboot') {
        const how = `restart command: ${(spec.restart ?? []).join(' ')}`;
        stop.push(...findExternalServiceProcesses(spec).map((p) => ({ name: spec.name, pid: p.pid, running: true, how })));
        start.push({ name: spec.name, baselineId: spec.baselineId, file: spec.file, restart: spec.restart ?? [] });
      } else {
        const running = services.find((r) => r.name === spec.name && r.baselineId === spec.baselineId) ?? findExternalServiceProcesses(spec)[0];
        if (running) keep.push({ name: spec.name, pid: running.pid, how: 'running' });
      }
      continue;
    }
    // Step 1 would have stopped the intent's services before step 3 looks for running ones.
    const running = findServiceProcesses(s.home, spec).filter((p) => !intent.stop.some((x) => same(x, p)));
    const d = serviceDecision(spec, services, intent, running);
    stop.push(...d.duplicates.map((p) => ({ name: spec.name, pid: p.pid, running: true, why: DUPLICATE })));
    if (d.recorded) keep.push({ name: spec.name, pid: d.recorded.pid, how: 'running' });
    else if (d.ours) keep.push({ name: spec.name, pid: d.ours.pid, how: 'adopted' });
    else start.push({ name: spec.name, baselineId: spec.baselineId, file: spec.file });
  }
  const st = s.state.rebootStatus;
  return {
    dryRun: true,
    kind: intent.mode,
    ...(finishes ? { finishes } : {}),
    ...(intent.from !== undefined ? { fromBaselineId: intent.from } : {}),
    ...(active ? { toBaselineId: active.id } : {}),
    rebootStatus: st === 'Required' || st === 'Started' ? 'Completed' : st,
    stop,
    start,
    keep,
    ...(level && level.baselineId === active?.id ? { hotpatch: levelOutput(level) } : {}),
    ...(level && active && level.baselineId !== active.id ? { hotpatchDropped: levelOutput(level) } : {}),
  };
}

/** Runs (or, for an intent found in the state, finishes) a reboot; clears the intent at the end. */
export async function runReboot(s: Session, intent: RebootIntent): Promise<RebootResult> {
  const saveIntent = async () => {
    s.state.operation = { ...s.state.operation!, detail: intent };
    await s.save();
  };
  const t0 = performance.now();
  const stopped: StoppedService[] = [];
  const started: RebootResult['started'] = [];
  const kept: RebootResult['kept'] = [];

  // 1. Stop the recorded services (PID + start time: one already gone is not signalled).
  for (const rec of intent.stop) {
    // A service something else manages is never signalled: its restart command restarts it (step 3).
    if (rec.managedBy === 'external') continue;
    const r = await stopService(rec, { home: s.home });
    stopped.push({ name: rec.name, pid: rec.pid, how: r.how });
    killPoint('reboot:stopped');
  }
  // The state records what runs: not what was stopped, nor a service that died meanwhile.
  s.state.services = servicesLeft(s.state.services, intent.stop);
  await s.save();

  // 2. Switch to the installed baseline.
  const to = intent.switchTo;
  if (to && s.state.activeBaseline?.id !== to.id) {
    s.state.activeBaseline = to;
    if (s.state.pendingBaseline?.id === to.id) s.state.pendingBaseline = undefined;
    await writeBaselinePointer(s.home, 'active', to.id);
    await writeBaselinePointer(s.home, 'pending', undefined);
    // A hotpatch is for one baseline: a new baseline starts at level 0.
    if (s.state.hotpatch && s.state.hotpatch.baselineId !== to.id) s.state.hotpatch = undefined;
    // Hotpatching turned on again waits for the next baseline: this may be it.
    s.state = settledEnrollmentState(s.home, s.state);
    await s.save();
  }
  killPoint('reboot:switched');

  // 3. Start its services: keep the recorded one, adopt ours, stop any duplicate, start the rest.
  const active = s.state.activeBaseline;
  try {
    for (const spec of active ? serviceSpecs(s.home, active.id) : []) {
      if (spec.managedBy === 'external') {
        await externalService(s, spec, intent, { stopped, started, kept });
        continue;
      }
      const { recorded, ours, duplicates } = serviceDecision(spec, s.state.services, intent, findServiceProcesses(s.home, spec));
      for (const p of duplicates) {
        const rec: ServiceRecord = { name: spec.name, pid: p.pid, startTime: p.startTime, file: spec.file, baselineId: spec.baselineId, startedAt: nowIso() };
        const r = await stopService(rec, { home: s.home });
        stopped.push({ name: spec.name, pid: p.pid, how: r.how, why: DUPLICATE });
      }
      if (recorded) {
        kept.push({ name: spec.name, pid: recorded.pid, how: 'running' });
        continue;
      }
      if (ours) {
        const { logOffset: _o, ...rec } = ours;
        await waitServiceReady(s.home, rec, { logOffset: ours.logOffset, readiness: spec.readiness });
        s.state.services = [...s.state.services, rec];
        await s.save();
        kept.push({ name: spec.name, pid: rec.pid, how: 'adopted' });
        continue;
      }
      killPoint('reboot:before-launch');
      const r = await startService(s.home, spec, {
        launched: async (rec, logOffset) => {
          intent.launched = [...intent.launched, { ...rec, logOffset }];
          await saveIntent();
          killPoint('reboot:launched');
        },
      });
      killPoint('reboot:ready');
      const { readyMs, ...rec } = r;
      s.state.services = [...s.state.services, rec];
      await s.save();
      started.push({ name: rec.name, pid: rec.pid, readyMs });
    }
  } catch (e) {
    if (!(e instanceof HpError)) throw e; // unexpected: the intent stays for the next run to repair
    throw await failReboot(s, intent, e, { stopped, started, kept });
  }
  const downtimeMs = stopped.length + started.length > 0 ? Math.round(performance.now() - t0) : 0;

  // 4. The baseline's installed hotpatch level, still under the intent: a kill here is repaired too.
  killPoint('reboot:before-level');
  const hotpatch = await reapplyLevel(s);
  killPoint('reboot:after-level');

  if (s.state.rebootStatus === 'Started') s.state = transitionReboot(s.state, 'Completed');
  s.state = await endOperation(s.home, s.state);
  const status = hotpatch && hotpatch.status !== 'Succeeded' ? 'CompletedWithWarnings' : 'Succeeded';
  if (stopped.length + started.length > 0 || intent.mode === 'reboot' || (hotpatch && hotpatch.status !== 'Succeeded')) {
    await s.record({
      action: 'reboot',
      result: status,
      activityId: intent.activityId,
      detail: {
        mode: intent.mode,
        from: intent.from,
        to: s.state.activeBaseline?.id,
        downtimeMs,
        stopped: stopped.map((x) => `${x.name} ${x.pid}`),
        started: started.map((x) => `${x.name} ${x.pid}`),
        ...(hotpatch && { hotpatch: hotpatch.packageId, hotpatchResult: hotpatch.status, processes: hotpatch.processes.map((p) => ({ pid: p.pid, outcome: p.outcome, reason: p.reason })) }),
      },
    });
  }
  return {
    kind: intent.mode,
    status,
    rebootStatus: s.state.rebootStatus,
    activityId: intent.activityId,
    fromBaselineId: intent.from,
    toBaselineId: s.state.activeBaseline?.id,
    stopped,
    started,
    kept,
    downtimeMs,
    hotpatch,
  };
}

/**
 * A service something else starts and stops: at a reboot its restart command runs and its new
 * process is recorded; at a boot it is never started — the process running its file, if any, is
 * recorded (kept). Either way the hotpatch level is then re-applied to it with the rest.
 */
async function externalService(s: Session, spec: ServiceSpec, intent: RebootIntent, done: { stopped: StoppedService[]; started: RebootResult['started']; kept: RebootResult['kept'] }): Promise<void> {
  const others = s.state.services.filter((r) => r.name !== spec.name);
  if (intent.mode === 'reboot') {
    const r = await restartExternalService(spec);
    for (const p of r.before) done.stopped.push({ name: spec.name, pid: p.pid, how: `restart command: ${spec.restart!.join(' ')}` });
    s.state.services = [...others, r.record];
    await s.save();
    done.started.push({ name: spec.name, pid: r.record.pid, readyMs: r.readyMs });
    return;
  }
  const recorded = s.state.services.find((r) => r.name === spec.name && r.baselineId === spec.baselineId && serviceAlive(r));
  const running = recorded ?? findExternalServiceProcesses(spec)[0];
  if (!running) {
    s.log.info('an externally managed service is not running; the agent does not start it', { service: spec.name });
    return;
  }
  if (!recorded) {
    s.state.services = [...others, { name: spec.name, pid: running.pid, startTime: running.startTime, file: spec.file, baselineId: spec.baselineId, startedAt: nowIso(), managedBy: 'external' }];
    await s.save();
  }
  done.kept.push({ name: spec.name, pid: running.pid, how: 'running' });
}

/** Brings the services just started to their baseline's installed hotpatch level. */
async function reapplyLevel(s: Session): Promise<LevelReapply | undefined> {
  const level = s.state.hotpatch;
  if (!level || level.baselineId !== s.state.activeBaseline?.id) return undefined;
  const m = levelManifest(s.home, level);
  if (!m) return { ...levelOutput(level), status: 'Failed', processes: [] };
  const processes = await applyLevel({ home: s.home, log: s.log, manifest: m, previous: previousLevel(s.home, m.baselineId, m.sequence), baselineId: m.baselineId });
  const failed = processes.filter((p) => p.outcome === 'Failed' || p.outcome === 'Skipped').length;
  const status = failed === 0 ? 'Succeeded' : failed < processes.length ? 'CompletedWithWarnings' : 'Failed';
  if (status !== 'Succeeded') s.log.error('the hotpatch level could not be re-applied at boot', { packageId: m.id, processes });
  return { ...levelOutput(level), status, processes };
}

/**
 * A service did not start: the reboot ends here, Failed. Services already stopped stay stopped,
 * those started stay running and recorded; the error says all of it (it is not a refusal: the
 * machine changed), and the intent is cleared, as nothing is left to finish.
 */
async function failReboot(s: Session, intent: RebootIntent, e: HpError, done: { stopped: StoppedService[]; started: RebootResult['started']; kept: RebootResult['kept'] }): Promise<HpError> {
  if (s.state.rebootStatus === 'Started') s.state = transitionReboot(s.state, 'Failed');
  s.state = await endOperation(s.home, s.state);
  const list = (xs: { name: string; pid: number }[]) => (xs.length ? xs.map((x) => `${x.name} (PID ${x.pid})`).join(', ') : 'none');
  const running = s.state.services;
  const what = [
    `stopped: ${list(done.stopped)}`,
    `started: ${list(done.started)}`,
    `running now: ${list(running)}`,
    `baseline ${s.state.activeBaseline?.id ?? '(none)'} is active, rebootStatus ${s.state.rebootStatus}`,
  ].join('; ');
  const message = `${intent.mode} failed: ${e.message}. ${what}`;
  await s.record({ action: 'reboot', result: 'Failed', activityId: intent.activityId, detail: { mode: intent.mode, code: e.code, message } });
  return new HpError(e.code, message, { ...e.details, stopped: done.stopped, started: done.started, running: running.map((r) => ({ name: r.name, pid: r.pid })), rebootStatus: s.state.rebootStatus }, false);
}
