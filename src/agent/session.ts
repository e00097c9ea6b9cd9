/**
 * One agent run: the home, the lock (one agent at a time), the state, the log and the history,
 * set up and torn down in one place so every command does it the same way.
 */
import { HpError } from '../errors.js';
import { appendHistory, type HistoryInput } from './history.js';
import { agentHome, ensureHome, homeLayout, type HomeLayout } from './home.js';
import { watchSignals, type Interrupts } from './interrupt.js';
import { acquireLock } from './lock.js';
import { closeLogger, createLogger, type AgentLogger } from './log.js';
import { loadState, saveState, type AgentState } from './state.js';

export interface Session {
  home: string;
  layout: HomeLayout;
  state: AgentState;
  log: AgentLogger;
  /** Aborted by SIGINT/SIGTERM: check it before a change begins (see interrupt.ts). */
  signal: AbortSignal;
  save(): Promise<void>;
  record(entry: HistoryInput): Promise<void>;
}

export interface SessionOptions {
  command: string;
  verbose?: boolean;
  /** Wait for another agent's lock (ms, or true for ever); default 30 s. */
  wait?: boolean | number;
  /** Reading only: no lock, and neither state nor history can be written (status, history, a dry run). */
  readOnly?: boolean;
  home?: string;
}

export async function withSession<T>(opts: SessionOptions, work: (s: Session) => Promise<T>): Promise<T> {
  // Reading only (status, history): nothing to leave half-done, so a signal ends it as usual.
  const interrupts = opts.readOnly ? unwatched : watchSignals();
  try {
    return await inSession(opts, interrupts, work);
  } finally {
    interrupts.dispose();
  }
}

const unwatched: Interrupts = { signal: new AbortController().signal, received: () => undefined, dispose: () => undefined };

async function inSession<T>(opts: SessionOptions, interrupts: Interrupts, work: (s: Session) => Promise<T>): Promise<T> {
  const home = opts.home ?? agentHome();
  await ensureHome(home);
  const log = createLogger(home, { verbose: opts.verbose });
  let lock;
  try {
    lock = opts.readOnly ? undefined : await acquireLock(home, { wait: opts.wait ?? 30_000, command: opts.command, signal: interrupts.signal });
  } catch (e) {
    // Refused the lock: still say so in the history (appends are atomic lines, no lock needed).
    const err = e as HpError;
    await appendHistory(home, { action: 'refuse', result: 'Refused', detail: { command: opts.command, code: err.code, message: err.message } }).catch(() => undefined);
    log.warn('lock refused', { command: opts.command, error: e });
    await closeLogger();
    throw e;
  }
  try {
    if (lock?.takenOver) log.warn('took over a stale lock', { previous: lock.takenOver });
    if (lock?.fencesHealed) log.warn('gave back the CPU masks a killed agent had left narrowed', { threads: lock.fencesHealed });
    const state = await loadState(home);
    const session: Session = {
      home,
      layout: homeLayout(home),
      state,
      log,
      signal: interrupts.signal,
      save: async () => {
        if (opts.readOnly) throw new HpError('INTERNAL', 'a read-only session cannot save the state');
        await saveState(home, session.state);
      },
      record: async (entry) => {
        // A read-only session (status, history, a dry run) leaves the history as it found it.
        if (opts.readOnly) throw new HpError('INTERNAL', 'a read-only session cannot record history');
        await appendHistory(home, entry);
      },
    };
    log.debug('session start', { command: opts.command });
    const result = await work(session);
    const sig = interrupts.received();
    if (sig) {
      // The signal came while processes were being changed: the change was finished first.
      log.warn('signal received during a change; the change was finished first', { signal: sig, command: opts.command });
      process.stderr.write(`hp-agent: ${sig} received while the change was under way: finished it first, so every process is at one level\n`);
    }
    return result;
  } catch (e) {
    log.error('command failed', { command: opts.command, error: e });
    throw e;
  } finally {
    lock?.release();
    await closeLogger();
  }
}
