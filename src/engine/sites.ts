/**
 * Part of step 2, the plan: each function's change, planned alone and purely from what the read
 * step found at its entry — the bytes to expect and to write at every site for the stop-the-world
 * transaction, and for a hot-patchable entry the zero-stop writes in order, with the report of
 * what the site holds before and after. Refusals say which function and why.
 */
import { createHash } from 'node:crypto';
import { HpError } from '../errors.js';
import type { TransactionSite } from '../native.js';
import type { LoadedObject } from '../proc/index.js';
import { paddingJump, planJumpSite, planZeroStop, planZeroStopRepoint, planZeroStopRevert, switchedEntryBytes, type PatchableEntry, type ZeroStopStep } from '../x64/index.js';
import { refuseBranchesIntoSite } from './branch-check.js';
import type { Entry } from './entries.js';
import type { SiteRecord } from './record.js';
import type { SiteAction, SiteReport } from './types.js';
import { hexAddr, hexBytes } from '../hex.js';

/** One function's change, ready for either mode. */
export interface FunctionPlan {
  report: SiteReport;
  /** The writes of the stop-the-world transaction. */
  sites: TransactionSite[];
  /** The zero-stop writes, in order; absent when this function cannot change without a stop. */
  steps?: ZeroStopStep[];
  /** Why `steps` is absent. */
  needsStop?: string;
}

export function refuseState(pid: number, e: Entry, replace: boolean): void {
  const s = e.state;
  if (s.state === 'patched' && !replace) {
    throw new HpError('FUNCTION_ALREADY_PATCHED', `${s.function} in process ${pid} already jumps to ${hexAddr(s.jump!.target)}; revert it first. Nothing was changed`, { function: s.function });
  }
  if (s.state === 'foreign' || s.state === 'modified') {
    const memory = e.hotMemory && s.form === 'padding' ? e.hotMemory : e.memoryBytes;
    throw new HpError('ENTRY_MISMATCH', `the entry bytes of ${s.function} in process ${pid} (${hexBytes(memory)}) differ from ${s.object} (${hexBytes(e.fileBytes)})${s.state === 'foreign' ? ' and jump somewhere hp-agent did not put there' : ''}; refusing to overwrite code hp-agent does not know. Nothing was changed`, { function: s.function });
  }
}

/** The bytes to expect and to write at an entry-form site so it ends up as `after` (padded with the original). */
function siteChange(e: Entry, siteAddress: number, after: Buffer): { expect: Buffer; write: Buffer } {
  const offset = siteAddress - e.state.functionAddress;
  const oldLength = e.state.state === 'patched' ? e.state.record!.jump.length / 2 : 0;
  const length = Math.max(after.length, oldLength);
  const expect = e.memoryBytes.subarray(offset, offset + length);
  const original = e.fileBytes.subarray(offset, offset + length);
  if (expect.length !== length || original.length !== length) {
    throw new HpError('FUNCTION_TOO_SHORT', `${e.state.function} is too short for the ${length}-byte change at its entry; nothing was changed`);
  }
  return { expect: Buffer.from(expect), write: Buffer.concat([after, original.subarray(after.length)]) };
}

/** True when the function is (or will be) patched through its hot-patchable padding. */
function paddingForm(e: Entry): boolean {
  return e.hot !== undefined && (e.state.state === 'original' || e.state.form === 'padding');
}

const STOP_REASON = {
  notHot: 'its object was not built with hot-patchable entries (-fpatchable-function-entry=7,5) or this entry is not listed as one',
  entryForm: 'it is patched by a jump written over its entry, which only a stop can take back',
} as const;

function reportBase(action: SiteAction, obj: LoadedObject, e: Entry) {
  return { action, object: obj.path, function: e.state.function, functionAddress: e.state.functionAddress };
}

/**
 * What a zero-stop switch does to memory, seen from before its first write and after its last:
 * per byte it touches, the byte it finds and the byte it leaves. The stop-the-world transaction
 * of a hot-patchable entry is exactly that, in one go.
 */
class SwitchEffect {
  readonly #bytes = new Map<number, { before: number; after: number }>();

  constructor(readonly steps: ZeroStopStep[]) {
    for (const step of steps) {
      for (let i = 0; i < step.before.length; i++) {
        const known = this.#bytes.get(step.addr + i);
        if (known) known.after = step.after[i];
        else this.#bytes.set(step.addr + i, { before: step.before[i], after: step.after[i] });
      }
    }
  }

  bytes(addr: number, length: number, when: 'before' | 'after'): Buffer {
    return Buffer.from(Array.from({ length }, (_, i) => this.#bytes.get(addr + i)![when]));
  }

  /** The transaction's sites: each run of touched bytes that ends up different. */
  sites(): TransactionSite[] {
    const addrs = [...this.#bytes.keys()].sort((a, b) => a - b);
    const runs: number[][] = [];
    for (const a of addrs) {
      const run = runs[runs.length - 1];
      if (run && run[run.length - 1] === a - 1) run.push(a);
      else runs.push([a]);
    }
    return runs
      .map((run) => ({ addr: run[0], expect: this.bytes(run[0], run.length, 'before'), write: this.bytes(run[0], run.length, 'after') }))
      .filter((site) => !site.expect.equals(site.write));
  }
}

/** A hot-patchable entry's change, in both modes, from its zero-stop steps. */
function paddingPlan(report: Pick<SiteReport, 'action' | 'object' | 'function' | 'functionAddress' | 'replacement' | 'target'>, hot: PatchableEntry, steps: ZeroStopStep[]): FunctionPlan {
  const effect = new SwitchEffect(steps);
  const padding = (when: 'before' | 'after') => hexBytes(effect.bytes(hot.paddingAddress, hot.padding.length, when));
  const entry = (when: 'before' | 'after') => hexBytes(effect.bytes(hot.siteAddress, hot.nop.length, when));
  return {
    sites: effect.sites(),
    steps,
    report: {
      ...report,
      form: 'padding',
      siteAddress: hot.paddingAddress,
      kind: 'rel32',
      keptEndbr64: hot.keptEndbr64,
      before: padding('before'),
      after: padding('after'),
      entry: { siteAddress: hot.siteAddress, entryNop: hot.entryNop, before: entry('before'), after: entry('after') },
    },
  };
}

/** Restores one patched function to its file's bytes. */
export function planRestore(obj: LoadedObject, e: Entry): FunctionPlan {
  const { jump } = e.state;
  if (paddingForm(e)) return paddingPlan(reportBase('restore', obj, e), e.hot!, planZeroStopRevert(e.hot!.entryAddress, e.hot!, jump!.target));
  const at = jump!.siteAddress - e.state.functionAddress;
  const { expect, write } = siteChange(e, jump!.siteAddress, e.fileBytes.subarray(at, at + e.state.record!.jump.length / 2));
  return {
    sites: [{ addr: jump!.siteAddress, expect, write }],
    needsStop: STOP_REASON.entryForm,
    report: { ...reportBase('restore', obj, e), form: 'entry', siteAddress: jump!.siteAddress, kind: jump!.kind, keptEndbr64: jump!.siteAddress !== e.state.functionAddress, before: hexBytes(expect), after: hexBytes(write) },
  };
}

/** Points one function at `target` (from its original bytes, or from an older patch). */
export function planRedirect(obj: LoadedObject, e: Entry, replacement: string, target: number): { plan: FunctionPlan; record: SiteRecord } {
  const action: SiteAction = e.state.state === 'patched' ? 'repoint' : 'patch';
  const base = { ...reportBase(action, obj, e), replacement, target };
  if (paddingForm(e)) {
    const hot = e.hot!;
    refuseBranchesIntoSite(obj, e, hot.siteAddress, hot.nop.length, 'padding');
    const jump = paddingJump(hot, target);
    const switched = switchedEntryBytes(hot);
    const record: SiteRecord = {
      function: e.state.function,
      replacement,
      functionAddress: hot.entryAddress,
      siteAddress: hot.paddingAddress,
      kind: 'rel32',
      target,
      original: hexBytes(hot.padding),
      jump: hexBytes(jump),
      zeroStop: { siteAddress: hot.siteAddress, entryNop: hot.entryNop, original: hexBytes(hot.nop), switched: hexBytes(switched) },
    };
    const steps = action === 'repoint' ? planZeroStopRepoint(hot.entryAddress, hot, e.state.jump!.target, target) : planZeroStop(hot.entryAddress, hot, target);
    return { record, plan: paddingPlan(base, hot, steps) };
  }
  // Plan against the file's bytes: the entry may hold an older jump now.
  const jump = planJumpSite({ name: e.state.function, address: e.state.functionAddress, size: e.size, entryBytes: e.fileBytes }, target);
  refuseBranchesIntoSite(obj, e, jump.siteAddress, jump.bytes.length, 'entry');
  const { expect, write } = siteChange(e, jump.siteAddress, jump.bytes);
  return {
    record: { function: e.state.function, replacement, functionAddress: e.state.functionAddress, siteAddress: jump.siteAddress, kind: jump.kind, target, original: hexBytes(jump.original), jump: hexBytes(jump.bytes) },
    plan: {
      sites: [{ addr: jump.siteAddress, expect, write }],
      needsStop: e.hot ? STOP_REASON.entryForm : STOP_REASON.notHot,
      report: { ...base, form: 'entry', siteAddress: jump.siteAddress, kind: jump.kind, keptEndbr64: jump.keptEndbr64, before: hexBytes(expect), after: hexBytes(write) },
    },
  };
}

/**
 * The function's bytes as they were before any hp-agent jump: what the process holds now, with
 * the original bytes the record of the patch it runs keeps put back where that patch's jump (and,
 * for a hot-patchable entry, the switched entry NOP) sits.
 */
function originalBody(e: Entry): Buffer {
  const body = Buffer.from(e.body!);
  const record = e.state.state === 'patched' ? e.state.record : undefined;
  const putBack = (at: number, hexBytes: string) => {
    const bytes = Buffer.from(hexBytes, 'hex');
    for (let i = 0; i < bytes.length; i++) {
      const o = at - e.state.functionAddress + i;
      if (o >= 0 && o < body.length) body[o] = bytes[i];
    }
  };
  if (record) {
    putBack(record.siteAddress, record.original);
    if (record.zeroStop) putBack(record.zeroStop.siteAddress, record.zeroStop.original);
  }
  return body;
}

/** Refuses a function whose bytes in the process are not the original the patch was built for. */
export function checkOriginalBytes(pid: number, e: Entry, original: { size: number; sha256: string }): void {
  const actual = createHash('sha256').update(originalBody(e)).digest('hex');
  if (actual !== original.sha256) {
    throw new HpError(
      'ORIGINAL_BYTES_MISMATCH',
      `the ${e.size} bytes of ${e.state.function} in process ${pid} (at ${hexAddr(e.state.functionAddress)} in ${e.state.object}) hash to ${actual}, not to the ${original.sha256} the patch was built for: this process does not run the code the patch replaces. Nothing was changed`,
      { function: e.state.function, pid, expected: original.sha256, actual },
    );
  }
}
