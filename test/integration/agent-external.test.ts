// A service that people already run: greetd installed in a folder of its own (not the agent's
// system/), started by the test (not by the agent, which is never its parent). A baseline that
// describes those files as installed (by path and build-id, not shipped) and the service as
// externally managed lets a signed hotpatch be applied to it, shown in status, reverted, and
// recorded in the history; a greetd of another build is left alone.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { demoPublicKey, fixturesRoot } from '../../src/demo/fixture-packages.js';
import { spawnTarget, tempSocketPath, useTargets } from '../../src/harness/index.js';
import { ElfFile } from '../../src/elf/index.js';
import { packBaseline, packHotpatch } from '../../src/package/index.js';
import { agent, answers, cleanUp, expected, newHome, spec } from './agent-helpers.js';
import { patchMappings as patchMappingsOf } from './helpers.js';
import { expectConforms } from '../contract-validate.js';

useTargets(afterEach);
afterEach(cleanUp);

const bin = path.join(fixturesRoot, 'bin/baselines');
const demoKey = () => fs.readFileSync(path.join(path.dirname(demoPublicKey()), 'demo.key'), 'utf8');
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A copy of a greeter build (bin/greetd, lib/libgreet-core.so) in a temporary folder, as a package manager would install it. */
/**
 * Processes are found by the build-id of what they map, whatever the path: other test files run
 * greetd of the same build at the same time, so each copy here gets a build-id of its own (the
 * code is the same; the hotpatch is packed against these copies).
 */
function giveOwnBuildId(file: string): void {
  const bytes = fs.readFileSync(file);
  const id = ElfFile.fromFile(file).buildId!;
  const at = bytes.indexOf(Buffer.from(id, 'hex'));
  expect(at).toBeGreaterThan(0);
  crypto.randomBytes(id.length / 2).copy(bytes, at);
  fs.writeFileSync(file, bytes);
}

function install(build: 'b1' | 'b2'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `hpx-${build}-`));
  dirs.push(dir);
  for (const rel of ['bin/greetd', 'lib/libgreet-core.so']) {
    fs.mkdirSync(path.join(dir, path.dirname(rel)), { recursive: true });
    fs.copyFileSync(path.join(bin, build, rel), path.join(dir, rel));
    fs.chmodSync(path.join(dir, rel), 0o755);
    giveOwnBuildId(path.join(dir, rel));
  }
  return dir;
}

async function startGreetd(dir: string) {
  const sock = tempSocketPath('hpx');
  const t = await spawnTarget(path.join(dir, 'bin/greetd'), { args: [sock, '4'] });
  return { t, sock };
}

describe('a baseline describing a service people already run', () => {
  it('applies, reports, and reverts a signed hotpatch on greetd started outside the agent; leaves another build alone', async () => {
    const dir = install('b1');
    const svc = await startGreetd(dir);
    expect(await answers(svc.sock, 'b1')).toEqual(expected.b1);
    // The same product at another build, run from another folder: never touched.
    const otherDir = install('b2');
    const other = await startGreetd(otherDir);
    const otherMappings = patchMappingsOf(other.t.pid);

    const home = newHome();
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hpx-pkg-'));
    dirs.push(work);
    const privateKeyPem = demoKey();
    const base = spec.baselines.find((b) => b.id === '2026.10')!;
    const baselineId = 'ext-2026.10';
    const baselinePkg = await packBaseline({
      out: path.join(work, 'base.hpkg'), id: baselineId, kb: base.kb, title: 'greeter 2026.10 as installed', releaseDate: base.releaseDate, classification: base.classification, planned: true, privateKeyPem,
      files: base.files.map((f) => ({ path: f.path, installedAt: path.join(dir, f.path) })),
      services: [{ name: 'greetd', file: 'bin/greetd', managedBy: 'external', restart: ['true'] }],
    });
    expect(baselinePkg.manifest.payload).toEqual([]);
    expect(baselinePkg.manifest.files.every((f) => f.external === true)).toBe(true);

    const hp = spec.hotpatches.find((h) => h.id === '2026.10-hp1')!;
    const hotpatch = await packHotpatch({
      out: path.join(work, 'hp1.hpkg'), id: `${baselineId}-hp1`, kb: hp.kb, title: hp.title, releaseDate: hp.releaseDate, classification: hp.classification, baselineId, sequence: 1, privateKeyPem,
      targets: hp.targets.map((t) => ({ path: t.path, baselineFile: path.join(dir, t.path), patchObject: path.join(bin, hp.dir, t.patchObject), functions: t.functions })),
    });

    expect((await agent(home, ['trust', 'add', demoPublicKey()])).code).toBe(0);
    const installed = await agent(home, ['apply', baselinePkg.path]);
    expect(installed.code, installed.stdout + installed.stderr).toBe(0);
    expect(fs.existsSync(path.join(home, 'system', baselineId, 'bin/greetd')), 'an installed file is not copied').toBe(false);
    const boot = await agent(home, ['boot']);
    expect(boot.code, boot.stdout + boot.stderr).toBe(0);
    // Never started by the agent: the running one is found and kept.
    expect(boot.json.started).toEqual([]);
    expect(boot.json.kept).toEqual([{ name: 'greetd', pid: svc.t.pid, how: 'running' }]);

    // Dry runs: a boot keeps it; a reboot would run its restart command, never signal it.
    const bootPlan = await agent(home, ['boot', '--dry-run']);
    expect(bootPlan.code, bootPlan.stdout + bootPlan.stderr).toBe(0);
    expectConforms('boot', bootPlan.json);
    expect(bootPlan.json).toMatchObject({ dryRun: true, stop: [], start: [], keep: [{ name: 'greetd', pid: svc.t.pid, how: 'running' }] });
    const rebootPlan = await agent(home, ['reboot', '--dry-run']);
    expect(rebootPlan.code, rebootPlan.stdout + rebootPlan.stderr).toBe(0);
    expectConforms('reboot', rebootPlan.json);
    expect(rebootPlan.json).toMatchObject({ dryRun: true, stop: [{ name: 'greetd', pid: svc.t.pid, running: true, how: 'restart command: true' }], start: [{ name: 'greetd', baselineId, restart: ['true'] }], keep: [] });
    expect(svc.t.alive()).toBe(true);

    // The other build is refused by name, and nothing of it changes.
    const wrong = await agent(home, ['apply', hotpatch.path, '--pid', String(other.t.pid)]);
    expect(wrong.code, wrong.stdout).toBe(3);
    expect(wrong.json.error.code).toBe('PROCESS_NOT_RUNNING_BASELINE');

    // The plan names the installed files, where the process mapped them; nothing is written.
    const homeBefore = ['state.json', 'history.jsonl'].map((f) => fs.readFileSync(path.join(home, f), 'utf8'));
    const plan = await agent(home, ['apply', hotpatch.path, '--dry-run']);
    expect(plan.code, plan.stdout + plan.stderr).toBe(0);
    expectConforms('apply', plan.json);
    expect(plan.json.processes.map((x: any) => [x.pid, x.outcome])).toEqual([[svc.t.pid, 'Planned']]);
    expect(plan.json.processes[0].sites.map((x: any) => x.object).sort()).toEqual(['bin/greetd', 'lib/libgreet-core.so']);
    expect(plan.json.processes[0].plan.objects.map((o: any) => o.path).sort()).toEqual([path.join(dir, 'bin/greetd'), path.join(dir, 'lib/libgreet-core.so')]);
    expect(await answers(svc.sock, 'b1')).toEqual(expected.b1);
    expect(['state.json', 'history.jsonl'].map((f) => fs.readFileSync(path.join(home, f), 'utf8'))).toEqual(homeBefore);

    const applied = await agent(home, ['apply', hotpatch.path]);
    expect(applied.code, applied.stdout + applied.stderr).toBe(0);
    expect(applied.json.processes.map((p: any) => [p.pid, p.outcome])).toEqual([[svc.t.pid, 'Patched']]);
    expect(applied.json.processes[0].sites.map((s: any) => s.object).sort()).toEqual(['bin/greetd', 'lib/libgreet-core.so']);
    expect(svc.t.alive()).toBe(true);
    expect(await answers(svc.sock, 'b1+hp1')).toEqual(expected['b1+hp1']);
    expect(await answers(other.sock, 'b2')).toEqual(expected.b2);
    expect(patchMappingsOf(other.t.pid)).toEqual(otherMappings);

    const st = await agent(home, ['status', '--check']);
    expect(st.code, st.stdout).toBe(0);
    expect(st.json.processes).toHaveLength(1);
    const p = st.json.processes[0];
    expect(p).toMatchObject({ pid: svc.t.pid, baselineId, hotpatchSequence: 1, compliant: true });
    expect(p.functions.map((f: any) => [f.object, f.function, f.state, f.packageId]).sort()).toEqual([
      ['bin/greetd', 'banner', 'patched', hotpatch.manifest.id],
      ['lib/libgreet-core.so', 'format_greeting', 'patched', hotpatch.manifest.id],
    ]);
    expect(p.files.map((f: any) => f.path).sort()).toEqual([path.join(dir, 'bin/greetd'), path.join(dir, 'lib/libgreet-core.so')]);

    const reverted = await agent(home, ['revert', hotpatch.manifest.kb]);
    expect(reverted.code, reverted.stdout + reverted.stderr).toBe(0);
    expect(reverted.json.processes.map((x: any) => [x.pid, x.outcome])).toEqual([[svc.t.pid, 'Reverted']]);
    expect(await answers(svc.sock, 'b1')).toEqual(expected.b1);
    const after = await agent(home, ['status']);
    expect(after.json.processes[0]).toMatchObject({ pid: svc.t.pid, hotpatchSequence: 0, compliant: true });

    const h = await agent(home, ['history']);
    const rows = (h.json.entries as any[]).map((e) => [e.action, e.result, e.packageId, e.detail?.processes?.map((x: any) => x.pid)]).reverse();
    expect(rows.filter((r) => r[0] === 'apply' || r[0] === 'revert')).toEqual([
      ['apply', 'Succeeded', hotpatch.manifest.id, [svc.t.pid]],
      ['revert', 'Succeeded', hotpatch.manifest.id, [svc.t.pid]],
    ]);
  });

  it('refuses a baseline whose installed file is not the one described, and writes nothing', async () => {
    const dir = install('b1');
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hpx-pkg-'));
    dirs.push(work);
    const pkg = await packBaseline({
      out: path.join(work, 'base.hpkg'), id: 'ext-x', kb: 'KB5046001', title: 't', releaseDate: '2026-10-13', classification: 'Security', planned: true, privateKeyPem: demoKey(),
      files: [{ path: 'bin/greetd', installedAt: path.join(dir, 'bin/greetd') }], services: [],
    });
    // The package manager updated the file since.
    fs.copyFileSync(path.join(bin, 'b2/bin/greetd'), path.join(dir, 'bin/greetd'));
    const home = newHome();
    expect((await agent(home, ['trust', 'add', demoPublicKey()])).code).toBe(0);
    // A dry run refuses it as the apply does.
    const planned = await agent(home, ['apply', pkg.path, '--dry-run']);
    expect(planned.code, planned.stdout).toBe(3);
    expect(planned.json.error.code).toBe('BASELINE_FILE_MISMATCH');
    const r = await agent(home, ['apply', pkg.path]);
    expect(r.code, r.stdout).toBe(3);
    expect(r.json.error.code).toBe('BASELINE_FILE_MISMATCH');
    expect(fs.existsSync(path.join(home, 'system', 'ext-x'))).toBe(false);
  });

  it('records try and try --revert in the history of an agent home', async () => {
    const dir = install('b1');
    const svc = await startGreetd(dir);
    const home = newHome();
    expect((await agent(home, ['trust', 'add', demoPublicKey()])).code).toBe(0);
    const fix = path.join(bin, 'b1-hp1/greetd_fix.so');
    const tried = await agent(home, ['try', fix, '--pid', String(svc.t.pid), '--function', 'banner=banner_v2']);
    expect(tried.code, tried.stdout + tried.stderr).toBe(0);
    const back = await agent(home, ['try', '--revert', '--pid', String(svc.t.pid), '--function', 'banner']);
    expect(back.code, back.stdout + back.stderr).toBe(0);
    const h = await agent(home, ['history']);
    const rows = (h.json.entries as any[]).reverse().filter((e) => e.action.startsWith('try'));
    expect(rows.map((e) => [e.action, e.result, e.detail.pid, e.detail.functions])).toEqual([
      ['try', 'Succeeded', svc.t.pid, ['banner=banner_v2']],
      ['try-revert', 'Succeeded', svc.t.pid, ['banner']],
    ]);
  });
});
