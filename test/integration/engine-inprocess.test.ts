// The engine used as a library, in this process (the targets are grandchildren through the
// harness's launcher; our own child is refused): defaults work, and waiting on a target never
// blocks the event loop.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { applyPatch, changeFunctions, inspectFunctions, revertFunctions } from '../../src/engine/patch.js';
import { readMaps, readProcStat } from '../../src/proc/index.js';
import { HpError } from '../../src/errors.js';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { entryBytes, fileEntryBytes, patchMappings } from './helpers.js';

killTargetsAfterEach(afterEach);


/** The scheduling policy (0 = SCHED_OTHER, 5 = SCHED_IDLE) of each of our threads. */
function ownThreadPolicies(): number[] {
  return fs.readdirSync('/proc/self/task').flatMap((tid) => {
    const stat = readProcStat(process.pid, Number(tid));
    return stat ? [stat.policy] : []; // undefined: the thread ended
  });
}

/** The CPUs each of our threads may run on (Cpus_allowed_list), as the kernel prints them. */
function ownThreadCpus(): string[] {
  return fs.readdirSync('/proc/self/task').flatMap((tid) => {
    try {
      return [/^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))![1]];
    } catch {
      return []; // the thread ended
    }
  });
}

describe('the engine in-process', () => {
  it('applies, inspects and reverts with default options, repeatedly', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    for (let i = 0; i < 5; i++) {
      const r = await applyPatch({ pid: t.pid, patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }] });
      expect(r.sites[0].kind).toBe('rel32');
      expect(await t.request('call')).toBe('182');
      const [state] = await inspectFunctions({ pid: t.pid, functions: ['compute'] });
      expect(state.state).toBe('patched');
      expect(state.record?.replacement).toBe('compute_v2');
      await revertFunctions({ pid: t.pid, functions: ['compute'] });
      expect(await t.request('call')).toBe('42');
      expect((await inspectFunctions({ pid: t.pid, functions: ['compute'] }))[0].state).toBe('original');
    }
    expect((await entryBytes(t.pid, 'compute')).equals(fileEntryBytes(t.pid, 'compute'))).toBe(true);
  });

  it('applied again after a revert, points back at the mapping it made the first time', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const spec = { pid: t.pid, patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }] };
    const first = await applyPatch(spec);
    expect(first.patch.reused).toBeUndefined();
    const mappings = patchMappings(t.pid);
    for (let i = 0; i < 3; i++) {
      await revertFunctions({ pid: t.pid, functions: ['compute'] });
      expect(await t.request('call')).toBe('42');
      const again = await applyPatch(spec);
      expect(again.patch).toMatchObject({ base: first.patch.base, mapping: first.patch.mapping, reused: true });
      expect(again.sites[0].target).toBe(first.sites[0].target);
      expect(await t.request('call')).toBe('182');
      expect(patchMappings(t.pid)).toEqual(mappings); // no mapping added
    }
    // Another patch of the same function is new bytes: mapped anew.
    await revertFunctions({ pid: t.pid, functions: ['compute'] });
    const other = await applyPatch({ ...spec, patchPath: fixturePath('endbr_fix.so') });
    expect(other.patch.reused).toBeUndefined();
    expect(other.patch.base).not.toBe(first.patch.base);
    expect(await t.request('call')).toBe('182');
  });

  it('given maps that are out of date, places the patch again when the kernel refuses the first place', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const stale = readMaps(t.pid);
    const first = await applyPatch({ pid: t.pid, patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }] });
    await revertFunctions({ pid: t.pid, functions: ['compute'] });
    // The first patch stays mapped; the stale maps do not show it, so the planner picks the same
    // place for another patch of the same size, MAP_FIXED_NOREPLACE refuses it, and the change is
    // planned again from fresh maps. (Another patch: the same one would be pointed at again.)
    const again = await changeFunctions({ pid: t.pid, maps: stale, changes: [{ patchPath: fixturePath('endbr_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }] }] });
    expect(again.changed).toBe(true);
    expect(again.patches[0].base).not.toBe(first.patch.base);
    expect(await t.request('call')).toBe('182');
    expect(t.alive()).toBe(true);
  });

  it('maps a patch with its file\'s protections, the RELRO pages read-only and its data writable', async () => {
    // spinentry_fix.so: R | R E | R | RW, where the RW segment's first page holds only RELRO
    // (.dynamic, .got: relocated before mapping, never written again) and its second page .bss.
    const t = await spawnTarget(fixturePath('spinentry'));
    const r = await applyPatch({ pid: t.pid, patchPath: fixturePath('spinentry_fix.so'), functions: [{ name: 'parked', replacement: 'parked_v2' }] });
    const base = r.patch.base;
    const areas = readMaps(t.pid).filter((m) => m.start >= base && m.end <= base + r.patch.size);
    const pages = (perms: string) => areas.filter((m) => m.perms === perms).map((m) => [m.start - base, m.end - base]);
    expect(pages('r-xs')).toEqual([[0x1000, 0x2000]]);
    expect(pages('rw-s')).toEqual([[0x4000, 0x5000]]);
    expect(areas.find((m) => m.start <= base + 0x3000 && base + 0x3000 < m.end)?.perms).toBe('r--s');
    // The patched function runs (its thread leaves the replacement at once).
    expect(await t.request('park')).toBe('parked');
    for (let i = 0; i < 100 && (await t.request('escaped')) !== '1'; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(await t.request('escaped')).toBe('1');
    expect(t.alive()).toBe(true);
  });

  it('keeps the event loop running while the core waits and retries', async () => {
    const t = await spawnTarget(fixturePath('spinentry'));
    expect(await t.request('enter')).toBe('entered');
    const cpusBefore = [...new Set(ownThreadCpus())];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const started = performance.now();
    const err = await applyPatch({ pid: t.pid, patchPath: fixturePath('spinentry_fix.so'), functions: [{ name: 'stuck', replacement: 'stuck_v2' }], timeoutMs: 400 }).catch((e) => e);
    clearInterval(timer);
    expect(err).toBeInstanceOf(HpError);
    expect(err.code).toBe('THREAD_IN_SITE');
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(400);
    // A blocked loop would have fired the timer at most once.
    expect(ticks).toBeGreaterThan(elapsed / 10 / 4);
    // Our threads stood aside (SCHED_IDLE) only for each stop, and every one is back now.
    expect(ownThreadPolicies().filter((p) => p !== 0)).toEqual([]);
    // ... and were pinned beside the tracer only for each stop: every one may use every CPU again.
    expect(new Set(ownThreadCpus())).toEqual(new Set(cpusBefore));
    expect((await entryBytes(t.pid, 'stuck')).equals(fileEntryBytes(t.pid, 'stuck'))).toBe(true);
    // The patch was mapped in the same attach as the refused switch: it is gone again, descriptor too.
    expect(patchMappings(t.pid)).toEqual([]);
    expect(fs.readdirSync(`/proc/${t.pid}/fd`).map((fd) => fs.readlinkSync(`/proc/${t.pid}/fd/${fd}`)).filter((l) => l.startsWith('/memfd:'))).toEqual([]);
  });

  it('refuses a target that is its own child before tracing it, and changes nothing', async () => {
    // libuv reaps a Node process's children with waitpid(), which would swallow their ptrace stops.
    const t = await spawnTarget(fixturePath('loop-pie'), { direct: true });
    const patchMappings = () => readMaps(t.pid).filter((m) => m.path.startsWith('/memfd:hp-agent:'));
    const err = await applyPatch({ pid: t.pid, patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }] }).catch((e) => e);
    expect(err).toBeInstanceOf(HpError);
    expect(err.code).toBe('TARGET_IS_OUR_CHILD');
    expect(err.unchanged).toBe(true);
    expect((await entryBytes(t.pid, 'compute')).equals(fileEntryBytes(t.pid, 'compute'))).toBe(true);
    expect(patchMappings()).toEqual([]);
    expect(fs.readFileSync(`/proc/${t.pid}/status`, 'utf8')).toMatch(/^TracerPid:\s+0$/m);
    expect(await t.request('call')).toBe('42');
  });
});
