/**
 * How a dry run's plan reads for people (`--dry-run` of apply, revert, reboot, boot and try):
 * which processes, functions and sites, the bytes before and after each, the jump and the mode,
 * and what would follow. `--json` prints the plan object itself.
 */
import type { ApplyPlan, RevertPlan } from '../agent/operations.js';
import type { RebootPlan } from '../agent/reboot.js';
import type { PlannedProcessResult as ProcessResult } from '../agent/hotpatch.js';
import type { ChangePlan } from '../engine/plan.js';
import type { SiteReport } from '../engine/patch.js';
import { spacedHex, table } from './output.js';
import { hexAddr } from '../hex.js';

type SiteRow = Pick<SiteReport, 'function' | 'replacement' | 'kind' | 'keptEndbr64' | 'before' | 'after'> & {
  functionAddress: number | string;
  siteAddress: number | string;
  action?: string;
  entry?: { before: string; after: string };
};

const at = (a: number | string) => (typeof a === 'number' ? hexAddr(a) : a);

/** One row per site: function, addresses, jump, bytes before and after (the entry NOP's too, for a padding site). */
export function sitesTable(sites: SiteRow[], withAction = false): string {
  return table(
    [...(withAction ? ['ACTION'] : []), 'FUNCTION', 'ADDRESS', 'SITE', 'JUMP', 'ENDBR64', 'BEFORE', 'AFTER'],
    sites.map((s) => [
      ...(withAction ? [s.action ?? '-'] : []),
      s.replacement && s.replacement !== s.function ? `${s.function} → ${s.replacement}` : s.function,
      at(s.functionAddress),
      at(s.siteAddress),
      s.kind,
      s.keptEndbr64 ? 'kept' : '-',
      spacedHex(s.before) + (s.entry ? ` | entry ${spacedHex(s.entry.before)}` : ''),
      spacedHex(s.after) + (s.entry ? ` | entry ${spacedHex(s.entry.after)}` : ''),
    ]),
  );
}

const DRY = 'dry run: nothing was written';

function modeText(mode: ChangePlan['mode']): string {
  return mode === 'zero-stop' ? 'zero-stop (no thread would be stopped)' : 'stop (every thread stopped for the writes)';
}

/** One process's plan: the patch it would map (or re-use) and its sites. */
export function changePlanHuman(p: ChangePlan, head?: string): string {
  if (!p.wouldChange) return `${head ?? `PID ${p.pid}`}: already as asked, nothing would change`;
  const lines = [`${head ?? `PID ${p.pid}`}: mode ${modeText(p.mode)}`];
  for (const m of p.patches) lines.push(`  ${m.reused ? 're-use' : 'map'} ${m.path} at ${m.base} (${m.size} bytes, ${m.mapping}) for ${m.object}`);
  lines.push(sitesTable(p.sites, true));
  return lines.join('\n');
}

function processesHuman(ps: ProcessResult[]): string[] {
  if (ps.length === 0) return ['no running process maps the patched files: no process would change'];
  return ps.map((p) => {
    const head = `PID ${p.pid} (${p.comm}) ${p.outcome}`;
    if (p.plan) return changePlanHuman(p.plan, head);
    return `${head}${p.reason ? `: ${p.reason}` : ''}`;
  });
}

function operationNote(p: { interruptedOperation?: { kind: string; startedAt: string }; runningOperation?: { kind: string; pid: number } }): string[] {
  if (p.runningOperation) return [`note: an agent (PID ${p.runningOperation.pid}) is running "${p.runningOperation.kind}" now; this plan is of the machine as it is at this moment`];
  if (p.interruptedOperation) return [`note: the real run would first finish the interrupted "${p.interruptedOperation.kind}" (started ${p.interruptedOperation.startedAt}); this plan is of the machine as it is now`];
  return [];
}

export function applyPlanHuman(p: ApplyPlan): string {
  const e = p.patches[0];
  const lines = [`${DRY}. apply ${e.kbId} ${e.patchId} (${e.rebootBehavior}) would leave it ${e.installationState}; rebootStatus ${p.rebootStatus}`];
  if (p.baseline) {
    const b = p.baseline;
    lines.push(b.alreadyRunning
      ? `baseline ${b.baselineId} already runs: nothing would change`
      : `baseline ${b.baselineId} would be ${b.staged ? 'made the pending baseline (its files are on disk already)' : 'staged'}; nothing running would change; reboot required ("hp-agent reboot" starts it)`);
  }
  if (p.hotpatchLevel) {
    const h = p.hotpatchLevel;
    lines.push(`hotpatch level ${h.baselineId} #${h.sequence} (${h.kbId} ${h.packageId})${h.from ? `, from #${h.from.sequence} (${h.from.kbId} ${h.from.packageId})` : ''}; no reboot`);
    lines.push(...processesHuman(p.processes));
  }
  lines.push(...operationNote(p));
  return lines.join('\n');
}

export function revertPlanHuman(p: RevertPlan): string {
  const to = 'packageId' in p.to ? `${p.to.kbId} ${p.to.packageId} (#${p.to.sequence})` : `plain baseline ${p.to.baselineId}`;
  return [`${DRY}. revert ${p.from.kbId} ${p.from.packageId} → ${to}`, ...processesHuman(p.processes), ...operationNote(p)].join('\n');
}

export function rebootPlanHuman(p: RebootPlan & Parameters<typeof operationNote>[0]): string {
  const lines = [`${DRY}. ${p.finishes ? `would finish the ${p.kind} an interrupted agent began at ${p.finishes.startedAt}` : p.kind}: baseline ${p.fromBaselineId ?? '(none)'} → ${p.toBaselineId ?? '(none)'}; rebootStatus would be ${p.rebootStatus}`];
  const list = (xs: { name: string; pid?: number }[]) => (xs.length ? xs.map((x) => (x.pid ? `${x.name} (PID ${x.pid})` : x.name)).join(', ') : 'none');
  lines.push(`would stop: ${p.stop.length ? p.stop.map((x) => `${x.name} (PID ${x.pid}${x.running ? '' : ', already gone'}${x.how ? `, by its ${x.how}` : ''}${x.why ? `: ${x.why}` : ''})`).join(', ') : 'none'}`);
  lines.push(`would start: ${list(p.start)}${p.start.some((x) => x.restart) ? ` (externally managed: ${p.start.filter((x) => x.restart).map((x) => `${x.name} by "${x.restart!.join(' ')}"`).join(', ')})` : ''}`);
  if (p.keep.length) lines.push(`would keep: ${p.keep.map((k) => `${k.name} (PID ${k.pid}, ${k.how})`).join(', ')}`);
  lines.push(p.hotpatch ? `would re-apply hotpatch level #${p.hotpatch.sequence} (${p.hotpatch.packageId}, ${p.hotpatch.kbId})` : 'no hotpatch level to re-apply');
  if (p.hotpatchDropped) lines.push(`hotpatch level #${p.hotpatchDropped.sequence} (${p.hotpatchDropped.packageId}) is for the old baseline and would be left behind`);
  lines.push(...operationNote(p));
  return lines.join('\n');
}
