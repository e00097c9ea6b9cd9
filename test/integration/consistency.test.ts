// Function consistency: the switch happens only when no thread runs the code being replaced or
// has a return address into it on its stack. `blocked`'s sleeper thread never leaves `sleeper`
// (it waits in it for the next command), so that function is always active; `compute` runs
// only while the main thread answers `call`.
import { afterEach, describe, expect, it } from 'vitest';
import { applyPatch, inspectFunctions, revertFunctions } from '../../src/engine/patch.js';
import { HpError } from '../../src/errors.js';
import { fixturePath, killTargetsAfterEach, spawnTarget, type Target } from '../../src/harness/index.js';
import { entryBytes, fileEntryBytes, hpAgent, patchMappings } from './helpers.js';

killTargetsAfterEach(afterEach);

const SLEEPER = { patchPath: fixturePath('blocked_fix.so'), functions: [{ name: 'sleeper', replacement: 'sleeper_v2' }] };
const COMPUTE = { patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }] };

/** Every thread of `blocked` still does its job: the sleeper sleeps its full time, undisturbed. */
async function stillWorks(t: Target, answer: string): Promise<void> {
  expect(await t.request('call')).toBe(answer);
  expect(await t.request('sleep 20')).toBe('sleeping');
  expect(await t.request('slept')).toMatch(/^slept (2\d|[3-9]\d|[1-9]\d\d) 0 0$/); // never short, never EINTR; late only under load
}

describe('function consistency', () => {
  it('refuses to switch a function a thread is inside, and changes nothing', async () => {
    const t = await spawnTarget(fixturePath('blocked'));
    const err = await applyPatch({ pid: t.pid, ...SLEEPER, consistency: 'function', timeoutMs: 300 }).catch((e) => e);
    expect(err).toBeInstanceOf(HpError);
    expect(err.code).toBe('FUNCTION_ACTIVE');
    expect(err.unchanged).toBe(true);
    // The sleeper thread waits in read() called from sleeper: its return address is on its stack
    // (all threads' stacks are read at once; the finding is put down to the thread it belongs to).
    const [, tid, word] = /thread (\d+) has (0x[0-9a-f]+) on its stack/.exec(err.message) ?? [];
    expect(Number(tid)).not.toBe(t.pid);
    expect(Number(word)).toBeGreaterThan(0);
    expect((await entryBytes(t.pid, 'sleeper')).equals(fileEntryBytes(t.pid, 'sleeper'))).toBe(true);
    expect(patchMappings(t.pid)).toEqual([]);
    await stillWorks(t, '42');
  });

  it('switches the same function under entry consistency (the thread finishes the old code)', async () => {
    const t = await spawnTarget(fixturePath('blocked'));
    const r = await applyPatch({ pid: t.pid, ...SLEEPER, consistency: 'entry' });
    expect(r.sites[0].action).toBe('patch');
    expect((await inspectFunctions({ pid: t.pid, functions: ['sleeper'] }))[0].state).toBe('patched');
    await stillWorks(t, '42'); // the sleeper thread runs on in the old sleeper
    await revertFunctions({ pid: t.pid, functions: ['sleeper'] });
    expect((await entryBytes(t.pid, 'sleeper')).equals(fileEntryBytes(t.pid, 'sleeper'))).toBe(true);
  });

  it('switches a function no thread is in, and takes it back the same way', async () => {
    const t = await spawnTarget(fixturePath('blocked'));
    const r = await applyPatch({ pid: t.pid, ...COMPUTE, consistency: 'function' });
    expect(r.mode).toBe('stop');
    await stillWorks(t, '182');
    // The revert must see that no thread is in compute_v2 either (it lives in the patch mapping).
    await revertFunctions({ pid: t.pid, functions: ['compute'], consistency: 'function' });
    await stillWorks(t, '42');
    expect((await entryBytes(t.pid, 'compute')).equals(fileEntryBytes(t.pid, 'compute'))).toBe(true);
  });

  it('refuses zero-stop with function consistency', async () => {
    const t = await spawnTarget(fixturePath('zerostop'));
    const err = await applyPatch({ pid: t.pid, patchPath: fixturePath('zerostop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }], mode: 'zero-stop', consistency: 'function' }).catch((e) => e);
    expect(err).toBeInstanceOf(HpError);
    expect(err.code).toBe('NOT_HOT_PATCHABLE');
    expect((await entryBytes(t.pid, 'compute')).equals(fileEntryBytes(t.pid, 'compute'))).toBe(true);
    expect(patchMappings(t.pid)).toEqual([]);
    expect(await t.request('call')).toBe('42');
  });

  it('is offered by `hp-agent try --consistency function`, refusing with exit code 3', async () => {
    const t = await spawnTarget(fixturePath('blocked'));
    const r = await hpAgent(['try', fixturePath('blocked_fix.so'), '--pid', String(t.pid), '--function', 'sleeper=sleeper_v2', '--consistency', 'function', '--timeout', '300']);
    expect(r.code).toBe(3);
    expect(r.json?.error?.code).toBe('FUNCTION_ACTIVE');
    expect(r.json.error.unchanged).toBe(true);
    expect((await entryBytes(t.pid, 'sleeper')).equals(fileEntryBytes(t.pid, 'sleeper'))).toBe(true);
    await stillWorks(t, '42');
  });
});
