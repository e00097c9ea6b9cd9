import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { buildFixtures, fixturePath, unixRequest } from '../../src/harness/index.js';
import { ensureHome, homeLayout, serviceLogPath } from '../../src/agent/home.js';
import { isGone, processStartTime, readProcStat } from '../../src/proc/stat.js';
import {
  readServicePidFile,
  serviceAlive,
  servicePidFile,
  serviceStdinFifo,
  startService,
  stopService,
  type ServiceRecord,
} from '../../src/agent/services.js';

// Child agents run the compiled module (dist/, rebuilt by test/global-setup.ts before any test).
const SERVICES_JS = new URL('../../dist/agent/services.js', import.meta.url).href;
const HP_RUN = '${HP_RUN}';

let home: string;
const started: ServiceRecord[] = [];

beforeAll(async () => {
  await buildFixtures();
});

beforeEach(async () => {
  // short: the service's Unix socket lives under it (sun_path holds 107 bytes)
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'hpa-'));
  await ensureHome(home);
});

afterEach(async () => {
  for (const record of started.splice(0)) {
    if (serviceAlive(record)) {
      try {
        process.kill(-record.pid, 'SIGKILL'); // the service leads its own process group
      } catch {
        // gone meanwhile
      }
    }
  }
  fs.rmSync(home, { recursive: true, force: true });
});

async function start(spec: { name: string; file: string; args: string[] }, readyTimeoutMs?: number) {
  const record = await startService(home, { ...spec, baselineId: 'base-1' }, { readyTimeoutMs });
  started.push(record);
  return record;
}

/** Live (non-zombie) processes of a process group. */
function groupMembers(pgid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => {
      const stat = readProcStat(pid);
      return stat !== undefined && stat.pgrp === pgid && !isGone(stat.state);
    });
}

/** Signals a process ignores, from /proc/PID/status. */
function ignoredSignals(pid: number): bigint {
  const m = /^SigIgn:\s*([0-9a-f]+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return BigInt(`0x${m![1]}`);
}

async function errorOf(p: Promise<unknown>): Promise<HpError> {
  const e = await p.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(e).toBeInstanceOf(HpError);
  return e as HpError;
}

describe('services', () => {
  it('runs a fixture service detached, with its socket answering, and stops it with SIGTERM', async () => {
    const record = await start({ name: 'web', file: fixturePath('service'), args: [`${HP_RUN}/web.sock`, '2'] });
    expect(record).toMatchObject({ name: 'web', file: fixturePath('service'), baselineId: 'base-1' });
    expect(record.readyMs).toBeGreaterThan(0);
    expect(record.readyMs).toBeLessThan(10_000);
    expect(serviceAlive(record)).toBe(true);

    const sock = path.join(homeLayout(home).run, 'web.sock');
    expect(await unixRequest(sock, 'ping')).toBe('pong');
    expect(await unixRequest(sock, 'call')).toBe('v1');
    expect(await unixRequest(sock, 'threads')).toBe('3');

    // Not our child (nor our child's): re-parented, in a session of its own.
    const stat = readProcStat(record.pid)!;
    expect(stat.ppid).not.toBe(process.pid);
    expect(readProcStat(stat.ppid)?.ppid).not.toBe(process.pid);
    expect(stat.session).toBe(record.pid);
    expect(stat.pgrp).toBe(record.pid);
    expect(stat.startTime).toBe(record.startTime);
    // Signal dispositions are the defaults (a shell's background job would ignore SIGINT/SIGQUIT).
    const sig = (n: number) => 1n << BigInt(n - 1);
    expect(ignoredSignals(record.pid) & (sig(2) | sig(3) | sig(15))).toBe(0n);

    // Its stdin is its own FIFO, not ours; stdout and stderr go to its log.
    expect(fs.readlinkSync(`/proc/${record.pid}/fd/0`)).toBe(serviceStdinFifo(home, 'web'));
    expect(fs.readlinkSync(`/proc/${record.pid}/fd/1`)).toBe(serviceLogPath(home, 'web'));
    expect(fs.readFileSync(serviceLogPath(home, 'web'), 'utf8')).toContain('READY\n');
    expect(readServicePidFile(home, 'web')).toEqual({
      name: record.name,
      pid: record.pid,
      startTime: record.startTime,
      file: record.file,
      baselineId: record.baselineId,
      startedAt: record.startedAt,
    });

    expect(await stopService(record, { home })).toEqual({ stopped: true, how: 'SIGTERM' });
    expect(serviceAlive(record)).toBe(false);
    expect(fs.existsSync(servicePidFile(home, 'web'))).toBe(false);
    expect(await stopService(record)).toEqual({ stopped: true, how: 'already-gone' });
  });

  it('keeps its stdin open: a writer that comes and goes is no end of file', async () => {
    const record = await start({ name: 'web', file: fixturePath('service'), args: [`${HP_RUN}/web.sock`, '1'] });
    const fifo = serviceStdinFifo(home, 'web');
    fs.writeFileSync(fifo, 'ping\ncall\n'); // opens, writes, closes: the only outside writer leaves
    const log = serviceLogPath(home, 'web');
    for (let i = 0; i < 200 && !fs.readFileSync(log, 'utf8').includes('v1\n'); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(fs.readFileSync(log, 'utf8')).toBe('READY\npong\nv1\n');
    await new Promise((r) => setTimeout(r, 100));
    expect(serviceAlive(record)).toBe(true);
    expect(await unixRequest(path.join(homeLayout(home).run, 'web.sock'), 'ping')).toBe('pong');
  });

  it('outlives the agent process that started it', async () => {
    const script = `
      const { startService } = await import(${JSON.stringify(SERVICES_JS)});
      const r = await startService(${JSON.stringify(home)}, { name: 'web', file: ${JSON.stringify(fixturePath('service'))}, args: ['\${HP_RUN}/web.sock', '2'], baselineId: 'b' });
      process.stdout.write(JSON.stringify(r));
    `;
    // The agent's stdin is a pipe that we close: the service must not share it.
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.end();
    const code = await new Promise((resolve) => child.once('exit', resolve));
    expect(err).toBe('');
    expect(code).toBe(0);
    const record = JSON.parse(out) as ServiceRecord;
    started.push(record);
    await new Promise((r) => setTimeout(r, 100));
    expect(serviceAlive(record)).toBe(true);
    expect(readProcStat(record.pid)!.ppid).not.toBe(child.pid);
    expect(await unixRequest(path.join(homeLayout(home).run, 'web.sock'), 'threads')).toBe('3');
    expect((await stopService(record, { home })).how).toBe('SIGTERM');
  });

  it('falls back to SIGKILL when SIGTERM is ignored, for the whole process group', async () => {
    const record = await start({
      name: 'stubborn',
      file: '/bin/sh',
      args: ['-c', "trap '' TERM; echo READY; while :; do sleep 1; done"], // a long-lived child, seen even by a slow scan of /proc
    });
    // wait until the loop has a `sleep` child in the group
    for (let i = 0; i < 100 && groupMembers(record.pid).length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect(groupMembers(record.pid).length).toBeGreaterThanOrEqual(2);
    const stop = await stopService(record, { timeoutMs: 300, home });
    expect(stop).toEqual({ stopped: true, how: 'SIGKILL' });
    expect(serviceAlive(record)).toBe(false);
    for (let i = 0; i < 100 && groupMembers(record.pid).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(groupMembers(record.pid)).toEqual([]);
  });

  it('refuses to start a service twice', async () => {
    await start({ name: 'web', file: fixturePath('service'), args: [`${HP_RUN}/web.sock`, '1'] });
    const error = await errorOf(start({ name: 'web', file: fixturePath('service'), args: [`${HP_RUN}/web2.sock`, '1'] }));
    expect(error.code).toBe('SERVICE_ALREADY_RUNNING');
  });

  it('reports a service that dies before READY, with its log', async () => {
    const error = await errorOf(start({ name: 'dies', file: '/bin/sh', args: ['-c', 'echo cannot bind >&2; exit 3'] }));
    expect(error.code).toBe('SERVICE_EXITED');
    expect(error.message).toContain('cannot bind');
    expect(fs.existsSync(servicePidFile(home, 'dies'))).toBe(false);
  });

  it('stops a service that stays silent past its ready timeout', async () => {
    const error = await errorOf(start({ name: 'silent', file: '/bin/sh', args: ['-c', 'exec sleep 30'] }, 400));
    expect(error.code).toBe('SERVICE_NOT_READY');
    expect(error.message).toMatch(/did not write READY within 400 ms; it was stopped \(SIGTERM\)/);
    expect(processStartTime(error.details.pid as number)).toBeUndefined(); // gone (or a zombie)
  });

  it('needs READY after the start, not an old one in the log', async () => {
    fs.writeFileSync(serviceLogPath(home, 'old'), 'READY\n');
    const error = await errorOf(start({ name: 'old', file: '/bin/sh', args: ['-c', 'exec sleep 30'] }, 300));
    expect(error.code).toBe('SERVICE_NOT_READY');
  });

  it('refuses a file that is not an absolute path to an executable', async () => {
    expect((await errorOf(start({ name: 'x', file: 'service', args: [] }))).code).toBe('SERVICE_FILE_NOT_EXECUTABLE');
    expect((await errorOf(start({ name: 'x', file: '/nonexistent/bin', args: [] }))).code).toBe('SERVICE_FILE_NOT_EXECUTABLE');
    expect((await errorOf(start({ name: '../x', file: '/bin/sh', args: [] }))).code).toBe('BAD_NAME');
  });

  it('reports a file the launcher cannot exec (a directory passes the access check), naming the stage', async () => {
    const error = await errorOf(start({ name: 'dir', file: home, args: [] }));
    expect(error.code).toBe('SERVICE_START_FAILED');
    expect(error.details).toMatchObject({ service: 'dir', file: home, code: 'EACCES', stage: 'exec' });
    expect(fs.existsSync(servicePidFile(home, 'dir'))).toBe(false);
  });

  it('the launcher is the compiled dist/agent/service-launcher.js, a program of its own that answers one line', async () => {
    const launcher = new URL('../../dist/agent/service-launcher.js', import.meta.url).pathname;
    const runIt = (config: object) =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, [launcher, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
        child.once('error', reject);
        child.once('close', () => resolve(out));
      });
    const log = path.join(home, 'l.log');
    expect(JSON.parse(await runIt({ fifo: path.join(home, 'missing.fifo'), log, cwd: home, file: '/bin/true', args: [] }))).toMatchObject({ code: 'ENOENT', stage: 'open' });
    // a plain file as stdin will do here: the launcher only opens it
    const stdin = path.join(home, 'stdin');
    fs.writeFileSync(stdin, '');
    const answer = JSON.parse(await runIt({ fifo: stdin, log, cwd: home, file: '/bin/sh', args: ['-c', 'echo started $$'] })) as { pid: number };
    for (let i = 0; i < 200 && !fs.readFileSync(log, 'utf8').includes('started'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(fs.readFileSync(log, 'utf8')).toBe(`started ${answer.pid}\n`);
  });

  it('serviceAlive is PID-reuse safe', async () => {
    const record = await start({ name: 'web', file: fixturePath('service'), args: [`${HP_RUN}/web.sock`, '1'] });
    expect(serviceAlive({ pid: record.pid, startTime: record.startTime + 1 })).toBe(false);
    expect(serviceAlive({ pid: process.pid, startTime: record.startTime })).toBe(false);
    // stopService never signals a process that only has the same PID
    expect(await stopService({ ...record, startTime: record.startTime + 1 })).toEqual({ stopped: true, how: 'already-gone' });
    expect(serviceAlive(record)).toBe(true);
  });
});
