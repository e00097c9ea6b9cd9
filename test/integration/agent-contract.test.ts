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

    const hp1 = await run('apply', ['apply', pkg('2026.10-hp1')]);
    expect(hp1.hotpatchLevel).toMatchObject({ baselineId: BASELINE, sequence: 1, packageId: '2026.10-hp1' });
    expect(hp1.processes[0].sites.length).toBeGreaterThan(0);
    await run('apply', ['apply', pkg('2026.10-hp2')]);
    const st = await run('status', ['status']);
    expect(st.processes[0].functions.length).toBeGreaterThan(0);
    expect((await run('status', ['status', '--check'])).check.healthy).toBe(true);
    const back = await run('revert', ['revert', '2026.10-hp2']);
    expect(back.to).toMatchObject({ packageId: '2026.10-hp1', sequence: 1 });
    const plain = await run('revert', ['revert', '2026.10-hp1']);
    expect(plain.to).toEqual({ baselineId: BASELINE, sequence: 0 });
    await run('apply', ['apply', pkg('2026.10-hp1')]);
    const rebooted = await run('reboot', ['reboot']); // same baseline: the level is re-applied
    expect(rebooted.hotpatch).toMatchObject({ packageId: '2026.10-hp1', status: 'Succeeded' });
    await run('apply', ['apply', pkg('2026.11')]);
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
      const applied = await agent(home, ['try', fixturePath(patch), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
      expect(applied.code, applied.stdout + applied.stderr).toBe(0);
      expectConforms('try', applied.json);
      expect(applied.json.sites[0].functionAddress).toMatch(/^0x[0-9a-f]+$/);
      expect(applied.json.patch.base).toMatch(/^0x[0-9a-f]+$/);
      if (target === 'zerostop') expect(applied.json.sites[0].entry.siteAddress).toMatch(/^0x[0-9a-f]+$/);
      const reverted = await agent(home, ['try', '--revert', '--pid', String(t.pid), '--function', 'compute']);
      expect(reverted.code, reverted.stdout + reverted.stderr).toBe(0);
      expectConforms('try', reverted.json);
      const refused = await agent(home, ['try', '--revert', '--pid', String(t.pid), '--function', 'compute']);
      expect(refused.code).toBe(3);
      expectConforms('error', refused.json);
    }
  });
});
