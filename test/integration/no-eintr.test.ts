// A stop of the whole process, or a thread borrowed for a remote call, is invisible to every
// kind of blocking call: no EINTR, no early return (see native/resume.cc). The waiters fixture
// parks one thread in each and counts both.
import { afterEach, describe, expect, it } from 'vitest';
import { applyPatch, revertFunctions } from '../../src/engine/patch.js';
import { targetGadgets } from '../../src/engine/remote.js';
import { native } from '../../src/native.js';
import { fixturePath, killTargetsAfterEach } from '../../src/harness/index.js';
import { disturbances, spawnWaiters, threadStates, WAITERS } from './helpers.js';

killTargetsAfterEach(afterEach);

const SYS_GETPID = 39;
describe('blocking calls across stops and borrowed threads', () => {
  it('see no EINTR and no early return over 100 patch/revert cycles', async () => {
    const t = await spawnWaiters();
    const spec = { pid: t.pid, patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }], mode: 'stop' as const };
    for (let i = 0; i < 100; i++) {
      await applyPatch(spec);
      await revertFunctions({ pid: t.pid, functions: ['compute'], mode: 'stop' });
    }
    expect(await t.request('call')).toBe('42');
    expect(await disturbances(t)).toBe('eintr 0 early 0');
    expect(t.alive()).toBe(true);
  });

  it('see none when each of their threads is borrowed for a remote call', async () => {
    const t = await spawnWaiters();
    const gadgets = await targetGadgets(t.pid);
    const tids = [...threadStates(t.pid).keys()].filter((tid) => tid !== t.pid);
    expect(tids).toHaveLength(WAITERS);
    for (let round = 0; round < 3; round++) {
      for (const tid of tids) {
        const r = await native.remoteSyscalls(t.pid, [{ nr: SYS_GETPID, args: [] }, { nr: SYS_GETPID, args: [] }], { gadgets, tid });
        expect(r.results).toEqual([t.pid, t.pid]);
      }
    }
    expect(await disturbances(t)).toBe('eintr 0 early 0');
    expect(await t.request('threads')).toBe(String(WAITERS + 1));
  });
});
