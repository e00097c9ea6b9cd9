/**
 * The engine: redirect functions of a running process to code from patch objects, re-point
 * them to a newer patch (cumulative hotpatches), and put them back. Everything slow (reading,
 * linking, mapping the patches) happens while the target runs; only the final transaction in
 * the native core stops it, and it changes every site of the process at once.
 *
 * Every refusal happens before the first byte is written, and every failure after that goes
 * through one rollback path (the transaction's own, then unmapping the new patches), so a
 * refused or failed change leaves the target exactly as it was.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ElfFile } from '../elf/index.js';
import { HpError } from '../errors.js';
import { linkPatch, layoutPatch } from '../link/index.js';
import { native, type TransactionResult, type TransactionSite } from '../native.js';
import {
  findFreeRegionNear,
  findObject,
  loadedObjects,
  processExists,
  readMaps,
  symbolAddress,
  tracerOf,
  type LoadedObject,
  type MapEntry,
} from '../proc/index.js';
import { describeSiteAt, planJumpSite, USER_SPACE_END, type JumpKind } from '../x64/index.js';
import { isPatchMapping, mapPatchImage, unmapPatch, type MappedPatch } from './loader.js';
import {
  decodeRecord,
  encodeRecord,
  recordLength,
  RECORD_TRAILER_SIZE,
  type PatchLabel,
  type PatchRecord,
  type SiteRecord,
} from './record.js';
import { bindSymbols } from './resolve.js';

/** Enough bytes to see an endbr64 and the longest jump after it. */
const ENTRY_PEEK = 4 + 14;
const REL32_REACH = 2 ** 31;
const RECORD_RESERVE = 64 * 1024;

export interface FunctionSpec {
  /** The function of the patched object to redirect. */
  name: string;
  /** The function of the patch that replaces it (default: the same name). */
  replacement?: string;
}

/** What one object of the process should look like after the change. */
export interface ObjectChange {
  /** Full path or file name of the patched object; default the main executable. */
  object?: string;
  /** The patch object holding the replacements (needed when `functions` is not empty). */
  patchPath?: string;
  functions: FunctionSpec[];
  /** Functions to give their original bytes back (those a previous level patched and this one does not). */
  restore?: string[];
}

export interface ChangeOptions {
  pid: number;
  changes: ObjectChange[];
  /** Which package this code comes from: recorded in the target and in the mapping's name. */
  label?: PatchLabel;
  /** Re-point functions that hp-agent already patched (cumulative hotpatches); else refuse them. */
  replace?: boolean;
  timeoutMs?: number;
  realtime?: boolean;
  /**
   * 'near' (default) maps a patch within rel32 reach of its object; 'far' deliberately maps it
   * out of reach, so the 14-byte absolute jump is used (to test that path).
   */
  placement?: 'near' | 'far';
}

export type SiteAction = 'patch' | 'repoint' | 'restore';

export interface SiteReport {
  action: SiteAction;
  object: string;
  function: string;
  replacement?: string;
  functionAddress: number;
  siteAddress: number;
  kind: JumpKind;
  keptEndbr64: boolean;
  target?: number;
  /** Hex of the bytes at the site before the transaction. */
  before: string;
  /** Hex of the bytes at the site after it. */
  after: string;
}

export interface TransactionReport {
  pauseUs: number;
  threads: number;
  attempts: number;
  steppedThreads: number;
  realtime: boolean;
}

export interface MappedPatchReport {
  object: string;
  path: string;
  buildId?: string;
  base: number;
  size: number;
  mapping: string;
  bindings: { name: string; address: number; from: string }[];
}

export interface ChangeReport extends Partial<TransactionReport> {
  pid: number;
  /** False when every function was already as asked: nothing was stopped or written. */
  changed: boolean;
  objects: { path: string; buildId?: string }[];
  patches: MappedPatchReport[];
  sites: SiteReport[];
}

export interface ApplyOptions {
  pid: number;
  patchPath: string;
  functions: FunctionSpec[];
  object?: string;
  timeoutMs?: number;
  realtime?: boolean;
  placement?: 'near' | 'far';
}

export interface ApplyReport extends TransactionReport {
  pid: number;
  object: { path: string; buildId?: string };
  patch: { path: string; buildId?: string; base: number; size: number; mapping: string };
  bindings: { name: string; address: number; from: string }[];
  sites: SiteReport[];
}

export interface RevertOptions {
  pid: number;
  functions: string[];
  object?: string;
  timeoutMs?: number;
  realtime?: boolean;
}

export interface RevertReport extends TransactionReport {
  pid: number;
  object: { path: string; buildId?: string };
  sites: SiteReport[];
}

export interface FunctionState {
  function: string;
  object: string;
  functionAddress: number;
  /** original: the file's bytes; patched: a jump into an hp-agent patch; foreign: a jump elsewhere; modified: anything else. */
  state: 'original' | 'patched' | 'foreign' | 'modified';
  jump?: { kind: JumpKind; target: number; siteAddress: number };
  mapping?: string;
  record?: SiteRecord & { patch: string; label?: PatchLabel };
}

const hex = (b: Buffer) => b.toString('hex');

function transactionReport(t: TransactionResult): TransactionReport {
  return {
    pauseUs: Math.round(t.pauseNs / 100) / 10,
    threads: t.threads,
    attempts: t.attempts,
    steppedThreads: t.steppedThreads,
    realtime: t.realtime,
  };
}

function refuseUntraceable(pid: number): void {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    throw new HpError('PROCESS_NOT_FOUND', `no running process with PID ${pid}`);
  }
  // libuv reaps its own children with waitpid, which would swallow their ptrace stops.
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  if (ppid === process.pid) {
    throw new HpError('TARGET_IS_OUR_CHILD', `process ${pid} is a child of this agent process; run hp-agent as a separate process to patch it`);
  }
  const tracer = tracerOf(pid);
  if (tracer !== 0) {
    throw new HpError('ALREADY_TRACED', `process ${pid} is already traced by PID ${tracer}; a process can have only one tracer, so nothing was changed`, { tracer });
  }
}

/**
 * A process that dies while we read it makes /proc or the core fail in whatever way the
 * moment dictates; say plainly what happened instead.
 */
async function whileAlive<T>(pid: number, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (!(e instanceof HpError) && !processExists(pid)) {
      throw new HpError('PROCESS_EXITED', `process ${pid} exited while hp-agent was working on it`);
    }
    throw e;
  }
}

// ---- reading what a function's entry holds now -------------------------------------------------

/** The hp-agent patch mapping (all its /proc/PID/maps lines) that contains `addr`, if any. */
function patchMappingAt(maps: MapEntry[], addr: number): MapEntry[] | undefined {
  const hit = maps.find((m) => m.start <= addr && addr < m.end);
  if (!hit || !isPatchMapping(hit.path)) return undefined;
  return maps.filter((m) => m.inode === hit.inode && m.path === hit.path);
}

async function readRecord(pid: number, mapping: MapEntry[]): Promise<PatchRecord> {
  const end = Math.max(...mapping.map((m) => m.end));
  const length = recordLength(await native.readMemory(pid, end - RECORD_TRAILER_SIZE, RECORD_TRAILER_SIZE));
  if (length === undefined) throw new HpError('RECORD_CORRUPT', `the patch mapping ending at 0x${end.toString(16)} in process ${pid} has no hp-agent record`);
  return decodeRecord(await native.readMemory(pid, end - RECORD_TRAILER_SIZE - length, length));
}

interface Entry {
  state: FunctionState;
  size: number;
  /** Entry bytes as the object file has them. */
  fileBytes: Buffer;
  /** Entry bytes in the target now. */
  memoryBytes: Buffer;
}

async function readEntry(pid: number, obj: LoadedObject, maps: MapEntry[], name: string): Promise<Entry> {
  const sym = symbolAddress(obj, name);
  const length = Math.max(0, Math.min(sym.size, ENTRY_PEEK));
  const memoryBytes = length ? await native.readMemory(pid, sym.address, length) : Buffer.alloc(0);
  const fileBytes = length ? obj.elf.readVirtual(sym.address - obj.bias, length) : Buffer.alloc(0);
  const base = { function: name, object: obj.path, functionAddress: sym.address };
  const entry = (state: FunctionState): Entry => ({ state, size: sym.size, fileBytes, memoryBytes });
  if (memoryBytes.equals(fileBytes)) return entry({ ...base, state: 'original' });
  const now = describeSiteAt(sym.address, memoryBytes);
  if (!now.jump) return entry({ ...base, state: 'modified' });
  const siteAddress = sym.address + (now.endbr64 ? 4 : 0);
  const jump = { kind: now.jump.kind, target: now.jump.target, siteAddress };
  const mapping = patchMappingAt(maps, now.jump.target);
  if (!mapping) return entry({ ...base, state: 'foreign', jump });
  const record = await readRecord(pid, mapping);
  const site = record.sites.find((s) => s.siteAddress === siteAddress);
  // A jump into our mapping that its record does not describe is not ours to undo.
  if (!site || site.jump !== hex(memoryBytes.subarray(siteAddress - sym.address, siteAddress - sym.address + site.jump.length / 2))) {
    return entry({ ...base, state: 'foreign', jump, mapping: mapping[0].path });
  }
  return entry({ ...base, state: 'patched', jump, mapping: mapping[0].path, record: { ...site, patch: record.patch, label: record.label } });
}

/** What each function's entry holds now, read from the process (never from our own files). */
export async function inspectFunctions(pid: number, names: string[], object?: string): Promise<FunctionState[]> {
  const obj = findObject(pid, object);
  const maps = readMaps(pid);
  const out: FunctionState[] = [];
  for (const name of names) out.push((await readEntry(pid, obj, maps, name)).state);
  return out;
}

// ---- planning ------------------------------------------------------------------------------------

/** Where a patch goes: near (a rel32 jump reaches it) or, on request, deliberately far. */
function choosePatchBase(pid: number, obj: LoadedObject, size: number, placement: 'near' | 'far', taken: { start: number; end: number }[]): number {
  // Mappings made earlier in this same change are not in /proc yet: count them as taken.
  const maps: MapEntry[] = [...readMaps(pid), ...taken.map((t) => ({ start: t.start, end: t.end, perms: '---p', read: false, write: false, exec: false, shared: false, offset: 0, dev: '00:00', inode: 0, path: '', deleted: false }))];
  maps.sort((a, b) => a.start - b.start);
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

interface PlannedSite {
  report: SiteReport;
  site: TransactionSite;
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
}

interface Plan {
  objects: LoadedObject[];
  patches: PlannedPatch[];
  sites: PlannedSite[];
}

function refuseState(pid: number, e: Entry, replace: boolean): void {
  const s = e.state;
  if (s.state === 'patched' && !replace) {
    throw new HpError('FUNCTION_ALREADY_PATCHED', `${s.function} in process ${pid} already jumps to 0x${s.jump!.target.toString(16)}; revert it first. Nothing was changed`, { function: s.function });
  }
  if (s.state === 'foreign' || s.state === 'modified') {
    throw new HpError('ENTRY_MISMATCH', `the entry bytes of ${s.function} in process ${pid} (${hex(e.memoryBytes)}) differ from ${s.object} (${hex(e.fileBytes)})${s.state === 'foreign' ? ' and jump somewhere hp-agent did not put there' : ''}; refusing to overwrite code hp-agent does not know. Nothing was changed`, { function: s.function });
  }
}

/** The bytes to expect and to write at a site so it ends up as `after` (padded with the original). */
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

async function planObject(pid: number, change: ObjectChange, opts: ChangeOptions, plan: Plan): Promise<void> {
  const obj = findObject(pid, change.object);
  plan.objects.push(obj);
  const maps = readMaps(pid);
  const entries: Entry[] = [];
  for (const f of change.functions) {
    const e = await readEntry(pid, obj, maps, f.name);
    refuseState(pid, e, opts.replace ?? false);
    entries.push(e);
  }
  for (const name of change.restore ?? []) {
    if (change.functions.some((f) => f.name === name)) continue;
    const e = await readEntry(pid, obj, maps, name);
    if (e.state.state === 'original') continue; // nothing to give back
    refuseState(pid, e, true);
    const { siteAddress, kind } = e.state.jump!;
    const { expect, write } = siteChange(e, siteAddress, e.fileBytes.subarray(siteAddress - e.state.functionAddress, siteAddress - e.state.functionAddress + e.state.record!.jump.length / 2));
    plan.sites.push({
      site: { addr: siteAddress, expect, write },
      report: { action: 'restore', object: obj.path, function: name, functionAddress: e.state.functionAddress, siteAddress, kind, keptEndbr64: siteAddress !== e.state.functionAddress, before: hex(expect), after: hex(write) },
    });
  }
  if (change.functions.length === 0) return;
  if (!change.patchPath) throw new HpError('USAGE', `functions of ${obj.path} to patch but no patch object`);

  const patch = ElfFile.fromFile(change.patchPath);
  const layout = layoutPatch(patch); // refuses TLS, constructors, bad layouts up front
  const taken = plan.patches.map((p) => ({ start: p.base, end: p.base + p.image.length + p.trailer.length }));
  const base = choosePatchBase(pid, obj, layout.span + RECORD_RESERVE, opts.placement ?? 'near', taken);
  const undefinedNames = [...new Set(patch.dynamicSymbols.filter((s) => !s.defined && s.name).map((s) => s.name))];
  const bindings = await bindSymbols(pid, obj, loadedObjects(pid), undefinedNames);
  const linked = linkPatch(patch, base, (name) => bindings.get(name)?.address);

  const siteRecords: SiteRecord[] = [];
  change.functions.forEach((f, i) => {
    const e = entries[i];
    const replacement = f.replacement ?? f.name;
    const target = linked.symbolAddress(replacement);
    if (target === undefined) {
      throw new HpError('SYMBOL_NOT_FOUND', `the patch ${path.basename(change.patchPath!)} does not define ${replacement}; nothing was changed`, { symbol: replacement });
    }
    // Plan against the file's bytes: the entry may hold an older jump now.
    const jump = planJumpSite({ name: f.name, address: e.state.functionAddress, size: e.size, entryBytes: e.fileBytes }, target);
    const { expect, write } = siteChange(e, jump.siteAddress, jump.bytes);
    siteRecords.push({ function: f.name, replacement, functionAddress: e.state.functionAddress, siteAddress: jump.siteAddress, kind: jump.kind, target, original: hex(jump.original), jump: hex(jump.bytes) });
    plan.sites.push({
      site: { addr: jump.siteAddress, expect, write },
      report: { action: e.state.state === 'patched' ? 'repoint' : 'patch', object: obj.path, function: f.name, replacement, functionAddress: e.state.functionAddress, siteAddress: jump.siteAddress, kind: jump.kind, keptEndbr64: jump.keptEndbr64, target, before: hex(expect), after: hex(write) },
    });
  });

  const record: PatchRecord = {
    patch: path.resolve(change.patchPath),
    patchBuildId: patch.buildId,
    label: opts.label,
    object: obj.path,
    objectBuildId: obj.buildId,
    base,
    span: layout.span,
    appliedAt: new Date().toISOString(),
    sites: siteRecords,
  };
  const trailer = encodeRecord(record);
  if (trailer.length > RECORD_RESERVE) throw new HpError('TOO_MANY_SITES', `the patch record (${trailer.length} bytes) is too large`);
  plan.patches.push({ obj, patchPath: path.resolve(change.patchPath), patchBuildId: patch.buildId, base, image: linked.image, segments: layout.segments, trailer, bindings: [...bindings.values()] });
}

/** True when every function already runs the labelled package's code and nothing needs restoring. */
async function alreadyThere(pid: number, opts: ChangeOptions): Promise<boolean> {
  if (!opts.label) return false;
  for (const change of opts.changes) {
    const obj = findObject(pid, change.object);
    const maps = readMaps(pid);
    for (const f of change.functions) {
      const e = await readEntry(pid, obj, maps, f.name);
      if (e.state.state !== 'patched' || e.state.record?.label?.packageId !== opts.label.packageId) return false;
      if ((e.state.record.replacement ?? f.name) !== (f.replacement ?? f.name)) return false;
    }
    for (const name of change.restore ?? []) {
      if (change.functions.some((f) => f.name === name)) continue;
      if ((await readEntry(pid, obj, maps, name)).state.state !== 'original') return false;
    }
  }
  return true;
}

// ---- the one way to change code in a process ---------------------------------------------------

/**
 * Brings the functions of one process to the requested state in ONE transaction: new patches
 * are mapped first (the target keeps running), then every site is switched at once.
 */
export function changeFunctions(opts: ChangeOptions): Promise<ChangeReport> {
  return whileAlive(opts.pid, () => change(opts));
}

async function change(opts: ChangeOptions): Promise<ChangeReport> {
  const { pid } = opts;
  if (opts.changes.every((c) => c.functions.length === 0 && (c.restore ?? []).length === 0)) {
    throw new HpError('NO_FUNCTIONS', 'no function to change was given');
  }
  refuseUntraceable(pid);
  if (await alreadyThere(pid, opts)) {
    const objects = opts.changes.map((c) => findObject(pid, c.object));
    return { pid, changed: false, objects: objects.map((o) => ({ path: o.path, buildId: o.buildId })), patches: [], sites: [] };
  }
  const plan: Plan = { objects: [], patches: [], sites: [] };
  for (const c of opts.changes) await planObject(pid, c, opts, plan);
  if (plan.sites.length === 0) {
    return { pid, changed: false, objects: plan.objects.map((o) => ({ path: o.path, buildId: o.buildId })), patches: [], sites: [] };
  }

  const mapped: MappedPatch[] = [];
  let tx: TransactionResult;
  try {
    for (const p of plan.patches) {
      const name = opts.label ? `${opts.label.packageId}:${path.basename(p.patchPath)}` : path.basename(p.patchPath);
      mapped.push(await mapPatchImage(pid, p.base, p.image, p.segments, p.trailer, name));
    }
    // Real-time priority by default: the tracer must not queue behind the target's busy threads.
    tx = await native.transaction(pid, plan.sites.map((s) => s.site), { timeoutMs: opts.timeoutMs, realtime: opts.realtime ?? true });
  } catch (e) {
    for (const m of mapped) await unmapPatch(pid, m).catch(() => undefined);
    throw e;
  }
  return {
    pid,
    changed: true,
    objects: plan.objects.map((o) => ({ path: o.path, buildId: o.buildId })),
    patches: plan.patches.map((p, i) => ({ object: p.obj.path, path: p.patchPath, buildId: p.patchBuildId, base: p.base, size: mapped[i].size, mapping: mapped[i].name, bindings: p.bindings })),
    sites: plan.sites.map((s) => s.report),
    ...transactionReport(tx),
  };
}

/** `hp-agent try`: redirect functions of one object to a patch; refuses functions already patched. */
export async function applyPatch(opts: ApplyOptions): Promise<ApplyReport> {
  if (opts.functions.length === 0) throw new HpError('NO_FUNCTIONS', 'no function to patch was given');
  const r = await changeFunctions({ pid: opts.pid, changes: [{ object: opts.object, patchPath: opts.patchPath, functions: opts.functions }], timeoutMs: opts.timeoutMs, realtime: opts.realtime, placement: opts.placement });
  const p = r.patches[0];
  return {
    pid: r.pid,
    object: r.objects[0],
    patch: { path: p.path, buildId: p.buildId, base: p.base, size: p.size, mapping: p.mapping },
    bindings: p.bindings,
    sites: r.sites,
    ...(r as Required<Pick<ChangeReport, keyof TransactionReport>>),
  };
}

/** Puts back the original entry bytes of each function, exactly. */
export async function revertFunctions(opts: RevertOptions): Promise<RevertReport> {
  if (opts.functions.length === 0) throw new HpError('NO_FUNCTIONS', 'no function to revert was given');
  return whileAlive(opts.pid, async () => {
    const states = await inspectFunctions(opts.pid, opts.functions, opts.object);
    for (const s of states) {
      if (s.state === 'original') throw new HpError('NOT_PATCHED', `${s.function} in process ${opts.pid} is not patched; nothing was changed`, { function: s.function });
      if (s.state !== 'patched') {
        throw new HpError('FOREIGN_CODE', `${s.function} in process ${opts.pid} was changed by something other than hp-agent; refusing to touch it. Nothing was changed`, { function: s.function });
      }
    }
    const r = await changeFunctions({ pid: opts.pid, changes: [{ object: opts.object, functions: [], restore: opts.functions }], timeoutMs: opts.timeoutMs, realtime: opts.realtime });
    return {
      pid: r.pid,
      object: r.objects[0],
      sites: r.sites,
      ...(r as Required<Pick<ChangeReport, keyof TransactionReport>>),
    };
  });
}
