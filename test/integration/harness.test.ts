/**
 * The test harness itself (src/harness): spawning, READY handling, request queueing and timeouts,
 * killing, Unix socket clients. Misbehaving "targets" are small /bin/sh scripts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  buildFixtures,
  fixturePath,
  killAllTargets,
  killTargetsAfterEach,
  spawnTarget,
  tempSocketPath,
  UnixClient,
  unixRequest,
  useTargets,
  type HookRegistrar,
} from '../../src/harness/index.js';
import { readProcStat } from '../../src/proc/stat.js';

useTargets(afterEach);

beforeAll(async () => {
  await buildFixtures();
}, 120_000);

function parentPid(pid: number): number {
  return readProcStat(pid)!.ppid;
}

/** A target written in sh: `script` runs with the protocol's stdin and stdout. */
function shTarget(script: string, options: { readyTimeoutMs?: number } = {}) {
  return spawnTarget('/bin/sh', { args: ['-c', script], ...options });
}

describe('spawnTarget', () => {
  it('starts a fixture and talks to it', async () => {
    const target = await spawnTarget(fixturePath('loop-pie'));
    expect(target.pid).toBeGreaterThan(0);
    expect(target.path).toBe(fixturePath('loop-pie'));
    expect(target.name).toBe('loop-pie');
    expect(target.alive()).toBe(true);
    expect(await target.request('ping')).toBe('pong');
    expect(target.stderr()).toBe('');
  });

  it('rejects with the exit status and stderr of a target that dies before READY', async () => {
    const error = await shTarget('echo "fixture is broken" >&2; exit 3').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/target sh \(pid \d+\) exited with code 3 before READY/);
    expect((error as Error).message).toContain('fixture is broken');
  });

  it('rejects for a real fixture started wrong (service without a socket path)', async () => {
    await expect(spawnTarget(fixturePath('service'))).rejects.toThrow(/exited with code 2 before READY.*\n.*usage: service SOCKET/s);
  });

  it('rejects and kills a target that stays silent', async () => {
    const started = Date.now();
    await expect(shTarget('echo waiting >&2; exec sleep 30', { readyTimeoutMs: 300 })).rejects.toThrow(
      /did not print READY within 300 ms; stderr:\nwaiting/,
    );
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('rejects a target whose first line is not READY', async () => {
    await expect(shTarget('echo hello; exec sleep 30')).rejects.toThrow(/printed "hello" instead of READY; stdout:\nhello/);
  });

  it('rejects a missing executable with a hint', async () => {
    await expect(spawnTarget(fixturePath('no-such-fixture'))).rejects.toThrow(/cannot start target .*no-such-fixture.*ENOENT/);
  });

  it('runs the target as a child of fixtures/bin/launch, or directly when asked', async () => {
    const launched = await spawnTarget(fixturePath('loop-pie'));
    const launcherPid = parentPid(launched.pid);
    expect(launcherPid).not.toBe(process.pid);
    expect(parentPid(launcherPid)).toBe(process.pid);
    expect(readFileSync(`/proc/${launcherPid}/cmdline`, 'utf8').split('\0')[0]).toBe(fixturePath('launch'));

    const direct = await spawnTarget(fixturePath('loop-pie'), { direct: true });
    expect(parentPid(direct.pid)).toBe(process.pid);
    expect(await direct.request('call')).toBe('42');
    await direct.kill();
    expect(await direct.exited).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('launch passes the exit code and the signal on', async () => {
    const exits = await shTarget('echo READY; read a; exit 5');
    await expect(exits.request('go')).rejects.toThrow(/exited with code 5/);
    expect(await exits.exited).toEqual({ code: 5, signal: null });

    const crashes = await shTarget('echo READY; read a; kill -SEGV $$');
    await expect(crashes.request('go')).rejects.toThrow(/killed by SIGSEGV/);
    expect(await crashes.exited).toEqual({ code: null, signal: 'SIGSEGV' });
  });

  it('the target dies with launch', async () => {
    const target = await spawnTarget(fixturePath('blocked'));
    process.kill(parentPid(target.pid), 'SIGKILL');
    await target.exited;
    await expect.poll(() => target.alive()).toBe(false);
  });

  it('fixturePath points into fixtures/bin', () => {
    expect(fixturePath('loop-pie')).toMatch(/\/fixtures\/bin\/loop-pie$/);
    expect(existsSync(fixturePath('loop-pie'))).toBe(true);
  });
});

describe('requests', () => {
  it('answers concurrent callers in order', async () => {
    const target = await spawnTarget(fixturePath('helper_global'));
    const lines = Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? 'ping' : i % 3 === 1 ? 'call' : 'helper'));
    const answers = await Promise.all(lines.map((line) => target.request(line)));
    expect(answers).toEqual(lines.map((line) => ({ ping: 'pong', call: '83', helper: '82' })[line]));
    expect(await target.request('counter')).toBe('10');
  });

  it('times out with a message naming the target, the request and its stderr', async () => {
    const target = await shTarget('echo READY; echo "stuck in a loop" >&2; exec sleep 30');
    // let stderr arrive
    await expect.poll(() => target.stderr()).toContain('stuck in a loop');
    const error = await target.request('ping', 200).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(
      /^target sh \(pid \d+\): no answer to "ping" within 200 ms; stderr:\nstuck in a loop/,
    );
    expect(target.alive()).toBe(true);
  });

  it('a timed-out request does not steal the next answer', async () => {
    const target = await shTarget('echo READY; read a; sleep 0.5; echo "late-$a"; read b; echo "answer-$b"');
    await expect(target.request('first', 100)).rejects.toThrow(/no answer to "first" within 100 ms/);
    expect(await target.request('second')).toBe('answer-second');
  });

  it('rejects requests to a target that exited, with its exit status', async () => {
    const target = await shTarget('echo READY; read a; echo "dying" >&2; exit 7');
    await expect(target.request('anything')).rejects.toThrow(/exited with code 7; no answer to "anything"; stderr:\ndying/);
    await expect(target.request('again')).rejects.toThrow(/exited with code 7/);
    expect(target.alive()).toBe(false);
  });

  it('rejects a request that is not a single line', async () => {
    const target = await spawnTarget(fixturePath('loop-pie'));
    await expect(target.request('ping\nping')).rejects.toThrow(/single line/);
    expect(await target.request('ping')).toBe('pong');
  });
});

describe('kill', () => {
  it('is idempotent', async () => {
    const target = await spawnTarget(fixturePath('loop-pie'));
    const pid = target.pid;
    await Promise.all([target.kill(), target.kill()]);
    await target.kill();
    expect(await target.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(target.alive()).toBe(false);
    expect(existsSync(`/proc/${pid}/stat`)).toBe(false);
    await expect(target.request('ping')).rejects.toThrow(/killed by SIGKILL/);
  });

  it('works on a target that already exited', async () => {
    const target = await spawnTarget(fixturePath('loop-pie'));
    expect(await target.request('quit')).toBe('bye');
    await target.exited;
    await target.kill();
    expect(await target.exited).toEqual({ code: 0, signal: null });
  });

  it('killAllTargets kills every live target', async () => {
    const targets = await Promise.all([
      spawnTarget(fixturePath('loop-pie')),
      spawnTarget(fixturePath('blocked')),
      spawnTarget(fixturePath('spinentry')),
    ]);
    await killAllTargets();
    for (const target of targets) expect(target.alive()).toBe(false);
    await killAllTargets(); // nothing left: a no-op
  });

  it('useTargets registers killAllTargets with the given afterEach', async () => {
    const hooks: Array<() => Promise<void>> = [];
    const register: HookRegistrar = (fn) => hooks.push(fn);
    useTargets(register);
    killTargetsAfterEach(register);
    expect(hooks).toEqual([killAllTargets, killAllTargets]);
    const target = await spawnTarget(fixturePath('loop-pie'));
    await hooks[0]();
    expect(target.alive()).toBe(false);
  });

  it('useTargets without vitest globals asks for afterEach', () => {
    expect(() => useTargets()).toThrow(/pass the test runner's afterEach/);
  });
});

describe('unix sockets', () => {
  it('tempSocketPath gives distinct short paths', () => {
    const a = tempSocketPath();
    const b = tempSocketPath('x');
    expect(a).not.toBe(b);
    expect(Buffer.byteLength(a)).toBeLessThan(108);
    expect(b).toMatch(/\/x-\d+-\d+-[0-9a-f]+\.sock$/);
  });

  it('unixRequest and UnixClient talk to service', async () => {
    const socket = tempSocketPath('svc');
    await spawnTarget(fixturePath('service'), { args: [socket, '2'] });
    expect(await unixRequest(socket, 'ping')).toBe('pong');
    const client = await UnixClient.connect(socket);
    expect(await client.request('call')).toBe('v1');
    expect(await client.request('threads')).toBe('3');
    client.close();
    await expect(client.request('ping')).rejects.toThrow(/connection closed|no answer/);
  });

  it('connection errors name the socket', async () => {
    const socket = tempSocketPath('nobody');
    await expect(unixRequest(socket, 'ping')).rejects.toThrow(new RegExp(`unix socket ${socket}: cannot connect: .*ENOENT`));
  });

  it('a socket request timeout names the socket and the request', async () => {
    const socket = tempSocketPath('svc');
    // a service whose only worker is busy with another connection never answers the second one
    await spawnTarget(fixturePath('service'), { args: [socket, '1'] });
    const busy = await UnixClient.connect(socket);
    try {
      expect(await busy.request('ping')).toBe('pong');
      await expect(unixRequest(socket, 'call', 200)).rejects.toThrow(
        new RegExp(`unix socket ${socket}: no answer to "call" within 200 ms`),
      );
    } finally {
      busy.close();
    }
  });
});
