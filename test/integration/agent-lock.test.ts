import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { acquireLock, type AgentLock } from '../../src/agent/lock.js';
import { processStartTime } from '../../src/proc/stat.js';

// Child agents run the compiled module (dist/, rebuilt by test/global-setup.ts before any test).
const LOCK_JS = new URL('../../dist/agent/lock.js', import.meta.url).href;

let home: string;
const locks: AgentLock[] = [];
const children = new Set<ChildProcessWithoutNullStreams>();

beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-agent-lock-'));
});

afterEach(async () => {
  for (const lock of locks.splice(0)) lock();
  await Promise.all(
    [...children].map(async (child) => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await exited;
      }
    }),
  );
  children.clear();
  fs.rmSync(home, { recursive: true, force: true });
});

const lockFile = () => path.join(home, 'lock');

async function take(options: Parameters<typeof acquireLock>[1]): Promise<AgentLock> {
  const lock = await acquireLock(home, options);
  locks.push(lock);
  return lock;
}

/** A child agent that takes the lock, prints LOCKED, and holds it until its stdin closes. */
async function childHolder(command: string): Promise<ChildProcessWithoutNullStreams> {
  const script = `
    const { acquireLock } = await import(${JSON.stringify(LOCK_JS)});
    const release = await acquireLock(${JSON.stringify(home)}, { wait: false, command: ${JSON.stringify(command)} });
    process.stdout.write('LOCKED\\n');
    process.stdin.resume();
    process.stdin.on('end', () => { release(); });
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'pipe' });
  children.add(child);
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('LOCKED')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`child holder exited (${code}) before locking: ${err}`)));
  });
  return child;
}

function exitOf(child: ChildProcessWithoutNullStreams): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

async function deadPid(): Promise<number> {
  const child = spawn('/bin/true');
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

describe('agent lock', () => {
  it('writes who holds it, and release removes it (idempotently)', async () => {
    const lock = await take({ wait: false, command: 'status' });
    const content = JSON.parse(fs.readFileSync(lockFile(), 'utf8'));
    expect(content).toMatchObject({ pid: process.pid, command: 'status', host: os.hostname() });
    expect(content.startTime).toBe(processStartTime(process.pid));
    expect(Date.parse(content.since)).not.toBeNaN();
    expect(lock.takenOver).toBeUndefined();
    expect(lock.info.pid).toBe(process.pid);
    lock.release();
    expect(fs.existsSync(lockFile())).toBe(false);
    lock();
    // no temporary files left behind
    expect(fs.readdirSync(home)).toEqual([]);
  });

  it('refuses a second agent with AGENT_BUSY naming the holder', async () => {
    const child = await childHolder('apply x.hpkg');
    const error = await acquireLock(home, { wait: false, command: 'status' }).then(
      () => undefined,
      (e: unknown) => e as HpError,
    );
    expect(error).toBeInstanceOf(HpError);
    expect(error!.code).toBe('AGENT_BUSY');
    expect(error!.message).toMatch(new RegExp(`^another hp-agent \\(PID ${child.pid}, "apply x\\.hpkg", since \\d\\d:\\d\\d:\\d\\d\\) holds the lock at ${lockFile().replace(/[.]/g, '\\.')}`));
    expect(error!.details.holder).toMatchObject({ pid: child.pid, command: 'apply x.hpkg' });
    // the refusal left the holder's lock alone
    expect(JSON.parse(fs.readFileSync(lockFile(), 'utf8')).pid).toBe(child.pid);
  });

  it('a waiting agent gets the lock once the holder exits', async () => {
    const child = await childHolder('install');
    setTimeout(() => child.stdin.end(), 300);
    const lock = await take({ wait: 10_000, command: 'status' });
    expect(lock.waitedMs).toBeGreaterThanOrEqual(200);
    expect(lock.takenOver).toBeUndefined();
    expect(JSON.parse(fs.readFileSync(lockFile(), 'utf8')).pid).toBe(process.pid);
    expect((await exitOf(child)).code).toBe(0);
  });

  it('a waiting agent takes over when the holder is killed without releasing', async () => {
    const child = await childHolder('apply crashed.hpkg');
    setTimeout(() => child.kill('SIGKILL'), 200);
    const lock = await take({ wait: 10_000, command: 'status' });
    expect(lock.takenOver).toMatchObject({ reason: 'dead', holder: { pid: child.pid, command: 'apply crashed.hpkg' } });
  });

  it('a waiting agent gives up with AGENT_BUSY after its timeout', async () => {
    await childHolder('install');
    const began = Date.now();
    await expect(acquireLock(home, { wait: 400, command: 'status' })).rejects.toThrow(/holds the lock .*; waited \d+ ms/);
    expect(Date.now() - began).toBeGreaterThanOrEqual(350);
  });

  it('in-process waiters are served too', async () => {
    const first = await take({ wait: false, command: 'one' });
    const second = take({ wait: 5_000, command: 'two' });
    setTimeout(() => first.release(), 150);
    const lock = await second;
    expect(lock.info.command).toBe('two');
  });

  it('takes over a lock whose holder is dead', async () => {
    const pid = await deadPid();
    fs.writeFileSync(lockFile(), JSON.stringify({ pid, startTime: 1, command: 'apply old', since: new Date().toISOString(), host: os.hostname() }));
    const lock = await take({ wait: false, command: 'status' });
    expect(lock.takenOver).toMatchObject({ reason: 'dead', holder: { pid, command: 'apply old' } });
    expect(JSON.parse(fs.readFileSync(lockFile(), 'utf8')).pid).toBe(process.pid);
  });

  it('takes over a lock whose PID now belongs to another process (start time differs)', async () => {
    const child = await childHolder('holder');
    const real = JSON.parse(fs.readFileSync(lockFile(), 'utf8'));
    child.stdin.end();
    await exitOf(child);
    // The same PID, alive, but started at another time: this very test process stands in for it.
    fs.writeFileSync(lockFile(), JSON.stringify({ ...real, pid: process.pid, startTime: real.startTime + 12345 }));
    const lock = await take({ wait: false, command: 'status' });
    expect(lock.takenOver?.reason).toBe('pid-reused');
  });

  it('takes over an unreadable lock', async () => {
    fs.writeFileSync(lockFile(), '{"pid": 12');
    const lock = await take({ wait: false, command: 'status' });
    expect(lock.takenOver).toEqual({ holder: undefined, reason: 'unreadable' });
  });

  it('never releases a lock that is not its own', async () => {
    const lock = await take({ wait: false, command: 'status' });
    const other = { pid: 1, startTime: 1, command: 'x', since: new Date().toISOString(), host: os.hostname() };
    fs.writeFileSync(lockFile(), JSON.stringify(other));
    lock.release();
    expect(JSON.parse(fs.readFileSync(lockFile(), 'utf8')).pid).toBe(1);
  });

  it('is released on SIGTERM, and the signal still ends the process', async () => {
    const child = await childHolder('long job');
    expect(fs.existsSync(lockFile())).toBe(true);
    child.kill('SIGTERM');
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGTERM' });
    expect(fs.existsSync(lockFile())).toBe(false);
  });

  it('is released on SIGINT', async () => {
    const child = await childHolder('long job');
    child.kill('SIGINT');
    expect((await exitOf(child)).signal).toBe('SIGINT');
    expect(fs.existsSync(lockFile())).toBe(false);
  });

  it('lets exactly one of several racing agents hold a stale lock at a time', async () => {
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: await deadPid(), startTime: 1, command: 'crashed', since: new Date().toISOString(), host: os.hostname() }));
    const marker = path.join(home, 'inside');
    const script = `
      import fs from 'node:fs';
      const { acquireLock } = await import(${JSON.stringify(LOCK_JS)});
      for (let i = 0; i < 3; i++) {
        const lock = await acquireLock(${JSON.stringify(home)}, { wait: 20000, command: 'race' });
        try { fs.writeFileSync(${JSON.stringify(marker)}, String(process.pid), { flag: 'wx' }); }
        catch { process.stdout.write('OVERLAP\\n'); }
        await new Promise((r) => setTimeout(r, 20));
        fs.rmSync(${JSON.stringify(marker)}, { force: true });
        if (lock.takenOver) process.stdout.write('TOOK-OVER\\n');
        lock();
      }
    `;
    const racers = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'pipe' });
      children.add(child);
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      return exitOf(child).then((exit) => ({ exit, out, err }));
    });
    const results = await Promise.all(racers);
    for (const r of results) {
      expect(r.err).toBe('');
      expect(r.exit.code).toBe(0);
      expect(r.out).not.toContain('OVERLAP');
    }
    expect(results.map((r) => r.out.split('TOOK-OVER').length - 1).reduce((a, b) => a + b)).toBe(1);
    expect(fs.readdirSync(home)).toEqual([]);
  });
});
