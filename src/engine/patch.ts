/**
 * The engine: redirect functions of a running process to code from a patch object, and put
 * them back. Everything slow (reading, linking, mapping the patch) happens while the target
 * runs; only the final transaction in the native core stops it.
 *
 * Every refusal happens before the first byte is written, and every failure after that goes
 * through one rollback path (the transaction's own, then unmapping the patch), so a refused or
 * failed patch leaves the target exactly as it was.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ElfFile } from '../elf/index.js';
import { HpError } from '../errors.js';
import { linkPatch, layoutPatch } from '../link/index.js';
import { native, type TransactionResult } from '../native.js';
import { findObject, loadedObjects, processExists, readMaps, symbolAddress, tracerOf, type LoadedObject, type MapEntry } from '../proc/index.js';
import { describeSiteAt, planJumpSite, USER_SPACE_END, type JumpKind } from '../x64/index.js';
import { isPatchMapping, mapPatchImage, unmapPatch } from './loader.js';
import { decodeRecord, encodeRecord, recordLength, RECORD_TRAILER_SIZE, type PatchRecord, type SiteRecord } from './record.js';
import { bindSymbols } from './resolve.js';
import { findFreeRegionNear } from '../proc/index.js';

/** Enough bytes to see an endbr64 and the longest jump after it. */
const ENTRY_PEEK = 4 + 14;

export interface FunctionSpec {
  /** The function of the patched object to redirect. */
  name: string;
  /** The function of the patch that replaces it (default: the same name). */
  replacement?: string;
}

export interface ApplyOptions {
  pid: number;
  patchPath: string;
  functions: FunctionSpec[];
  /** Full path or file name of the patched object; default the main executable. */
  object?: string;
  timeoutMs?: number;
  realtime?: boolean;
  /**
   * 'near' (default) maps the patch within rel32 reach of the object; 'far' deliberately maps
   * it out of reach, so the 14-byte absolute jump is used (to test that path).
   */
  placement?: 'near' | 'far';
}

export interface SiteReport {
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

export interface ApplyReport extends TransactionReport {
  pid: number;
  object: { path: string; buildId?: string };
  patch: { path: string; buildId?: string; base: number; size: number; mapping: string };
  bindings: { name: string; address: number; from: string }[];
  sites: SiteReport[];
}

export interface RevertReport extends TransactionReport {
  pid: number;
  object: { path: string; buildId?: string };
  sites: SiteReport[];
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

interface ResolvedFunction {
  name: string;
  address: number;
  size: number;
  /** Entry bytes as the object file has them: what must be in memory before we patch. */
  fileBytes: Buffer;
  /** Entry bytes read from the target now. */
  memoryBytes: Buffer;
}

async function resolveFunction(pid: number, obj: LoadedObject, name: string): Promise<ResolvedFunction> {
  const sym = symbolAddress(obj, name);
  const length = Math.max(0, Math.min(sym.size, ENTRY_PEEK));
  const memoryBytes = length ? await native.readMemory(pid, sym.address, length) : Buffer.alloc(0);
  const fileBytes = length ? obj.elf.readVirtual(sym.address - obj.bias, length) : Buffer.alloc(0);
  return { name, address: sym.address, size: sym.size, fileBytes, memoryBytes };
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

/** Redirects each function to its replacement in `patchPath`, mapped into the target. */
export function applyPatch(opts: ApplyOptions): Promise<ApplyReport> {
  return whileAlive(opts.pid, () => apply(opts));
}

async function apply(opts: ApplyOptions): Promise<ApplyReport> {
  const { pid } = opts;
  if (opts.functions.length === 0) throw new HpError('NO_FUNCTIONS', 'no function to patch was given');
  refuseUntraceable(pid);
  const obj = findObject(pid, opts.object);
  const patch = ElfFile.fromFile(opts.patchPath);
  const layout = layoutPatch(patch); // refuses TLS, constructors, bad layouts up front

  const fns: ResolvedFunction[] = [];
  for (const f of opts.functions) {
    const fn = await resolveFunction(pid, obj, f.name);
    if (!fn.memoryBytes.equals(fn.fileBytes)) {
      const now = describeSiteAt(fn.address, fn.memoryBytes);
      if (now.jump) {
        throw new HpError('FUNCTION_ALREADY_PATCHED', `${f.name} in process ${pid} already jumps to 0x${now.jump.target.toString(16)}; revert it first. Nothing was changed`, { function: f.name });
      }
      throw new HpError('ENTRY_MISMATCH', `the entry bytes of ${f.name} in process ${pid} (${hex(fn.memoryBytes)}) differ from ${obj.path} (${hex(fn.fileBytes)}); refusing to overwrite code hp-agent does not know. Nothing was changed`, { function: f.name });
    }
    fns.push(fn);
  }

  const recordReserve = 64 * 1024;
  const base = choosePatchBase(pid, obj, layout.span + recordReserve, opts.placement ?? 'near');
  const undefinedNames = [...new Set(patch.dynamicSymbols.filter((s) => !s.defined && s.name).map((s) => s.name))];
  const bindings = await bindSymbols(pid, obj, loadedObjects(pid), undefinedNames);
  const linked = linkPatch(patch, base, (name) => bindings.get(name)?.address);

  const sites = fns.map((fn, i) => {
    const replacement = opts.functions[i].replacement ?? fn.name;
    const target = linked.symbolAddress(replacement);
    if (target === undefined) {
      throw new HpError('SYMBOL_NOT_FOUND', `the patch ${path.basename(opts.patchPath)} does not define ${replacement}; nothing was changed`, { symbol: replacement });
    }
    const site = planJumpSite({ name: fn.name, address: fn.address, size: fn.size, entryBytes: fn.memoryBytes }, target);
    return { fn, replacement, target, site };
  });

  const record: PatchRecord = {
    patch: path.resolve(opts.patchPath),
    patchBuildId: patch.buildId,
    object: obj.path,
    objectBuildId: obj.buildId,
    base,
    span: layout.span,
    appliedAt: new Date().toISOString(),
    sites: sites.map(({ fn, replacement, target, site }) => ({
      function: fn.name,
      replacement,
      functionAddress: fn.address,
      siteAddress: site.siteAddress,
      kind: site.kind,
      target,
      original: hex(site.original),
      jump: hex(site.bytes),
    })),
  };
  const trailer = encodeRecord(record);
  if (trailer.length > recordReserve) throw new HpError('TOO_MANY_SITES', `the patch record (${trailer.length} bytes) is too large`);

  const mapped = await mapPatchImage(pid, base, linked.image, layout.segments, trailer, path.basename(opts.patchPath));
  let tx: TransactionResult;
  try {
    tx = await native.transaction(
      pid,
      sites.map(({ site }) => ({ addr: site.siteAddress, expect: site.original, write: site.bytes })),
      { timeoutMs: opts.timeoutMs, realtime: opts.realtime },
    );
  } catch (e) {
    await unmapPatch(pid, mapped).catch(() => undefined);
    throw e;
  }
  return {
    pid,
    object: { path: obj.path, buildId: obj.buildId },
    patch: { path: path.resolve(opts.patchPath), buildId: patch.buildId, base, size: mapped.size, mapping: mapped.name },
    bindings: [...bindings.values()],
    sites: sites.map(({ fn, replacement, target, site }) => ({
      function: fn.name,
      replacement,
      functionAddress: fn.address,
      siteAddress: site.siteAddress,
      kind: site.kind,
      keptEndbr64: site.keptEndbr64,
      target,
      before: hex(site.original),
      after: hex(site.bytes),
    })),
    ...transactionReport(tx),
  };
}

const REL32_REACH = 2 ** 31;

/** Where the patch goes: near (a rel32 jump reaches it) or, on request, deliberately far. */
function choosePatchBase(pid: number, obj: LoadedObject, size: number, placement: 'near' | 'far'): number {
  const maps = readMaps(pid);
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

export interface FunctionState {
  function: string;
  functionAddress: number;
  state: 'original' | 'patched' | 'foreign' | 'modified';
  /** For a patched function: where its entry jumps and what the record there says. */
  jump?: { kind: JumpKind; target: number; siteAddress: number };
  mapping?: string;
  record?: SiteRecord & { patch: string };
}

/** What each function's entry holds now, read from the process (never from our own files). */
export async function inspectFunctions(pid: number, names: string[], object?: string): Promise<FunctionState[]> {
  const obj = findObject(pid, object);
  const maps = readMaps(pid);
  const out: FunctionState[] = [];
  for (const name of names) {
    const fn = await resolveFunction(pid, obj, name);
    const base = { function: name, functionAddress: fn.address };
    if (fn.memoryBytes.equals(fn.fileBytes)) {
      out.push({ ...base, state: 'original' });
      continue;
    }
    const now = describeSiteAt(fn.address, fn.memoryBytes);
    if (!now.jump) {
      out.push({ ...base, state: 'modified' });
      continue;
    }
    const siteAddress = fn.address + (now.endbr64 ? 4 : 0);
    const jump = { kind: now.jump.kind, target: now.jump.target, siteAddress };
    const mapping = patchMappingAt(maps, now.jump.target);
    if (!mapping) {
      out.push({ ...base, state: 'foreign', jump });
      continue;
    }
    const record = await readRecord(pid, mapping);
    const site = record.sites.find((s) => s.siteAddress === siteAddress);
    out.push({ ...base, state: 'patched', jump, mapping: mapping[0].path, record: site && { ...site, patch: record.patch } });
  }
  return out;
}

export interface RevertOptions {
  pid: number;
  functions: string[];
  object?: string;
  timeoutMs?: number;
  realtime?: boolean;
}

/** Puts back the original entry bytes of each function, exactly. */
export function revertFunctions(opts: RevertOptions): Promise<RevertReport> {
  return whileAlive(opts.pid, () => revert(opts));
}

async function revert(opts: RevertOptions): Promise<RevertReport> {
  const { pid } = opts;
  if (opts.functions.length === 0) throw new HpError('NO_FUNCTIONS', 'no function to revert was given');
  refuseUntraceable(pid);
  const obj = findObject(pid, opts.object);
  const states = await inspectFunctions(pid, opts.functions, opts.object);
  const plan = [];
  for (const s of states) {
    if (s.state === 'original') throw new HpError('NOT_PATCHED', `${s.function} in process ${pid} is not patched; nothing was changed`, { function: s.function });
    if (s.state !== 'patched' || !s.record || !s.jump) {
      throw new HpError('FOREIGN_CODE', `${s.function} in process ${pid} was changed by something other than hp-agent; refusing to touch it. Nothing was changed`, { function: s.function });
    }
    const original = Buffer.from(s.record.original, 'hex');
    const jump = Buffer.from(s.record.jump, 'hex');
    // The record lives in the target's memory; trust it only if it agrees with the object file.
    const fileBytes = obj.elf.readVirtual(s.jump.siteAddress - obj.bias, original.length);
    if (!fileBytes.equals(original)) {
      throw new HpError('RECORD_MISMATCH', `the recorded original bytes of ${s.function} do not match ${obj.path}; nothing was changed`, { function: s.function });
    }
    plan.push({ s, original, jump });
  }
  const tx = await native.transaction(
    pid,
    plan.map(({ s, original, jump }) => ({ addr: s.jump!.siteAddress, expect: jump, write: original })),
    { timeoutMs: opts.timeoutMs, realtime: opts.realtime },
  );
  return {
    pid,
    object: { path: obj.path, buildId: obj.buildId },
    sites: plan.map(({ s, original, jump }) => ({
      function: s.function,
      functionAddress: s.functionAddress,
      siteAddress: s.jump!.siteAddress,
      kind: s.jump!.kind,
      keptEndbr64: s.jump!.siteAddress !== s.functionAddress,
      before: hex(jump),
      after: hex(original),
    })),
    ...transactionReport(tx),
  };
}
