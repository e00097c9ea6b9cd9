// `--dry-run` of apply, revert, reboot and try: the plan comes from the same planner as the real
// change (the right processes, functions, sites and bytes — checked against the process's memory
// and against what the real change then writes), and nothing is written: the entry bytes read
// back, /proc/PID/maps, state.json, the history and the store are exactly as before.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { native } from '../../src/native.js';
import { agent, bootMachine, BASELINE, cleanUp, expectRefused, expectUnchanged, pkg, servicePid, snapshot, spec, type Machine } from './agent-helpers.js';
import { entryBytes, hpAgent, patchMappings } from './helpers.js';
import { expectConforms } from '../contract-validate.js';

afterEach(cleanUp);
killTargetsAfterEach(afterEach);

const maps = (pid: number) => fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
const hp1 = spec.hotpatches.find((h) => h.id === `${BASELINE}-hp1`)!;
const hp1Functions = hp1.targets.flatMap((t) => t.functions.map((f) => f.symbol)).sort();

/** Everything of the home a dry run must leave alone, byte for byte (the log aside). */
function homeFiles(m: Machine) {
  const list = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).sort() : []);
  return {
    state: fs.readFileSync(path.join(m.home, 'state.json'), 'utf8'),
    history: fs.readFileSync(path.join(m.home, 'history.jsonl'), 'utf8'),
    store: list(path.join(m.home, 'packages')),
    system: list(path.join(m.home, 'system')),
  };
}

/** Runs `args` as a dry run and checks that the process, its memory and the home did not change. */
async function dryRun(m: Machine, args: string[]) {
  const pid = servicePid(m);
  const before = { snap: await snapshot(m), maps: maps(pid), files: homeFiles(m) };
  const mapsBefore = maps(pid); // no request to the daemon between this read and the next
  const r = await agent(m.home, [...args, '--dry-run']);
  // The plan (or the refusal) is the command's output contract.
  expectConforms(r.code === 0 ? (args[0] as 'apply' | 'revert' | 'reboot' | 'boot') : 'error', r.json);
  expect(maps(pid)).toBe(mapsBefore);
  await expectUnchanged(m, before.snap);
  expect(homeFiles(m)).toEqual(before.files);
  return r;
}

/** Each planned site's `before` is what the process holds there now. */
async function expectBeforeBytesLive(pid: number, sites: any[]) {
  for (const s of sites) {
    const live = await native.readMemory(pid, Number(s.siteAddress), s.before.length / 2);
    expect(live.toString('hex'), s.function).toBe(s.before);
  }
}

describe('apply and revert --dry-run on a booted machine', () => {
  it('plans the hotpatch for the running service, writes nothing, and the real apply writes exactly the plan', async () => {
    const m = await bootMachine();
    const pid = servicePid(m);
    const r = await dryRun(m, ['apply', pkg(`${BASELINE}-hp1`)]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json).toMatchObject({ dryRun: true, rebootStatus: 'NotNeeded', rebootRequired: false, patches: [{ patchId: `${BASELINE}-hp1`, kbId: hp1.kb, installationState: 'Installed' }], hotpatchLevel: { baselineId: BASELINE, sequence: 1, kbId: hp1.kb } });
    expect(r.json.processes).toHaveLength(1);
    const p = r.json.processes[0];
    expect(p).toMatchObject({ pid, outcome: 'Planned', plan: { pid, dryRun: true, wouldChange: true, mode: 'stop' } });
    const sites = p.plan.sites;
    expect(sites.map((s: any) => s.function).sort()).toEqual(hp1Functions);
    for (const s of sites) {
      expect(s).toMatchObject({ action: 'patch', form: 'entry', kind: 'rel32' });
      expect(s.siteAddress).toMatch(/^0x[0-9a-f]+$/);
      expect(s.after.slice(0, 2)).toBe('e9');
    }
    await expectBeforeBytesLive(pid, sites);
    // The patch objects are named where the store would keep them (the package is not stored).
    for (const patch of p.plan.patches) expect(patch.path.startsWith(path.join(m.home, 'packages', `${BASELINE}-hp1`) + path.sep)).toBe(true);

    // The real apply makes exactly the planned change.
    const applied = await agent(m.home, ['apply', pkg(`${BASELINE}-hp1`)]);
    expect(applied.code, applied.stdout + applied.stderr).toBe(0);
    for (const s of sites) {
      const now = await native.readMemory(pid, Number(s.siteAddress), s.after.length / 2);
      expect(now.toString('hex'), s.function).toBe(s.after);
    }
    const mappedNames = [...new Set(patchMappings(pid).map((x) => x.replace(/^\/memfd:/, '').replace(/ \(deleted\)$/, '')))].sort();
    expect(mappedNames).toEqual(p.plan.patches.map((x: any) => x.mapping).sort());
  });

  it('plans the revert: every patched function back to the bytes it had before the apply, nothing written', async () => {
    const m = await bootMachine();
    const pid = servicePid(m);
    const original = Object.fromEntries(await Promise.all(hp1Functions.map(async (fn) => [fn, (await entryBytes(pid, fn, 16, hp1Object(m, fn))).toString('hex')] as const)));
    expect((await agent(m.home, ['apply', pkg(`${BASELINE}-hp1`)])).code).toBe(0);

    const r = await dryRun(m, ['revert', hp1.kb]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json).toMatchObject({ dryRun: true, from: { baselineId: BASELINE, sequence: 1, packageId: `${BASELINE}-hp1`, kbId: hp1.kb } });
    expect(r.json.to).toEqual({ baselineId: BASELINE, sequence: 0 });
    const p = r.json.processes[0];
    expect(p).toMatchObject({ pid, outcome: 'Planned' });
    expect(p.plan.patches).toEqual([]); // a revert maps nothing
    expect(p.plan.sites.map((s: any) => s.function).sort()).toEqual(hp1Functions);
    for (const s of p.plan.sites) {
      expect(s.action).toBe('restore');
      expect(original[s.function].startsWith(s.after), s.function).toBe(true);
    }
    await expectBeforeBytesLive(pid, p.plan.sites);

    // Human output names the process, the functions and the bytes.
    const human = await agent(m.home, ['revert', hp1.kb, '--dry-run'], { json: false });
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('dry run: nothing was written');
    expect(human.stdout).toContain(`PID ${pid}`);
    for (const fn of hp1Functions) expect(human.stdout).toContain(fn);
  });

  it('refuses a plan the real run would refuse, with the same code, and records nothing', async () => {
    const m = await bootMachine();
    const r = await dryRun(m, ['apply', pkg(`${BASELINE}-hp1`), '--pid', String(process.pid)]);
    expectRefused(r, 'PROCESS_NOT_RUNNING_BASELINE');
    const nothing = await dryRun(m, ['revert', hp1.kb]);
    expectRefused(nothing, 'NOTHING_TO_REVERT');
  });

  it('plans a baseline: staged, reboot required, nothing running touched', async () => {
    const m = await bootMachine();
    const r = await dryRun(m, ['apply', pkg('2026.11')]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json).toMatchObject({ dryRun: true, rebootRequired: true, rebootStatus: 'Required', baseline: { baselineId: '2026.11', staged: false, alreadyRunning: false }, processes: [] });
  });
});

describe('reboot --dry-run', () => {
  it('says which services would be stopped and started and which level re-applied; stops and starts nothing', async () => {
    const m = await bootMachine();
    const pid = servicePid(m);
    expect((await agent(m.home, ['apply', pkg(`${BASELINE}-hp1`)])).code).toBe(0);
    const r = await dryRun(m, ['reboot']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json).toMatchObject({
      dryRun: true,
      kind: 'reboot',
      fromBaselineId: BASELINE,
      toBaselineId: BASELINE,
      stop: [{ name: 'greetd', pid, running: true }],
      start: [{ name: 'greetd', baselineId: BASELINE }],
      keep: [],
      hotpatch: { baselineId: BASELINE, packageId: `${BASELINE}-hp1`, kbId: hp1.kb, sequence: 1 },
    });
    expect(servicePid(m)).toBe(pid);
  });
});

describe('try --dry-run', () => {
  it('plans the sites of a fixture target and writes nothing; the real try writes exactly the plan', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const original = await entryBytes(t.pid, 'compute');
    const mapsBefore = maps(t.pid);
    const args = ['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2'];
    const r = await hpAgent([...args, '--dry-run']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expectConforms('try', r.json);
    expect(r.json).toMatchObject({ pid: t.pid, dryRun: true, wouldChange: true, mode: 'stop', patches: [{ mapping: 'hp-agent:loop_fix.so' }] });
    expect(r.json.patches[0].base).toMatch(/^0x[0-9a-f]+$/);
    const [site] = r.json.sites;
    expect(site).toMatchObject({ action: 'patch', function: 'compute', replacement: 'compute_v2', kind: 'rel32' });
    await expectBeforeBytesLive(t.pid, r.json.sites);
    expect((await entryBytes(t.pid, 'compute')).equals(original)).toBe(true);
    expect(maps(t.pid)).toBe(mapsBefore);
    expect(patchMappings(t.pid)).toEqual([]);
    expect(await t.request('call')).toBe('42');

    const applied = await hpAgent(args);
    expect(applied.code).toBe(0);
    expect(applied.json.sites[0].after).toBe(site.after);
    expect((await native.readMemory(t.pid, Number(site.siteAddress), site.after.length / 2)).toString('hex')).toBe(site.after);

    // Planned again now: refused as the real try would refuse it.
    const again = await hpAgent([...args, '--dry-run']);
    expect(again.code).toBe(3);
    expect(again.json.error.code).toBe('FUNCTION_ALREADY_PATCHED');
    // And the revert is planned back to the original bytes, not written.
    const mapsPatched = maps(t.pid);
    const rev = await hpAgent(['try', '--revert', '--pid', String(t.pid), '--function', 'compute', '--dry-run']);
    expect(rev.code, rev.stdout + rev.stderr).toBe(0);
    expectConforms('try', rev.json);
    expect(original.toString('hex').startsWith(rev.json.sites[0].after)).toBe(true);
    expect((await native.readMemory(t.pid, Number(site.siteAddress), site.after.length / 2)).toString('hex')).toBe(site.after);
    expect(maps(t.pid)).toBe(mapsPatched);
    expect(await t.request('call')).toBe('182');
  });
});

function hp1Object(m: Machine, fn: string): string {
  const t = hp1.targets.find((x) => x.functions.some((f) => f.symbol === fn))!;
  return path.join(m.home, 'system', BASELINE, t.path);
}
