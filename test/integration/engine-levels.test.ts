// Cumulative changes in one transaction per process: re-pointing a patched function to a new
// patch (including between jump sizes), and giving back the functions a new level drops.
import { afterEach, describe, expect, it } from 'vitest';
import { changeFunctions, inspectFunctions } from '../../src/engine/patch.js';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { entryBytes, fileEntryBytes } from './helpers.js';

killTargetsAfterEach(afterEach);

const compute = { name: 'compute', replacement: 'compute_v2' };

describe('levels', () => {
  it('re-points, switches jump sizes, restores dropped functions, and is idempotent', async () => {
    const t = await spawnTarget(fixturePath('spinentry'));
    const pid = t.pid;
    const level = (packageId: string) => ({ packageId, baselineId: 'fixture', sequence: Number(packageId.slice(-1)) });

    // Level 1: compute, near (rel32).
    const l1 = await changeFunctions({ pid, label: level('lvl-1'), replace: true, changes: [{ patchPath: fixturePath('loop_fix.so'), functions: [compute] }] });
    expect(l1.sites.map((s) => [s.function, s.action, s.kind])).toEqual([['compute', 'patch', 'rel32']]);
    expect(await t.request('call')).toBe('182');

    // Level 2: compute again from a new mapping placed far away (abs64, 14 bytes over 5), and parked.
    const l2 = await changeFunctions({
      pid, label: level('lvl-2'), replace: true, placement: 'far',
      changes: [{ patchPath: fixturePath('loop_fix.so'), functions: [compute] }, { patchPath: fixturePath('spinentry_fix.so'), functions: [{ name: 'parked', replacement: 'parked_v2' }] }],
    });
    expect(l2.sites.map((s) => [s.function, s.action, s.kind])).toEqual([['compute', 'repoint', 'abs64'], ['parked', 'patch', 'abs64']]);
    expect(l2.threads).toBeGreaterThan(0);
    expect(await t.request('call')).toBe('182');
    const [c2] = await inspectFunctions(pid, ['compute']);
    expect(c2.record?.label?.packageId).toBe('lvl-2');

    // Same level again: nothing to do, nothing stopped.
    const again = await changeFunctions({
      pid, label: level('lvl-2'), replace: true,
      changes: [{ patchPath: fixturePath('loop_fix.so'), functions: [compute] }, { patchPath: fixturePath('spinentry_fix.so'), functions: [{ name: 'parked', replacement: 'parked_v2' }] }],
    });
    expect(again.changed).toBe(false);

    // Level 3: compute back near (rel32 over abs64: the rest of the 14 bytes get the original back);
    // parked is no longer part of the level and gets its original bytes.
    const l3 = await changeFunctions({ pid, label: level('lvl-3'), replace: true, changes: [{ patchPath: fixturePath('loop_fix.so'), functions: [compute], restore: ['parked'] }] });
    expect(l3.sites.map((s) => [s.function, s.action])).toEqual([['parked', 'restore'], ['compute', 'repoint']]);
    const computeNow = await entryBytes(pid, 'compute', 16);
    const computeFile = fileEntryBytes(pid, 'compute', 16);
    expect(computeNow[0]).toBe(0xe9);
    expect(computeNow.subarray(5).equals(computeFile.subarray(5))).toBe(true);
    expect((await entryBytes(pid, 'parked', 16)).equals(fileEntryBytes(pid, 'parked', 16))).toBe(true);
    expect(await t.request('call')).toBe('182');

    // Back to the plain baseline: everything original.
    const l0 = await changeFunctions({ pid, changes: [{ functions: [], restore: ['compute', 'parked'] }] });
    expect(l0.sites.map((s) => s.action)).toEqual(['restore']);
    expect((await entryBytes(pid, 'compute', 16)).equals(computeFile)).toBe(true);
    expect(await t.request('call')).toBe('42');
    expect(t.alive()).toBe(true);
  });
});
