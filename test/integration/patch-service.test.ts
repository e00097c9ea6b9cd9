// A multi-threaded service keeps answering on its socket while it is patched and reverted.
import { afterEach, describe, expect, it } from 'vitest';
import { fixturePath, killTargetsAfterEach, spawnTarget, tempSocketPath, UnixClient } from '../../src/harness/index.js';
import { entryBytes, hpAgent, threadCount } from './helpers.js';

killTargetsAfterEach(afterEach);

describe('a service under continuous requests', () => {
  it.each([1, 8, 32])('patches and reverts with %i worker threads, no request failing', async (workers) => {
    const socket = tempSocketPath('svc');
    const t = await spawnTarget(fixturePath('service'), { args: [socket, String(workers)] });
    expect(threadCount(t.pid)).toBeGreaterThanOrEqual(workers);
    const original = await entryBytes(t.pid, 'handle_request');

    // Several clients, each on its own connection, ask without pause during everything below.
    // One connection per worker at most: a worker serves one connection at a time.
    const clients = await Promise.all(Array.from({ length: Math.min(4, workers) }, () => UnixClient.connect(socket)));
    const answers: string[] = [];
    const errors: unknown[] = [];
    let running = true;
    const load = clients.map(async (c) => {
      while (running) {
        try {
          answers.push(await c.request('call', 5000));
        } catch (e) {
          errors.push(e);
        }
      }
    });

    const applied = await hpAgent(['try', fixturePath('service_fix.so'), '--pid', String(t.pid), '--function', 'handle_request=handle_request_v2']);
    expect(applied.code).toBe(0);
    expect(applied.json.threads).toBe(threadCount(t.pid));
    const afterPatch = await clients[0].request('call');
    const reverted = await hpAgent(['try', '--revert', '--pid', String(t.pid), '--function', 'handle_request']);
    expect(reverted.code).toBe(0);
    const afterRevert = await clients[0].request('call');
    running = false;
    await Promise.all(load);
    clients.forEach((c) => c.close());

    expect(afterPatch).toBe('v2');
    expect(afterRevert).toBe('v1');
    expect(errors).toEqual([]);
    expect(answers.length).toBeGreaterThan(0);
    expect(new Set(answers.filter((a) => a !== 'v1' && a !== 'v2'))).toEqual(new Set());
    expect((await entryBytes(t.pid, 'handle_request')).equals(original)).toBe(true);
    expect(t.alive()).toBe(true);
    console.log(`service with ${workers} workers (${applied.json.threads} threads): pause ${applied.json.pauseUs} µs apply, ${reverted.json.pauseUs} µs revert`);
  });
});

describe('a process that keeps creating threads', () => {
  it('is patched with every thread stopped, new ones included, and keeps running', async () => {
    const t = await spawnTarget(fixturePath('churn'));
    const spawned0 = Number(await t.request('spawned'));
    for (let i = 0; i < 5; i++) {
      const applied = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', String(t.pid), '--function', 'compute=compute_v2']);
      expect(applied.code, applied.stderr).toBe(0);
      expect(await t.request('call')).toBe('182');
      await new Promise((r) => setTimeout(r, 20));
      // Threads born after the patch run the new code.
      expect(await t.request('last')).toBe('182');
      const reverted = await hpAgent(['try', '--revert', '--pid', String(t.pid), '--function', 'compute']);
      expect(reverted.code, reverted.stderr).toBe(0);
      expect(await t.request('call')).toBe('42');
    }
    expect(Number(await t.request('spawned'))).toBeGreaterThan(spawned0);
    expect(t.alive()).toBe(true);
  });
});
