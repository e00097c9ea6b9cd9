/**
 * SIGINT and SIGTERM while the agent works. Dying on the spot could leave a package half-read
 * with the lock held by nobody's choice, or a process half-way through a change; so the first
 * signal only asks the work to stop at its next safe point: while waiting for the lock, between
 * two chunks of a package being read (the inflating runs off the JavaScript thread, so the signal
 * is heard at once), before a change begins. A change of processes that has begun is finished
 * (every process ends at one level, and the state says which), then the agent exits. The lock is
 * released on the way out, and the command exits 128 + the signal's number (130 for SIGINT, 143
 * for SIGTERM) with INTERRUPTED. A second signal stops at once: the lock is released, and the
 * next agent run finishes whatever operation it finds recorded as begun.
 */
import { constants as osConstants } from 'node:os';
import { HpError } from '../errors.js';
import { releaseHeldLocks } from './lock.js';

const WATCHED = ['SIGINT', 'SIGTERM'] as const;
type Watched = (typeof WATCHED)[number];

export interface Interrupts {
  /** Aborted at the first signal; its reason is the INTERRUPTED HpError to throw. */
  readonly signal: AbortSignal;
  /** The first signal received, if any. */
  received(): Watched | undefined;
  dispose(): void;
}

/** 128 + the signal's number: what a shell reports for a command a signal ended. */
export const signalExitCode = (sig: string): number => 128 + (osConstants.signals[sig as NodeJS.Signals] ?? 0);

export function interruptedError(sig: Watched): HpError {
  return new HpError('INTERRUPTED', `stopped by ${sig} before changing anything; nothing was changed`, { signal: sig });
}

/** Watch SIGINT and SIGTERM until dispose(): see the module comment. */
export function watchSignals(): Interrupts {
  const controller = new AbortController();
  let first: Watched | undefined;
  const handlers = WATCHED.map((sig) => {
    const handler = () => {
      if (!first) {
        first = sig;
        controller.abort(interruptedError(sig));
        return;
      }
      process.stderr.write(`hp-agent: ${sig} again: stopping now (the next agent run finishes any operation left begun)\n`);
      releaseHeldLocks();
      process.exit(signalExitCode(sig));
    };
    process.on(sig, handler);
    return [sig, handler] as const;
  });
  return {
    signal: controller.signal,
    received: () => first,
    dispose: () => {
      for (const [sig, handler] of handlers) process.removeListener(sig, handler);
    },
  };
}
