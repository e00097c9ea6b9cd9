// assess and install against real greetd services: what is listed, what each install parameter
// and reboot setting does (exact counts), and what the processes run afterwards.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnTarget, useTargets } from '../../src/harness/index.js';
import { answers, at, cleanUpdateDirs, counts, expected, feedOf, machine, servicePid, states } from './update-helpers.js';

afterEach(cleanUpdateDirs);
useTargets(afterEach);

const JAN = '2027-01-20T12:00:00Z'; // released: 2026.10 … 2026.10-hp2, 2026.10.2, 2026.11
const MAR = '2027-03-20T12:00:00Z'; // everything, 2026.11-hp2 (Updates) included

describe('assess', () => {
  it('lists only what applies, compared with what is installed and what runs, and status keeps it', async () => {
    const m = await machine();
    const feed = await feedOf();
    const r = await at(m.home, JAN)(['assess', '--feed', feed]);
    expect(r.code, r.stderr).toBe(0);
    // Not hp1 (superseded by hp2), not the cumulative updates (the machine is enrolled), not
    // 2026.11-hp1 (not released yet, and for another baseline).
    expect(r.json.availablePatches.map((p: { patchId: string }) => p.patchId)).toEqual(['2026.11', '2026.10-hp2']);
    expect(r.json).toMatchObject({ status: 'Succeeded', rebootPending: false, criticalAndSecurityPatchCount: 2, otherPatchCount: 0, startDateTime: '2027-01-20T12:00:00.000Z' });
    expect(r.json.assessmentActivityId).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.json.availablePatches[0]).toEqual({
      patchId: '2026.11', name: expect.stringContaining('2026.11'), kbId: 'KB5046002', classifications: ['Security'], rebootBehavior: 'AlwaysRequiresReboot',
      publishedDate: '2027-01-12T00:00:00.000Z', lastModifiedDateTime: r.json.lastModifiedDateTime, assessmentState: 'Available',
    });
    expect(r.json.availablePatches[1]).toMatchObject({ kbId: 'KB5046102', classifications: ['Critical'], rebootBehavior: 'NeverReboots', publishedDate: '2026-12-08T00:00:00.000Z' });

    const st = await at(m.home, JAN)(['status']);
    expect(st.json.lastAssessment).toEqual({
      status: 'Succeeded', assessmentActivityId: r.json.assessmentActivityId, startDateTime: r.json.startDateTime, lastModifiedDateTime: r.json.lastModifiedDateTime,
      criticalAndSecurityPatchCount: 2, otherPatchCount: 0, kbIds: ['KB5046002', 'KB5046102'],
    });
    const h = await at(m.home, JAN)(['history']);
    expect(h.json.entries[0]).toMatchObject({ action: 'assess', result: 'Succeeded', detail: { kbIds: ['KB5046002', 'KB5046102'] } });

    // Installed and running everywhere: listed no more.
    expect((await at(m.home, JAN)(['install', '--feed', feed, '--exclude-kbs-requiring-reboot'])).code).toBe(0);
    const after = await at(m.home, JAN)(['assess', '--feed', feed]);
    expect(after.json.availablePatches.map((p: { patchId: string }) => p.patchId)).toEqual(['2026.11']);

    // A process of the baseline started after the hotpatch runs without it: an installed KB is
    // not proof that it runs, so the level is applicable again.
    const late = await spawnTarget(path.join(m.home, 'system/2026.10/bin/greetd'), { args: [path.join(m.home, 'run/late.sock'), '1'] });
    expect(await late.request('hello bob')).toBe(expected.b1['hello bob']);
    const again = await at(m.home, JAN)(['assess', '--feed', feed]);
    expect(again.json.availablePatches.map((p: { patchId: string }) => p.patchId)).toEqual(['2026.11', '2026.10-hp2']);
  });

  it('a non-security update is listed as other; nothing not yet released is', async () => {
    const m = await machine();
    const feed = await feedOf();
    expect((await at(m.home, MAR)(['install', '--feed', feed, '--classifications-to-include', 'Security'])).code).toBe(0);
    const r = await at(m.home, MAR)(['assess', '--feed', feed]);
    expect(r.json.availablePatches.map((p: { patchId: string; classifications: string[] }) => [p.patchId, p.classifications[0]])).toEqual([['2026.11-hp2', 'Updates']]);
    expect(r.json).toMatchObject({ criticalAndSecurityPatchCount: 0, otherPatchCount: 1 });
    const early = await at(m.home, '2027-02-01T00:00:00Z')(['assess', '--feed', feed]);
    expect(early.json.availablePatches).toEqual([]);
  });
});

describe('install', () => {
  it('IfRequired: the missing baseline first with its reboot, then the latest hotpatch of the baseline that then runs', async () => {
    const m = await machine();
    const feed = await feedOf();
    const r = await at(m.home, MAR)(['install', '--feed', feed]);
    expect(r.code, r.stderr).toBe(0);
    expect(states(r)).toEqual([['2026.11', 'Installed'], ['2026.10-hp2', 'NotSelected'], ['2026.11-hp2', 'Installed']]);
    expect(counts(r)).toEqual({ installed: 2, pending: 0, failed: 0, excluded: 0, notSelected: 1 });
    expect(r.json).toMatchObject({ status: 'Succeeded', rebootStatus: 'Completed', maintenanceWindowExceeded: false, startDateTime: '2027-03-20T12:00:00.000Z' });
    expect(r.json.installationActivityId).toMatch(/^[0-9a-f-]{36}$/);
    const pid = servicePid(m.home);
    expect(pid).not.toBe(m.pid);
    expect(await answers(m.socket)).toEqual(expected['b2+hp2']);
    const st = await at(m.home, MAR)(['status']);
    expect(st.json.processes).toMatchObject([{ pid, baselineId: '2026.11', hotpatchSequence: 2, compliant: true }]);
    const h = await at(m.home, MAR)(['history']);
    expect(h.json.entries[0]).toMatchObject({ action: 'installation', result: 'Succeeded', detail: { kbIds: ['KB5046002', 'KB5046202'], rebootStatus: 'Completed', installedPatchCount: 2 } });
    expect((await at(m.home, MAR)(['install', '--feed', feed])).json.patches).toEqual([]);
  });

  it('Never: the baseline stays staged (rebootStatus Required) and the running baseline gets its latest hotpatch, live', async () => {
    const m = await machine();
    const feed = await feedOf();
    const r = await at(m.home, JAN)(['install', '--feed', feed, '--reboot-setting', 'Never']);
    expect(r.code, r.stderr).toBe(0);
    expect(states(r)).toEqual([['2026.11', 'Installed'], ['2026.10-hp2', 'Installed']]);
    expect(counts(r)).toEqual({ installed: 2, pending: 0, failed: 0, excluded: 0, notSelected: 0 });
    expect(r.json.rebootStatus).toBe('Required');
    expect(servicePid(m.home)).toBe(m.pid);
    expect(await answers(m.socket)).toEqual(expected['b1+hp2']);
    const st = await at(m.home, JAN)(['status']);
    expect(st.json).toMatchObject({ pendingBaseline: { baselineId: '2026.11' }, rebootPending: true });

    // The next install that may reboot does: onto the staged baseline, then its latest hotpatch.
    const plan = await at(m.home, MAR)(['install', '--feed', feed, '--dry-run']);
    expect(plan.json.patches.map((p: { patchId: string; installationState: string }) => [p.patchId, p.installationState])).toEqual([['2026.11-hp2', 'Installed']]);
    expect(plan.json.rebootStatus).toBe('Completed');
    const next = await at(m.home, MAR)(['install', '--feed', feed]);
    expect(next.code, next.stderr).toBe(0);
    expect(states(next)).toEqual([['2026.11-hp2', 'Installed']]);
    expect(next.json.rebootStatus).toBe('Completed');
    expect(servicePid(m.home)).not.toBe(m.pid);
    expect(await answers(m.socket)).toEqual(expected['b2+hp2']);
  });

  it('Always: reboots even for a hotpatch alone, and the reboot keeps the level', async () => {
    const m = await machine();
    const feed = await feedOf();
    const r = await at(m.home, JAN)(['install', '--feed', feed, '--reboot-setting', 'Always', '--exclude-kbs-requiring-reboot']);
    expect(r.code, r.stderr).toBe(0);
    expect(states(r)).toEqual([['2026.11', 'Excluded'], ['2026.10-hp2', 'Installed']]);
    expect(counts(r)).toEqual({ installed: 1, pending: 0, failed: 0, excluded: 1, notSelected: 0 });
    expect(r.json.rebootStatus).toBe('Completed');
    expect(servicePid(m.home)).not.toBe(m.pid);
    expect(await answers(m.socket)).toEqual(expected['b1+hp2']);
  });

  it('each filter alone and combined, with exact counts', async () => {
    const feed = await feedOf();
    const cases: { args: string[]; states: [string, string][]; counts: Record<string, number>; level: string }[] = [
      { args: ['--exclude-kbs-requiring-reboot'], states: [['2026.11', 'Excluded'], ['2026.10-hp2', 'Installed']], counts: { installed: 1, pending: 0, failed: 0, excluded: 1, notSelected: 0 }, level: 'b1+hp2' },
      { args: ['--kb-numbers-to-include', '5046102'], states: [['2026.11', 'NotSelected'], ['2026.10-hp2', 'Installed']], counts: { installed: 1, pending: 0, failed: 0, excluded: 0, notSelected: 1 }, level: 'b1+hp2' },
      { args: ['--kb-numbers-to-exclude', 'KB5046102,KB5046002'], states: [['2026.11', 'Excluded'], ['2026.10-hp2', 'Excluded']], counts: { installed: 0, pending: 0, failed: 0, excluded: 2, notSelected: 0 }, level: 'b1' },
      { args: ['--classifications-to-include', 'Critical'], states: [['2026.11', 'NotSelected'], ['2026.10-hp2', 'Installed']], counts: { installed: 1, pending: 0, failed: 0, excluded: 0, notSelected: 1 }, level: 'b1+hp2' },
      { args: ['--max-patch-publish-date', '2026-12-31T00:00:00Z'], states: [['2026.11', 'NotSelected'], ['2026.10-hp2', 'Installed']], counts: { installed: 1, pending: 0, failed: 0, excluded: 0, notSelected: 1 }, level: 'b1+hp2' },
      // Combined: Critical only, but KB5046002 included by number and then excluded (exclusion wins), Never.
      { args: ['--classifications-to-include', 'Critical', '--kb-numbers-to-include', 'KB5046002', '--kb-numbers-to-exclude', 'KB5046002', '--reboot-setting', 'Never'], states: [['2026.11', 'Excluded'], ['2026.10-hp2', 'Installed']], counts: { installed: 1, pending: 0, failed: 0, excluded: 1, notSelected: 0 }, level: 'b1+hp2' },
      // A window too short for an unmeasured reboot: the baseline stays Pending, the hotpatch fits.
      { args: ['--maximum-duration', 'PT1M'], states: [['2026.11', 'Pending'], ['2026.10-hp2', 'Installed']], counts: { installed: 1, pending: 1, failed: 0, excluded: 0, notSelected: 0 }, level: 'b1+hp2' },
      { args: ['--maximum-duration', 'PT1S'], states: [['2026.11', 'Pending'], ['2026.10-hp2', 'Pending']], counts: { installed: 0, pending: 2, failed: 0, excluded: 0, notSelected: 0 }, level: 'b1' },
    ];
    for (const c of cases) {
      const m = await machine();
      const r = await at(m.home, JAN)(['install', '--feed', feed, ...c.args]);
      expect(r.code, `${c.args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(states(r), c.args.join(' ')).toEqual(c.states);
      expect(counts(r), c.args.join(' ')).toEqual(c.counts);
      expect(r.json.maintenanceWindowExceeded, c.args.join(' ')).toBe(c.counts.pending > 0);
      expect(r.json.status, c.args.join(' ')).toBe(c.counts.pending > 0 ? 'CompletedWithWarnings' : 'Succeeded');
      expect(r.json.rebootStatus, c.args.join(' ')).toBe(c.args.includes('Never') && c.counts.installed > 1 ? 'Required' : 'NotNeeded');
      expect(servicePid(m.home), c.args.join(' ')).toBe(m.pid);
      expect(await answers(m.socket), c.args.join(' ')).toEqual(expected[c.level]);
      await cleanUpdateDirsExcept(feed);
    }
  });

  it('a window estimated from the reboots this machine measured: the baseline fits once a reboot was timed', async () => {
    const m = await machine();
    const feed = await feedOf();
    expect((await at(m.home, JAN)(['install', '--feed', feed, '--maximum-duration', 'PT1M', '--dry-run'])).json.patches.map((p: { installationState: string }) => p.installationState)).toEqual(['Pending', 'Installed']);
    const rebooted = await at(m.home, JAN)(['reboot']);
    expect(rebooted.code).toBe(0);
    expect(rebooted.json.downtimeMs).toBeLessThan(10_000);
    const plan = await at(m.home, JAN)(['install', '--feed', feed, '--maximum-duration', 'PT1M', '--dry-run']);
    expect(plan.json.patches[0]).toMatchObject({ patchId: '2026.11', installationState: 'Installed' });
    expect(plan.json.patches[0].estimatedMs).toBeLessThan(60_000);
    const r = await at(m.home, JAN)(['install', '--feed', feed, '--maximum-duration', 'PT1M']);
    expect(r.code, r.stderr).toBe(0);
    expect(states(r)).toEqual([['2026.11', 'Installed'], ['2026.10-hp2', 'NotSelected']]);
    expect(r.json).toMatchObject({ maintenanceWindowExceeded: false, rebootStatus: 'Completed', status: 'Succeeded' });
    expect(await answers(m.socket)).toEqual(expected.b2);
  });

  it('--dry-run plans the same order with estimates and changes nothing', async () => {
    const m = await machine();
    const feed = await feedOf();
    const before = fs.readFileSync(path.join(m.home, 'state.json'));
    const r = await at(m.home, MAR)(['install', '--feed', feed, '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json.dryRun).toBe(true);
    expect(r.json.patches.map((p: { patchId: string; installationState: string }) => [p.patchId, p.installationState])).toEqual([['2026.11', 'Installed'], ['2026.10-hp2', 'NotSelected'], ['2026.11-hp2', 'Installed']]);
    expect(r.json.rebootStatus).toBe('Completed');
    expect(fs.readFileSync(path.join(m.home, 'state.json')).equals(before)).toBe(true);
    expect(await answers(m.socket)).toEqual(expected.b1);
  });
});

/** Stops and removes every machine of the loop above but keeps the feed folder. */
async function cleanUpdateDirsExcept(feed: string): Promise<void> {
  const keep = path.join(path.dirname(feed), `${path.basename(feed)}-keep`);
  fs.renameSync(feed, keep);
  await cleanUpdateDirs();
  fs.renameSync(keep, feed);
}
