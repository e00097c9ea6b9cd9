/**
 * The engine: redirect functions of a running process to code from patch objects, re-point
 * them to a newer patch (cumulative hotpatches), and put them back. Everything slow (reading,
 * linking, mapping the patches) happens while the target runs; then every site of the process
 * changes in one step, in one of two modes:
 *
 *  - stop: the native core's transaction stops every thread for the few microseconds the writes
 *    take (any function);
 *  - zero-stop: for hot-patchable entries (-fpatchable-function-entry=7,5) the jump goes into
 *    the padding and the entry is flipped by single-byte writes, each a valid instruction stream
 *    (src/x64/zero-stop.ts) — no thread is stopped at all.
 *
 * 'auto' (the default) uses zero-stop when every function of the change allows it. Every
 * refusal happens before the first byte is written, and every failure after that goes through
 * one undo log (undo-log.ts), so a refused or failed change leaves the target exactly as it was.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { notAFunction, type ElfFile } from '../elf/index.js';
import { HpError } from '../errors.js';
import { linkPatch, layoutPatch } from '../link/index.js';
import { native, type TransactionResult, type TransactionSite } from '../native.js';
import { findFreeRegionNear, isNamespaceInit, readElfFile, symbolAddress, type LoadedObject, type MapEntry } from '../proc/index.js';
import {
  paddingJump,
  planJumpSite,
  planZeroStop,
  planZeroStopRepoint,
  planZeroStopRevert,
  switchedEntryBytes,
  USER_SPACE_END,
  PAGE_SIZE,
  type JumpKind,
  type PatchableEntry,
  type ZeroStopStep,
} from '../x64/index.js';
import { refuseBranchesIntoSite } from './branch-check.js';
import { readEntries, type Entry, type FunctionState } from './entries.js';
import { mapPatchAndSwitch, mapPatchImage, type MappedPatch } from './loader.js';
import { isPatchMapping, mappingExtent, memfdName } from './mappings.js';
import { encodeRecord, type PatchLabel, type PatchRecord, type SiteRecord } from './record.js';
import { bindSymbols } from './resolve.js';
import type { BorrowedThread } from './remote.js';
import { PATCH_MODES, type Consistency, type PatchMode } from './modes.js';
import { UndoLog } from './undo-log.js';
import { ProcessView, whileAlive } from './view.js';
import { zeroStopSwitch } from './zero-stop.js';
import type { ApplyOptions, ApplyReport, ChangeOptions, ChangeReport, FunctionSpec, InspectOptions, ObjectChange, RevertOptions, RevertReport, SiteAction, SiteReport, TransactionReport } from './types.js';

export type { FunctionState } from './entries.js';
export type { Consistency, PatchMode } from './modes.js';
export type * from './types.js';

const REL32_REACH = 2 ** 31;
/** The largest record a patch mapping may carry (its sites and original bytes, as JSON). */
const RECORD_LIMIT = 16 << 20;
const pageUp = (n: number) => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
/** Room to keep after the image for the record, before its exact size is known (re-planned if short). */
const recordEstimate = (functions: number) => pageUp(8192 + 1024 * functions);

const hex = (b: Buffer) => b.toString('hex');

function transactionReport(t: TransactionResult): TransactionReport {
  return {
    pauseUs: Math.round(t.pauseNs / 100) / 10,
    totalStoppedUs: Math.round(t.totalStoppedNs / 100) / 10,
    threads: t.threads,
    attempts: t.attempts,
    realtime: t.realtime,
  };
}

const NOTHING_STOPPED: TransactionReport = { pauseUs: 0, totalStoppedUs: 0, threads: 0, attempts: 0, realtime: false };

export async function inspectFunctions(opts: InspectOptions): Promise<FunctionState[]> {
  const view = new ProcessView(opts.pid);
  return (await readEntries(view, view.object(opts.object), opts.functions)).map((e) => e.state);
}

// ---- planning ------------------------------------------------------------------------------------

/** Where a patch goes: near (a rel32 jump reaches it) or, on request, deliberately far. */
function choosePatchBase(view: ProcessView, obj: LoadedObject, size: number, placement: 'near' | 'far'): number {
  const { pid, maps } = view;
  if (placement === 'near') {
    const base = findFreeRegionNear(maps, { start: obj.start, end: obj.end }, size);
    if (base === undefined) {
      throw new HpError('NO_ROOM_NEAR_OBJECT', `no free address range within ±2 GiB of ${obj.path} in process ${pid}; nothing was changed`);
    }
    return base;
  }
  const distance = (m: MapEntry) => Math.max(Math.abs(m.start - obj.end), Math.abs(m.end - obj.start));
  const anchor = maps.filter((m) => m.end <= USER_SPACE_END).sort((a, b) => distance(b) - distance(a))[0];
  const base = anchor && findFreeRegionNear(maps, { start: anchor.start, end: anchor.end }, size, { maxDistance: 2 ** 30 });
  if (base === undefined || (Math.abs(base - obj.end) < REL32_REACH && Math.abs(base + size - obj.start) < REL32_REACH)) {
    throw new HpError('NO_FAR_ROOM', `no free address range out of rel32 reach of ${obj.path} in process ${pid}; nothing was changed`);
  }
  return base;
}

/** One function's change, ready for either mode. */
interface FunctionPlan {
  report: SiteReport;
  /** The writes of the stop-the-world transaction. */
  sites: TransactionSite[];
  /** The zero-stop writes, in order; absent when this function cannot change without a stop. */
  steps?: ZeroStopStep[];
  /** Why `steps` is absent. */
  needsStop?: string;
}

interface PlannedPatch {
  obj: LoadedObject;
  patchPath: string;
  patchBuildId?: string;
  base: number;
  image: Buffer;
  segments: { offset: number; size: number; prot: number }[];
  trailer: Buffer;
  bindings: { name: string; address: number; from: string }[];
  /** An earlier mapping of the very same bytes, re-used (see reusableMapping): nothing to map. */
  reused?: MappedPatch;
}

interface Plan {
  objects: LoadedObject[];
  patches: PlannedPatch[];
  functions: FunctionPlan[];
  /** The code the change replaces ([start, end, ...]): each changed function's own body, and the patch it runs now. */
  replacedCode: number[];
}

/** What stops running when `e` changes: its body in the object, and the patch mapping it jumps into now. */
function replacedCode(view: ProcessView, e: Entry): number[] {
  const out = [e.state.functionAddress, e.state.functionAddress + Math.max(e.size, 1)];
  const mapping = e.state.jump ? view.patchMappingAt(e.state.jump.target) : undefined;
  if (mapping) {
    const { start, end } = mappingExtent(mapping);
    out.push(start, end);
  }
  return out;
}

function refuseState(pid: number, e: Entry, replace: boolean): void {
  const s = e.state;
  if (s.state === 'patched' && !replace) {
    throw new HpError('FUNCTION_ALREADY_PATCHED', `${s.function} in process ${pid} already jumps to 0x${s.jump!.target.toString(16)}; revert it first. Nothing was changed`, { function: s.function });
  }
  if (s.state === 'foreign' || s.state === 'modified') {
    const memory = e.hotMemory && s.form === 'padding' ? e.hotMemory : e.memoryBytes;
    throw new HpError('ENTRY_MISMATCH', `the entry bytes of ${s.function} in process ${pid} (${hex(memory)}) differ from ${s.object} (${hex(e.fileBytes)})${s.state === 'foreign' ? ' and jump somewhere hp-agent did not put there' : ''}; refusing to overwrite code hp-agent does not know. Nothing was changed`, { function: s.function });
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
  const padding = (when: 'before' | 'after') => hex(effect.bytes(hot.paddingAddress, hot.padding.length, when));
  const entry = (when: 'before' | 'after') => hex(effect.bytes(hot.siteAddress, hot.nop.length, when));
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
function planRestore(obj: LoadedObject, e: Entry): FunctionPlan {
  const { jump } = e.state;
  if (paddingForm(e)) return paddingPlan(reportBase('restore', obj, e), e.hot!, planZeroStopRevert(e.hot!.entryAddress, e.hot!, jump!.target));
  const at = jump!.siteAddress - e.state.functionAddress;
  const { expect, write } = siteChange(e, jump!.siteAddress, e.fileBytes.subarray(at, at + e.state.record!.jump.length / 2));
  return {
    sites: [{ addr: jump!.siteAddress, expect, write }],
    needsStop: STOP_REASON.entryForm,
    report: { ...reportBase('restore', obj, e), form: 'entry', siteAddress: jump!.siteAddress, kind: jump!.kind, keptEndbr64: jump!.siteAddress !== e.state.functionAddress, before: hex(expect), after: hex(write) },
  };
}

/** Points one function at `target` (from its original bytes, or from an older patch). */
function planRedirect(obj: LoadedObject, e: Entry, replacement: string, target: number): { plan: FunctionPlan; record: SiteRecord } {
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
      original: hex(hot.padding),
      jump: hex(jump),
      zeroStop: { siteAddress: hot.siteAddress, entryNop: hot.entryNop, original: hex(hot.nop), switched: hex(switched) },
    };
    const steps = action === 'repoint' ? planZeroStopRepoint(hot.entryAddress, hot, e.state.jump!.target, target) : planZeroStop(hot.entryAddress, hot, target);
    return { record, plan: paddingPlan(base, hot, steps) };
  }
  // Plan against the file's bytes: the entry may hold an older jump now.
  const jump = planJumpSite({ name: e.state.function, address: e.state.functionAddress, size: e.size, entryBytes: e.fileBytes }, target);
  refuseBranchesIntoSite(obj, e, jump.siteAddress, jump.bytes.length, 'entry');
  const { expect, write } = siteChange(e, jump.siteAddress, jump.bytes);
  return {
    record: { function: e.state.function, replacement, functionAddress: e.state.functionAddress, siteAddress: jump.siteAddress, kind: jump.kind, target, original: hex(jump.original), jump: hex(jump.bytes) },
    plan: {
      sites: [{ addr: jump.siteAddress, expect, write }],
      needsStop: e.hot ? STOP_REASON.entryForm : STOP_REASON.notHot,
      report: { ...base, form: 'entry', siteAddress: jump.siteAddress, kind: jump.kind, keptEndbr64: jump.keptEndbr64, before: hex(expect), after: hex(write) },
    },
  };
}

/** The names each parsed patch imports (readElfFile hands out one object per version of the file). */
const importedNames = new WeakMap<ElfFile, string[]>();

/** The patch object, parsed once per version of the file, and the names it imports. */
function openPatch(patchPath: string) {
  const patch = readElfFile(patchPath);
  const layout = layoutPatch(patch); // refuses TLS, constructors, bad layouts up front (once per file)
  let undefinedNames = importedNames.get(patch);
  if (!undefinedNames) {
    undefinedNames = [...new Set(patch.dynamicSymbols.filter((s) => !s.defined && s.name).map((s) => s.name))];
    importedNames.set(patch, undefinedNames);
  }
  return { patch, layout, undefinedNames };
}

interface ObjectEntries {
  change: ObjectChange;
  obj: LoadedObject;
  functions: Entry[];
  restore: Entry[];
}

async function readObjectEntries(view: ProcessView, change: ObjectChange): Promise<ObjectEntries> {
  const obj = view.object(change.object);
  for (const f of change.functions) checkFunctionSymbol(view.pid, obj, f);
  const restoreNames = (change.restore ?? []).filter((name) => !change.functions.some((f) => f.name === name));
  // The functions whose original bytes are to be checked are read whole, in the same read.
  const whole = new Set(change.functions.filter((f) => f.original).map((f) => f.name));
  const all = await readEntries(view, obj, [...change.functions.map((f) => f.name), ...restoreNames], whole);
  return { change, obj, functions: all.slice(0, change.functions.length), restore: all.slice(change.functions.length) };
}

/**
 * Only a function may be redirected: a jump written over a variable corrupts it, and an indirect
 * function's symbol is its resolver, which nothing calls after load. A size given for its
 * original bytes must be the symbol's (and so bounds what is read of it).
 */
function checkFunctionSymbol(pid: number, obj: LoadedObject, f: FunctionSpec): void {
  const sym = symbolAddress(obj, f.name);
  const refusal = notAFunction(f.name, sym.type, obj.path);
  if (refusal) throw new HpError(refusal.code, `${refusal.message}. Nothing was changed`, { ...refusal.details, pid });
  if (f.original && f.original.size !== sym.size) {
    throw new HpError('FUNCTION_SIZE_MISMATCH', `${f.name} is ${sym.size} bytes long in ${obj.path} (process ${pid}), but the patch was built for a ${f.original.size}-byte original; nothing was changed`, { function: f.name, expected: f.original.size, actual: sym.size, pid });
  }
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
function checkOriginalBytes(pid: number, e: Entry, original: { size: number; sha256: string }): void {
  const actual = createHash('sha256').update(originalBody(e)).digest('hex');
  if (actual !== original.sha256) {
    throw new HpError(
      'ORIGINAL_BYTES_MISMATCH',
      `the ${e.size} bytes of ${e.state.function} in process ${pid} (at 0x${e.state.functionAddress.toString(16)} in ${e.state.object}) hash to ${actual}, not to the ${original.sha256} the patch was built for: this process does not run the code the patch replaces. Nothing was changed`,
      { function: e.state.function, pid, expected: original.sha256, actual },
    );
  }
}

/** True when every function already runs the labelled package's code and nothing needs restoring. */
function alreadyThere(objects: ObjectEntries[], label: PatchLabel | undefined): boolean {
  if (!label) return false;
  return objects.every(({ change, functions, restore }) =>
    functions.every((e, i) => e.state.state === 'patched' && e.state.record?.label?.packageId === label.packageId && (e.state.record.replacement ?? e.state.function) === (change.functions[i].replacement ?? change.functions[i].name)) &&
    restore.every((e) => e.state.state === 'original'),
  );
}

/** Links the patch for a base near the object with `reserve` bytes after it, and plans every function's change. */
function placeAndPlan(
  view: ProcessView,
  obj: LoadedObject,
  o: ObjectEntries,
  change: ObjectChange,
  opts: ChangeOptions,
  patch: ReturnType<typeof openPatch>['patch'],
  layout: ReturnType<typeof openPatch>['layout'],
  bindings: Map<string, { address: number }>,
  reserve: number,
  at?: number,
) {
  const base = at ?? choosePatchBase(view, obj, layout.span + reserve, opts.placement ?? 'near');
  const linked = linkPatch(patch, base, (name) => bindings.get(name)?.address);
  const siteRecords: SiteRecord[] = [];
  const plans = change.functions.map((f, i) => {
    const replacement = f.replacement ?? f.name;
    const target = linked.symbolAddress(replacement);
    if (target === undefined) {
      throw new HpError('SYMBOL_NOT_FOUND', `the patch ${path.basename(change.patchPath!)} does not define ${replacement}; nothing was changed`, { symbol: replacement });
    }
    const { plan: fp, record } = planRedirect(obj, o.functions[i], replacement, target);
    siteRecords.push(record);
    return fp;
  });
  const record: PatchRecord = {
    patch: path.resolve(change.patchPath!),
    patchBuildId: patch.buildId,
    label: opts.label,
    object: obj.path,
    objectBuildId: obj.buildId,
    base,
    span: layout.span,
    appliedAt: new Date().toISOString(),
    sites: siteRecords,
  };
  return { base, linked, plans, record, trailer: encodeRecord(record) };
}

/** JSON with sorted keys and no `appliedAt`: two records (or labels) of the same content compare equal. */
function contentOf(v: unknown): string {
  const sorted = (x: unknown): unknown =>
    Array.isArray(x) ? x.map(sorted) : x && typeof x === 'object' ? Object.fromEntries(Object.entries(x).filter(([k]) => k !== 'appliedAt').sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, y]) => [k, sorted(y)])) : x;
  return JSON.stringify(sorted(v)) ?? 'undefined';
}

/**
 * An earlier mapping of this very patch for this object and package, still in the process (a
 * level applied, taken back and applied again: mappings are never unmapped, as a thread may
 * still run their code). When its record lists the same sites and its bytes are exactly the
 * patch linked for its base, the entries are pointed back at it instead of mapping another copy:
 * no thread is borrowed, and the process does not gather one mapping per cycle. A patch whose
 * writable data changed since is not the same bytes, and gets a fresh mapping.
 */
async function reusableMapping(
  view: ProcessView,
  plan: (at: number, reserve: number) => ReturnType<typeof placeAndPlan>,
  want: { patch: string; patchBuildId?: string; label?: PatchLabel; object: string; objectBuildId?: string; span: number },
): Promise<{ placed: ReturnType<typeof placeAndPlan>; reused: MappedPatch } | undefined> {
  if (want.patchBuildId === undefined) return undefined; // no identity to go by
  const seen = new Set<string>();
  for (const line of view.maps) {
    if (!isPatchMapping(line.path) || seen.has(`${line.inode}:${line.path}`)) continue;
    seen.add(`${line.inode}:${line.path}`);
    const mapping = view.patchMappingAt(line.start);
    if (!mapping) continue;
    const { start, end } = mappingExtent(mapping);
    let old: PatchRecord;
    try {
      old = await view.record(mapping);
    } catch {
      continue; // not ours to judge
    }
    if (old.patchBuildId !== want.patchBuildId || old.patch !== want.patch || old.object !== want.object || old.objectBuildId !== want.objectBuildId || old.base !== start || old.span !== want.span) continue;
    if (contentOf(old.label) !== contentOf(want.label)) continue; // another package's
    const placed = plan(start, end - start - want.span);
    if (start + want.span + placed.trailer.length > end || contentOf(placed.record) !== contentOf(old)) continue;
    // Only for a near placement, which wants rel32 jumps: a mapping out of their reach is not taken.
    if (placed.plans.some((f) => f.report.kind === 'abs64')) continue;
    const bytes = await native.readMemory(view.pid, start, want.span);
    if (!bytes.equals(placed.linked.image)) continue;
    return { placed, reused: { base: start, size: end - start, name: line.path.slice('/memfd:'.length) } };
  }
  return undefined;
}

async function planObject(view: ProcessView, o: ObjectEntries, opts: ChangeOptions, plan: Plan): Promise<void> {
  const { pid } = view;
  const { change, obj } = o;
  plan.objects.push(obj);
  for (const [i, e] of o.functions.entries()) {
    refuseState(pid, e, opts.replace ?? false);
    const original = change.functions[i].original;
    if (original) checkOriginalBytes(pid, e, original);
  }
  for (const e of o.restore) {
    if (e.state.state === 'original') {
      if (opts.requirePatched) throw new HpError('NOT_PATCHED', `${e.state.function} in process ${pid} is not patched; nothing was changed`, { function: e.state.function });
      continue; // nothing to give back
    }
    if (opts.requirePatched && e.state.state !== 'patched') {
      throw new HpError('FOREIGN_CODE', `${e.state.function} in process ${pid} was changed by something other than hp-agent; refusing to touch it. Nothing was changed`, { function: e.state.function });
    }
    refuseState(pid, e, true);
    plan.functions.push(planRestore(obj, e));
    plan.replacedCode.push(...replacedCode(view, e));
  }
  if (change.functions.length === 0) return;
  if (!change.patchPath) throw new HpError('USAGE', `functions of ${obj.path} to patch but no patch object`);

  const { patch, layout, undefinedNames } = openPatch(change.patchPath);
  for (const f of change.functions) {
    const replacement = f.replacement ?? f.name;
    const sym = patch.findSymbol(replacement);
    const refusal = sym && notAFunction(replacement, sym.type, path.basename(change.patchPath), 'replacement');
    if (refusal) throw new HpError(refusal.code, `${refusal.message}. Nothing was changed`, refusal.details);
  }
  const bindings = await bindSymbols(pid, obj, () => view.loaded(), undefinedNames);
  const placeAt = (at: number | undefined, reserve: number) => placeAndPlan(view, obj, o, change, opts, patch, layout, bindings, reserve, at);
  // ('far' asks for a mapping out of rel32 reach on purpose: always a new one.)
  const again = (opts.placement ?? 'near') === 'near' ? await reusableMapping(view, placeAt, { patch: path.resolve(change.patchPath), patchBuildId: patch.buildId, label: opts.label, object: obj.path, objectBuildId: obj.buildId, span: layout.span }) : undefined;
  let placed = again?.placed;
  if (!placed) {
    // The record's size is known only once the sites are planned for a base; if the room first
    // kept for it is too small (very long names), place the patch again with the exact room.
    let reserve = recordEstimate(change.functions.length);
    for (;;) {
      placed = placeAt(undefined, reserve);
      if (placed.trailer.length <= reserve) break;
      if (placed.trailer.length > RECORD_LIMIT) throw new HpError('TOO_MANY_SITES', `the patch record (${placed.trailer.length} bytes) is larger than ${RECORD_LIMIT} bytes; nothing was changed`);
      reserve = placed.trailer.length;
    }
    // A later object of the same change must not be placed over this one.
    view.addMapping(placed.base, placed.base + layout.span + placed.trailer.length);
  }
  const { base, trailer, linked, plans } = placed;
  plan.functions.push(...plans);
  for (const e of o.functions) plan.replacedCode.push(...replacedCode(view, e));
  plan.patches.push({ obj, patchPath: path.resolve(change.patchPath), patchBuildId: patch.buildId, base, image: linked.image, segments: layout.protections, trailer, bindings: [...bindings.values()], reused: again?.reused });
}

/** Where thread stacks can be: every writable private mapping ([start, end, ...]). */
function stackAreas(maps: MapEntry[]): number[] {
  return maps.filter((m) => m.write && !m.shared && m.end <= Number.MAX_SAFE_INTEGER).flatMap((m) => [m.start, m.end]);
}

/** Which mode the change uses: refuses 'zero-stop' when a function needs a stop (or function consistency asks for one), naming why. */
function chooseMode(pid: number, plan: Plan, requested: PatchMode, consistency: Consistency): 'stop' | 'zero-stop' {
  if (consistency === 'function') {
    if (requested === 'zero-stop') {
      throw new HpError('NOT_HOT_PATCHABLE', `cannot give function consistency without stopping process ${pid}: proving that no thread is inside an old function needs every thread stopped. Nothing was changed`);
    }
    return 'stop';
  }
  if (requested === 'stop') return 'stop';
  const blocked = plan.functions.filter((f) => !f.steps);
  if (blocked.length === 0) return 'zero-stop';
  if (requested === 'auto') return 'stop';
  const why = blocked.map((f) => `${f.report.function} (${f.needsStop})`).join('; ');
  throw new HpError('NOT_HOT_PATCHABLE', `cannot change process ${pid} without stopping it: ${why}. Nothing was changed`, { functions: blocked.map((f) => f.report.function) });
}

/**
 * The zero-stop writes of all functions, in rounds: round k holds the k-th write of every
 * function. Writes to different entries need no pause between them, so a change of many
 * functions takes as many pauses as ONE function's switch, not one per function.
 */
function rounds(plans: FunctionPlan[]): ZeroStopStep[][] {
  const out: ZeroStopStep[][] = [];
  for (const p of plans) p.steps!.forEach((step, k) => (out[k] ??= []).push(step));
  return out;
}

// ---- the one way to change code in a process ---------------------------------------------------

/**
 * Brings the functions of one process to the requested state in ONE step: new patches are
 * mapped first (the target keeps running), then every site is switched at once.
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

/**
 * The machine's init and a container's init (pid 1 of its PID namespace, as NSpid tells) are
 * refused unless asked for: if one of them dies of a bad patch, the kernel kills every process
 * of its namespace with it.
 */
function refuseNamespaceInit(pid: number): void {
  if (!isNamespaceInit(pid)) return;
  const where = pid === 1 ? 'the init of this machine (PID 1)' : `the init of a PID namespace (PID 1 inside it: a container's init, PID ${pid} here)`;
  throw new HpError('TARGET_IS_INIT', `process ${pid} is ${where}: if it died of a patch, every process of its namespace would die with it. Nothing was changed; to patch it anyway, ask explicitly (hp-agent try --allow-init)`, { pid });
}

async function change(opts: ChangeOptions): Promise<ChangeReport> {
  const { pid } = opts;
  if (opts.changes.every((c) => c.functions.length === 0 && (c.restore ?? []).length === 0)) {
    throw new HpError('NO_FUNCTIONS', 'no function to change was given');
  }
  if (opts.mode !== undefined && !(PATCH_MODES as readonly string[]).includes(opts.mode)) {
    throw new HpError('USAGE', `unknown patch mode "${String(opts.mode)}": expected ${PATCH_MODES.join(', ')}`);
  }
  if (!opts.allowInit) refuseNamespaceInit(pid);
  // A process that cannot be traced (gone, a zombie, our child, traced by another tool) is
  // refused by the core before its first ptrace request; reading it first does no harm.
  const view = new ProcessView(pid, { maps: opts.maps, objects: opts.objects });
  const entries: ObjectEntries[] = [];
  for (const c of opts.changes) entries.push(await readObjectEntries(view, c));
  const unchanged = (objects: LoadedObject[]): ChangeReport => ({ pid, changed: false, objects: objects.map((o) => ({ path: o.path, buildId: o.buildId })), patches: [], sites: [], ...(opts.dryRun ? { dryRun: true as const } : {}) });
  if (alreadyThere(entries, opts.label)) return unchanged(entries.map((e) => e.obj));

  const plan: Plan = { objects: [], patches: [], functions: [], replacedCode: [] };
  for (const o of entries) await planObject(view, o, opts, plan);
  if (plan.functions.length === 0) return unchanged(plan.objects);
  const consistency = opts.consistency ?? 'entry';
  const mode = chooseMode(pid, plan, opts.mode ?? 'auto', consistency);
  const mappingName = (p: PlannedPatch) => (opts.label ? `${opts.label.packageId}:${path.basename(p.patchPath)}` : path.basename(p.patchPath));
  // The seam of a dry run: everything above only read the process; everything below writes.
  if (opts.dryRun) {
    return { ...changeReport(pid, mode, plan, (p) => p.reused ?? { base: p.base, size: p.image.length + p.trailer.length, name: memfdName(mappingName(p)) }), dryRun: true };
  }

  const mapped: MappedPatch[] = [];
  let outcome: Pick<ChangeReport, keyof TransactionReport | 'switchUs' | 'borrowed'>;
  const fresh = plan.patches.filter((p) => !p.reused);
  const log = new UndoLog();
  try {
    if (mode === 'zero-stop') {
      for (const p of fresh) mapped.push(await mapPatchImage(pid, p.base, p.image, p.segments, p.trailer, mappingName(p), view.maps, log));
      const sw = await zeroStopSwitch(pid, rounds(plan.functions), { stepDelayMs: opts.stepDelayMs, log });
      outcome = { ...NOTHING_STOPPED, switchUs: sw.durationUs, borrowed: mapped.flatMap((m) => (m.borrowed ? [m.borrowed] : [])) };
    } else {
      // Real-time priority by default: the tracer must not queue behind the target's busy threads.
      // Every stop checks that no stack returns into the bytes a jump overwrites; function
      // consistency also into the code being replaced.
      const functionConsistency = consistency === 'function' ? { activeRanges: plan.replacedCode, stackAreas: stackAreas(view.maps) } : { stackAreas: stackAreas(view.maps) };
      const sites = plan.functions.flatMap((f) => f.sites);
      const txOptions = { timeoutMs: opts.timeoutMs, realtime: opts.realtime ?? true, ...functionConsistency };
      // The usual change maps one new patch: mapped and switched in one attach of the core.
      const last = fresh.length ? fresh[fresh.length - 1] : undefined;
      for (const p of fresh.slice(0, -1)) mapped.push(await mapPatchImage(pid, p.base, p.image, p.segments, p.trailer, mappingName(p), view.maps, log));
      let tx: TransactionResult;
      if (last) {
        const done = await mapPatchAndSwitch(pid, { ...last, name: mappingName(last) }, sites, txOptions, view.maps, log);
        mapped.push(done.mapped);
        tx = done.tx;
      } else {
        tx = await native.transaction(pid, sites, txOptions).catch((e: unknown) => {
          log.failedStep(!(e instanceof HpError) || e.unchanged);
          throw e;
        });
      }
      outcome = transactionReport(tx);
    }
  } catch (e) {
    return log.settle(e);
  }
  return { ...changeReport(pid, mode, plan, (p) => p.reused ?? mapped.find((x) => x.base === p.base)!), ...outcome };
}

/** What a change did (or, for a dry run, would do): `mappingOf` says where each patch is (or would be) mapped. */
function changeReport(pid: number, mode: 'stop' | 'zero-stop', plan: Plan, mappingOf: (p: PlannedPatch) => MappedPatch): ChangeReport {
  return {
    pid,
    changed: true,
    mode,
    objects: plan.objects.map((o) => ({ path: o.path, buildId: o.buildId })),
    patches: plan.patches.map((p) => {
      const m = mappingOf(p);
      return { object: p.obj.path, path: p.patchPath, buildId: p.patchBuildId, base: p.base, size: m.size, mapping: m.name, bindings: p.bindings, ...(p.reused ? { reused: true } : {}) };
    }),
    sites: plan.functions.map((f) => f.report),
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
