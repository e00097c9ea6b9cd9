// The output contract, end to end: every command of the real command line runs once (most more
// than once, in the shapes they can take) against real services and real targets, and what it
// prints with --json must validate against its schema — the zod one and the JSON Schema the
// package ships (test/contract-validate.ts).
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { demoPublicKey } from '../../src/demo/fixture-packages.js';
import type { OutputCommand } from '../../src/contract/index.js';
import { expectConforms } from '../contract-validate.js';
import { agent, BASELINE, cleanUp, newHome, pkg } from './agent-helpers.js';

killTargetsAfterEach(afterEach);
afterEach(cleanUp);

describe('every command prints what its schema says', () => {
  it('agent commands, trust, keygen, pack and errors on a real machine', async () => {
    const home = newHome();
    const seen = new Set<OutputCommand>();
    /** Run a command; check its exit code and its output against `command`'s schema. */
    const run = async (command: OutputCommand, args: string[], code = 0) => {
      const r = await agent(home, args);
      expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(code);
      expectConforms(command, r.json);
      seen.add(command);
      return r.json;
    };

    const keys = path.join(home, 'author');
    const keygen = await run('keygen', ['keygen', '--out', keys]);
    await run('trust-add', ['trust', 'add', demoPublicKey(), '--name', 'demo']);
    await run('trust-add', ['trust', 'add', keygen.publicKey]);
    expect((await run('trust-list', ['trust', 'list'])).keys).toHaveLength(2);
    await run('trust-remove', ['trust', 'remove', keygen.publicKey]);

    const staged = await run('apply', ['apply', pkg(BASELINE)]);
    expect(staged.activityId).toBe(staged.installationActivityId);
    const booted = await run('boot', ['boot']);
    expect(booted.started).toHaveLength(1);
    expect((await run('boot', ['boot'])).kept).toHaveLength(1); // already booted

    // Dry runs print their plan, validated as the same command's output.
    const planned = await run('apply', ['apply', pkg('2026.10-hp1'), '--dry-run']);
    expect(planned).toMatchObject({ dryRun: true, hotpatchLevel: { baselineId: BASELINE, sequence: 1, packageId: '2026.10-hp1' } });
    expect(planned.processes[0]).toMatchObject({ outcome: 'Planned', plan: { dryRun: true, wouldChange: true } });
    expect(planned.processes[0].plan.sites[0].siteAddress).toMatch(/^0x[0-9a-f]+$/);
    expect(planned.processes[0].plan.patches[0].base).toMatch(/^0x[0-9a-f]+$/);
    const hp1 = await run('apply', ['apply', pkg('2026.10-hp1')]);
    expect(hp1.hotpatchLevel).toMatchObject({ baselineId: BASELINE, sequence: 1, packageId: '2026.10-hp1' });
    expect(hp1.processes[0].sites.length).toBeGreaterThan(0);
    await run('apply', ['apply', pkg('2026.10-hp2')]);
    const st = await run('status', ['status']);
    expect(st.processes[0].functions.length).toBeGreaterThan(0);
    expect((await run('status', ['status', '--check'])).check.healthy).toBe(true);
    const backPlan = await run('revert', ['revert', '2026.10-hp2', '--dry-run']);
    expect(backPlan).toMatchObject({ dryRun: true, from: { packageId: '2026.10-hp2', sequence: 2, baselineId: BASELINE }, to: { packageId: '2026.10-hp1', sequence: 1 } });
    expect(backPlan.from.kbId).toBeTruthy();
    const back = await run('revert', ['revert', '2026.10-hp2']);
    expect(back.to).toMatchObject({ packageId: '2026.10-hp1', sequence: 1 });
    expect((await run('revert', ['revert', '2026.10-hp1', '--dry-run'])).to).toEqual({ baselineId: BASELINE, sequence: 0 });
    const plain = await run('revert', ['revert', '2026.10-hp1']);
    expect(plain.to).toEqual({ baselineId: BASELINE, sequence: 0 });
    await run('apply', ['apply', pkg('2026.10-hp1')]);
    expect(await run('reboot', ['reboot', '--dry-run'])).toMatchObject({ dryRun: true, kind: 'reboot', fromBaselineId: BASELINE, toBaselineId: BASELINE, hotpatch: { packageId: '2026.10-hp1', sequence: 1 } });
    expect(await run('boot', ['boot', '--dry-run'])).toMatchObject({ dryRun: true, kind: 'boot', start: [] });
    const rebooted = await run('reboot', ['reboot']); // same baseline: the level is re-applied
    expect(rebooted.hotpatch).toMatchObject({ packageId: '2026.10-hp1', status: 'Succeeded' });
    expect(await run('apply', ['apply', pkg('2026.11'), '--dry-run'])).toMatchObject({ dryRun: true, rebootRequired: true, baseline: { baselineId: '2026.11', staged: false } });
    await run('apply', ['apply', pkg('2026.11')]);
    expect(await run('reboot', ['reboot', '--dry-run'])).toMatchObject({ dryRun: true, fromBaselineId: BASELINE, toBaselineId: '2026.11', hotpatchDropped: { packageId: '2026.10-hp1' } });
    expect(await run('status', ['status', '--check'], 3)).toMatchObject({ rebootPending: true, check: { healthy: false } });
    expect(await run('reboot', ['reboot'])).toMatchObject({ fromBaselineId: BASELINE, toBaselineId: '2026.11' });

    // Failures: bad usage (exit 2), a refusal (3).
    expect((await run('error', ['apply', pkg('2026.10-hp1'), '--no-such-option'], 2)).error.code).toBe('USAGE');
    expect((await run('error', ['revert', '2026.10-hp1'], 3)).error.unchanged).toBe(true);
    const hist = await run('history', ['history']);
    expect(hist.entries.some((e: { kbId?: string }) => e.kbId)).toBe(true);

    const out = path.join(home, 'svc.hpkg');
    const packed = await run('pack', ['pack', 'baseline', '--out', out, '--id', 'svc-1', '--kb', 'KB5046612', '--title', 'T', '--release-date', '2025-01-14',
      '--classification', 'Security', '--planned', '--file', `bin/service=${fixturePath('service')}:755`, '--service', 'svc=bin/service:${HP_RUN}/svc.sock,4', '--key', `${keys}.key`]);
    expect(fs.existsSync(packed.path)).toBe(true);

    expect([...seen].sort()).toEqual(['apply', 'boot', 'error', 'history', 'keygen', 'pack', 'reboot', 'revert', 'status', 'trust-add', 'trust-list', 'trust-remove']);
  }, 120_000);

  it('try and try --revert, stop-the-world and zero-stop, with addresses as 0x strings', async () => {
    const home = newHome();
    for (const [target, patch] of [['loop-pie', 'loop_fix.so'], ['zerostop', 'zerostop_fix.so']]) {
      const t = await spawnTarget(fixturePath(target));
      const plan = await agent(home, ['try', fixturePath(patch), '--pid', String(t.pid), '--function', 'compute=compute_v2', '--dry-run']);
      expect(plan.code, plan.stdout + plan.stderr).toBe(0);
      expectConforms('try', plan.json);
      expect(plan.json).toMatchObject({ dryRun: true, wouldChange: true });
      expect(plan.json.sites[0].siteAddress).toMatch(/^0x[0-9a-f]+$/);
      const applied = await agent(home, ['try', fixturePath(patch), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
      expect(applied.code, applied.stdout + applied.stderr).toBe(0);
      expectConforms('try', applied.json);
      expect(applied.json.sites[0].functionAddress).toMatch(/^0x[0-9a-f]+$/);
      expect(applied.json.patch.base).toMatch(/^0x[0-9a-f]+$/);
      if (target === 'zerostop') expect(applied.json.sites[0].entry.siteAddress).toMatch(/^0x[0-9a-f]+$/);
      const revertPlan = await agent(home, ['try', '--revert', '--pid', String(t.pid), '--function', 'compute', '--dry-run']);
      expect(revertPlan.code, revertPlan.stdout + revertPlan.stderr).toBe(0);
      expectConforms('try', revertPlan.json);
      expect(revertPlan.json.sites[0].action).toBe('restore');
      const reverted = await agent(home, ['try', '--revert', '--pid', String(t.pid), '--function', 'compute']);
      expect(reverted.code, reverted.stdout + reverted.stderr).toBe(0);
      expectConforms('try', reverted.json);
      const refused = await agent(home, ['try', '--revert', '--pid', String(t.pid), '--function', 'compute']);
      expect(refused.code).toBe(3);
      expectConforms('error', refused.json);
    }
    // Several processes, dry run: each one's plan (or its refusal), validated too.
    const a = await spawnTarget(fixturePath('loop-pie'));
    const b = await spawnTarget(fixturePath('loop-pie'));
    const many = await agent(home, ['try', fixturePath('loop_fix.so'), '--pid', String(a.pid), '--pid', String(b.pid), '--function', 'compute=compute_v2', '--dry-run']);
    expect(many.code, many.stdout + many.stderr).toBe(0);
    expectConforms('try', many.json);
    expect(many.json).toMatchObject({ dryRun: true, status: 'Succeeded' });
    expect(many.json.processes.map((p: { pid: number; ok: boolean }) => [p.pid, p.ok])).toEqual([[a.pid, true], [b.pid, true]]);
  });
});
