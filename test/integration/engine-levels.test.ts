// Cumulative changes in one transaction per process: re-pointing a patched function to a new
// patch (including between jump sizes), and giving back the functions a new level drops.
import { afterEach, describe, expect, it } from 'vitest';
import { changeFunctions, inspectFunctions } from '../../src/engine/patch.js';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { native } from '../../src/native.js';
import { sha256Hex } from '../../src/package/archive.js';
import { findObject, symbolAddress } from '../../src/proc/index.js';
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
    const [c2] = await inspectFunctions({ pid, functions: ['compute'] });
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

describe('the original bytes a level was built for', () => {
  const level = (packageId: string) => ({ packageId, baselineId: 'fixture', sequence: Number(packageId.slice(-1)) });
  /** What a hotpatch manifest says of a function: the size and SHA-256 of its bytes in the object file. */
  const originalOf = (pid: number, name: string) => {
    const obj = findObject(pid);
    const sym = symbolAddress(obj, name);
    return { size: sym.size, sha256: sha256Hex(obj.elf.readVirtual(sym.address - obj.bias, sym.size)) };
  };
  /** The function and the 5 bytes before it (a hot-patchable entry's padding), as the process has them. */
  const around = async (pid: number, name: string) => {
    const sym = symbolAddress(findObject(pid), name);
    return native.readMemory(pid, sym.address - 5, sym.size + 5);
  };

  for (const [fixture, patch, form] of [
    ['spinentry', 'loop_fix.so', 'entry'],
    ['zerostop', 'zerostop_fix.so', 'padding'],
  ] as const) {
    it(`are checked in the process, on the plain function and under an earlier level's jump (${form} form)`, async () => {
      const t = await spawnTarget(fixturePath(fixture));
      const pid = t.pid;
      const original = originalOf(pid, 'compute');
      const change = (id: string, o: { size: number; sha256: string }) =>
        changeFunctions({ pid, label: level(id), replace: true, changes: [{ patchPath: fixturePath(patch), functions: [{ ...compute, original: o }] }] });

      const l1 = await change('lvl-1', original);
      expect(l1.sites[0]).toMatchObject({ action: 'patch', form });
      // The entry now holds level 1's jump: its record's original bytes stand in for it.
      const l2 = await change('lvl-2', original);
      expect(l2.sites[0]).toMatchObject({ action: 'repoint', form });
      expect(await t.request('call')).toBe('182');

      // A package built for other bytes, or for a function of another size: refused, nothing written.
      const before = await around(pid, 'compute');
      const otherHash = { size: original.size, sha256: (original.sha256[0] === '0' ? '1' : '0') + original.sha256.slice(1) };
      await expect(change('lvl-3', otherHash)).rejects.toMatchObject({ code: 'ORIGINAL_BYTES_MISMATCH', unchanged: true, details: { function: 'compute', expected: otherHash.sha256, actual: original.sha256 } });
      await expect(change('lvl-3', { ...original, size: original.size + 1 })).rejects.toMatchObject({ code: 'FUNCTION_SIZE_MISMATCH', unchanged: true });
      expect((await around(pid, 'compute')).equals(before)).toBe(true);
      expect((await inspectFunctions({ pid, functions: ['compute'] }))[0].record?.label?.packageId).toBe('lvl-2');
      expect(await t.request('call')).toBe('182');
      expect(t.alive()).toBe(true);
    });
  }

  it('a body changed in memory behind an original-looking entry is refused', async () => {
    const t = await spawnTarget(fixturePath('spinentry'));
    const pid = t.pid;
    // main() never runs again: a byte of it changed past the entry harms nothing.
    const main = symbolAddress(findObject(pid), 'main');
    expect(main.size).toBeGreaterThan(40);
    const original = originalOf(pid, 'main');
    await native.writeMemory(pid, main.address + 40, Buffer.from([(await native.readMemory(pid, main.address + 40, 1))[0] ^ 0xff]));
    const before = await around(pid, 'main');
    expect((await inspectFunctions({ pid, functions: ['main'] }))[0].state).toBe('original');
    await expect(changeFunctions({ pid, changes: [{ patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'main', replacement: 'compute_v2', original }] }] })).rejects.toMatchObject({
      code: 'ORIGINAL_BYTES_MISMATCH',
      unchanged: true,
    });
    expect((await around(pid, 'main')).equals(before)).toBe(true);
    expect(await t.request('call')).toBe('42');
  });
});
