/**
 * TEST-ONLY: named points where a test can make the agent die, to prove that every step of an
 * operation is repairable (issue 11 §2).
 *
 *   HP_AGENT_TEST_KILL_AT=STEP[:N]    SIGKILL this agent process the N-th time (default 1) it
 *                                     reaches STEP, e.g. `reboot:launched:1`.
 *
 * Nothing else reads this variable and it has no effect when unset; it is not a user setting.
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

const target = parse(process.env.HP_AGENT_TEST_KILL_AT);
const reached = new Map<string, number>();

/** Marks a step of an operation; dies here when the test hook names it (see above). */
export function killPoint(step: string): void {
  if (!target || target.step !== step) return;
  const n = (reached.get(step) ?? 0) + 1;
  reached.set(step, n);
  if (n === target.nth) process.kill(process.pid, 'SIGKILL');
}
