/**
 * The native core (C++ N-API, native/): process control only. Every function returns a promise
 * and does its waiting off the JS thread. Failures reject with an HpError carrying the core's
 * stable code (PROCESS_NOT_FOUND, ALREADY_TRACED, PROCESS_EXITED, THREAD_IN_SITE, RETURN_INTO_SITE, FUNCTION_ACTIVE,
 * ENTRY_MISMATCH, VERIFY_FAILED, ...).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { HpError, type ErrorCode } from './errors.js';

export interface TransactionSite {
  addr: number;
  /** The bytes that must be at `addr` now; also what the rollback path writes back. */
  expect: Buffer;
  /** The bytes to write; same length as `expect`. */
  write: Buffer;
}

export interface TransactionOptions {
  /** How long to keep retrying while a thread executes inside a site (default 2000 ms). */
  timeoutMs?: number;
  /** Run the stop at SCHED_FIFO priority (the tracer is not queued behind busy target threads). */
  realtime?: boolean;
  /**
   * Function consistency: the code being replaced, as [start, end, start, end, ...]. No thread may
   * run in it or have a word pointing into it on its stack (FUNCTION_ACTIVE after timeoutMs).
   */
  activeRanges?: number[];
  /** Where stacks may be ([start, end, ...]: the writable private mappings); a thread's stack is scanned from rsp to the end of its area. */
  stackAreas?: number[];
  /**
   * Remote calls to run first, in one borrowed thread, within the same attach (e.g. mapping the
   * patch the sites jump into). If a call fails (-errno), the fill fails or a result differs from
   * `expect` ([callIndex, result, ...]), the batch stops there and nothing is switched: the
   * result says `switched: false` with the batch's results, for the caller to undo. A failure
   * of the switch itself after a complete prelude rejects with `details.preludeComplete`.
   */
  prelude?: RemoteBatchOptions & { calls: { nr: number; args: RemoteArg[] }[]; expect?: number[] };
}

export interface TransactionResult {
  /** False when a prelude stopped early (nothing was switched). */
  switched: boolean;
  /** What the prelude's calls returned, when there was one. */
  prelude?: RemoteBatchResult;
  /**
   * First thread interrupted → last thread resumed, final attempt, measured in C++ (from the
   * prelude's stop of its thread when that thread was running rather than asleep in a call).
   */
  pauseNs: number;
  totalStoppedNs: number;
  attempts: number;
  /** Every thread of the process, stopped or held. */
  threads: number;
  /** Of those, held asleep in epoll_wait & co. by the fence rather than stopped (never interrupted). */
  held: number;
  /** A held thread ran while the sites were written: never expected (see native/fence.cc). */
  heldRan: boolean;
  realtime: boolean;
}

/** An argument of a remote call: a value, the result of an earlier call of the batch, or a string. */
export type RemoteArg = number | bigint | { result: number } | { string: Buffer };

export interface RemoteBatchResult {
  /** One per call run; a batch stops after the first call that returned -errno. */
  results: number[];
  tid: number;
  interruptedSyscall: boolean;
  /** How long the borrowed thread was held, stop → let go (0 in a transaction's prelude: part of its pause). */
  heldNs?: number;
  /** Why the fill failed; the batch stopped right after the call it was to follow. */
  fillError?: string;
}

/**
 * Bytes written, right after call `afterCall` of a batch, into the file whose descriptor call
 * `fdCall` returned (through /proc/PID/fd/N, from the agent's side).
 */
export interface RemoteFill {
  fdCall: number;
  afterCall: number;
  chunks: { offset: number; data: Buffer }[];
}

/**
 * Two instructions of the target's own code a remote call runs through: `syscall; ret`, and the
 * C library's signal-return trampoline `mov rax, 15; syscall`, which takes the borrowed thread
 * back to its own registers by itself, should the agent die mid-call.
 */
export interface Gadgets {
  syscallRet: number;
  sigreturn: number;
}

export interface RemoteBatchOptions {
  gadgets: Gadgets;
  /** The thread to borrow; default: the core picks one asleep in a system call, else the main thread. */
  tid?: number;
  fill?: RemoteFill;
}

export interface FloorResult {
  /** First thread interrupted → last resumed. */
  pauseNs: number;
  /** First thread seized → last resumed. */
  totalNs: number;
  threads: number;
  realtime: boolean;
}

export interface ThreadSnapshot {
  tid: number;
  pc: number;
  sp: number;
  syscall: number;
  inSyscall: boolean;
}

interface RawCore {
  readRangesSync(pid: number, flat: number[]): Buffer;
  writeMemorySync(pid: number, addr: number, data: Buffer): void;
  remoteSyscalls(pid: number, batch: RemoteBatchOptions & { calls: { nr: number; args: RemoteArg[] }[] }): Promise<RemoteBatchResult>;
  transaction(pid: number, sites: TransactionSite[], options?: TransactionOptions): Promise<TransactionResult>;
  snapshot(pid: number): Promise<ThreadSnapshot[]>;
  floor(pid: number, sites: { addr: number; write: Buffer }[], options?: { realtime?: boolean }): Promise<FloorResult>;
  setFenceJournal(dir: string): void;
  healFences(dir: string): number;
  notifySocketOpen(path: string): number;
  notifySocketRead(fd: number): { pid: number; text: string }[];
}

const require = createRequire(import.meta.url);
let raw: RawCore | undefined;

/** build/Release/ of the package: this module runs from dist/ or from a bundle in dist/bundle/. */
const ADDON_CANDIDATES = ['../build/Release/hpcore.node', '../../build/Release/hpcore.node'].map((p) => fileURLToPath(new URL(p, import.meta.url)));

function core(): RawCore {
  if (!raw) {
    const file = ADDON_CANDIDATES.find((f) => fs.existsSync(f)) ?? ADDON_CANDIDATES[0];
    try {
      raw = require(file) as RawCore;
    } catch (e) {
      throw new HpError('NATIVE_CORE_MISSING', `the native core is not built (run "npm install"): ${(e as Error).message}`);
    }
  }
  return raw;
}

async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof HpError) throw e;
    // The core's codes are the catalogue's (test/unit/error-codes.test.ts reads them in native/).
    const err = e as Error & { code?: ErrorCode; unchanged?: boolean; preludeComplete?: boolean };
    if (err.code) throw new HpError(err.code, err.message, err.preludeComplete !== undefined ? { preludeComplete: err.preludeComplete } : {}, err.unchanged !== false);
    throw e;
  }
}

// The core trusts its arguments' types (a wrong one would abort the whole process inside N-API),
// so every call is checked here first and a mistake becomes an ordinary, catchable error.
function invalid(what: string, value: unknown): never {
  throw new HpError('INVALID_ARGUMENT', `native core: ${what} is not valid (${typeof value === 'bigint' ? `${value}n` : JSON.stringify(value) ?? String(value)})`);
}
const MAX_ADDRESS = 2 ** 64;
function checkPid(pid: unknown): void {
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0 || pid > 2 ** 31 - 1) invalid('pid', pid);
}
function checkAddress(addr: unknown, what = 'address'): void {
  const ok = typeof addr === 'bigint' ? addr >= 0n && addr < BigInt(MAX_ADDRESS) : typeof addr === 'number' && Number.isSafeInteger(addr) && addr >= 0;
  if (!ok) invalid(what, addr);
}
function checkLength(length: unknown, what = 'length'): void {
  if (typeof length !== 'number' || !Number.isInteger(length) || length < 0 || length > 2 ** 30) invalid(what, length);
}
function checkBuffer(b: unknown, what: string): void {
  if (!Buffer.isBuffer(b)) invalid(what, typeof b);
}
function checkSites(sites: unknown, needExpect: boolean): void {
  if (!Array.isArray(sites)) invalid('sites', typeof sites);
  sites.forEach((s: Partial<TransactionSite>, i) => {
    if (typeof s !== 'object' || s === null) invalid(`sites[${i}]`, s);
    checkAddress(s.addr, `sites[${i}].addr`);
    checkBuffer(s.write, `sites[${i}].write`);
    if (needExpect) {
      checkBuffer(s.expect, `sites[${i}].expect`);
      if (s.expect!.length !== s.write!.length) invalid(`sites[${i}].expect (length differs from write)`, s.expect!.length);
    }
  });
}
function checkRanges(list: unknown, what: string): void {
  if (list === undefined) return;
  if (!Array.isArray(list) || list.length % 2) invalid(what, list);
  (list as unknown[]).forEach((a, i) => checkAddress(a, `${what}[${i}]`));
}
function checkRemoteArg(a: unknown, where: string): void {
  if (typeof a === 'number') return checkAddress(a < 0 ? -a : a, where);
  if (typeof a === 'bigint') return;
  if (typeof a === 'object' && a !== null && 'result' in a) return checkLength((a as { result: unknown }).result, `${where}.result`);
  if (typeof a === 'object' && a !== null && 'string' in a) return checkBuffer((a as { string: unknown }).string, `${where}.string`);
  invalid(where, a);
}

/** A batch of remote calls and its options (`where` prefixes the names in errors). */
function checkBatch(calls: { nr: number; args: RemoteArg[] }[], opts: RemoteBatchOptions, where: string): void {
  if (typeof opts.gadgets !== 'object' || opts.gadgets === null) invalid(`${where}gadgets`, opts.gadgets);
  checkAddress(opts.gadgets.syscallRet, `${where}gadgets.syscallRet`);
  checkAddress(opts.gadgets.sigreturn, `${where}gadgets.sigreturn`);
  if (opts.tid !== undefined) checkPid(opts.tid);
  if (!Array.isArray(calls)) invalid(`${where}calls`, typeof calls);
  if (opts.fill !== undefined) {
    const { fdCall, afterCall, chunks } = opts.fill;
    checkLength(fdCall, `${where}fill.fdCall`);
    checkLength(afterCall, `${where}fill.afterCall`);
    if (fdCall > afterCall || afterCall >= calls.length) invalid(`${where}fill.afterCall`, afterCall);
    if (!Array.isArray(chunks)) invalid(`${where}fill.chunks`, typeof chunks);
    chunks.forEach((c, i) => {
      checkAddress(c.offset, `${where}fill.chunks[${i}].offset`);
      checkBuffer(c.data, `${where}fill.chunks[${i}].data`);
    });
  }
  calls.forEach((c, i) => {
    checkLength(c.nr, `${where}calls[${i}].nr`);
    if (!Array.isArray(c.args) || c.args.length > 6) invalid(`${where}calls[${i}].args`, c.args);
    c.args.forEach((a, j) => checkRemoteArg(a, `${where}calls[${i}].args[${j}]`));
  });
}

export const native = {
  // Memory reads and writes are one system call that never waits on the target: done on this
  // thread (a trip through the thread pool costs more than the copy). Promises all the same.
  readMemory: (pid: number, addr: number, length: number) =>
    call(async () => {
      checkPid(pid);
      checkAddress(addr);
      checkLength(length);
      return core().readRangesSync(pid, [addr, length]);
    }),
  /** Reads many small ranges with one system call; one Buffer per range, in order. */
  readRanges: async (pid: number, ranges: { addr: number; length: number }[]): Promise<Buffer[]> => {
    if (ranges.length === 0) return [];
    const flat: number[] = [];
    checkPid(pid);
    ranges.forEach((r, i) => {
      checkAddress(r.addr, `ranges[${i}].addr`);
      checkLength(r.length, `ranges[${i}].length`);
      flat.push(r.addr, r.length);
    });
    const all = await call(async () => core().readRangesSync(pid, flat));
    let at = 0;
    return ranges.map((r) => all.subarray(at, (at += r.length)));
  },
  writeMemory: (pid: number, addr: number, data: Buffer) =>
    call(async () => {
      checkPid(pid);
      checkAddress(addr);
      checkBuffer(data, 'data');
      core().writeMemorySync(pid, addr, data);
    }),
  /** Runs the calls one after the other in one hijacked thread (see native/remote_syscall.cc). */
  remoteSyscalls: (pid: number, calls: { nr: number; args: RemoteArg[] }[], opts: RemoteBatchOptions) =>
    call(() => {
      checkPid(pid);
      checkBatch(calls, opts, '');
      return core().remoteSyscalls(pid, { ...opts, calls });
    }),
  transaction: (pid: number, sites: TransactionSite[], options: TransactionOptions = {}) =>
    call(() => {
      checkPid(pid);
      checkSites(sites, true);
      checkRanges(options.activeRanges, 'activeRanges');
      checkRanges(options.stackAreas, 'stackAreas');
      if (options.prelude !== undefined) {
        checkBatch(options.prelude.calls, options.prelude, 'prelude.');
        const expect = options.prelude.expect ?? [];
        if (!Array.isArray(expect) || expect.length % 2) invalid('prelude.expect', expect);
        expect.forEach((v, i) => (i % 2 ? checkRemoteArg(v, `prelude.expect[${i}]`) : checkLength(v, `prelude.expect[${i}]`)));
      }
      return core().transaction(pid, sites, options);
    }),
  snapshot: (pid: number) =>
    call(() => {
      checkPid(pid);
      return core().snapshot(pid);
    }),
  /**
   * Where the fence (native/fence.cc) writes down the CPU masks it narrows for a stop, so that
   * the next agent run can give them back if this one dies meanwhile ("" for nowhere).
   */
  setFenceJournal: (dir: string) => core().setFenceJournal(dir),
  /** Gives back the masks a killed agent's fence left narrowed (files of `dir`); how many threads. */
  healFences: (dir: string) => core().healFences(dir),
  /**
   * The physical floor of a stop (seize, interrupt, wait, write, resume — nothing else), for
   * benchmarks. Pass the bytes that are at each site now: the writes must change nothing.
   */
  floor: (pid: number, sites: { addr: number; write: Buffer }[], options: { realtime?: boolean } = {}) =>
    call(() => {
      checkPid(pid);
      checkSites(sites, false);
      return core().floor(pid, sites, options);
    }),
  /**
   * systemd's readiness protocol (native/notify_socket.cc): bind a datagram Unix socket at `path`
   * (a stale one is replaced) for a service's NOTIFY_SOCKET; close the fd with fs.closeSync.
   */
  notifySocketOpen: (path: string): number => {
    if (typeof path !== 'string' || path === '' || path.includes('\0')) invalid('path', path);
    return core().notifySocketOpen(path);
  },
  /** Every datagram waiting on the socket now (never blocks), with the sender's PID. */
  notifySocketRead: (fd: number): { pid: number; text: string }[] => {
    if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) invalid('fd', fd);
    return core().notifySocketRead(fd);
  },
};
