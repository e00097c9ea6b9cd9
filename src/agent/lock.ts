/**
 * One agent at a time: <home>/lock.
 *
 * The lock file holds JSON { pid, startTime, command, since, host }. It is created complete or not
 * at all: the content is written and fsync'ed to a temporary file which is then link()ed to the
 * lock path. link() fails with EEXIST when the lock exists, exactly like open(O_CREAT|O_EXCL), but
 * no other agent can ever read a lock file that is still empty or half-written.
 *
 * A lock is stale when its holder is gone: no process with that PID, or a process with that PID
 * but another start time (field 22 of /proc/PID/stat: the PID was recycled), or a zombie. A stale
 * lock is taken over, and the new holder is told (AgentLock.takenOver) so it can look for a
 * half-done operation. Removing a stale lock is itself guarded by a short-lived second lock,
 * `lock.takeover`, and re-checks the content under it, so two agents that find the same stale lock
 * at the same moment cannot both take it (one would otherwise delete the other's fresh lock). A
 * lock written on another host (a shared home) cannot be checked and is always considered live.
 *
 * The lock is released by release(), on process exit, and on SIGINT/SIGTERM (after which the
 * signal's default action still happens) — unless the program has handlers of its own for the
 * signal (a session: see interrupt.ts), which then stop the work and release the lock themselves:
 * releasing it under work still running would let a second agent in.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HpError } from '../errors.js';
import { isGone, processStartTime, readProcStat } from '../proc/stat.js';
import { fsyncDirSync, tempPathFor } from '../fs/atomic.js';
import { adoptFenceJournal, leaveFenceJournal } from './fence-journal.js';
import { homeLayout } from './home.js';

export interface LockInfo {
  pid: number;
  /** Field 22 of /proc/PID/stat of the holder: tells a recycled PID from the holder. */
  startTime: number;
  /** What the holder is doing, e.g. "apply x.hpkg". */
  command: string;
  /** ISO time the lock was taken. */
  since: string;
  host: string;
}

export type StaleReason = 'dead' | 'pid-reused' | 'unreadable';

export interface StaleLock {
  /** The previous holder, when the lock file could be read. */
  holder?: LockInfo;
  reason: StaleReason;
}

export interface AcquireOptions {
  /** false or 0: refuse at once when busy; a number: wait up to that many ms; true: wait forever. */
  wait: boolean | number;
  command: string;
  /** Stops the waiting (its reason is thrown). */
  signal?: AbortSignal;
}

/** Calling it (or its release()) releases the lock; idempotent. */
export type AgentLock = (() => void) & {
  release(): void;
  readonly path: string;
  readonly info: LockInfo;
  /** Set when a stale lock (dead holder) was taken over: check for a half-done operation. */
  readonly takenOver?: StaleLock;
  /** How long acquireLock waited for another agent. */
  readonly waitedMs: number;
  /** Threads a killed agent's fence had left pinned to one CPU, given their masks back (fence-journal.ts). */
  fencesHealed?: number;
};

const FIRST_POLL_MS = 25;
const MAX_POLL_MS = 1_000;

// ---------------------------------------------------------------------------------------------
// Lock file I/O

interface LockRead {
  info?: LockInfo;
  raw: string;
}

function parseLock(raw: string): LockInfo | undefined {
  try {
    const v = JSON.parse(raw) as Partial<LockInfo>;
    if (typeof v.pid !== 'number' || !Number.isSafeInteger(v.pid) || v.pid <= 0) return undefined;
    return {
      pid: v.pid,
      startTime: typeof v.startTime === 'number' ? v.startTime : -1,
      command: typeof v.command === 'string' ? v.command : '?',
      since: typeof v.since === 'string' ? v.since : '?',
      host: typeof v.host === 'string' ? v.host : os.hostname(),
    };
  } catch {
    return undefined;
  }
}

/** The lock file's content, or undefined when there is no lock file. */
function readLock(file: string): LockRead | undefined {
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw lockIoError(file, error);
  }
  return { raw, info: parseLock(raw) };
}

/** Create `file` holding `content`, all at once; false when it already exists. */
function createExclusive(file: string, content: string): boolean {
  const temp = tempPathFor(file);
  try {
    const fd = fs.openSync(temp, 'wx', 0o644);
    try {
      fs.writeSync(fd, content);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    try {
      fs.linkSync(temp, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw error;
    }
    fsyncDirSync(path.dirname(file));
    return true;
  } catch (error) {
    throw lockIoError(file, error);
  } finally {
    fs.rmSync(temp, { force: true });
  }
}

function lockIoError(file: string, error: unknown): HpError {
  if (error instanceof HpError) return error;
  const err = error as NodeJS.ErrnoException;
  return new HpError('LOCK_FAILED', `cannot use the agent lock ${file}: ${err.message}`, { path: file, code: err.code });
}

/** undefined: the holder is alive (or cannot be checked); otherwise why the lock is stale. */
function staleness(read: LockRead): StaleReason | undefined {
  const info = read.info;
  if (!info) return 'unreadable';
  if (info.host !== os.hostname()) return undefined;
  const stat = readProcStat(info.pid);
  if (!stat || isGone(stat.state)) return 'dead';
  if (info.startTime >= 0 && stat.startTime !== info.startTime) return 'pid-reused';
  return undefined;
}

/**
 * The agent that holds the lock of `home` now, if any: its lock file names a live process (the
 * same PID and start time). A lock a killed agent left behind is not held by anybody.
 */
export function liveLockHolder(home: string): LockInfo | undefined {
  const read = readLock(homeLayout(home).lock);
  if (!read || staleness(read) !== undefined) return undefined;
  return read.info;
}

type TakeOver = 'removed' | 'changed' | 'guard-busy';

/**
 * Remove the stale lock `seen`, unless it changed in the meantime. Serialised by lock.takeover so
 * that only one agent ever deletes a given stale lock.
 */
function removeStaleLock(file: string, seen: LockRead, me: LockInfo): TakeOver {
  const guard = `${file}.takeover`;
  if (!createExclusive(guard, JSON.stringify(me))) {
    const holder = readLock(guard);
    // A taker that died inside this tiny critical section leaves its guard behind: clear it.
    if (holder && staleness(holder) !== undefined) {
      fs.rmSync(guard, { force: true });
      return 'changed';
    }
    return holder ? 'guard-busy' : 'changed';
  }
  try {
    const now = readLock(file);
    if (!now || now.raw !== seen.raw) return 'changed';
    fs.rmSync(file, { force: true });
    return 'removed';
  } finally {
    fs.rmSync(guard, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Release on exit and on signals

const held = new Set<() => void>();
let handlersInstalled = false;

function releaseAll(): void {
  for (const release of [...held]) release();
}

/** Release every lock this process holds (a program about to exit at once). */
export const releaseHeldLocks = releaseAll;

function onSignal(signal: NodeJS.Signals): void {
  // Someone else handles this signal: they stop the work and release the lock when it is safe.
  if (process.listenerCount(signal) > 1) return;
  releaseAll();
  uninstallHandlers();
  // Nobody else handles this signal: do what it would have done without us (terminate).
  process.kill(process.pid, signal);
}

const onSigint = () => onSignal('SIGINT');
const onSigterm = () => onSignal('SIGTERM');

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', releaseAll);
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
}

function uninstallHandlers(): void {
  if (!handlersInstalled) return;
  handlersInstalled = false;
  process.removeListener('exit', releaseAll);
  process.removeListener('SIGINT', onSigint);
  process.removeListener('SIGTERM', onSigterm);
}

// ---------------------------------------------------------------------------------------------

function clock(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const two = (n: number) => String(n).padStart(2, '0');
  const time = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  return Date.now() - d.getTime() < 20 * 3600_000 ? time : `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${time}`;
}

function describeHolder(info: LockInfo | undefined): string {
  if (!info) return 'another hp-agent';
  const where = info.host === os.hostname() ? '' : ` on host ${info.host}`;
  return `another hp-agent${where} (PID ${info.pid}, ${JSON.stringify(info.command)}, since ${clock(info.since)})`;
}

/** Resolves after `ms`, or at once when `signal` aborts (the caller checks it). */
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

/**
 * Take the agent lock of `home` (created if missing). When another live agent holds it: refuse
 * with AGENT_BUSY at once (wait: false), or poll with back-off until it is free, up to `wait` ms
 * (true: no limit), then AGENT_BUSY. A stale lock is taken over and reported in `takenOver`.
 */
export async function acquireLock(home: string, options: AcquireOptions): Promise<AgentLock> {
  const file = homeLayout(home).lock;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  } catch (error) {
    throw lockIoError(file, error);
  }
  const limitMs = options.wait === true ? Infinity : options.wait === false ? 0 : Math.max(0, options.wait);
  const me: LockInfo = {
    pid: process.pid,
    startTime: processStartTime(process.pid) ?? -1,
    command: options.command,
    since: new Date().toISOString(),
    host: os.hostname(),
  };
  const began = performance.now();
  let pollMs = FIRST_POLL_MS;
  let takenOver: StaleLock | undefined;

  for (;;) {
    options.signal?.throwIfAborted();
    me.since = new Date().toISOString();
    const content = `${JSON.stringify(me)}\n`;
    if (createExclusive(file, content)) {
      const handle = makeHandle(file, { ...me }, takenOver, performance.now() - began);
      handle.fencesHealed = adoptFenceJournal(path.dirname(file));
      return handle;
    }
    const current = readLock(file);
    if (!current) continue; // released between our attempt and our look: try again at once
    const reason = staleness(current);
    let blocker: LockInfo | undefined = current.info;
    if (reason !== undefined) {
      const outcome = removeStaleLock(file, current, me);
      if (outcome === 'removed') takenOver = { holder: current.info, reason };
      if (outcome !== 'guard-busy') continue;
      blocker = readLock(`${file}.takeover`)?.info ?? blocker;
    }
    const waited = performance.now() - began;
    if (waited >= limitMs) {
      const waitedText = limitMs > 0 ? `; waited ${Math.round(waited)} ms` : '';
      throw new HpError(
        'AGENT_BUSY',
        `${describeHolder(blocker)} holds the lock at ${file}${waitedText}; only one agent may change the machine at a time: try again when it has finished, or wait for it (--wait)`,
        { lock: file, holder: blocker, waitedMs: Math.round(waited) },
      );
    }
    await sleep(Math.min(pollMs, limitMs - waited), options.signal);
    pollMs = Math.min(pollMs * 2, MAX_POLL_MS);
  }
}

function makeHandle(file: string, info: LockInfo, takenOver: StaleLock | undefined, waitedMs: number): AgentLock {
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    held.delete(release);
    if (held.size === 0) uninstallHandlers();
    // Delete the lock only if it is still ours (it always should be; never delete another's).
    try {
      const current = readLock(file);
      if (current?.info && current.info.pid === info.pid && current.info.since === info.since && current.info.host === info.host) {
        leaveFenceJournal(path.dirname(file));
        fs.rmSync(file, { force: true });
      }
    } catch {
      // Releasing runs on exit paths: a lock we cannot remove is found stale by the next agent.
    }
  };
  held.add(release);
  installHandlers();
  return Object.assign(() => release(), {
    release,
    path: file,
    info,
    takenOver,
    waitedMs: Math.round(waitedMs),
  });
}

/**
 * The lock for `hp-agent try`: the agent's own (the same one apply, revert and reboot take), as
 * try writes into the same functions of the same processes and a second writer would find a
 * half-made change (it used to say ENTRY_MISMATCH). A patch author who is not root usually cannot
 * create the agent's home; then the lock is taken in a folder of that user's
 * ($XDG_RUNTIME_DIR/hp-agent, else <tmpdir>/hp-agent-<uid>): such a user can only trace their own
 * processes, so that lock still keeps two of their `try` runs apart.
 */
export async function acquireTryLock(home: string, options: AcquireOptions): Promise<AgentLock> {
  try {
    return await acquireLock(home, options);
  } catch (e) {
    const code = e instanceof HpError ? e.details?.code : undefined;
    if (!(e instanceof HpError) || e.code !== 'LOCK_FAILED' || !['EACCES', 'EPERM', 'EROFS'].includes(String(code))) throw e;
    const uid = process.getuid?.() ?? 0;
    const own = process.env.XDG_RUNTIME_DIR ? path.join(process.env.XDG_RUNTIME_DIR, 'hp-agent') : path.join(os.tmpdir(), `hp-agent-${uid}`);
    try {
      fs.mkdirSync(own, { recursive: true, mode: 0o700 });
      if (fs.statSync(own).uid !== uid) throw new Error(`${own} belongs to another user`);
    } catch (error) {
      throw lockIoError(own, error);
    }
    return acquireLock(own, options);
  }
}
