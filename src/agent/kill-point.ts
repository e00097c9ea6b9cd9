/**
 * TEST-ONLY: named points where a test can make the agent die, to prove that every step of an
 * operation is repairable (issue 11 §2).
 *
 *   HP_AGENT_TEST_KILL_AT=STEP[:N]    SIGKILL this agent process the N-th time (default 1) it
 *                                     reaches STEP, e.g. `reboot:launched:1`.
 *   HP_AGENT_TEST_STOP_AT=STEP[:N]    SIGSTOP it there instead (the test looks at the machine
 *                                     while the agent is alive and holds its lock, then SIGCONTs it).
 *
 * Nothing else reads these variables and they have no effect when unset; it is not a user setting.
 * SIGKILL (not an exception, not exit()) so that no handler, `finally` or lock release runs: the
 * agent dies exactly as it would under `kill -9` or the OOM killer.
 */

interface KillAt {
  step: string;
  nth: number;
}

function parse(value: string | undefined): KillAt | undefined {
  if (!value) return undefined;
  const m = /^(.*?)(?::(\d+))?$/.exec(value.trim());
  if (!m || !m[1]) return undefined;
  return { step: m[1], nth: m[2] ? Number(m[2]) : 1 };
}

const hooks: [KillAt | undefined, NodeJS.Signals][] = [
  [parse(process.env.HP_AGENT_TEST_KILL_AT), 'SIGKILL'],
  [parse(process.env.HP_AGENT_TEST_STOP_AT), 'SIGSTOP'],
];
const reached = new Map<string, number>();

/** Marks a step of an operation; dies (or stops) here when a test hook names it (see above). */
export function killPoint(step: string): void {
  if (!hooks.some(([at]) => at?.step === step)) return;
  const n = (reached.get(step) ?? 0) + 1;
  reached.set(step, n);
  for (const [at, signal] of hooks) if (at?.step === step && at.nth === n) process.kill(process.pid, signal);
}
