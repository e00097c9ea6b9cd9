/**
 * A dry run's plan as data for people and programs: what changeFunctions would map and write in
 * one process (ChangeOptions.dryRun), with addresses as "0x…" strings and bytes as hex, the form
 * every command's `--json` uses for them.
 */
import type { ChangeReport, SiteAction, SiteReport } from './patch.js';
import { hexAddr } from '../hex.js';

export interface PlannedSite {
  action: SiteAction;
  object: string;
  function: string;
  replacement?: string;
  functionAddress: string;
  form: SiteReport['form'];
  siteAddress: string;
  kind: SiteReport['kind'];
  keptEndbr64: boolean;
  target?: string;
  /** Hex of the bytes at the site now, and what the change would leave there. */
  before: string;
  after: string;
  entry?: { siteAddress: string; entryNop: string; before: string; after: string };
}

export interface ChangePlan {
  pid: number;
  dryRun: true;
  /** False when every function is already as asked: the change would write nothing. */
  wouldChange: boolean;
  /** How the sites would switch: 'zero-stop' stops no thread. */
  mode?: 'stop' | 'zero-stop';
  objects: { path: string; buildId?: string }[];
  /** Patch mappings the change would add, or re-use (`reused`: an earlier mapping of the same bytes, nothing new mapped). */
  patches: { object: string; path: string; buildId?: string; base: string; size: number; mapping: string; reused?: true }[];
  sites: PlannedSite[];
}

export function plannedSite(s: SiteReport): PlannedSite {
  return {
    action: s.action,
    object: s.object,
    function: s.function,
    ...(s.replacement !== undefined ? { replacement: s.replacement } : {}),
    functionAddress: hexAddr(s.functionAddress),
    form: s.form,
    siteAddress: hexAddr(s.siteAddress),
    kind: s.kind,
    keptEndbr64: s.keptEndbr64,
    ...(s.target !== undefined ? { target: hexAddr(s.target) } : {}),
    before: s.before,
    after: s.after,
    ...(s.entry ? { entry: { ...s.entry, siteAddress: hexAddr(s.entry.siteAddress) } } : {}),
  };
}

/** The plan a dry run of changeFunctions returned. */
export function changePlan(r: ChangeReport): ChangePlan {
  if (!r.dryRun) throw new Error('changePlan: not the report of a dry run');
  return {
    pid: r.pid,
    dryRun: true,
    wouldChange: r.changed,
    ...(r.mode ? { mode: r.mode } : {}),
    objects: r.objects,
    patches: r.patches.map((p) => ({ object: p.object, path: p.path, buildId: p.buildId, base: hexAddr(p.base), size: p.size, mapping: p.mapping, ...(p.reused ? { reused: true as const } : {}) })),
    sites: r.sites.map(plannedSite),
  };
}
