// `hp-agent try` beyond one process and one function: inlined copies it cannot reach (warned,
// with the callers named), several --pid or --all in one run (one result per process, exit 5
// when some failed), and the agent's lock (two runs never write into one process at once).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { acquireLock } from '../../src/agent/lock.js';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { entryBytes, fileEntryBytes, hpAgent } from './helpers.js';

killTargetsAfterEach(afterEach);

let home: string;
let dir: string;
beforeAll(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-try-home-'));
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-try-bin-'));
});
afterAll(() => {
  fs.rmSync(home, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
});

/** try with this file's own agent home (its lock), so other test files never wait for it. */
const tryCli = (args: string[], json = true) => hpAgent(['try', ...args], { json, env: { ...process.env, HP_AGENT_HOME: home } });

/** A private copy of a fixture: `--all` on it finds only the processes this test started. */
function privateCopy(name: string): string {
  const file = path.join(dir, `${name}-${process.pid}-${Math.random().toString(36).slice(2)}`);
  fs.copyFileSync(fixturePath(name), file);
  fs.chmodSync(file, 0o755);
  return file;
}

describe('try on a function the compiler inlined', () => {
  it('patches the out-of-line copy and warns, naming both callers that keep inlined copies', async () => {
    const t = await spawnTarget(fixturePath('inlined'));
    expect([await t.request('a'), await t.request('b'), await t.request('ptr')]).toEqual(['124', '125', '123']);
    const r = await tryCli([fixturePath('inlined_fix.so'), '--pid', String(t.pid), '--function', 'scale=scale_v2']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.json.warnings).toHaveLength(1);
    const w = r.json.warnings[0];
    expect(w).toMatchObject({ code: 'INLINED_COPIES', function: 'scale' });
    expect(w.callers.map((c: { name: string }) => c.name).sort()).toEqual(['answer_a', 'answer_b']);
    expect(w.message).toMatch(/answer_a/);
    expect(w.message).toMatch(/noinline/);
    // What the warning says is what the process does: the callers keep the old code.
    expect([await t.request('a'), await t.request('b'), await t.request('ptr')]).toEqual(['124', '125', '1041']);

    // The same warning for people, on stderr.
    const back = await tryCli(['--revert', '--pid', String(t.pid), '--function', 'scale']);
    expect(back.code).toBe(0);
    const human = await tryCli([fixturePath('inlined_fix.so'), '--pid', String(t.pid), '--function', 'scale=scale_v2'], false);
    expect(human.code).toBe(0);
    expect(human.stderr).toMatch(/^hp-agent: warning: scale is inlined into answer_a, answer_b/m);
  });

  it('does not warn about a function nobody inlined', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const r = await tryCli([fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
    expect(r.code).toBe(0);
    expect(r.json.warnings).toEqual([]);
  });
});

describe('try on several processes', () => {
  it('patches every --pid given, one result per process', async () => {
    const ts = await Promise.all([0, 1, 2].map(() => spawnTarget(fixturePath('loop-pie'))));
    const r = await tryCli([fixturePath('loop_fix.so'), ...ts.flatMap((t) => ['--pid', String(t.pid)]), '--function', 'compute=compute_v2']);
    expect(r.code).toBe(0);
    expect(r.json.status).toBe('Succeeded');
    expect(r.json.processes.map((p: { pid: number }) => p.pid)).toEqual(ts.map((t) => t.pid));
    for (const t of ts) expect(await t.request('call')).toBe('182');
  });

  it('exits 5 when some processes failed, and still patches the others', async () => {
    const ok = await spawnTarget(fixturePath('loop-pie'));
    const other = await spawnTarget(fixturePath('uselib')); // runs no compute: refused there
    const r = await tryCli([fixturePath('loop_fix.so'), '--pid', String(ok.pid), '--pid', String(other.pid), '--function', 'compute=compute_v2']);
    expect(r.code).toBe(5);
    expect(r.json.status).toBe('CompletedWithWarnings');
    const [a, b] = r.json.processes;
    expect(a).toMatchObject({ pid: ok.pid, ok: true });
    expect(b).toMatchObject({ pid: other.pid, ok: false, error: { unchanged: true } });
    expect(await ok.request('call')).toBe('182');
    expect(other.alive()).toBe(true);
  });

  it('--all patches every process that maps the object, and --all --revert puts them all back', async () => {
    const exe = privateCopy('loop-pie');
    const ts = await Promise.all([0, 1, 2].map(() => spawnTarget(exe)));
    const bystander = await spawnTarget(fixturePath('loop-pie')); // another file: not touched
    const r = await tryCli([fixturePath('loop_fix.so'), '--all', '--object', exe, '--function', 'compute=compute_v2']);
    expect(r.code).toBe(0);
    expect(r.json.processes.map((p: { pid: number }) => p.pid)).toEqual(ts.map((t) => t.pid).sort((x, y) => x - y));
    for (const t of ts) expect(await t.request('call')).toBe('182');
    expect(await bystander.request('call')).toBe('42');

    const back = await tryCli(['--revert', '--all', '--object', exe, '--function', 'compute']);
    expect(back.code).toBe(0);
    for (const t of ts) {
      expect(await t.request('call')).toBe('42');
      expect((await entryBytes(t.pid, 'compute')).equals(fileEntryBytes(t.pid, 'compute'))).toBe(true);
    }
  });

  it('refuses --all with no process mapping the object, and usage errors', async () => {
    const exe = privateCopy('loop-pie');
    const none = await tryCli([fixturePath('loop_fix.so'), '--all', '--object', exe, '--function', 'compute=compute_v2']);
    expect(none.code).toBe(3);
    expect(none.json.error.code).toBe('NO_PROCESSES');
    expect((await tryCli([fixturePath('loop_fix.so'), '--all', '--function', 'compute'])).code).toBe(2);
    expect((await tryCli([fixturePath('loop_fix.so'), '--all', '--pid', '1', '--object', exe, '--function', 'compute'])).code).toBe(2);
    expect((await tryCli([fixturePath('loop_fix.so'), '--function', 'compute'])).code).toBe(2);
  });
});

describe('try and the agent lock', () => {
  it('does not write while another agent holds the lock, says who holds it, and goes on once it is free', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const original = await entryBytes(t.pid, 'compute');
    const lock = await acquireLock(home, { wait: false, command: 'apply test.hpkg' });
    try {
      const busy = await tryCli([fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2', '--wait', '0']);
      expect(busy.code).toBe(3);
      expect(busy.json.error.code).toBe('AGENT_BUSY');
      expect(busy.json.error.message).toContain(`PID ${process.pid}`);
      expect((await entryBytes(t.pid, 'compute')).equals(original)).toBe(true);
      expect(await t.request('call')).toBe('42');
      const waiting = tryCli([fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2', '--wait', '20000']);
      await new Promise((r) => setTimeout(r, 500));
      expect(await t.request('call')).toBe('42'); // still waiting for the lock
      lock.release();
      const done = await waiting;
      expect(done.code).toBe(0);
      expect(await t.request('call')).toBe('182');
    } finally {
      lock.release();
    }
  });

  it('two runs at once on one process: one patches, the other says the function is already patched', async () => {
    const t = await spawnTarget(fixturePath('loop-pie'));
    const args = [fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2'];
    const results = await Promise.all([tryCli(args), tryCli(args)]);
    expect(results.map((r) => r.code).sort()).toEqual([0, 3]);
    expect(results.find((r) => r.code === 3)!.json.error.code).toBe('FUNCTION_ALREADY_PATCHED');
    expect(await t.request('call')).toBe('182');
  });
});
