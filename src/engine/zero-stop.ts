/**
 * Zero-stop switching (DESIGN §4.6): carries out the writes planned by src/x64/zero-stop.ts for
 * hot-patchable entries (-fpatchable-function-entry=7,5) — plain writes through /proc/PID/mem,
 * no ptrace, no thread stopped. The engine (patch.ts) plans them and maps the patch first.
 *
 * Each function switches on its own: there is no instant at which all of a change's functions
 * switch together. A patch whose replacements only work as a set needs the stop mode. Reverting
 * gives back the exact original padding and entry bytes.
 */
import { HpError } from '../errors.js';
import { native } from '../native.js';
import type { ZeroStopStep } from '../x64/index.js';
import { withUndoLog, type UndoLog, type UndoStep } from './undo-log.js';
import { hexAddr, hexBytes } from '../hex.js';

const DEFAULT_STEP_DELAY_MS = 1;

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
  /** The change's undo log, which each write joins (see zeroStopSwitch). */
  log?: UndoLog;
}

export interface ZeroStopSwitchResult {
  steps: number;
  rounds: number;
  /** First write started → last write read back, pauses included (nothing is stopped meanwhile). */
  durationUs: number;
}

const readAll = (pid: number, steps: ZeroStopStep[]) => native.readRanges(pid, steps.map((s) => ({ addr: s.addr, length: s.before.length })));

/**
 * How to undo one write of round `round` (registered before the write: a write that fails may
 * have written part of its bytes): put `before` back if the bytes are still ours. The undo of a
 * round's first write, run last for that round, keeps the pause before the round undone next.
 */
function undoWrite(pid: number, step: ZeroStopStep, round: { index: number; first: boolean; rewrote: { any: boolean } }, delayMs: number): UndoStep {
  return {
    what: 'write(s)',
    undo: async () => {
      let clean = true;
      const [now] = await readAll(pid, [step]);
      if (!now.equals(step.before)) {
        if (now.equals(step.after)) {
          await native.writeMemory(pid, step.addr, step.before);
          round.rewrote.any = true;
          clean = (await readAll(pid, [step]))[0].equals(step.before);
        } else {
          clean = false; // no longer ours to restore
        }
      }
      if (round.first && round.rewrote.any && round.index > 0 && delayMs > 0) await sleep(delayMs);
      return clean;
    },
  };
}

/**
 * Carries out rounds of planned steps with plain memory writes (native.writeMemory through
 * /proc/PID/mem: no thread is stopped, the process is never traced). Round k holds at most one
 * write per entry, and rounds are `stepDelayMs` apart. Before a round, every `before` must still
 * be in place (one read for the round); after it, every write is read back. Any mismatch or
 * failure throws (ENTRY_MISMATCH, VERIFY_FAILED, or the write's error) with every write in the
 * undo log (`opts.log`, the change's; without one the writes are undone here, in reverse, and
 * `unchanged` on the error says whether that restored everything).
 */
export function zeroStopSwitch(pid: number, rounds: ZeroStopStep[][], opts: ZeroStopSwitchOptions = {}): Promise<ZeroStopSwitchResult> {
  const delayMs = opts.stepDelayMs ?? DEFAULT_STEP_DELAY_MS;
  if (!Number.isFinite(delayMs) || delayMs < 0) throw new HpError('INVALID_ARGUMENT', `stepDelayMs must be a non-negative number of milliseconds, not ${String(delayMs)}`);
  for (const s of rounds.flat()) {
    if (s.before.length === 0 || s.before.length !== s.after.length) throw new HpError('INVALID_ARGUMENT', `the step at ${hexAddr(s.addr)} must replace bytes with as many bytes`);
  }
  return withUndoLog(opts.log, async (log) => {
    const started = performance.now();
    for (const [index, round] of rounds.entries()) {
      if (index > 0 && delayMs > 0) await sleep(delayMs);
      let now: Buffer[];
      try {
        now = await readAll(pid, round);
      } catch (e) {
        throw new HpError(e instanceof HpError ? e.code : 'READ_FAILED', `cannot read the bytes to switch in process ${pid}: ${(e as Error).message}`, { round: index, cause: String(e) });
      }
      const moved = round.findIndex((step, i) => !now[i].equals(step.before));
      if (moved >= 0) {
        const step = round[moved];
        throw new HpError('ENTRY_MISMATCH', `the ${step.what} bytes at ${hexAddr(step.addr)} in process ${pid} are ${hexBytes(now[moved])}, expected ${hexBytes(step.before)}: something else changed them`, { round: index });
      }
      const rewrote = { any: false };
      for (const [i, step] of round.entries()) {
        log.add(undoWrite(pid, step, { index, first: i === 0, rewrote }, delayMs));
        try {
          await native.writeMemory(pid, step.addr, step.after);
        } catch (e) {
          throw new HpError(e instanceof HpError ? e.code : 'WRITE_FAILED', `cannot write at ${hexAddr(step.addr)} in process ${pid}: ${(e as Error).message}`, { round: index + 1, cause: String(e) });
        }
      }
      const after = await readAll(pid, round).catch(() => undefined);
      const wrong = round.findIndex((step, i) => !after?.[i].equals(step.after));
      if (wrong >= 0) {
        const step = round[wrong];
        throw new HpError('VERIFY_FAILED', `the bytes at ${hexAddr(step.addr)} in process ${pid} read back as ${after ? hexBytes(after[wrong]) : '(unreadable)'} instead of ${hexBytes(step.after)}`, { round: index + 1 });
      }
      opts.onRound?.(index, round);
    }
    return { steps: rounds.flat().length, rounds: rounds.length, durationUs: Math.round((performance.now() - started) * 1000) };
  });
}
