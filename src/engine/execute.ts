/**
 * Step 3 of a change — execute. execute() is the only code that changes a process for a change:
 * it maps the plan's new patches (while the target runs), then switches every site at once,
 * either in the native core's stop-the-world transaction or by the zero-stop writes. It keeps
 * ONE undo log (undo-log.ts): every step registers how to undo itself, and on a failure the log
 * is rolled back and decides whether the error says the target is unchanged.
 */
import { native, type TransactionResult } from '../native.js';
import { mapPatchAndSwitch, mapPatchImage, type MappedPatch } from './loader.js';
import type { Plan, PlannedPatch } from './plan.js';
import type { BorrowedThread } from './remote.js';
import type { TransactionReport } from './types.js';
import { HpError } from '../errors.js';
import { UndoLog } from './undo-log.js';
import { zeroStopSwitch } from './zero-stop.js';

export interface Executed extends TransactionReport {
  /** Zero-stop: first write → last write read back, pauses included (nothing stopped), µs. */
  switchUs?: number;
  /** Zero-stop: the threads borrowed to map the new patches. */
  borrowed?: BorrowedThread[];
}

const NOTHING_STOPPED: TransactionReport = { pauseUs: 0, totalStoppedUs: 0, threads: 0, held: 0, attempts: 0, realtime: false };

function transactionReport(t: TransactionResult): TransactionReport {
  return {
    pauseUs: Math.round(t.pauseNs / 100) / 10,
    totalStoppedUs: Math.round(t.totalStoppedNs / 100) / 10,
    threads: t.threads,
    held: t.held,
    attempts: t.attempts,
    realtime: t.realtime,
  };
}

/** Carries out a plan that changes something (plan.mode set). */
export async function execute(plan: Plan): Promise<Executed> {
  const log = new UndoLog();
  try {
    return plan.mode === 'zero-stop' ? await switchWithoutStop(plan, log) : await switchInStop(plan, log);
  } catch (e) {
    return log.settle(e);
  }
}

const fresh = (plan: Plan) => plan.patches.filter((p) => !p.reused);
const map = (plan: Plan, p: PlannedPatch, log: UndoLog): Promise<MappedPatch> => mapPatchImage(plan.pid, p.base, p.image, p.segments, p.trailer, p.name, plan.maps, log);

async function switchWithoutStop(plan: Plan, log: UndoLog): Promise<Executed> {
  const mapped: MappedPatch[] = [];
  for (const p of fresh(plan)) mapped.push(await map(plan, p, log));
  const sw = await zeroStopSwitch(plan.pid, plan.rounds, { stepDelayMs: plan.stepDelayMs, log });
  return { ...NOTHING_STOPPED, switchUs: sw.durationUs, borrowed: mapped.flatMap((m) => (m.borrowed ? [m.borrowed] : [])) };
}

async function switchInStop(plan: Plan, log: UndoLog): Promise<Executed> {
  const sites = plan.functions.flatMap((f) => f.sites);
  const patches = fresh(plan);
  // The usual change maps one new patch: mapped and switched in one attach of the core.
  const last = patches.pop();
  for (const p of patches) await map(plan, p, log);
  if (last) return transactionReport((await mapPatchAndSwitch(plan.pid, last, sites, plan.transaction, plan.maps, log)).tx);
  try {
    return transactionReport(await native.transaction(plan.pid, sites, plan.transaction));
  } catch (e) {
    // One step of the log: the core undid its own writes inside the stop, and says whether it could.
    log.failedStep(!(e instanceof HpError) || e.unchanged);
    throw e;
  }
}
