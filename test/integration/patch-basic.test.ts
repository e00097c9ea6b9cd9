// One scenario per test: a real fixture process, its patch, and the real `hp-agent try`.
// Each checks what the process does afterwards (same PID, new answer, alive) and, after revert,
// the old answer and the original bytes read back from its memory.
import { afterEach, describe, expect, it } from 'vitest';
import { fixturePath, killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { entryBytes, fileEntryBytes, hpAgent, patchMappings } from './helpers.js';

killTargetsAfterEach(afterEach);

async function patchAndRevert(opts: {
  target: string;
  patch: string;
  fn: string;
  replacement: string;
  before: string;
  after: string;
  object?: string;
  extra?: string[];
}) {
  const t = await spawnTarget(fixturePath(opts.target));
  expect(await t.request('call')).toBe(opts.before);
  const original = await entryBytes(t.pid, opts.fn, 16, opts.object);
  expect(original.equals(fileEntryBytes(t.pid, opts.fn, 16, opts.object))).toBe(true);

  const objectArgs = opts.object ? ['--object', opts.object] : [];
  const applied = await hpAgent(['try', fixturePath(opts.patch), '--pid', String(t.pid), '--function', `${opts.fn}=${opts.replacement}`, ...objectArgs, ...(opts.extra ?? [])]);
  expect(applied.stderr).toBe('');
  expect(applied.code).toBe(0);
  expect(applied.json.pid).toBe(t.pid);
  expect(await t.request('call')).toBe(opts.after);
  expect(t.alive()).toBe(true);
  const site = applied.json.sites[0];
  const now = await entryBytes(t.pid, opts.fn, 16, opts.object);
  expect(now.equals(original)).toBe(false);
  // --json writes addresses as 0x strings.
  expect(now.subarray(Number(site.siteAddress) - Number(site.functionAddress)).subarray(0, site.after.length / 2).toString('hex')).toBe(site.after);
  expect(patchMappings(t.pid).length).toBeGreaterThan(0);

  const reverted = await hpAgent(['try', '--revert', '--pid', String(t.pid), '--function', opts.fn, ...objectArgs]);
  expect(reverted.code).toBe(0);
  expect(await t.request('call')).toBe(opts.before);
  expect((await entryBytes(t.pid, opts.fn, 16, opts.object)).equals(original)).toBe(true);
  expect(t.alive()).toBe(true);
  return { t, applied: applied.json, reverted: reverted.json };
}

describe('hp-agent try on a single-threaded loop', () => {
  it('patches and reverts a PIE executable', async () => {
    const { applied } = await patchAndRevert({ target: 'loop-pie', patch: 'loop_fix.so', fn: 'compute', replacement: 'compute_v2', before: '42', after: '182' });
    expect(applied.sites[0].kind).toBe('rel32');
    expect(applied.threads).toBe(1);
    expect(applied.pauseUs).toBeGreaterThan(0);
  });

  it('patches and reverts a non-PIE executable', async () => {
    await patchAndRevert({ target: 'loop-nopie', patch: 'loop_fix.so', fn: 'compute', replacement: 'compute_v2', before: '42', after: '182' });
  });

  it('uses the 14-byte absolute jump when the patch is out of rel32 reach', async () => {
    const { applied } = await patchAndRevert({ target: 'loop-pie', patch: 'loop_fix.so', fn: 'compute', replacement: 'compute_v2', before: '42', after: '182', extra: ['--far'] });
    expect(applied.sites[0].kind).toBe('abs64');
    expect(applied.sites[0].after.startsWith('ff2500000000')).toBe(true);
  });

  it('keeps an endbr64 entry and jumps after it', async () => {
    const { applied } = await patchAndRevert({ target: 'endbr', patch: 'endbr_fix.so', fn: 'compute', replacement: 'compute_v2', before: '42', after: '182' });
    const site = applied.sites[0];
    expect(site.keptEndbr64).toBe(true);
    expect(Number(site.siteAddress)).toBe(Number(site.functionAddress) + 4);
  });
});

describe('hp-agent try on a shared library', () => {
  it('patches a function of a library the target loaded', async () => {
    const { applied } = await patchAndRevert({ target: 'uselib', patch: 'greet_fix.so', fn: 'greet', replacement: 'greet_v2', before: 'hello', after: 'hello, patched', object: 'libgreet.so' });
    expect(applied.object.path).toMatch(/libgreet\.so$/);
  });
});

describe('a fix that uses the original object', () => {
  it('calls a static helper of the original and updates its static global', async () => {
    const t = await spawnTarget(fixturePath('helper_global'));
    const before = await t.request('call');
    const counter0 = Number(await t.request('counter'));
    const r = await hpAgent(['try', fixturePath('helper_global_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
    expect(r.code).toBe(0);
    const bound = Object.fromEntries(r.json.bindings.map((b: any) => [b.name, b]));
    expect(bound.helper.from).toMatch(/helper_global$/);
    expect(bound.counter.from).toMatch(/helper_global$/);
    const after = await t.request('call');
    expect(after).not.toBe(before);
    const counter1 = Number(await t.request('counter'));
    await t.request('call');
    const counter2 = Number(await t.request('counter'));
    // The patched compute bumps the original's counter on every call.
    expect(counter2).toBeGreaterThan(counter1);
    expect(counter1).toBeGreaterThanOrEqual(counter0);
    expect(t.alive()).toBe(true);
  });
});

describe('threads at and inside the entry', () => {
  it('patches under a thread parked exactly at the entry and steps another out of the bytes; both escape', async () => {
    const t = await spawnTarget(fixturePath('spinentry'));
    expect(await t.request('park')).toBe('parked');
    expect(await t.request('lap')).toBe('lapping');
    expect(await t.request('escaped')).toBe('0');
    const r = await hpAgent(['try', fixturePath('spinentry_fix.so'), '--pid', String(t.pid), '--function', 'parked=parked_v2', '--function', 'lapping=lapping_v2']);
    expect(r.code).toBe(0);
    expect(r.json.sites).toHaveLength(2);
    // Both spinning threads run into the new jumps and return through the replacements.
    let escaped = '0';
    for (let i = 0; i < 100 && escaped !== '2'; i++) {
      await new Promise((res) => setTimeout(res, 10));
      escaped = await t.request('escaped');
    }
    expect(escaped).toBe('2');
    expect(t.alive()).toBe(true);
  });

  it('never writes a jump over bytes a thread will return into: a signal frame on its stack says entry+4', async () => {
    const t = await spawnTarget(fixturePath('spinentry'));
    expect(await t.request('trap')).toBe('held');
    const before = await entryBytes(t.pid, 'trapping');
    const r = await hpAgent(['try', fixturePath('spinentry_fix.so'), '--pid', String(t.pid), '--function', 'trapping=parked_v2', '--mode', 'stop', '--timeout', '300']);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.json.error.code).toBe('RETURN_INTO_SITE');
    expect(r.json.error.message).toMatch(/on its stack/);
    expect((await entryBytes(t.pid, 'trapping')).equals(before)).toBe(true);
    expect(patchMappings(t.pid)).toEqual([]);
    // Let go, the handler returns to entry+4 — the original bytes — and the thread leaves.
    expect(await t.request('release')).toBe('released');
    expect(await t.request('escaped')).toBe('1');
    expect(t.alive()).toBe(true);
  });
});
