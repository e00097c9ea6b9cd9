// Zero-stop mode on a real process: a target built with -fpatchable-function-entry=7,5 has its
// compute() redirected, re-pointed and reverted while a thread spins calling it, and nothing is
// ever stopped — the process is never traced during a switch and the spinner never misses a
// beat. The engine runs in this process (targets are grandchildren, through the harness).
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { applyPatch, inspectFunctions, revertFunctions } from '../../src/engine/patch.js';
import { zeroStopSwitch } from '../../src/engine/zero-stop.js';
import { Benchd, BENCH_PATCH, functionNames, functionSpecs } from '../../src/bench/benchd.js';
import { HpError } from '../../src/errors.js';
import { fixturePath, killTargetsAfterEach, spawnTarget, type Target } from '../../src/harness/index.js';
import { native } from '../../src/native.js';
import { findObject, symbolAddress } from '../../src/proc/index.js';
import { entryBytes, fileEntryBytes, patchMappings } from './helpers.js';

killTargetsAfterEach(afterEach);

const FIX = fixturePath('zerostop_fix.so');
/** Generous: an undisturbed iteration takes well under a microsecond, a stop-the-world patch ~100 µs and more. */
const MAX_GAP_NS = 2_000_000;
const AROUND = 11; // 5 bytes of padding + endbr64 room + the 2-byte entry NOP

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Spinning {
  t: Target;
  /** The spinner's thread id. */
  tid: number;
}

async function spinningTarget(): Promise<Spinning> {
  const t = await spawnTarget(fixturePath('zerostop'));
  expect(await t.request('spin')).toBe('spinning');
  const tid = Number(await t.request('spinner'));
  // Proof the spinner is live (on a loaded machine it may wait a while for a CPU).
  const first = Number(await t.request('spins'));
  const deadline = Date.now() + 5000;
  while (Number(await t.request('spins')) <= first && Date.now() < deadline) await sleep(10);
  expect(Number(await t.request('spins'))).toBeGreaterThan(first);
  return { t, tid };
}

/** The padding and entry bytes of compute in the process, and as the file has them. */
async function around(pid: number): Promise<{ memory: Buffer; file: Buffer }> {
  const obj = findObject(pid);
  const { address } = symbolAddress(obj, 'compute');
  return {
    memory: await native.readMemory(pid, address - 5, AROUND),
    file: obj.elf.readVirtual(address - 5 - obj.bias, AROUND),
  };
}

function tracerPid(pid: number): number {
  return Number(/^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

/**
 * How often a thread gave up its CPU by blocking (voluntary: a ptrace stop counts here; the
 * spinner never blocks by itself) or was preempted (involuntary: scheduling noise).
 */
function contextSwitches(pid: number, tid: number): { voluntary: number; involuntary: number } {
  const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  return {
    voluntary: Number(/^voluntary_ctxt_switches:\s*(\d+)/m.exec(status)![1]),
    involuntary: Number(/^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(status)![1]),
  };
}

interface Observation<T> {
  result: T;
  /** The spinner's largest gap between two iterations over exactly `work`. */
  gapNs: number;
  /** TracerPid values seen: sampled from a timer and around every write of a switch. */
  tracers: Set<number>;
  tracerSamples: number;
  /** The spinner's voluntary context switches around `work`: 0 means it was never stopped. */
  stops: number;
  preemptions: number;
}

async function observed<T>({ t, tid }: Spinning, work: (sample: () => void) => Promise<T>): Promise<Observation<T>> {
  // The context switches are counted over a span that covers the gap's: from before `reset` to
  // after `gap` (which waits for the spinner to finish the iteration in progress).
  const before = contextSwitches(t.pid, tid);
  expect(await t.request('reset')).toBe('reset');
  const tracers = new Set<number>();
  let tracerSamples = 0;
  const sample = () => {
    tracers.add(tracerPid(t.pid));
    tracerSamples++;
  };
  sample();
  const timer = setInterval(sample, 0);
  let result: T;
  try {
    result = await work(sample);
  } finally {
    clearInterval(timer);
  }
  sample();
  const gapNs = Number(await t.request('gap'));
  const after = contextSwitches(t.pid, tid);
  return { result, gapNs, tracers, tracerSamples, stops: after.voluntary - before.voluntary, preemptions: after.involuntary - before.involuntary };
}

const us = (ns: number) => `${Math.round(ns / 1000)} µs`;
const describeObs = (o: Observation<unknown>) =>
  `gap ${us(o.gapNs)}, ${o.stops} stop(s), ${o.preemptions} preemption(s), TracerPid ${[...o.tracers].join('/')} in ${o.tracerSamples} samples`;

describe('zero-stop switching (-fpatchable-function-entry=7,5)', () => {
  it('switches, re-points and reverts compute while a thread spins through it, never stopping anyone', async () => {
    const s = await spinningTarget();
    const { t } = s;
    const pid = t.pid;
    expect(await t.request('call')).toBe('42');
    const before = await around(pid);
    expect(before.memory.equals(before.file)).toBe(true);
    expect(before.memory.toString('hex').slice(0, 14)).toBe('90909090909090');
    expect((await inspectFunctions({ pid, functions: ['compute'] }))[0]).toMatchObject({ state: 'original', form: 'padding' });

    // Scheduling noise alone, over a span like a switch's.
    const idle = await observed(s, () => sleep(5));

    // 'auto' picks zero-stop by itself for a hot-patchable entry. Mapping the patch borrows a
    // sleeping thread (TracerPid shows it), never the spinner; the switch traces nobody.
    const sw = await observed(s, () => applyPatch({ pid, patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v2' }] }));
    expect(sw.result).toMatchObject({ mode: 'zero-stop', pauseUs: 0, threads: 0 });
    // …and says so: which thread it borrowed (asleep in a call, never the spinner) and for how long.
    expect(sw.result.borrowed).toHaveLength(1);
    expect(sw.result.borrowed![0]).toMatchObject({ interruptedSyscall: true });
    expect(sw.result.borrowed![0].tid).not.toBe(s.tid);
    expect(sw.result.borrowed![0].heldUs).toBeGreaterThan(0);
    expect(sw.result.sites[0]).toMatchObject({ action: 'patch', form: 'padding', entry: { entryNop: 'two-90', before: '9090', after: 'ebf9' }, keptEndbr64: false });
    expect(sw.stops).toBe(0);

    expect(await t.request('call')).toBe('182');
    expect(t.pid).toBe(pid);
    expect(t.alive()).toBe(true);
    const [state] = await inspectFunctions({ pid, functions: ['compute'] });
    expect(state).toMatchObject({ state: 'patched', form: 'padding', jump: { target: sw.result.sites[0].target } });
    expect(state.record?.zeroStop).toMatchObject({ entryNop: 'two-90', original: '9090', switched: 'ebf9' });
    const switched = (await around(pid)).memory;
    expect(switched[0]).toBe(0xe9);
    expect(switched.subarray(5, 7).toString('hex')).toBe('ebf9');
    expect(switched.subarray(7).equals(before.memory.subarray(7))).toBe(true);

    // Re-point to another replacement: unflip, rewrite the padding, flip again.
    const repointed = await observed(s, () => applyPatch({ pid, patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v3' }], replace: true, mode: 'zero-stop' }));
    expect(repointed.result.sites[0].action).toBe('repoint');
    expect(repointed.result.mode).toBe('zero-stop');
    expect(repointed.stops).toBe(0);
    expect(await t.request('call')).toBe('124');

    const reverted = await observed(s, () => revertFunctions({ pid, functions: ['compute'] }));
    expect([...reverted.tracers]).toEqual([0]);
    expect(reverted.result.mode).toBe('zero-stop');
    expect(reverted.stops).toBe(0);
    expect((await around(pid)).memory.equals(before.memory)).toBe(true);
    expect(await t.request('call')).toBe('42');
    expect((await inspectFunctions({ pid, functions: ['compute'] }))[0].state).toBe('original');

    console.log(
      `zero-stop, spinner during: idle 5 ms: ${describeObs(idle)}\n` +
        `  map + switch (${sw.result.switchUs} µs): ${describeObs(sw)}\n` +
        `  map + re-point: ${describeObs(repointed)}\n` +
        `  revert (${reverted.result.switchUs} µs): ${describeObs(reverted)}`,
    );
    // A preemption by other work on a busy machine can make any gap long; without one, the gap
    // is what the change cost the spinner. (`stops` above is the noise-free proof.)
    for (const o of [sw, reverted]) if (o.preemptions === 0) expect(o.gapNs).toBeLessThan(MAX_GAP_NS);
  });

  it('stop mode on a hot-patchable entry patches through the padding too, and zero-stop can take it back', async () => {
    const s = await spinningTarget();
    const { t } = s;
    const idle = await observed(s, () => sleep(5));
    const applied = await observed(s, () => applyPatch({ pid: t.pid, patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v2' }], mode: 'stop' }));
    expect(applied.result.mode).toBe('stop');
    expect(applied.result.sites[0].form).toBe('padding');
    expect(await t.request('call')).toBe('182');
    const switched = (await around(t.pid)).memory;
    expect(switched.subarray(5, 7).toString('hex')).toBe('ebf9');
    // Every thread was stopped, the spinner too.
    expect(applied.stops).toBeGreaterThanOrEqual(1);
    const reverted = await observed(s, () => revertFunctions({ pid: t.pid, functions: ['compute'] }));
    expect(reverted.result.mode).toBe('zero-stop');
    expect(reverted.stops).toBe(0);
    expect(await t.request('call')).toBe('42');
    const back = await around(t.pid);
    expect(back.memory.equals(back.file)).toBe(true);
    console.log(
      `stop-the-world, spinner during: idle 5 ms: ${describeObs(idle)}\n` +
        `  map + apply (core pause ${applied.result.pauseUs} µs, ${applied.result.threads} threads): ${describeObs(applied)}\n` +
        `  zero-stop revert: ${describeObs(reverted)}`,
    );
  });

  it('undoes its own writes when an entry changes under it', async () => {
    const { t } = await spinningTarget();
    const before = await around(t.pid);
    const { address } = symbolAddress(findObject(t.pid), 'compute');
    // Three rounds of a switch, the last expecting a byte that is not there: the padding and the
    // first entry byte are written, then the check fails and both are put back.
    const jump = Buffer.from([0xe9, 0, 0, 0, 0]);
    const rounds = [
      [{ addr: address - 5, before: before.memory.subarray(0, 5), after: jump, what: 'padding' as const }],
      [{ addr: address + 1, before: Buffer.from([0x90]), after: Buffer.from([0xf9]), what: 'entry' as const }],
      [{ addr: address, before: Buffer.from([0xcc]), after: Buffer.from([0xeb]), what: 'entry' as const }],
    ];
    const err = await zeroStopSwitch(t.pid, rounds).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HpError);
    expect((err as HpError).code).toBe('ENTRY_MISMATCH');
    expect((err as HpError).unchanged).toBe(true);
    expect((err as HpError).message).toMatch(/2 write\(s\) already done were undone/);
    expect((await around(t.pid)).memory.equals(before.memory)).toBe(true);
    expect(await t.request('call')).toBe('42');
  });
});

describe('a loop head right after the entry', () => {
  it('is refused over the entry but switched through a hot-patchable entry, the thread in its loop unharmed', async () => {
    // backbranch-zs: count_up is 90 90 (entry NOP), xor, then the loop head at +4 — past the
    // only bytes the padding form overwrites. (backbranch, without the NOP, is refused: refusals.test.ts)
    const t = await spawnTarget(fixturePath('backbranch-zs'));
    expect(await t.request('spin')).toBe('spinning');
    const r = await applyPatch({ pid: t.pid, patchPath: fixturePath('backbranch_fix.so'), functions: [{ name: 'count_up', replacement: 'count_up_v2' }] });
    expect(r.mode).toBe('zero-stop');
    expect(r.sites[0].form).toBe('padding');
    // The spinning thread keeps looping in the old code, and leaves it normally.
    await sleep(50);
    expect(await t.request('stop')).toMatch(/^stopped [1-9]\d*$/);
    expect(await t.request('count')).toBe('1041');
    expect(t.alive()).toBe(true);
  });
});

describe('zero-stop on many functions', () => {
  it('switches all 256 functions of benchd-zs in one change and takes them back, every answer right', async () => {
    const b = await Benchd.start({ threads: 1, mode: 'busy', functions: 256, zeroStop: true });
    const all = Array.from({ length: 256 }, (_, i) => i);
    const applied = await applyPatch({ pid: b.pid, patchPath: fixturePath(BENCH_PATCH), functions: functionSpecs(256), mode: 'zero-stop' });
    expect(applied).toMatchObject({ mode: 'zero-stop', threads: 0 });
    expect(applied.sites).toHaveLength(256);
    await b.expectAnswers(all, true);
    const states = await inspectFunctions({ pid: b.pid, functions: functionNames(256) });
    expect(states.every((st) => st.state === 'patched' && st.form === 'padding')).toBe(true);
    const reverted = await revertFunctions({ pid: b.pid, functions: functionNames(256) });
    expect(reverted.mode).toBe('zero-stop');
    await b.expectAnswers(all, false);
    expect((await inspectFunctions({ pid: b.pid, functions: functionNames(256) })).every((st) => st.state === 'original')).toBe(true);
  });
});

describe('zero-stop refusals', () => {
  it('a function built without hot-patchable entries: NOT_HOT_PATCHABLE, nothing mapped or written', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const bytes = await entryBytes(t.pid, 'compute', 16);
    const err = await applyPatch({ pid: t.pid, patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }], mode: 'zero-stop' }).then(() => expect.unreachable('expected a refusal'), (e: unknown) => e as HpError);
    expect(err).toBeInstanceOf(HpError);
    expect(err.code).toBe('NOT_HOT_PATCHABLE');
    expect(err.unchanged).toBe(true);
    expect((await entryBytes(t.pid, 'compute', 16)).equals(bytes)).toBe(true);
    expect(bytes.equals(fileEntryBytes(t.pid, 'compute', 16))).toBe(true);
    expect(patchMappings(t.pid)).toEqual([]);
    expect(await t.request('call')).toBe('42');
  });

  it('reverting a function that is not switched, and re-switching without replace', async () => {
    const t = await spawnTarget(fixturePath('zerostop'));
    const notPatched = await revertFunctions({ pid: t.pid, functions: ['compute'], mode: 'zero-stop' }).then(() => expect.unreachable('expected a refusal'), (e: unknown) => e as HpError);
    expect(notPatched.code).toBe('NOT_PATCHED');
    await applyPatch({ pid: t.pid, patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v2' }], mode: 'zero-stop' });
    const twice = await applyPatch({ pid: t.pid, patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v3' }], mode: 'zero-stop' }).then(() => expect.unreachable('expected a refusal'), (e: unknown) => e as HpError);
    expect(twice.code).toBe('FUNCTION_ALREADY_PATCHED');
    expect(await t.request('call')).toBe('182');
    await revertFunctions({ pid: t.pid, functions: ['compute'], mode: 'zero-stop' });
    expect(await t.request('call')).toBe('42');
  });
});
