// Readiness kinds (src/agent/readiness.ts), each with a real service (fixtures/targets/readyd.c)
// started by startService: a READY line, sd_notify's READY=1 on $NOTIFY_SOCKET, a Unix or TCP
// socket that accepts — and a service that never becomes ready, which fails clearly within its
// timeout and is stopped.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { buildFixtures, fixturePath } from '../../src/harness/index.js';
import { ensureHome } from '../../src/agent/home.js';
import { serviceAlive, startService, type ServiceRecord } from '../../src/agent/services.js';
import { notifySocketPath, type Readiness } from '../../src/agent/readiness.js';
import { ServiceSchema } from '../../src/package/index.js';
import { processExists } from '../../src/proc/stat.js';
import { parseReadinessSpec } from '../../src/cli/pack.js';

let home: string;
const started: ServiceRecord[] = [];

beforeAll(async () => {
  await buildFixtures();
});

beforeEach(async () => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'hpr-'));
  await ensureHome(home);
});

afterEach(() => {
  for (const r of started.splice(0)) {
    if (serviceAlive(r)) process.kill(-r.pid, 'SIGKILL');
  }
  fs.rmSync(home, { recursive: true, force: true });
});

async function start(args: string[], readiness?: Readiness) {
  const r = await startService(home, { name: 'readyd', file: fixturePath('readyd'), args, baselineId: 'b', readiness }, { readyTimeoutMs: 10_000 });
  started.push(r);
  return r;
}

/** A TCP port nobody listens on now. */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const connects = (to: net.NetConnectOpts) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(to, () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

describe('readiness', () => {
  it('line (the default): waits for the READY line', async () => {
    const r = await start(['line']);
    expect(serviceAlive(r)).toBe(true);
    expect(r.readyMs).toBeGreaterThanOrEqual(90);
  });

  it('notify: gives the service NOTIFY_SOCKET and waits for READY=1', async () => {
    const r = await start(['notify'], { type: 'notify' });
    expect(serviceAlive(r)).toBe(true);
    expect(r.readyMs).toBeGreaterThanOrEqual(90);
    expect(fs.readFileSync(`/proc/${r.pid}/environ`, 'latin1').split('\0')).toContain(`NOTIFY_SOCKET=${notifySocketPath(home, 'readyd')}`);
    expect(fs.existsSync(notifySocketPath(home, 'readyd'))).toBe(false); // removed once the wait is over
  });

  it('socket: a Unix socket (${HP_RUN} expanded) that accepts', async () => {
    const r = await start(['unix', '${HP_RUN}/readyd.sock'], { type: 'socket', path: '${HP_RUN}/readyd.sock' });
    expect(r.readyMs).toBeGreaterThanOrEqual(90);
    expect(await connects({ path: path.join(home, 'run/readyd.sock') })).toBe(true);
  });

  it('socket: a TCP port that accepts', async () => {
    const port = await freePort();
    const r = await start(['tcp', String(port)], { type: 'socket', port });
    expect(r.readyMs).toBeGreaterThanOrEqual(90);
    expect(await connects({ host: '127.0.0.1', port })).toBe(true);
  });

  it.each<[string, Readiness, RegExp]>([
    ['line', { type: 'line', timeoutMs: 700 }, /did not write READY within 700 ms/],
    ['notify', { type: 'notify', timeoutMs: 700 }, /did not send READY=1 to \$NOTIFY_SOCKET within 700 ms/],
    ['socket', { type: 'socket', port: 1, timeoutMs: 700 }, /did not accept a connection on 127\.0\.0\.1:1 within 700 ms/],
  ])('a service that never becomes ready (%s) fails with SERVICE_NOT_READY within its timeout, and is stopped', async (_kind, readiness, message) => {
    const e = await startService(home, { name: 'readyd', file: fixturePath('readyd'), args: ['never'], baselineId: 'b', readiness }).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(HpError);
    expect((e as HpError).code).toBe('SERVICE_NOT_READY');
    expect((e as HpError).message).toMatch(message);
    const pid = (e as HpError).details.pid as number;
    expect(processExists(pid)).toBe(false);
  });

  it('the manifest takes one kind per service and refuses a probe that names no socket, or two', () => {
    const ok = (readiness: unknown) => ServiceSchema.safeParse({ name: 's', file: 'bin/s', args: [], readiness }).success;
    expect(ok(undefined)).toBe(true);
    for (const r of [{ type: 'line' }, { type: 'notify', timeoutMs: 5000 }, { type: 'socket', path: '${HP_RUN}/s.sock' }, { type: 'socket', port: 8080, host: '::1' }]) expect(ok(r)).toBe(true);
    for (const r of [{ type: 'socket' }, { type: 'socket', path: '/x', port: 1 }, { type: 'socket', path: '/x', host: 'h' }, { type: 'http' }, { type: 'line', timeoutMs: 0 }, { type: 'notify', extra: 1 }]) expect(ok(r)).toBe(false);
  });

  it('hp-agent pack baseline --readiness NAME=KIND[@TIMEOUT_MS] gives the service its kind, or is bad usage', () => {
    expect(parseReadinessSpec('web=notify@5000')).toEqual({ name: 'web', readiness: { type: 'notify', timeoutMs: 5000 } });
    expect(parseReadinessSpec('web=line')).toEqual({ name: 'web', readiness: { type: 'line' } });
    expect(parseReadinessSpec('web=socket:${HP_RUN}/web.sock')).toEqual({ name: 'web', readiness: { type: 'socket', path: '${HP_RUN}/web.sock' } });
    expect(parseReadinessSpec('web=tcp:8080')).toEqual({ name: 'web', readiness: { type: 'socket', port: 8080 } });
    expect(parseReadinessSpec('web=tcp:127.0.0.1:8080@2000')).toEqual({ name: 'web', readiness: { type: 'socket', host: '127.0.0.1', port: 8080, timeoutMs: 2000 } });
    for (const bad of ['web=http', 'web=tcp:x', 'web=notify@soon', 'web=line@0', 'web']) expect(() => parseReadinessSpec(bad)).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });
});
