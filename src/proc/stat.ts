/**
 * /proc/PID/stat (and /proc/PID/task/TID/stat, same format): the one reader of it, and the one
 * test of whether a process is gone. Imports nothing but node:fs, so the test harness can use it
 * too.
 */
import { readFileSync } from 'node:fs';

export interface ProcStat {
  pid: number;
  /** The command name (/proc/PID/comm's, at most 15 characters, unescaped). */
  comm: string;
  /** Scheduler state letter: R, S, D, T, t, Z, X ... */
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** Fields 14 and 15: CPU time spent in user and kernel mode, in clock ticks. */
  utime: number;
  stime: number;
  /** Field 22: start time after boot, in clock ticks. With the PID, it tells a recycled PID apart. */
  startTime: number;
  /** Field 41: scheduling policy (0 SCHED_OTHER, 1 SCHED_FIFO, 2 SCHED_RR, 3 SCHED_BATCH, 5 SCHED_IDLE). */
  policy: number;
}

/** Parsed /proc/PID/stat (of thread `tid` of it when given), undefined when there is no such process. */
export function readProcStat(pid: number, tid?: number): ProcStat | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (tid !== undefined && (!Number.isSafeInteger(tid) || tid <= 0)) return undefined;
  let text: string;
  try {
    text = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "PID (comm) S PPID ..." — comm may contain spaces and ')', so cut at the last ')'.
  const close = text.lastIndexOf(')');
  const open = text.indexOf('(');
  if (open < 0 || close < open) return undefined;
  const rest = text.slice(close + 1).trim().split(/\s+/);
  if (!rest[0]) return undefined;
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const field = (n: number) => Number(rest[n - 3]);
  return {
    pid: tid ?? pid,
    comm: text.slice(open + 1, close),
    state: rest[0],
    ppid: field(4),
    pgrp: field(5),
    session: field(6),
    utime: field(14),
    stime: field(15),
    startTime: field(22),
    policy: field(41),
  };
}

/**
 * Whether a process in this state is gone: no state at all (no such process), a zombie (Z: exited,
 * not yet reaped by its parent) or dead (X, x). A stopped or traced process is not gone.
 */
export function isGone(state: string | undefined): boolean {
  return state === undefined || state === 'Z' || state === 'X' || state === 'x';
}

/** Single-letter scheduler state (R, S, D, T, t, Z, X, ...), undefined if there is no such process. */
export function processState(pid: number): string | undefined {
  return readProcStat(pid)?.state;
}

/** True when the process exists and is not a zombie (or dead). */
export function processExists(pid: number): boolean {
  return !isGone(processState(pid));
}

/** Start time (field 22) of a live process, undefined if it is gone. */
export function processStartTime(pid: number): number | undefined {
  const stat = readProcStat(pid);
  return stat && !isGone(stat.state) ? stat.startTime : undefined;
}

/** The process `pid` is not gone and started at `startTime`: the same process, not a recycled PID. */
export function processIsSame(pid: number, startTime: number): boolean {
  return processStartTime(pid) === startTime;
}
