/**
 * The engine's front door: redirect functions of a running process to code from patch objects,
 * re-point them to a newer patch (cumulative hotpatches), and put them back. A change is three
 * steps, each its own module, read top to bottom:
 *
 *  1. read (read.ts): everything the change needs from the process, as one snapshot;
 *  2. plan (plan.ts): pure — placement, linking, the bytes of every site, the mode, the record;
 *     every refusal happens here or in the read, before the first byte is written;
 *  3. execute (execute.ts): maps the new patches while the target runs, then changes every site
 *     in one step, with one undo log that takes back whatever a failure interrupted.
 *
 * The sites change in one of two modes:
 *  - stop: the native core's transaction stops every thread for the few microseconds the writes
 *    take (any function);
 *  - zero-stop: for hot-patchable entries (-fpatchable-function-entry=7,5) the jump goes into
 *    the padding and the entry is flipped by single-byte writes, each a valid instruction stream
 *    (src/x64/zero-stop.ts) — no thread is stopped at all.
 * 'auto' (the default) uses zero-stop when every function of the change allows it.
 */
import os from 'node:os';
import { HpError } from '../errors.js';
import { readEntries, type FunctionState } from './entries.js';
import { execute } from './execute.js';
import { checkRequest, plan, type Plan } from './plan.js';
import { readTarget } from './read.js';
import type { BorrowedThread } from './remote.js';
import type { ApplyOptions, ApplyReport, ChangeOptions, ChangeReport, InspectOptions, RevertOptions, RevertReport, TransactionReport } from './types.js';
import { ProcessView, whileAlive } from './view.js';

export type { FunctionState } from './entries.js';
export type { Consistency, PatchMode } from './modes.js';
export type * from './types.js';

/** What each function's entry holds now, read from the process (never from our own files). */
export async function inspectFunctions(opts: InspectOptions): Promise<FunctionState[]> {
  const view = new ProcessView(opts.pid);
  return (await readEntries(view, view.object(opts.object), opts.functions)).map((e) => e.state);
}

/**
 * Brings the functions of one process to the requested state in ONE step: read, plan, execute.
 * The maps a caller read a moment ago may be stale by the time the patch is mapped: the kernel
 * then refuses the mapping (it never overlaps one) and the change is read and planned again.
 */
export function changeFunctions(opts: ChangeOptions): Promise<ChangeReport> {
  return whileAlive(opts.pid, async () => {
    try {
      return await change(opts);
    } catch (e) {
      const taken = e instanceof HpError && e.unchanged && e.details?.syscall === 'mmap' && e.details?.errno === os.constants.errno.EEXIST;
      if (!opts.maps || !taken) throw e;
      return change({ ...opts, maps: undefined, objects: undefined });
    }
  });
}

async function change(opts: ChangeOptions): Promise<ChangeReport> {
  checkRequest(opts);
  const snapshot = await readTarget(opts.pid, opts.changes, opts);
  const p = plan(snapshot, opts);
  // The seam of a dry run: everything above only read the process; execute writes.
  if (opts.dryRun) return { ...changeReport(p), dryRun: true };
  if (!p.mode) return changeReport(p);
  return { ...changeReport(p), ...(await execute(p)) };
}

/** What a change does (or, for a dry run, would do), as planned; execute adds how it went. */
function changeReport(p: Plan): ChangeReport {
  const objects = p.objects.map((o) => ({ path: o.path, buildId: o.buildId }));
  if (!p.mode) return { pid: p.pid, changed: false, objects, patches: [], sites: [] };
  return {
    pid: p.pid,
    changed: true,
    mode: p.mode,
    objects,
    patches: p.patches.map((m) => ({ object: m.obj.path, path: m.patchPath, buildId: m.patchBuildId, base: m.base, size: m.size, mapping: m.mapping, bindings: m.bindings, ...(m.reused ? { reused: true } : {}) })),
    sites: p.functions.map((f) => f.report),
  };
}

function stopFields(r: ChangeReport): TransactionReport & { mode: 'stop' | 'zero-stop'; switchUs?: number; borrowed?: BorrowedThread[] } {
  return {
    mode: r.mode ?? 'stop',
    ...(r.switchUs !== undefined ? { switchUs: r.switchUs } : {}),
    ...(r.borrowed?.length ? { borrowed: r.borrowed } : {}),
    pauseUs: r.pauseUs ?? 0,
    totalStoppedUs: r.totalStoppedUs ?? 0,
    threads: r.threads ?? 0,
    held: r.held ?? 0,
    attempts: r.attempts ?? 0,
    realtime: r.realtime ?? false,
  };
}

/** The change `hp-agent try` makes (or plans): one object's functions to one patch. */
function patchChange(opts: ApplyOptions): ChangeOptions {
  if (opts.functions.length === 0) throw new HpError('NO_FUNCTIONS', 'no function to patch was given');
  return { ...opts, changes: [{ object: opts.object, patchPath: opts.patchPath, functions: opts.functions }] };
}

/** The change `hp-agent try --revert` makes (or plans): one object's functions back to their original bytes. */
function revertChange(opts: RevertOptions): ChangeOptions {
  if (opts.functions.length === 0) throw new HpError('NO_FUNCTIONS', 'no function to revert was given');
  return { ...opts, changes: [{ object: opts.object, functions: [], restore: opts.functions }], requirePatched: true };
}

/** `hp-agent try --dry-run`: what applyPatch would do, refused as it would be; nothing written. */
export function planPatch(opts: ApplyOptions): Promise<ChangeReport> {
  return changeFunctions({ ...patchChange(opts), dryRun: true });
}

/** `hp-agent try --revert --dry-run`: what revertFunctions would do; nothing written. */
export function planRevert(opts: RevertOptions): Promise<ChangeReport> {
  return changeFunctions({ ...revertChange(opts), dryRun: true });
}

/** `hp-agent try`: redirect functions of one object to a patch; refuses functions already patched unless `replace`. */
export async function applyPatch(opts: ApplyOptions): Promise<ApplyReport> {
  const r = await changeFunctions(patchChange(opts));
  const p = r.patches[0];
  return {
    pid: r.pid,
    object: r.objects[0],
    patch: { path: p.path, buildId: p.buildId, base: p.base, size: p.size, mapping: p.mapping, ...(p.reused ? { reused: true } : {}) },
    bindings: p.bindings,
    sites: r.sites,
    ...stopFields(r),
  };
}

/** Puts back the original entry bytes of each function, exactly. */
export async function revertFunctions(opts: RevertOptions): Promise<RevertReport> {
  const r = await changeFunctions(revertChange(opts));
  return { pid: r.pid, object: r.objects[0], sites: r.sites, ...stopFields(r) };
}
