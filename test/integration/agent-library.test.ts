// The agent driven as a library, through the package's main entry ("hp-agent", as a program
// imports it), against a real daemon: pack the greeter hotpatch, apply it, read status, revert,
// read history — no command line. The machine is booted by the command line (bootMachine), so the
// daemon is not a child of this process (a process cannot patch its own children: Node reaps them).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixturesRoot, packagesDir } from '../../src/demo/fixture-packages.js';
import { answers, bootMachine, cleanUp, expectUnchanged, objectPath, servicePid, snapshot, spec } from './agent-helpers.js';

afterEach(cleanUp);

// The package's own name resolves to dist/index.js through package.json "exports".
const lib = await import('hp-agent');

describe('the agent as a library', () => {
  it('packs, applies, reports, reverts and lists the greeter hotpatch on a booted machine', async () => {
    const m = await bootMachine();
    const pid = servicePid(m);
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-lib-'));
    try {
      const h = spec.hotpatches.find((x) => x.id === '2026.10-hp1')!;
      const bin = path.join(fixturesRoot, 'bin/baselines');
      const packed = await lib.pack({
        kind: 'hotpatch',
        out: path.join(scratch, 'hp1.hpkg'),
        id: h.id,
        kb: h.kb,
        title: h.title,
        releaseDate: h.releaseDate,
        classification: h.classification,
        baselineId: h.baselineId,
        sequence: h.sequence,
        targets: h.targets.map((t) => ({ path: t.path, baselineFile: path.join(bin, 'b1', t.path), patchObject: path.join(bin, h.dir, t.patchObject), functions: t.functions })),
        privateKeyPem: fs.readFileSync(path.join(packagesDir, 'demo.key'), 'utf8'),
      });
      expect(packed.manifest.id).toBe('2026.10-hp1');

      const applied = await lib.apply({ home: m.home, package: path.join(scratch, 'hp1.hpkg') });
      expect(applied).toMatchObject({ status: 'Succeeded', rebootStatus: 'NotNeeded', hotpatchLevel: { baselineId: '2026.10', sequence: 1, packageId: '2026.10-hp1' } });
      expect(applied.patches[0]).toMatchObject({ kbId: 'KB5046101', installationState: 'Installed' });
      expect(applied.processes.map((p) => [p.pid, p.outcome])).toEqual([[pid, 'Patched']]);
      expect(await answers(m.sock, 'b1+hp1')).toEqual(spec.expected['b1+hp1']);

      const st = await lib.status({ home: m.home });
      expect(st.hotpatch).toMatchObject({ packageId: '2026.10-hp1', sequence: 1 });
      expect(st.processes).toHaveLength(1);
      expect(st.processes[0]).toMatchObject({ pid, compliant: true, hotpatchSequence: 1 });
      // The engine's inspectFunctions, with its options object, reads the same from memory.
      const [fg] = await lib.inspectFunctions({ pid, functions: ['format_greeting'], object: objectPath(m.home, 'lib/libgreet-core.so') });
      expect(fg).toMatchObject({ state: 'patched' });

      const reverted = await lib.revert({ home: m.home, package: 'KB5046101' });
      expect(reverted).toMatchObject({ status: 'Succeeded', from: { packageId: '2026.10-hp1' }, to: { baselineId: '2026.10', sequence: 0 } });
      expect(reverted.processes.map((p) => [p.pid, p.outcome])).toEqual([[pid, 'Reverted']]);
      expect(await answers(m.sock, 'b1')).toEqual(spec.expected.b1);
      expect((await lib.status({ home: m.home })).processes[0]).toMatchObject({ pid, compliant: true, hotpatchSequence: 0 });

      const hist = await lib.history({ home: m.home });
      expect(hist.entries.slice(0, 2).map((e) => [e.action, e.packageId, e.result])).toEqual([
        ['revert', '2026.10-hp1', 'Succeeded'],
        ['apply', '2026.10-hp1', 'Succeeded'],
      ]);
    } finally {
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  });

  it('refuses options that are not valid as usage errors, and changes nothing', async () => {
    const m = await bootMachine();
    const before = await snapshot(m);
    const usage = { name: 'HpError', code: 'USAGE' };
    await expect(lib.apply({ home: m.home, package: path.join(m.home, 'no-such.hpkg') })).rejects.toMatchObject(usage);
    await expect(lib.apply({ home: m.home, package: path.join(packagesDir, '2026.10-hp1.hpkg'), pids: [0] })).rejects.toMatchObject(usage);
    await expect(lib.revert({ home: m.home, package: '' })).rejects.toMatchObject(usage);
    await expect(lib.history({ home: m.home, days: -1 })).rejects.toMatchObject(usage);
    await expectUnchanged(m, before);
  });
});
