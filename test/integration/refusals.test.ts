// Bad input gets one clear error, and the target is proven unchanged by reading its memory.
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native.js';
import { findObject, symbolAddress } from '../../src/proc/index.js';
import { tracerOf } from '../proc-helpers.js';
import { fixturePath, killTargetsAfterEach, spawnTarget, tempSocketPath, type Target } from '../../src/harness/index.js';
import { entryBytes, fileEntryBytes, hpAgent, patchMappings } from './helpers.js';

killTargetsAfterEach(afterEach);

/** The entry of `fn` is byte-for-byte the file's, no patch got mapped, and it still answers. */
async function expectUntouched(t: Target, fn: string, answer = '42') {
  expect((await entryBytes(t.pid, fn)).equals(fileEntryBytes(t.pid, fn))).toBe(true);
  expect(patchMappings(t.pid)).toEqual([]);
  expect(await t.request('call')).toBe(answer);
  expect(t.alive()).toBe(true);
}

function expectRefused(r: { code: number; json: any }, code: string) {
  expect(r.json?.error?.code).toBe(code);
  expect(r.json.error.unchanged).toBe(true);
  expect(r.code).toBe(3);
}

describe('refusals', () => {
  it('an unknown PID', async () => {
    const r = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', '999999', '--function', 'compute=compute_v2']);
    expectRefused(r, 'PROCESS_NOT_FOUND');
    expect(r.json.error.message).toMatch(/999999/);
  });

  it('a function the object does not have', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const r = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'no_such_function=compute_v2']);
    expectRefused(r, 'SYMBOL_NOT_FOUND');
    expect(r.json.error.message).toMatch(/no_such_function/);
    await expectUntouched(t, 'compute');
  });

  it('a replacement the patch does not define', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const r = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v9']);
    expectRefused(r, 'SYMBOL_NOT_FOUND');
    expect(r.json.error.message).toMatch(/compute_v9/);
    await expectUntouched(t, 'compute');
  });

  it('entry bytes that differ from the object file', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    // main() never runs again, so changing its first byte is harmless to the target.
    const main = symbolAddress(findObject(t.pid), 'main');
    await native.writeMemory(t.pid, main.address, Buffer.from([0xcc]));
    const before = await native.readMemory(t.pid, main.address, 16);
    const r = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'main=compute_v2']);
    expectRefused(r, 'ENTRY_MISMATCH');
    expect((await native.readMemory(t.pid, main.address, 16)).equals(before)).toBe(true);
    await expectUntouched(t, 'compute');
  });

  it('a variable named as the function: SYMBOL_NOT_FUNCTION, its value unchanged', async () => {
    const t = await spawnTarget(fixturePath('helper_global'));
    expect(await t.request('helper')).toBe('82');
    // helper_calls: a static unsigned long (8 bytes, room for a rel32 jump), counting helper's calls.
    const before = await entryBytes(t.pid, 'helper_calls', 8);
    expect(before.readBigUInt64LE(0)).toBe(1n);
    const r = await hpAgent(['try', fixturePath('helper_global_fix.so'), '--pid', String(t.pid), '--function', 'helper_calls=compute_v2']);
    expectRefused(r, 'SYMBOL_NOT_FUNCTION');
    expect(r.json.error.message).toMatch(/helper_calls in .*helper_global is an OBJECT symbol \(a variable\), not a function/);
    expect((await entryBytes(t.pid, 'helper_calls', 8)).equals(before)).toBe(true);
    await expectUntouched(t, 'compute', '83');
  });

  it('an indirect function (GNU_IFUNC): SYMBOL_IS_IFUNC, its resolver untouched', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const libc = findObject(t.pid, 'libc.so.6');
    const strlen = symbolAddress(libc, 'strlen');
    expect(strlen.type).toBe('GNU_IFUNC');
    const before = await native.readMemory(t.pid, strlen.address, 16);
    const r = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--object', 'libc.so.6', '--function', 'strlen=compute_v2']);
    expectRefused(r, 'SYMBOL_IS_IFUNC');
    expect(r.json.error.message).toMatch(/resolver/);
    expect((await native.readMemory(t.pid, strlen.address, 16)).equals(before)).toBe(true);
    await expectUntouched(t, 'compute');
  });

  it('a replacement that is a variable of the patch: SYMBOL_NOT_FUNCTION', async () => {
    const t = await spawnTarget(fixturePath('spinentry'));
    const r = await hpAgent(['try', fixturePath('spinentry_fix.so'), '--pid', String(t.pid), '--function', 'compute=stuck_v2_calls']);
    expectRefused(r, 'SYMBOL_NOT_FUNCTION');
    expect(r.json.error.message).toMatch(/stuck_v2_calls in spinentry_fix\.so is an OBJECT symbol/);
    await expectUntouched(t, 'compute');
  });

  it('a function too short for the jump', async () => {
    const t = await spawnTarget(fixturePath('short'));
    const r = await hpAgent(['try', fixturePath('short_fix.so'), '--pid', String(t.pid), '--function', 'tiny=tiny_v2']);
    expectRefused(r, 'FUNCTION_TOO_SHORT');
    expect(r.json.error.message).toMatch(/tiny/);
    await expectUntouched(t, 'compute');
    expect((await entryBytes(t.pid, 'tiny', 3)).equals(fileEntryBytes(t.pid, 'tiny', 3))).toBe(true);
  });

  it('a patch object with TLS relocations', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const r = await hpAgent(['try', fixturePath('patch_tls.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
    expectRefused(r, 'PATCH_TLS');
    await expectUntouched(t, 'compute');
  });

  it('a patch object with a constructor', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const r = await hpAgent(['try', fixturePath('patch_ctor.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
    expectRefused(r, 'PATCH_CONSTRUCTOR');
    await expectUntouched(t, 'compute');
  });

  it('a function that is already patched', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const args = ['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2'];
    expect((await hpAgent(args)).code).toBe(0);
    const patched = await entryBytes(t.pid, 'compute');
    const maps = patchMappings(t.pid);
    expectRefused(await hpAgent(args), 'FUNCTION_ALREADY_PATCHED');
    expect((await entryBytes(t.pid, 'compute')).equals(patched)).toBe(true);
    expect(patchMappings(t.pid)).toEqual(maps);
    expect(await t.request('call')).toBe('182');
  });

  it('reverting a function that is not patched', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const r = await hpAgent(['try', '--revert', '--pid', String(t.pid), '--function', 'compute']);
    expectRefused(r, 'NOT_PATCHED');
    await expectUntouched(t, 'compute');
  });

  it('a process already traced by another tracer', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const strace = spawn('strace', ['-p', String(t.pid), '-o', '/dev/null'], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 200 && tracerOf(t.pid) === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(tracerOf(t.pid)).toBe(strace.pid);
      const r = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
      expectRefused(r, 'ALREADY_TRACED');
      expect(r.json.error.message).toMatch(String(strace.pid));
    } finally {
      strace.kill('SIGINT');
      await new Promise((r) => strace.once('exit', r));
    }
    await expectUntouched(t, 'compute');
  });

  it.each([
    ['count_up', 'spin', 'stop', /^stopped \d+$/, /`jl 0x[0-9a-f]+` at 0x[0-9a-f]+ \(count_up\+9\) jumps to count_up\+2/],
    ['call_via', 'wait', 'release', /^released 43$/, /`call \*%rsi` at 0x[0-9a-f]+ \(call_via\+1\) returns to call_via\+3/],
  ])('a function whose own code lands inside the jump\'s bytes (%s)', async (fn, enter, leave, left, names) => {
    // A thread is inside the function (its loop, or the call it made); patched in place, it would
    // resume in the middle of the jump (SIGSEGV, SIGILL) once it loops or returns.
    const t = await spawnTarget(fixturePath('backbranch'));
    expect(await t.request(enter)).toMatch(/^(spinning|waiting)$/);
    const before = await entryBytes(t.pid, fn, 18);
    const r = await hpAgent(['try', fixturePath('backbranch_fix.so'), '--pid', String(t.pid), '--function', `${fn}=${fn}_v2`]);
    expectRefused(r, 'BRANCH_INTO_JUMP');
    expect(r.json.error.message).toMatch(names);
    expect(r.json.error.message).toMatch(/-fpatchable-function-entry=7,5.*zero-stop/);
    expect((await entryBytes(t.pid, fn, 18)).equals(before)).toBe(true);
    expect(before.equals(fileEntryBytes(t.pid, fn, 18))).toBe(true);
    expect(patchMappings(t.pid)).toEqual([]);
    expect(await t.request(leave)).toMatch(left);
    expect(await t.request(fn === 'count_up' ? 'count' : 'via')).toBe(fn === 'count_up' ? '41' : '43');
    expect(t.alive()).toBe(true);
  });

  it('a thread executing inside the bytes to overwrite', async () => {
    const t = await spawnTarget(fixturePath('spinentry'));
    expect(await t.request('enter')).toBe('entered');
    const r = await hpAgent(['try', fixturePath('spinentry_fix.so'), '--pid', String(t.pid), '--function', 'stuck=stuck_v2', '--timeout', '300']);
    expectRefused(r, 'THREAD_IN_SITE');
    expect((await entryBytes(t.pid, 'stuck')).equals(fileEntryBytes(t.pid, 'stuck'))).toBe(true);
    expect(patchMappings(t.pid)).toEqual([]);
    expect(t.alive()).toBe(true);
  });

  it('a process that exits during the patch', async () => {
    // Race the patch against the target's death at varying moments: whatever the moment, one
    // clear error (or a completed patch if it was quicker), never a hang or a crash.
    for (const delayMs of [0, 2, 5, 10, 20]) {
      const t = await spawnTarget(fixturePath('service'), { args: [tempSocketPath('exit'), '32'] });
      const pending = hpAgent(['try', fixturePath('service_fix.so'), '--pid', String(t.pid), '--function', 'handle_request=handle_request_v2']);
      await new Promise((r) => setTimeout(r, delayMs));
      await t.kill();
      const r = await pending;
      if (r.code !== 0) {
        expect(['PROCESS_EXITED', 'PROCESS_NOT_FOUND', 'REMOTE_SYSCALL_FAILED', 'MEMORY_READ_FAILED']).toContain(r.json?.error?.code);
        expect(r.json.error.message.length).toBeGreaterThan(10);
      }
    }
  });
});
