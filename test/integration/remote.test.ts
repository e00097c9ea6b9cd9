// Code put into a live target through one borrowed thread: the patch file is filled from our
// side before it is mapped, the borrowed thread is one asleep in a system call, and a fill that
// fails stops the batch with everything it ran reported (so the caller can undo it).
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { mapPatchImage, unmapPatch } from '../../src/engine/loader.js';
import { RemoteProcess, targetGadgets } from '../../src/engine/remote.js';
import { native } from '../../src/native.js';
import { findFreeRegionNear, readMaps, readProcStat } from '../../src/proc/index.js';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { MFD_CLOEXEC, PAGE_SIZE, PROT_EXEC, PROT_READ } from '../../src/x64/syscalls.js';

killTargetsAfterEach(afterEach);

const SYS_GETPID = 39;
const SYS_CLOSE = 3;

/** The target's open descriptors that are memfds. */
function memfds(pid: number): string[] {
  return fs
    .readdirSync(`/proc/${pid}/fd`)
    .map((fd) => fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
    .filter((link) => link.startsWith('/memfd:'));
}

function threadState(pid: number, tid: number): string | undefined {
  return readProcStat(pid, tid)?.state;
}

describe('remote calls', () => {
  it('maps a patch whose file was filled before the mapping, in one borrowed thread, and leaves no descriptor behind', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const maps = readMaps(t.pid);
    const exe = maps.find((m) => m.exec && m.path.endsWith('loop-pie'))!;
    const image = Buffer.alloc(2 * PAGE_SIZE);
    for (let i = 0; i < image.length; i++) image[i] = (i * 7 + 3) & 0xff;
    const trailer = Buffer.alloc(PAGE_SIZE, 0xab);
    const base = findFreeRegionNear(maps, exe, image.length + trailer.length)!;

    const mapped = await mapPatchImage(t.pid, base, image, [{ offset: PAGE_SIZE, size: PAGE_SIZE, prot: PROT_READ | PROT_EXEC }], trailer, 'remote-test', maps);
    expect(mapped.base).toBe(base);
    expect((await native.readMemory(t.pid, base, image.length)).equals(image)).toBe(true);
    expect((await native.readMemory(t.pid, base + image.length, trailer.length)).equals(trailer)).toBe(true);
    const areas = readMaps(t.pid).filter((m) => m.start >= base && m.end <= base + mapped.size);
    expect(areas.map((m) => m.perms)).toEqual(['r--s', 'r-xs', 'r--s']);
    expect(areas.every((m) => m.path === '/memfd:hp-agent:remote-test' && m.deleted)).toBe(true);
    expect(memfds(t.pid)).toEqual([]);
    expect(await t.request('call')).toBe('42');

    await unmapPatch(t.pid, mapped);
    expect(readMaps(t.pid).some((m) => m.start === base)).toBe(false);
    expect(await t.request('call')).toBe('42');
  });

  it('borrows a thread that sleeps in a system call, and restarts that call', async () => {
    // Three threads: one blocked in read() on a pipe, one waiting, the main thread answering stdin.
    const t = await spawnTarget(fixturePath('blocked'));
    // READY comes before every thread has reached its blocking call (on a loaded machine, well before).
    const tids = () => fs.readdirSync(`/proc/${t.pid}/task`).map(Number);
    for (let i = 0; i < 100 && !(tids().length === 3 && tids().every((tid) => threadState(t.pid, tid) === 'S')); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    const gadgets = await targetGadgets(t.pid);
    const r = await native.remoteSyscalls(t.pid, [{ nr: SYS_GETPID, args: [] }], { gadgets });
    expect(r.results).toEqual([t.pid]);
    expect(r.interruptedSyscall).toBe(true);
    // Back asleep in its restarted call (just after being let go it may still be running into it).
    for (let i = 0; i < 100 && threadState(t.pid, r.tid) !== 'S'; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(threadState(t.pid, r.tid)).toBe('S');
    // The interrupted read() was restarted, not failed: it still gets what is written next.
    expect(await t.request('feed hello')).toBe('fed 5');
    expect(await t.request('got')).toBe('got 5 0 hello');
  });

  it('stops the batch when the fill fails, reporting what ran so it can be undone', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const gadgets = await targetGadgets(t.pid);
    // The "descriptor" to fill is getpid()'s result: no such descriptor, so the fill fails.
    const calls = [
      { nr: 319, args: [{ string: Buffer.from('hp-agent:fill-test') }, MFD_CLOEXEC] },
      { nr: SYS_GETPID, args: [] },
      { nr: SYS_GETPID, args: [] },
    ];
    const r = await native.remoteSyscalls(t.pid, calls, { gadgets, fill: { fdCall: 1, afterCall: 1, chunks: [{ offset: 0, data: Buffer.from('x') }] } });
    expect(r.fillError).toMatch(/cannot open/);
    expect(r.results).toHaveLength(2);
    expect(r.results[1]).toBe(t.pid);
    expect(memfds(t.pid)).toEqual(['/memfd:hp-agent:fill-test (deleted)']);

    // Through RemoteProcess the same failure is an HpError carrying the results.
    const remote = new RemoteProcess(t.pid);
    const e = await remote
      .batch([{ name: 'close', args: [r.results[0]] }], { fdCall: 0, afterCall: 0, chunks: [{ offset: 0, data: Buffer.from('x') }] })
      .then(() => expect.unreachable('the fill must fail'), (err: unknown) => err as HpError);
    expect(e).toBeInstanceOf(HpError);
    expect(e.code).toBe('REMOTE_FILL_FAILED');
    expect(e.details?.results).toEqual([0]); // close() ran (and closed the memfd), then the fill failed
    expect(memfds(t.pid)).toEqual([]);
    expect(await t.request('call')).toBe('42');
  });

  describe('a batch run by the transaction before its stop, in the same attach', () => {
    async function setUp() {
      const t = await spawnTarget(fixturePath('loop-pie'));
      const gadgets = await targetGadgets(t.pid);
      // A site that the switch rewrites with the bytes already there: the transaction runs in
      // full, and reading it back tells whether anything else was written.
      const exe = readMaps(t.pid).find((m) => m.exec && m.path.endsWith('loop-pie'))!;
      const before = await native.readMemory(t.pid, exe.start, 8);
      return { t, gadgets, site: { addr: exe.start, expect: before, write: Buffer.from(before) }, before };
    }

    it('runs the calls in a borrowed thread, then switches', async () => {
      const { t, gadgets, site } = await setUp();
      const r = await native.transaction(t.pid, [site], { prelude: { gadgets, calls: [{ nr: SYS_GETPID, args: [] }], expect: [0, t.pid] } });
      expect(r.switched).toBe(true);
      expect(r.prelude?.results).toEqual([t.pid]);
      expect(r.threads).toBeGreaterThanOrEqual(1);
      expect(fs.readFileSync(`/proc/${t.pid}/status`, 'utf8')).toMatch(/^TracerPid:\s+0$/m);
      expect(await t.request('call')).toBe('42');
    });

    it('switches nothing when a call fails or a result is not the expected one, and says how far it got', async () => {
      const { t, gadgets, before } = await setUp();
      // Sites whose expected bytes are wrong: had the switch run, it would have refused them loudly.
      const exe = readMaps(t.pid).find((m) => m.exec && m.path.endsWith('loop-pie'))!;
      const wrong = { addr: exe.start, expect: Buffer.alloc(8, 0xcc), write: Buffer.alloc(8, 0x90) };
      const failing = await native.transaction(t.pid, [wrong], { prelude: { gadgets, calls: [{ nr: SYS_GETPID, args: [] }, { nr: SYS_CLOSE, args: [-1] }, { nr: SYS_GETPID, args: [] }] } });
      expect(failing.switched).toBe(false);
      expect(failing.prelude?.results).toEqual([t.pid, -9]); // EBADF; the third call never ran
      const unexpected = await native.transaction(t.pid, [wrong], { prelude: { gadgets, calls: [{ nr: SYS_GETPID, args: [] }, { nr: SYS_GETPID, args: [] }], expect: [0, 1] } });
      expect(unexpected.switched).toBe(false);
      expect(unexpected.prelude?.results).toEqual([t.pid]);
      expect((await native.readMemory(t.pid, exe.start, 8)).equals(before)).toBe(true);
      expect(await t.request('call')).toBe('42');
    });

    it('counts a borrowed thread that was running in the pause, from the moment the batch stopped it', async () => {
      // spinentry's `park` starts a thread spinning in `parked`: running, never asleep in a call.
      const t = await spawnTarget(fixturePath('spinentry'));
      expect(await t.request('park')).toBe('parked');
      // The spinner: the thread that gathers CPU time (the main thread only answers requests).
      const cpu = (tid: number) => {
        const stat = readProcStat(t.pid, tid);
        return stat ? stat.utime + stat.stime : 0;
      };
      const busiest = () => fs.readdirSync(`/proc/${t.pid}/task`).map(Number).filter((tid) => tid !== t.pid).sort((a, b) => cpu(b) - cpu(a))[0];
      for (let i = 0; i < 200 && cpu(busiest()) < 3; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      const running = busiest();
      expect(cpu(running)).toBeGreaterThanOrEqual(3);
      const gadgets = await targetGadgets(t.pid);
      const exe = readMaps(t.pid).find((m) => m.exec && m.path.endsWith('spinentry'))!;
      const bytes = await native.readMemory(t.pid, exe.start, 8);
      const calls = Array.from({ length: 300 }, () => ({ nr: SYS_GETPID, args: [] }));
      const r = await native.transaction(t.pid, [{ addr: exe.start, expect: bytes, write: Buffer.from(bytes) }], { prelude: { gadgets, tid: running, calls } });
      expect(r.switched).toBe(true);
      expect(r.prelude?.interruptedSyscall).toBe(false);
      // 300 calls, each two syscall stops of the thread, took well over 1 µs each.
      expect(r.pauseNs).toBeGreaterThan(300_000);
      expect(await t.request('escaped')).toBe('0'); // still spinning where it was
    });

    it('a switch refused after the calls ran says so (the caller undoes what they made)', async () => {
      const { t, gadgets, before } = await setUp();
      const exe = readMaps(t.pid).find((m) => m.exec && m.path.endsWith('loop-pie'))!;
      const wrong = { addr: exe.start, expect: Buffer.alloc(8, 0xcc), write: Buffer.alloc(8, 0x90) };
      const e = await native
        .transaction(t.pid, [wrong], { prelude: { gadgets, calls: [{ nr: SYS_GETPID, args: [] }] } })
        .then(() => expect.unreachable('the switch must be refused'), (err: unknown) => err as HpError);
      expect(e.code).toBe('ENTRY_MISMATCH');
      expect(e.unchanged).toBe(true);
      expect(e.details?.preludeComplete).toBe(true);
      expect((await native.readMemory(t.pid, exe.start, 8)).equals(before)).toBe(true);
      expect(fs.readFileSync(`/proc/${t.pid}/status`, 'utf8')).toMatch(/^TracerPid:\s+0$/m);
      expect(await t.request('call')).toBe('42');
    });
  });
});
