/**
 * The one undo log of a change: every step that changed the target (a patch mapped, a write of
 * a zero-stop switch) registers how to undo itself the moment it may have changed something,
 * and a step that failed and undid itself (the native core's transaction, which restores its
 * own writes inside the stop) says whether it managed. Rolling back runs the undos newest first;
 * whether the target was left unchanged is derived here, from the log, and nowhere else.
 *
 * An undo marked `keepIfLaterKept` removes something a later step may still lead into (a patch
 * mapping a jump may point at): once a later step could not be undone, it is kept, not undone.
 */
import { HpError } from '../errors.js';

export interface UndoStep {
  /** What the step made, counted ("write(s)", "patch mapping(s)"): for the error's message. */
  what: string;
  /** Puts the target back as it was before the step; false (or a throw) when it could not. */
  undo: () => Promise<boolean>;
  /** Undone only when every later step was: what it removes may still be in use otherwise. */
  keepIfLaterKept?: boolean;
}

export interface Rollback {
  /** The target is exactly as it was before the first step. */
  unchanged: boolean;
  /** What was undone (or not), for a person: "the 2 write(s) already done were undone". */
  summary: string;
}

export class UndoLog {
  readonly #steps: UndoStep[] = [];
  /** A failed step left changes it could not take back itself. */
  #failedStepKept = false;
  #failedStepReported = false;

  /** Registers a step that changed (or may have changed, like a write that failed halfway) the target. */
  add(step: UndoStep): void {
    this.#steps.push(step);
  }

  /** The step that failed, as it reports itself: whether it put back everything it had changed. */
  failedStep(restored: boolean): void {
    this.#failedStepReported = true;
    if (!restored) this.#failedStepKept = true;
  }

  /** Steps registered so far. */
  get length(): number {
    return this.#steps.length;
  }

  /** Undoes every registered step, newest first, and says whether the target is unchanged. */
  async rollback(): Promise<Rollback> {
    let kept = this.#failedStepKept;
    const done = new Map<string, number>();
    for (const step of this.#steps.splice(0).reverse()) {
      done.set(step.what, (done.get(step.what) ?? 0) + 1);
      if (step.keepIfLaterKept && kept) continue;
      const undone = await step.undo().catch(() => false);
      if (!undone) kept = true;
    }
    const made = [...done].reverse().map(([what, n]) => `${n} ${what}`);
    let summary = '';
    if (made.length === 0) summary = this.#failedStepReported ? '' : 'nothing had been written';
    else summary = `the ${made.join(' and ')} already done ${kept ? 'could NOT all be undone' : 'were undone'}`;
    return { unchanged: !kept, summary };
  }

  /**
   * Rolls back and rethrows `error` with `unchanged` derived from the log and the summary added
   * to its message. An error that is not an HpError (a bug, or a process gone: see whileAlive)
   * is rethrown as it is, after the rollback.
   */
  async settle(error: unknown): Promise<never> {
    const { unchanged, summary } = await this.rollback();
    if (!(error instanceof HpError)) throw error;
    const settled = new HpError(error.code, summary ? `${error.message}; ${summary}` : error.message, error.details, unchanged);
    // Where it failed, not where it was settled.
    settled.stack = `${settled.name}: ${settled.message}${error.stack?.slice(error.stack.indexOf('\n')) ?? ''}`;
    throw settled;
  }
}

/**
 * Runs `work` as part of the caller's log, or, without one, as a change of its own: on failure
 * its steps are rolled back and the error says whether the target is unchanged.
 */
export async function withUndoLog<T>(log: UndoLog | undefined, work: (log: UndoLog) => Promise<T>): Promise<T> {
  if (log) return work(log);
  const own = new UndoLog();
  try {
    return await work(own);
  } catch (e) {
    return own.settle(e);
  }
}
