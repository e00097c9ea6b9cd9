/**
 * `hp-agent run`: the long-running agent of automatic patching (Azure's AutomaticByPlatform), a
 * foreground process a service manager starts. Each due event is one agent session (the lock is
 * held only while it works, so `status`, `config` or an `install` can run between two): a process
 * that started below the applied hotpatch level gets it; with assessmentMode AutomaticByPlatform
 * the machine is assessed every 24 hours; with patchMode AutomaticByPlatform, at the start of each
 * off-peak window of the machine's time zone, it is assessed and its Critical and Security updates
 * installed (run-steps.ts); with patchMode AutomaticByOS whatever an assessment finds is installed
 * at once, in no window. Settings are read afresh at every event.
 *
 * On a simulated clock (`--simulate-from/--simulate-until`) the loop jumps from one due event to
 * the next without sleeping, against the real processes; each event runs as a one-shot command at
 * that instant would (HP_AGENT_NOW is the event's time while it runs), so the history, the state
 * and the feed's "released by now" all read the simulated time. A machine whose agent did not run
 * across a window installs at the first window after it runs again: the assessment finds what it
 * lacks whatever its age.
 *
 * SIGTERM or SIGINT stop the loop: between events at once; during one, the session stops at its
 * next safe point (a change of processes under way is finished first; see interrupt.ts).
 */
import { NOW_ENV, now as clockNow } from '../clock.js';
import { HpError } from '../errors.js';
import type { AgentLogger } from '../agent/log.js';
import { withSession } from '../agent/session.js';
import { describeSource, type FeedSource } from './feed/source.js';
import { assessStep, catchUp, installMayBeDue, installStep, osInstallStep, type RunAction, type StepContext } from './run-steps.js';
import { effectiveTimeZone, updateSettingsOf } from './settings.js';
import { nextWindowStart, windowAt } from './window.js';

export type { RunAction } from './run-steps.js';

const HOUR_MS = 3_600_000;
export const ASSESS_EVERY_MS = 24 * HOUR_MS;
/** How often the real-time loop looks for processes that started below the level. */
export const DEFAULT_SCAN_MS = 5_000;

export interface RunOptions {
  home?: string;
  /** The update feed (a folder or an http(s) URL: parseFeedSource). */
  feed: FeedSource;
  /** Run on a simulated clock from this instant until that one (both or neither). */
  simulateFrom?: Date;
  simulateUntil?: Date;
  /** Real clock: how often processes are looked at between events (default 5 s). */
  scanIntervalMs?: number;
  verbose?: boolean;
  /** Every action, as it happens. */
  onAction: (a: RunAction) => void;
}

export interface RunSummary {
  actions: number;
  /** Why the loop ended: the simulation's end, or a signal. */
  stoppedBy: 'simulate-until' | 'SIGTERM' | 'SIGINT';
}

/** Stops the loop on SIGTERM/SIGINT: between events at once (the sleep is cut short). */
function stopSignals() {
  let stoppedBy: 'SIGTERM' | 'SIGINT' | undefined;
  let wake: (() => void) | undefined;
  const handlers = (['SIGTERM', 'SIGINT'] as const).map((sig) => {
    const h = () => {
      stoppedBy ??= sig;
      wake?.();
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  return {
    stopped: () => stoppedBy,
    sleep: (ms: number) =>
      new Promise<void>((resolve) => {
        if (stoppedBy) return resolve();
        const t = setTimeout(done, Math.max(0, ms));
        function done() {
          clearTimeout(t);
          wake = undefined;
          resolve();
        }
        wake = done;
      }),
    dispose: () => handlers.forEach(([sig, h]) => process.removeListener(sig, h)),
  };
}

/** Runs `work` as if the command ran at `at`: every date the agent records is that instant's. */
async function at<T>(t: Date, simulated: boolean, work: () => Promise<T>): Promise<T> {
  if (!simulated) return work();
  const saved = process.env[NOW_ENV];
  process.env[NOW_ENV] = t.toISOString();
  try {
    return await work();
  } finally {
    if (saved === undefined) delete process.env[NOW_ENV];
    else process.env[NOW_ENV] = saved;
  }
}

export async function runAgent(o: RunOptions): Promise<RunSummary> {
  const source = o.feed;
  const simulated = o.simulateFrom !== undefined;
  if (simulated !== (o.simulateUntil !== undefined)) throw new HpError('USAGE', '--simulate-from and --simulate-until go together');
  if (simulated && o.simulateUntil! <= o.simulateFrom!) throw new HpError('USAGE', `--simulate-until (${o.simulateUntil!.toISOString()}) must be after --simulate-from (${o.simulateFrom!.toISOString()})`);
  // On the real clock the loop must see time pass: a fixed now is for one-shot commands.
  if (!simulated && process.env[NOW_ENV]) throw new HpError('USAGE', `${NOW_ENV} fixes now for a one-shot command; the loop on a simulated clock is --simulate-from/--simulate-until`);
  const scanMs = o.scanIntervalMs ?? DEFAULT_SCAN_MS;
  let t = simulated ? o.simulateFrom! : clockNow();
  let actions = 0;
  /** The log of the session under way (each event's session opens and closes its own). */
  let log: AgentLogger | undefined;
  const emit = (a: Omit<RunAction, 'time'>) => {
    actions++;
    const action = { time: t.toISOString(), ...a };
    log?.info(`automatic patching: ${a.action}`, action);
    o.onAction(action);
  };
  const ctx: StepContext = { source, emit, skipped: new Set(), unhealthy: new Set() };
  const signals = stopSignals();
  /** The window whose installation was done (once per window, however often the loop wakes in it). */
  let handledWindow: number | undefined;
  emit({ action: 'start', reason: simulated ? `simulated clock from ${o.simulateFrom!.toISOString()} until ${o.simulateUntil!.toISOString()}, jumping from one due event to the next; feed ${describeSource(source)}` : `real clock; feed ${describeSource(source)}` });
  try {
    for (;;) {
      if (signals.stopped()) break;
      if (simulated && t >= o.simulateUntil!) break;
      let next: Date;
      try {
        next = await at(t, simulated, () =>
          withSession({ command: 'run', home: o.home, verbose: o.verbose, wait: true }, async (s) => {
            log = s.log;
            const settings = updateSettingsOf(s.state);
            const ps = settings.patchSettings;
            const tz = effectiveTimeZone(settings);
            await catchUp(s, ctx);
            const auto = ps.patchMode === 'AutomaticByPlatform';
            const win = auto ? windowAt(t, tz, settings.offPeak) : undefined;
            if (win && handledWindow !== win.start.getTime()) {
              handledWindow = win.start.getTime();
              if (await installMayBeDue(s, ctx, t)) await installStep(s, ctx, t, win);
            }
            const last = s.state.lastAssessment ? Date.parse(s.state.lastAssessment.startDateTime) : undefined;
            if (ps.assessmentMode === 'AutomaticByPlatform' && (last === undefined || t.getTime() - last >= ASSESS_EVERY_MS)) {
              await assessStep(s, ctx, t, `assessmentMode AutomaticByPlatform: assessed every 24 hours (${last === undefined ? 'never assessed before' : `last ${new Date(last).toISOString()}`})`);
            }
            if (ps.patchMode === 'AutomaticByOS') await osInstallStep(s, ctx, t);
            const due: number[] = [];
            const assessed = s.state.lastAssessment ? Date.parse(s.state.lastAssessment.startDateTime) : undefined;
            if (ps.assessmentMode === 'AutomaticByPlatform') due.push(assessed === undefined ? t.getTime() + HOUR_MS : assessed + ASSESS_EVERY_MS);
            if (auto) due.push(nextWindowStart(t, tz, settings.offPeak).getTime());
            if (!simulated) due.push(t.getTime() + scanMs);
            return new Date(due.length ? Math.min(...due) : t.getTime() + ASSESS_EVERY_MS);
          }),
        );
      } catch (e) {
        log = undefined;
        if (e instanceof HpError && e.code === 'INTERRUPTED') break;
        emit({ action: 'error', result: 'Failed', reason: 'the step failed; the loop goes on at the next due event', detail: e instanceof HpError ? `${e.code}: ${e.message}` : String(e) });
        next = new Date(t.getTime() + HOUR_MS);
      }
      log = undefined;
      if (simulated) {
        // Never stand still: an event due now that changed nothing must not run again at once.
        t = new Date(Math.max(next.getTime(), t.getTime() + 1000));
      } else {
        await signals.sleep(next.getTime() - Date.now());
        t = clockNow();
      }
    }
  } finally {
    signals.dispose();
  }
  const stoppedBy = signals.stopped() ?? 'simulate-until';
  if (simulated && t > o.simulateUntil!) t = o.simulateUntil!;
  emit({ action: 'stop', reason: stoppedBy === 'simulate-until' ? `simulated clock reached ${o.simulateUntil!.toISOString()}` : `${stoppedBy}: stopped cleanly (no step was left half-done)` });
  return { actions, stoppedBy };
}
