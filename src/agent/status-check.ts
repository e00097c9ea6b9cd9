/**
 * `hp-agent status --check`: is the machine as it should be? For monitoring and CI, which read
 * an exit code: every reason it is not, from the same report `status` prints (read from the
 * processes' memory), so the check and the table never disagree.
 */
import type { StatusReport } from './status.js';

/** Why the machine is not healthy; empty when it is. */
export function statusProblems(r: StatusReport): string[] {
  const out: string[] = [];
  for (const s of r.services.filter((x) => !x.alive)) out.push(`service ${s.name} (PID ${s.pid}, baseline ${s.baselineId}) is not running`);
  for (const p of r.processes.filter((x) => !x.compliant)) {
    out.push(`process ${p.pid} (${p.comm}) is not compliant: ${p.reasons.join('; ') || 'no reason recorded'}`);
  }
  if (r.rebootPending) out.push(`a reboot is pending: ${r.rebootPendingReasons.join('; ')}`);
  if (r.interruptedOperation) out.push(`an agent was interrupted during "${r.interruptedOperation.kind}" (started ${r.interruptedOperation.startedAt}): the next apply, revert, reboot or boot finishes it`);
  return out;
}
