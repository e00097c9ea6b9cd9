/**
 * Zero-stop mode (DESIGN §4.6): redirects functions whose objects were built with hot-patchable
 * entries (-fpatchable-function-entry=7,5) without stopping a single thread. The patch is mapped
 * exactly as for a normal patch (loader.ts: one briefly borrowed thread runs the remote system
 * calls); the switch itself is a handful of plain writes through /proc/PID/mem — no ptrace, no
 * transaction — planned by src/x64/zerostop.ts so that every intermediate state is valid code.
 *
 * Each function switches on its own: there is no instant at which all of a patch's functions
 * change together. A patch whose replacements only work as a set needs the normal (stop-the-world)
 * path. Reverting gives back the exact original padding and entry bytes; like the normal path, the
 * patch stays mapped afterwards, since a thread may still be running its code.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ElfFile } from '../elf/index.js';
import { HpError } from '../errors.js';
import { layoutPatch, linkPatch } from '../link/index.js';
import { native } from '../native.js';
import { findFreeRegionNear, findObject, loadedObjects, processExists, readMaps, symbolAddress, tracerOf, type LoadedObject } from '../proc/index.js';
import {
  HOTPATCH_ENTRY_NOP_SIZE,
  HOTPATCH_PADDING_SIZE,
  HOTPATCH_PROBE_SIZE,
  detectPatchableEntry,
  paddingJump,
  planZeroStop,
  planZeroStopRepoint,
  planZeroStopRevert,
  switchedEntryBytes,
  zeroStopStateOf,
  type EntryNop,
  type PatchableEntry,
  type ZeroStopStep,
} from '../x64/index.js';
import { mapPatchImage, unmapPatch } from './loader.js';
import type { FunctionSpec } from './patch.js';
import { encodeRecord, type PatchLabel, type PatchRecord, type SiteRecord } from './record.js';
import { bindSymbols } from './resolve.js';

/** The section gcc and clang fill with the address of every patchable entry's padding. */
const ENTRY_TABLE = '__patchable_function_entries';
const DEFAULT_STEP_DELAY_MS = 1;
const RECORD_RESERVE = 64 * 1024;

const hexAddr = (n: number): string => '0x' + n.toString(16);
const hex = (b: Buffer): string => b.toString('hex');
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface ZeroStopSwitchOptions {
  /**
   * Pause after each write before the next one (default 1 ms). It is what makes one-byte-at-a-time
   * safe without stopping anyone: a CPU that fetched and decoded the bytes before a write may
   * still execute that stale decode for a short while (x86 only promises cross-modified code is
   * seen after the executing CPU serializes, and we cannot make another CPU serialize without
   * stopping it — the kernel uses an IPI, membarrier's SYNC_CORE needs the target to register).
   * In-flight instructions retire within far less than a microsecond and any interrupt, context
   * switch or return from a system call serializes, so after the pause no CPU can still act on
   * the state before the previous one. Each CPU therefore only ever sees two neighbouring states,
   * both valid; without the pause it could combine bytes of states two writes apart (the new
   * `eb` with the original `90`, i.e. a jump into the preceding function).
   */
  stepDelayMs?: number;
  /** Called after each write was read back (index of the step, from 0); for logs and tests. */
  onStep?: (index: number, step: ZeroStopStep) => void;
}

export interface ZeroStopSwitchResult {
  steps: number;
  /** First write started → last write read back, pauses included (nothing is stopped meanwhile). */
  durationUs: number;
}

async function readBack(pid: number, step: ZeroStopStep): Promise<Buffer> {
  return native.readMemory(pid, step.addr, step.before.length);
}

/** Puts back `done` steps in reverse order; false when some byte is no longer ours to restore. */
async function undoSteps(pid: number, done: ZeroStopStep[], delayMs: number): Promise<boolean> {
  let clean = true;
  for (let i = done.length - 1; i >= 0; i--) {
    const step = done[i];
    try {
      const now = await readBack(pid, step);
      if (now.equals(step.before)) continue;
      if (!now.equals(step.after)) {
        clean = false;
        continue;
      }
      await native.writeMemory(pid, step.addr, step.before);
      if (!(await readBack(pid, step)).equals(step.before)) clean = false;
      if (i > 0 && delayMs > 0) await sleep(delayMs);
    } catch {
      clean = false;
    }
  }
  return clean;
}

/**
 * Carries out planned steps with plain memory writes (native.writeMemory through /proc/PID/mem:
 * no thread is stopped, the process is never traced). Before each write the bytes must still be
 * the step's `before`; after it they are read back. Any mismatch or failure undoes the steps
 * already done, in reverse, and throws (ENTRY_MISMATCH, VERIFY_FAILED, or the write's error);
 * `unchanged` on the error says whether the undo restored everything.
 */
export async function zeroStopSwitch(pid: number, steps: ZeroStopStep[], opts: ZeroStopSwitchOptions = {}): Promise<ZeroStopSwitchResult> {
  const delayMs = opts.stepDelayMs ?? DEFAULT_STEP_DELAY_MS;
  if (!Number.isFinite(delayMs) || delayMs < 0) throw new HpError('INVALID_ARGUMENT', `stepDelayMs must be a non-negative number of milliseconds, not ${String(delayMs)}`);
  for (const s of steps) {
    if (s.before.length === 0 || s.before.length !== s.after.length) throw new HpError('INVALID_ARGUMENT', `the step at ${hexAddr(s.addr)} must replace bytes with as many bytes`);
  }
  const started = performance.now();
  const done: ZeroStopStep[] = [];
  const fail = async (code: string, message: string, cause?: unknown): Promise<never> => {
    const undone = await undoSteps(pid, done, delayMs);
    const state = done.length === 0 ? 'nothing had been written' : undone ? `the ${done.length} write(s) already done were undone` : 'the writes already done could NOT all be undone';
    throw new HpError(code, `${message}; ${state}`, { step: done.length, ...(cause ? { cause: String(cause) } : {}) }, done.length === 0 || undone);
  };
  for (const step of steps) {
    if (done.length > 0 && delayMs > 0) await sleep(delayMs);
    let now: Buffer;
    try {
      now = await readBack(pid, step);
    } catch (e) {
      return fail(e instanceof HpError ? e.code : 'READ_FAILED', `cannot read ${step.before.length} byte(s) at ${hexAddr(step.addr)} in process ${pid}: ${(e as Error).message}`, e);
    }
    if (!now.equals(step.before)) {
      return fail('ENTRY_MISMATCH', `the ${step.what} bytes at ${hexAddr(step.addr)} in process ${pid} are ${hex(now)}, expected ${hex(step.before)}: something else changed them`);
    }
    try {
      await native.writeMemory(pid, step.addr, step.after);
    } catch (e) {
      // A failed write may have written part of the bytes: undo this step as well.
      done.push(step);
      return fail(e instanceof HpError ? e.code : 'WRITE_FAILED', `cannot write at ${hexAddr(step.addr)} in process ${pid}: ${(e as Error).message}`, e);
    }
    done.push(step);
    const after = await readBack(pid, step).catch(() => undefined);
    if (!after?.equals(step.after)) {
      return fail('VERIFY_FAILED', `the bytes at ${hexAddr(step.addr)} in process ${pid} read back as ${after ? hex(after) : '(unreadable)'} instead of ${hex(step.after)}`);
    }
    opts.onStep?.(done.length - 1, step);
  }
  return { steps: steps.length, durationUs: Math.round((performance.now() - started) * 1000) };
}

// ---- reading hot-patchable entries -----------------------------------------------------------

export interface ZeroStopEntry {
  function: string;
  object: string;
  layout: PatchableEntry;
  /** original: the file's bytes; switched: our padding jump + entry jump; other: anything else. */
  state: 'original' | 'switched' | 'other';
  target?: number;
  /** Hex of the padding + entry bytes in the process now. */
  memory: string;
}

/** Addresses listed in the object's entry table, relocated, read from the process itself. */
async function entryTable(pid: number, obj: LoadedObject): Promise<Set<number> | undefined> {
  const sec = obj.elf.section(ENTRY_TABLE);
  if (!sec || sec.size === 0 || sec.addr === 0) return undefined;
  const bytes = await native.readMemory(pid, obj.bias + sec.addr, sec.size - (sec.size % 8));
  const out = new Set<number>();
  for (let i = 0; i < bytes.length; i += 8) out.add(Number(bytes.readBigUInt64LE(i)));
  return out;
}

async function readZeroStopEntry(pid: number, obj: LoadedObject, table: Set<number> | undefined, name: string): Promise<ZeroStopEntry> {
  const sym = symbolAddress(obj, name);
  const entry = sym.address;
  const refuse = (why: string): never => {
    throw new HpError('NOT_HOT_PATCHABLE', `${name} in ${obj.path} (process ${pid}) cannot be switched without stopping the process: ${why}. Nothing was changed`, {
      function: name,
      object: obj.path,
    });
  };
  if (!table) refuse(`the object has no ${ENTRY_TABLE} section, so it was not built with -fpatchable-function-entry=7,5`);
  if (!table!.has(entry - HOTPATCH_PADDING_SIZE)) {
    refuse(`its entry is not listed in ${ENTRY_TABLE} with 5 bytes of padding before it (-fpatchable-function-entry=7,5)`);
  }
  let fileBytes: Buffer;
  try {
    fileBytes = obj.elf.readVirtual(entry - obj.bias - HOTPATCH_PADDING_SIZE, HOTPATCH_PROBE_SIZE);
  } catch {
    return refuse('the bytes around its entry are not in the file');
  }
  const layout = detectPatchableEntry(entry, fileBytes);
  if (!layout) refuse(`the file has ${hex(fileBytes)} around its entry, not 5 NOPs of padding and a 2-byte NOP (90 90 or 66 90) at the entry`);
  if (sym.size < layout!.siteAddress - entry + HOTPATCH_ENTRY_NOP_SIZE) refuse(`its symbol is only ${sym.size} bytes long`);
  const memory = await native.readMemory(pid, layout!.paddingAddress, HOTPATCH_PROBE_SIZE);
  const now = zeroStopStateOf(layout!, memory);
  return { function: name, object: obj.path, layout: layout!, state: now.state, target: now.state === 'switched' ? now.target : undefined, memory: hex(memory) };
}

/** The zero-stop state of each function, read from the process (file bytes as the reference). */
export async function inspectZeroStop(pid: number, names: string[], object?: string): Promise<ZeroStopEntry[]> {
  const obj = findObject(pid, object);
  const table = await entryTable(pid, obj);
  const out: ZeroStopEntry[] = [];
  for (const name of names) out.push(await readZeroStopEntry(pid, obj, table, name));
  return out;
}

// ---- apply, re-point, revert -----------------------------------------------------------------

export interface ZeroStopApplyOptions extends ZeroStopSwitchOptions {
  patchPath: string;
  functions: FunctionSpec[];
  /** Full path or file name of the patched object; default the main executable. */
  object?: string;
  /** Re-point functions already switched by us (unflip, rewrite the padding, flip); else refuse them. */
  replace?: boolean;
  label?: PatchLabel;
}

export interface ZeroStopSiteReport {
  action: 'patch' | 'repoint' | 'restore';
  function: string;
  replacement?: string;
  entryAddress: number;
  paddingAddress: number;
  /** Where the 2-byte NOP is (entry, or entry + 4 after an endbr64). */
  siteAddress: number;
  entryNop: EntryNop;
  keptEndbr64: boolean;
  target?: number;
  steps: { addr: number; before: string; after: string }[];
}

export interface ZeroStopReport extends ZeroStopSwitchResult {
  pid: number;
  object: { path: string; buildId?: string };
  patch?: { path: string; buildId?: string; base: number; size: number; mapping: string };
  bindings: { name: string; address: number; from: string }[];
  sites: ZeroStopSiteReport[];
}

/** A patch mapped into the target and the writes that would switch to it, not yet carried out. */
export interface PreparedZeroStop {
  pid: number;
  steps: ZeroStopStep[];
  report: Omit<ZeroStopReport, keyof ZeroStopSwitchResult>;
  /** Unmaps the patch (only while nothing jumps into it: before the switch, or after it failed cleanly). */
  discard(): Promise<void>;
}

function refuseUntraceable(pid: number): void {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    throw new HpError('PROCESS_NOT_FOUND', `no running process with PID ${pid}`);
  }
  // Mapping the patch borrows a thread through ptrace; libuv would reap our own child's stops.
  if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid) {
    throw new HpError('TARGET_IS_OUR_CHILD', `process ${pid} is a child of this agent process; run hp-agent as a separate process to patch it`);
  }
  const tracer = tracerOf(pid);
  if (tracer !== 0) throw new HpError('ALREADY_TRACED', `process ${pid} is already traced by PID ${tracer}; nothing was changed`, { tracer });
}

async function whileAlive<T>(pid: number, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (!(e instanceof HpError) && !processExists(pid)) throw new HpError('PROCESS_EXITED', `process ${pid} exited while hp-agent was working on it`);
    throw e;
  }
}

function siteReport(action: ZeroStopSiteReport['action'], e: ZeroStopEntry, steps: ZeroStopStep[], target?: number, replacement?: string): ZeroStopSiteReport {
  const { layout } = e;
  return {
    action,
    function: e.function,
    replacement,
    entryAddress: layout.entryAddress,
    paddingAddress: layout.paddingAddress,
    siteAddress: layout.siteAddress,
    entryNop: layout.entryNop,
    keptEndbr64: layout.keptEndbr64,
    target,
    steps: steps.map((s) => ({ addr: s.addr, before: hex(s.before), after: hex(s.after) })),
  };
}

/**
 * Everything before the switch: checks every function is hot-patchable and in a state we know,
 * links the patch for an address within rel32 reach of the object and maps it (the target keeps
 * running; one sleeping thread is borrowed for the remote calls), and plans the writes. Every
 * refusal happens before anything is mapped.
 */
export async function prepareZeroStop(pid: number, opts: ZeroStopApplyOptions): Promise<PreparedZeroStop> {
  if (opts.functions.length === 0) throw new HpError('NO_FUNCTIONS', 'no function to patch was given');
  return whileAlive(pid, async () => {
    refuseUntraceable(pid);
    const obj = findObject(pid, opts.object);
    const table = await entryTable(pid, obj);
    const entries: ZeroStopEntry[] = [];
    for (const f of opts.functions) {
      const e = await readZeroStopEntry(pid, obj, table, f.name);
      if (e.state === 'switched' && !opts.replace) {
        throw new HpError('FUNCTION_ALREADY_PATCHED', `${f.name} in process ${pid} already jumps to ${hexAddr(e.target!)}; revert it first. Nothing was changed`, { function: f.name });
      }
      if (e.state === 'other') {
        throw new HpError('ENTRY_MISMATCH', `the padding and entry of ${f.name} in process ${pid} hold ${e.memory}, neither the file's bytes nor a zero-stop switch (another tool, or a stop-the-world patch?); refusing to overwrite them. Nothing was changed`, { function: f.name });
      }
      entries.push(e);
    }

    const patch = ElfFile.fromFile(opts.patchPath);
    const layout = layoutPatch(patch);
    const base = findFreeRegionNear(readMaps(pid), { start: obj.start, end: obj.end }, layout.span + RECORD_RESERVE);
    if (base === undefined) throw new HpError('NO_ROOM_NEAR_OBJECT', `no free address range within ±2 GiB of ${obj.path} in process ${pid}; nothing was changed`);
    const undefinedNames = [...new Set(patch.dynamicSymbols.filter((s) => !s.defined && s.name).map((s) => s.name))];
    const bindings = await bindSymbols(pid, obj, loadedObjects(pid), undefinedNames);
    const linked = linkPatch(patch, base, (name) => bindings.get(name)?.address);

    const steps: ZeroStopStep[] = [];
    const sites: ZeroStopSiteReport[] = [];
    const records: (SiteRecord & { zeroStop: { siteAddress: number; entryNop: EntryNop; original: string; switched: string } })[] = [];
    opts.functions.forEach((f, i) => {
      const e = entries[i];
      const replacement = f.replacement ?? f.name;
      const target = linked.symbolAddress(replacement);
      if (target === undefined) {
        throw new HpError('SYMBOL_NOT_FOUND', `the patch ${path.basename(opts.patchPath)} does not define ${replacement}; nothing was changed`, { symbol: replacement });
      }
      const planned = e.state === 'switched' ? planZeroStopRepoint(e.layout.entryAddress, e.layout, e.target!, target) : planZeroStop(e.layout.entryAddress, e.layout, target);
      steps.push(...planned);
      sites.push(siteReport(e.state === 'switched' ? 'repoint' : 'patch', e, planned, target, replacement));
      // The padding jump is recorded as the site (it is what points into this mapping); the
      // entry's flip alongside, so the exact original bytes can be read back from the process.
      records.push({
        function: f.name,
        replacement,
        functionAddress: e.layout.entryAddress,
        siteAddress: e.layout.paddingAddress,
        kind: 'rel32',
        target,
        original: hex(e.layout.padding),
        jump: hex(paddingJump(e.layout, target)),
        zeroStop: { siteAddress: e.layout.siteAddress, entryNop: e.layout.entryNop, original: hex(e.layout.nop), switched: hex(switchedEntryBytes(e.layout)) },
      });
    });

    const record: PatchRecord = {
      patch: path.resolve(opts.patchPath),
      patchBuildId: patch.buildId,
      label: opts.label,
      object: obj.path,
      objectBuildId: obj.buildId,
      base,
      span: layout.span,
      appliedAt: new Date().toISOString(),
      sites: records,
    };
    const trailer = encodeRecord(record);
    if (trailer.length > RECORD_RESERVE) throw new HpError('TOO_MANY_SITES', `the patch record (${trailer.length} bytes) is too large`);
    const name = `${opts.label ? `${opts.label.packageId}:` : ''}${path.basename(opts.patchPath)}`;
    const mapped = await mapPatchImage(pid, base, linked.image, layout.segments, trailer, name);
    return {
      pid,
      steps,
      report: {
        pid,
        object: { path: obj.path, buildId: obj.buildId },
        patch: { path: path.resolve(opts.patchPath), buildId: patch.buildId, base, size: mapped.size, mapping: mapped.name },
        bindings: [...bindings.values()],
        sites,
      },
      discard: () => unmapPatch(pid, mapped),
    };
  });
}

/**
 * Redirects hot-patchable functions to a patch without stopping the process: maps it, then
 * switches every function with zeroStopSwitch. A failed switch is undone and the patch unmapped.
 */
export async function zeroStopApply(pid: number, opts: ZeroStopApplyOptions): Promise<ZeroStopReport> {
  const prepared = await prepareZeroStop(pid, opts);
  try {
    const result = await whileAlive(pid, () => zeroStopSwitch(pid, prepared.steps, opts));
    return { ...prepared.report, ...result };
  } catch (e) {
    // Unmap only when every write was undone: otherwise a jump may still lead into the patch.
    if (!(e instanceof HpError) || e.unchanged) await prepared.discard().catch(() => undefined);
    throw e;
  }
}

export interface ZeroStopRevertOptions extends ZeroStopSwitchOptions {
  functions: string[];
  object?: string;
}

/**
 * Gives switched functions their exact original bytes back without stopping the process: the
 * entry first (one byte at a time), then the padding. The patch stays mapped: a thread that took
 * the jump just before may still be running in it.
 */
export async function zeroStopRevert(pid: number, opts: ZeroStopRevertOptions): Promise<ZeroStopReport> {
  if (opts.functions.length === 0) throw new HpError('NO_FUNCTIONS', 'no function to revert was given');
  return whileAlive(pid, async () => {
    const obj = findObject(pid, opts.object);
    const states = await inspectZeroStop(pid, opts.functions, opts.object);
    const steps: ZeroStopStep[] = [];
    const sites: ZeroStopSiteReport[] = [];
    for (const e of states) {
      if (e.state === 'original') throw new HpError('NOT_PATCHED', `${e.function} in process ${pid} is not switched; nothing was changed`, { function: e.function });
      if (e.state === 'other') {
        throw new HpError('FOREIGN_CODE', `the padding and entry of ${e.function} in process ${pid} hold ${e.memory}, which hp-agent did not write; refusing to touch them. Nothing was changed`, { function: e.function });
      }
      const planned = planZeroStopRevert(e.layout.entryAddress, e.layout, e.target!);
      steps.push(...planned);
      sites.push(siteReport('restore', e, planned, e.target));
    }
    const result = await zeroStopSwitch(pid, steps, opts);
    return { pid, object: { path: obj.path, buildId: obj.buildId }, bindings: [], sites, ...result };
  });
}
