/**
 * The benchmark's target, fixtures/bench/benchd.c (and benchd-zs, built with hot-patchable
 * entries), and its patch bench_fix.so: starting it, its commands, and the answers to expect.
 */
import fs from 'node:fs';
import type { FunctionSpec } from '../engine/patch.js';
import { fixturePath, spawnTarget, type Target } from '../harness/index.js';

export const BENCHD = 'benchd';
export const BENCHD_ZS = 'benchd-zs';
export const BENCH_PATCH = 'bench_fix.so';
export const BENCH_NFUNCS = 256;

export type Mode = 'idle' | 'busy';

/** `call I` before the patch (bench_fns.h): bench_fn_I(1000). */
export function unpatchedAnswer(i: number): string {
  return String(1000 * (2 * i + 3) + i + 1);
}

/** `call I` once bench_fix.so replaced bench_fn_I. */
export function patchedAnswer(i: number): string {
  return String(1000 * (2 * i + 3) + i + 1 + 1_000_000);
}

export function functionName(i: number): string {
  return `bench_fn_${i}`;
}

/** bench_fn_0 → bench_fn_0_v2, … for the first `count` functions. */
export function functionSpecs(count: number): FunctionSpec[] {
  return Array.from({ length: count }, (_, i) => ({ name: functionName(i), replacement: `${functionName(i)}_v2` }));
}

export function functionNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => functionName(i));
}

export interface BenchdOptions {
  threads: number;
  mode: Mode;
  /** Functions the busy workers call (1..256). */
  functions: number;
  /** Run the gap recorder (a spinning thread); default true. */
  gap?: boolean;
  /** benchd-zs instead of benchd. */
  zeroStop?: boolean;
}

/** A running benchd and its commands. */
export class Benchd {
  private constructor(
    readonly target: Target,
    readonly options: BenchdOptions,
  ) {}

  static async start(options: BenchdOptions): Promise<Benchd> {
    const args = [String(options.threads), options.mode, String(options.functions)];
    if (options.gap === false) args.push('nogap');
    // Many threads on few CPUs answer slowly: be generous before calling it a failure.
    const target = await spawnTarget(fixturePath(options.zeroStop ? BENCHD_ZS : BENCHD), { args, readyTimeoutMs: 30_000, requestTimeoutMs: 30_000 });
    return new Benchd(target, options);
  }

  get pid(): number {
    return this.target.pid;
  }

  get binary(): string {
    return fixturePath(this.options.zeroStop ? BENCHD_ZS : BENCHD);
  }

  describe(): string {
    return `${this.options.zeroStop ? BENCHD_ZS : BENCHD} ${this.options.threads} ${this.options.mode} ${this.options.functions}${this.options.gap === false ? ' nogap' : ''}`;
  }

  private async command(line: string): Promise<string> {
    const answer = await this.target.request(line);
    if (answer.startsWith('error')) throw new Error(`${this.describe()}: "${line}" answered "${answer}"`);
    return answer;
  }

  call(i: number): Promise<string> {
    return this.command(`call ${i}`);
  }

  /** Throws unless every function in `indexes` answers as patched (or unpatched). */
  async expectAnswers(indexes: number[], patched: boolean): Promise<void> {
    for (const i of indexes) {
      const got = await this.call(i);
      const want = patched ? patchedAnswer(i) : unpatchedAnswer(i);
      if (got !== want) throw new Error(`${this.describe()} (pid ${this.pid}): call ${i} answered ${got}, expected ${want} (${patched ? 'patched' : 'unpatched'})`);
    }
  }

  /** Nanoseconds per call of bench_fn_I over `calls` calls, measured inside the target. */
  async callCost(i: number, calls: number): Promise<number> {
    return Number(await this.command(`callcost ${i} ${calls}`));
  }

  /** Forget the gaps seen so far (answers once the recorder started over). */
  async resetGap(): Promise<void> {
    await this.command('reset');
  }

  /** The largest gap since the last reset, in µs. */
  async gapUs(): Promise<number> {
    return Number(await this.command('gap')) / 1000;
  }

  /**
   * For each window (monotonic ns, see monotonicNs), the longest part of it the recorder did not
   * run, in µs (gaps under 1 µs count as 0). One request for all the windows, no reset: the
   * target logs its recorder's gaps and answers once the recorder has run past every window.
   */
  async gapsUs(windows: Window[]): Promise<number[]> {
    if (windows.length === 0) return [];
    const answer = await this.command(`gaps ${windows.map((w) => `${w.start} ${w.end}`).join(' ')}`);
    const v = answer.split(' ').map(Number);
    if (v.length !== windows.length || v.some((x) => !Number.isFinite(x))) throw new Error(`${this.describe()}: gaps answered "${answer}"`);
    return v.map((ns) => ns / 1000);
  }

  /** The gap recorder's thread id (see contextSwitches). */
  async recorderTid(): Promise<number> {
    const tid = Number(await this.command('recorder'));
    if (!Number.isInteger(tid) || tid <= 0) throw new Error(`${this.describe()}: no gap recorder thread (recorder answered ${tid})`);
    return tid;
  }

  kill(): Promise<void> {
    return this.target.kill();
  }
}

/** The first, last and a middle function among the first `count`: enough to see a patch took. */
export function sampleIndexes(count: number): number[] {
  return [...new Set([0, count >> 1, count - 1])];
}

/** A time window in CLOCK_MONOTONIC nanoseconds, the target's clock (libuv reads the same one). */
export interface Window {
  start: bigint;
  end: bigint;
}

export const monotonicNs = (): bigint => process.hrtime.bigint();

/** Runs fn and returns its result with the window it ran in. */
export async function timed<T>(fn: () => Promise<T> | T): Promise<{ value: T; window: Window; ms: number }> {
  const start = monotonicNs();
  const value = await fn();
  const end = monotonicNs();
  return { value, window: { start, end }, ms: Number(end - start) / 1e6 };
}

/**
 * Context switches of one thread so far (/proc/PID/task/TID/status). The gap recorder spins and
 * never blocks by itself, so its voluntary count only grows when something stops it: a ptrace
 * stop (the thread sleeps in TASK_TRACED) is a voluntary switch, while being preempted by other
 * threads is an involuntary one.
 */
export function contextSwitches(pid: number, tid: number): { voluntary: number; involuntary: number } {
  const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  const voluntary = /^voluntary_ctxt_switches:\s*(\d+)/m.exec(status);
  const involuntary = /^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(status);
  if (!voluntary || !involuntary) throw new Error(`/proc/${pid}/task/${tid}/status has no context switch counts`);
  return { voluntary: Number(voluntary[1]), involuntary: Number(involuntary[1]) };
}

/**
 * Keeps this thread (the agent's main thread) busy for `ms`: the control for the gap recorder.
 * The gap a target's thread sees while the agent merely uses a CPU, without touching the target,
 * is what CPU contention alone costs on this machine (an upper bound: a real apply also waits).
 */
export function spinFor(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
}
