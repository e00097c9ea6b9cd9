// Zero-stop mode on a real process: a target built with -fpatchable-function-entry=7,5 has its
// compute() redirected, re-pointed and reverted while a thread spins calling it, and nothing is
// ever stopped — the process is never traced during a switch and the spinner never misses a
// beat. The engine runs in this process (targets are grandchildren, through the harness).
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { applyPatch, revertFunctions } from '../../src/engine/patch.js';
import { inspectZeroStop, prepareZeroStop, zeroStopApply, zeroStopRevert, zeroStopSwitch } from '../../src/engine/zerostop.js';
import { HpError } from '../../src/errors.js';
import { fixturePath, killTargetsAfterEach, spawnTarget, type Target } from '../../src/harness/index.js';
import { native } from '../../src/native.js';
import { findObject, symbolAddress } from '../../src/proc/index.js';
import { entryBytes, fileEntryBytes, patchMappings } from './helpers.js';

killTargetsAfterEach(afterEach);

const FIX = fixturePath('zerostop_fix.so');
/** Generous: a stop-the-world patch costs a few hundred µs; scheduling noise on a busy CI box some. */
const MAX_GAP_NS = 2_000_000;
const AROUND = 11; // 5 bytes of padding + endbr64 room + the 2-byte entry NOP

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function spinningTarget(): Promise<Target> {
  const t = await spawnTarget(fixturePath('zerostop'));
  expect(await t.request('spin')).toBe('spinning');
  const first = Number(await t.request('spins'));
  await sleep(50);
  expect(Number(await t.request('spins'))).toBeGreaterThan(first);
  return t;
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

/**
 * Runs `work` while sampling /proc/PID/status's TracerPid as often as the event loop allows, and
 * measures the spinner's largest gap over exactly that span.
 */
async function observed<T>(t: Target, work: () => Promise<T>): Promise<{ result: T; gapNs: number; tracerSamples: number; tracers: Set<number> }> {
  expect(await t.request('reset')).toBe('reset');
  const tracers = new Set<number>();
  let tracerSamples = 0;
  let polling = true;
  const poll = () => {
    const m = /^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${t.pid}/status`, 'utf8'));
    tracers.add(Number(m![1]));
    tracerSamples++;
    if (polling) setImmediate(poll);
  };
  poll();
  let result: T;
  try {
    result = await work();
  } finally {
    polling = false;
  }
  poll();
  const gapNs = Number(await t.request('gap'));
  return { result, gapNs, tracerSamples, tracers };
}

const us = (ns: number) => `${(ns / 1000).toFixed(0)} µs`;

describe('zero-stop switching (-fpatchable-function-entry=7,5)', () => {
  it('switches, re-points and reverts compute while a thread spins through it, never stopping anyone', async () => {
    const t = await spinningTarget();
    const pid = t.pid;
    expect(await t.request('call')).toBe('42');
    const before = await around(pid);
    expect(before.memory.equals(before.file)).toBe(true);
    expect(before.memory.toString('hex').slice(0, 14)).toBe('90909090909090');

    // Scheduling noise alone, over a span like a switch's.
    const idle = await observed(t, () => sleep(5));

    // Map first (one sleeping thread is borrowed for the remote calls), then switch.
    const prepared = await prepareZeroStop(pid, { patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v2' }] });
    expect(prepared.report.sites[0]).toMatchObject({ action: 'patch', entryNop: 'two-90', keptEndbr64: false });
    const sw = await observed(t, () => zeroStopSwitch(pid, prepared.steps, { stepDelayMs: 1 }));
    expect(sw.result.steps).toBe(3);
    expect(sw.tracerSamples).toBeGreaterThan(2);
    expect([...sw.tracers]).toEqual([0]);

    expect(await t.request('call')).toBe('182');
    expect(t.pid).toBe(pid);
    expect(t.alive()).toBe(true);
    const [state] = await inspectZeroStop(pid, ['compute']);
    expect(state.state).toBe('switched');
    expect(state.target).toBe(prepared.report.sites[0].target);
    const switched = (await around(pid)).memory;
    expect(switched[0]).toBe(0xe9);
    expect(switched.subarray(5, 7).toString('hex')).toBe('ebf9');
    expect(switched.subarray(7).equals(before.memory.subarray(7))).toBe(true);

    // Re-point to another replacement: unflip, rewrite the padding, flip again.
    const repointed = await observed(t, () => zeroStopApply(pid, { patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v3' }], replace: true }));
    expect(repointed.result.sites[0].action).toBe('repoint');
    expect(await t.request('call')).toBe('124');

    const reverted = await observed(t, () => zeroStopRevert(pid, { functions: ['compute'] }));
    expect([...reverted.tracers]).toEqual([0]);
    expect(reverted.result.steps).toBe(3);
    expect((await around(pid)).memory.equals(before.memory)).toBe(true);
    expect(await t.request('call')).toBe('42');
    expect((await inspectZeroStop(pid, ['compute']))[0].state).toBe('original');
    expect(Number(await t.request('spins'))).toBeGreaterThan(0);

    console.log(
      `zerostop spinner, largest gap between iterations: idle ${us(idle.gapNs)}; ` +
        `switch ${us(sw.gapNs)} (${sw.result.durationUs} µs, ${sw.tracerSamples} TracerPid samples, all 0); ` +
        `map+re-point ${us(repointed.gapNs)} (TracerPid seen: ${[...repointed.tracers].join(',')}); ` +
        `revert ${us(reverted.gapNs)} (${reverted.result.durationUs} µs)`,
    );
    expect(sw.gapNs).toBeLessThan(MAX_GAP_NS);
    expect(reverted.gapNs).toBeLessThan(MAX_GAP_NS);
  });

  it('for contrast: the same target patched the stop-the-world way (native.transaction)', async () => {
    const t = await spinningTarget();
    const idle = await observed(t, () => sleep(5));
    const applied = await observed(t, () => applyPatch({ pid: t.pid, patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v2' }] }));
    expect(await t.request('call')).toBe('182');
    expect(applied.tracers.has(0)).toBe(true);
    // The stop-the-world entry is not a zero-stop switch: zero-stop refuses to touch it.
    const err = await zeroStopApply(t.pid, { patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v3' }] }).catch((e) => e);
    expect(err).toBeInstanceOf(HpError);
    expect(err.code).toBe('ENTRY_MISMATCH');
    const reverted = await observed(t, () => revertFunctions({ pid: t.pid, functions: ['compute'] }));
    expect(await t.request('call')).toBe('42');
    console.log(
      `stop-the-world on the same target, spinner's largest gap: idle ${us(idle.gapNs)}; ` +
        `apply ${us(applied.gapNs)} (core pause ${applied.result.pauseUs} µs, ${applied.result.threads} threads, TracerPid seen: ${[...applied.tracers].join(',')}); ` +
        `revert ${us(reverted.gapNs)} (core pause ${reverted.result.pauseUs} µs)`,
    );
    // Every thread was stopped: the spinner felt at least the core's pause.
    expect(applied.gapNs).toBeGreaterThanOrEqual(applied.result.pauseUs * 1000 * 0.9);
  });

  it('undoes its own writes when an entry changes under it', async () => {
    const t = await spinningTarget();
    const before = await around(t.pid);
    const prepared = await prepareZeroStop(t.pid, { patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v2' }] });
    // Pretend the last byte was expected to be something else: the padding and first byte are
    // written, then the check fails and both are put back.
    const steps = prepared.steps.map((s, i) => (i === prepared.steps.length - 1 ? { ...s, before: Buffer.from([0xcc]) } : s));
    const err = await zeroStopSwitch(t.pid, steps).catch((e) => e);
    expect(err).toBeInstanceOf(HpError);
    expect(err.code).toBe('ENTRY_MISMATCH');
    expect(err.unchanged).toBe(true);
    expect(err.message).toMatch(/2 write\(s\) already done were undone/);
    expect((await around(t.pid)).memory.equals(before.memory)).toBe(true);
    await prepared.discard();
    expect(patchMappings(t.pid)).toEqual([]);
    expect(await t.request('call')).toBe('42');
  });
});

describe('zero-stop refusals', () => {
  it('a function built without hot-patchable entries: NOT_HOT_PATCHABLE, nothing mapped or written', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const bytes = await entryBytes(t.pid, 'compute', 16);
    const err = await zeroStopApply(t.pid, { patchPath: fixturePath('loop_fix.so'), functions: [{ name: 'compute', replacement: 'compute_v2' }] }).catch((e) => e);
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
    const notPatched = await zeroStopRevert(t.pid, { functions: ['compute'] }).catch((e) => e);
    expect(notPatched.code).toBe('NOT_PATCHED');
    await zeroStopApply(t.pid, { patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v2' }] });
    const twice = await zeroStopApply(t.pid, { patchPath: FIX, functions: [{ name: 'compute', replacement: 'compute_v3' }] }).catch((e) => e);
    expect(twice.code).toBe('FUNCTION_ALREADY_PATCHED');
    expect(await t.request('call')).toBe('182');
    await zeroStopRevert(t.pid, { functions: ['compute'] });
    expect(await t.request('call')).toBe('42');
  });
});
