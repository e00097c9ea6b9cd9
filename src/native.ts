/**
 * The native core (C++ N-API, native/): process control only. Every function returns a promise
 * and does its waiting off the JS thread. Failures reject with an HpError carrying the core's
 * stable code (PROCESS_NOT_FOUND, ALREADY_TRACED, PROCESS_EXITED, THREAD_IN_SITE,
 * ENTRY_MISMATCH, VERIFY_FAILED, ...).
 */
import { createRequire } from 'node:module';
import { HpError } from './errors.js';

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
  /** Single-steps allowed to move one thread out of a site per attempt (default 32). */
  maxSteps?: number;
  /** Run the stop at SCHED_FIFO priority (the tracer is not queued behind busy target threads). */
  realtime?: boolean;
}

export interface TransactionResult {
  /** First thread interrupted → last thread resumed, final attempt, measured in C++. */
  pauseNs: number;
  totalStoppedNs: number;
  attempts: number;
  threads: number;
  steppedThreads: number;
  realtime: boolean;
}

/** An argument of a remote call: a value, the result of an earlier call of the batch, or a string. */
export type RemoteArg = number | bigint | { result: number } | { string: Buffer };

export interface RemoteBatchResult {
  /** One per call run; a batch stops after the first call that returned -errno. */
  results: number[];
  tid: number;
  interruptedSyscall: boolean;
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
  readMemory(pid: number, addr: number, length: number): Promise<Buffer>;
  writeMemory(pid: number, addr: number, data: Buffer): Promise<void>;
  remoteSyscalls(pid: number, batch: { tid?: number; gadget: number; calls: { nr: number; args: RemoteArg[] }[] }): Promise<RemoteBatchResult>;
  transaction(pid: number, sites: TransactionSite[], options?: TransactionOptions): Promise<TransactionResult>;
  snapshot(pid: number): Promise<ThreadSnapshot[]>;
  floor(pid: number, sites: { addr: number; write: Buffer }[], options?: { realtime?: boolean }): Promise<FloorResult>;
}

const require = createRequire(import.meta.url);
let raw: RawCore | undefined;

function core(): RawCore {
  if (!raw) {
    try {
      raw = require('../build/Release/hpcore.node') as RawCore;
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
    const err = e as Error & { code?: string; unchanged?: boolean };
    if (err.code) throw new HpError(err.code, err.message, {}, err.unchanged !== false);
    throw e;
  }
}

export const native = {
  readMemory: (pid: number, addr: number, length: number) => call(() => core().readMemory(pid, addr, length)),
  writeMemory: (pid: number, addr: number, data: Buffer) => call(() => core().writeMemory(pid, addr, data)),
  /** Runs the calls one after the other in one hijacked thread (see native/remote_syscall.cc). */
  remoteSyscalls: (pid: number, calls: { nr: number; args: RemoteArg[] }[], opts: { gadget: number; tid?: number }) =>
    call(() => core().remoteSyscalls(pid, { ...opts, calls })),
  transaction: (pid: number, sites: TransactionSite[], options: TransactionOptions = {}) =>
    call(() => core().transaction(pid, sites, options)),
  snapshot: (pid: number) => call(() => core().snapshot(pid)),
  /**
   * The physical floor of a stop (seize, interrupt, wait, write, resume — nothing else), for
   * benchmarks. Pass the bytes that are at each site now: the writes must change nothing.
   */
  floor: (pid: number, sites: { addr: number; write: Buffer }[], options: { realtime?: boolean } = {}) =>
    call(() => core().floor(pid, sites, options)),
};
