// Threads parked in blocking calls come through a patch with their calls transparently
// restarted: no EINTR, no short sleep, no lost read.
import { afterEach, describe, expect, it } from 'vitest';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { hpAgent } from './helpers.js';

killTargetsAfterEach(afterEach);

describe('threads blocked in read() and nanosleep()', () => {
  it('finish their calls normally across a patch and a revert', async () => {
    const t = await spawnTarget(fixturePath('blocked'));
    expect(await t.request('sleep 1500')).toBe('sleeping');
    // Let both threads really block before we stop them.
    await new Promise((r) => setTimeout(r, 200));
    const applied = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
    expect(applied.code).toBe(0);
    expect(await t.request('call')).toBe('182');
    const reverted = await hpAgent(['try', '--revert', '--pid', String(t.pid), '--function', 'compute']);
    expect(reverted.code).toBe(0);
    expect(await t.request('call')).toBe('42');

    expect(await t.request('feed hello')).toMatch(/^fed/);
    const got = (await t.request('got')).split(' ');
    expect(got[0]).toBe('got');
    expect(Number(got[1])).toBe(5); // rc: all five bytes, in one read
    expect(got[2]).toBe('0'); // errno
    expect(got[3]).toBe('hello');

    const slept = (await t.request('slept', 5000)).split(' ');
    expect(slept[0]).toBe('slept');
    expect(Number(slept[1])).toBeGreaterThanOrEqual(1500); // never a short sleep
    expect(slept[2]).toBe('0'); // rc 0, not -1/EINTR
    expect(slept[3]).toBe('0');
    expect(t.alive()).toBe(true);
  });
});
