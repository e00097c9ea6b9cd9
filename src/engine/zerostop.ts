/**
 * Zero-stop switching (DESIGN §4.6): carries out the writes planned by src/x64/zerostop.ts for
 * hot-patchable entries (-fpatchable-function-entry=7,5) — plain writes through /proc/PID/mem,
 * no ptrace, no thread stopped. The engine (patch.ts) plans them and maps the patch first.
 *
 * Each function switches on its own: there is no instant at which all of a change's functions
 * switch together. A patch whose replacements only work as a set needs the stop mode. Reverting
 * gives back the exact original padding and entry bytes.
 */
import { HpError, type ErrorCode } from '../errors.js';
import { native } from '../native.js';
import type { ZeroStopStep } from '../x64/index.js';

const DEFAULT_STEP_DELAY_MS = 1;

const hexAddr = (n: number): string => '0x' + n.toString(16);
const hex = (b: Buffer): string => b.toString('hex');
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface ZeroStopSwitchOptions {
  /**
   * Pause after each round of writes before the next one (default 1 ms). It is what makes
   * one-byte-at-a-time safe without stopping anyone: a CPU that fetched and decoded the bytes
   * before a write may still execute that stale decode for a short while (x86 only promises
   * cross-modified code is seen after the executing CPU serializes, and we cannot make another
   * CPU serialize without stopping it — the kernel uses an IPI, membarrier's SYNC_CORE needs the
   * target to register). In-flight instructions retire within far less than a microsecond and
   * any interrupt, context switch or return from a system call serializes, so after the pause no
   * CPU can still act on the state before the previous one. Each CPU therefore only ever sees
   * two neighbouring states, both valid; without the pause it could combine bytes of states two
   * writes apart (the new `eb` with the original `90`, i.e. a jump into the preceding function).
   */
  stepDelayMs?: number;
  /** Called after each round was written and read back (index of the round, from 0); for logs and tests. */
  onRound?: (index: number, steps: ZeroStopStep[]) => void;
}

export interface ZeroStopSwitchResult {
  steps: number;
  rounds: number;
  /** First write started → last write read back, pauses included (nothing is stopped meanwhile). */
  durationUs: number;
}

const readAll = (pid: number, steps: ZeroStopStep[]) => native.readRanges(pid, steps.map((s) => ({ addr: s.addr, length: s.before.length })));

/** Puts back `done` rounds in reverse order; false when some byte is no longer ours to restore. */
async function undoRounds(pid: number, done: ZeroStopStep[][], delayMs: number): Promise<boolean> {
  let clean = true;
  for (let r = done.length - 1; r >= 0; r--) {
    let wrote = false;
    for (const step of done[r]) {
      try {
        const [now] = await readAll(pid, [step]);
        if (now.equals(step.before)) continue;
        if (!now.equals(step.after)) {
          clean = false;
          continue;
        }
        await native.writeMemory(pid, step.addr, step.before);
        wrote = true;
        if (!(await readAll(pid, [step]))[0].equals(step.before)) clean = false;
      } catch {
        clean = false;
      }
    }
    if (wrote && r > 0 && delayMs > 0) await sleep(delayMs);
  }
  return clean;
}

/**
 * Carries out rounds of planned steps with plain memory writes (native.writeMemory through
 * /proc/PID/mem: no thread is stopped, the process is never traced). Round k holds at most one
 * write per entry, and rounds are `stepDelayMs` apart. Before a round, every `before` must still
 * be in place (one read for the round); after it, every write is read back. Any mismatch or
 * failure undoes what was written, in reverse, and throws (ENTRY_MISMATCH, VERIFY_FAILED, or the
 * write's error); `unchanged` on the error says whether the undo restored everything.
 */
export async function zeroStopSwitch(pid: number, rounds: ZeroStopStep[][], opts: ZeroStopSwitchOptions = {}): Promise<ZeroStopSwitchResult> {
  const delayMs = opts.stepDelayMs ?? DEFAULT_STEP_DELAY_MS;
  if (!Number.isFinite(delayMs) || delayMs < 0) throw new HpError('INVALID_ARGUMENT', `stepDelayMs must be a non-negative number of milliseconds, not ${String(delayMs)}`);
  for (const s of rounds.flat()) {
    if (s.before.length === 0 || s.before.length !== s.after.length) throw new HpError('INVALID_ARGUMENT', `the step at ${hexAddr(s.addr)} must replace bytes with as many bytes`);
  }
  const started = performance.now();
  const done: ZeroStopStep[][] = [];
  const fail = async (code: ErrorCode, message: string, cause?: unknown): Promise<never> => {
    const writes = done.flat().length;
    const undone = await undoRounds(pid, done, delayMs);
    const state = writes === 0 ? 'nothing had been written' : undone ? `the ${writes} write(s) already done were undone` : 'the writes already done could NOT all be undone';
    throw new HpError(code, `${message}; ${state}`, { round: done.length, ...(cause ? { cause: String(cause) } : {}) }, writes === 0 || undone);
  };
  for (const round of rounds) {
    if (done.length > 0 && delayMs > 0) await sleep(delayMs);
    let now: Buffer[];
    try {
      now = await readAll(pid, round);
    } catch (e) {
      return fail(e instanceof HpError ? e.code : 'READ_FAILED', `cannot read the bytes to switch in process ${pid}: ${(e as Error).message}`, e);
    }
    const moved = round.findIndex((step, i) => !now[i].equals(step.before));
    if (moved >= 0) {
      const step = round[moved];
      return fail('ENTRY_MISMATCH', `the ${step.what} bytes at ${hexAddr(step.addr)} in process ${pid} are ${hex(now[moved])}, expected ${hex(step.before)}: something else changed them`);
    }
    const written: ZeroStopStep[] = [];
    done.push(written);
    for (const step of round) {
      // A failed write may have written part of the bytes: count it for the undo as well.
      written.push(step);
      try {
        await native.writeMemory(pid, step.addr, step.after);
      } catch (e) {
        return fail(e instanceof HpError ? e.code : 'WRITE_FAILED', `cannot write at ${hexAddr(step.addr)} in process ${pid}: ${(e as Error).message}`, e);
      }
    }
    const after = await readAll(pid, round).catch(() => undefined);
    const wrong = round.findIndex((step, i) => !after?.[i].equals(step.after));
    if (wrong >= 0) {
      const step = round[wrong];
      return fail('VERIFY_FAILED', `the bytes at ${hexAddr(step.addr)} in process ${pid} read back as ${after ? hex(after[wrong]) : '(unreadable)'} instead of ${hex(step.after)}`);
    }
    opts.onRound?.(done.length - 1, round);
  }
  return { steps: rounds.flat().length, rounds: rounds.length, durationUs: Math.round((performance.now() - started) * 1000) };
}
