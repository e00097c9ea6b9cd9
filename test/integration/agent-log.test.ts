import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { homeLayout } from '../../src/agent/home.js';
import { closeLogger, createLogger } from '../../src/agent/log.js';

const LOG_JS = new URL('../../dist/agent/log.js', import.meta.url).href;

let home: string;

beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-agent-log-'));
});

afterEach(async () => {
  vi.restoreAllMocks();
  await closeLogger();
  fs.rmSync(home, { recursive: true, force: true });
});

function logLines(): Record<string, unknown>[] {
  return fs
    .readFileSync(homeLayout(home).agentLog, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function runNode(script: string): Promise<{ code: number | null; stderr: string; ms: number }> {
  const began = Date.now();
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, ms: Date.now() - began });
    }),
  );
}

describe('agent log', () => {
  it('writes JSON lines with timestamp, level, message and metadata', async () => {
    const log = createLogger(home, { verbose: false });
    log.info('applying', { kb: 'KB5000001', pids: [1, 2] });
    log.warn('slow');
    log.debug('details');
    // lines are on disk at once, before any flush
    const lines = logLines();
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatchObject({ level: 'info', message: 'applying', kb: 'KB5000001', pids: [1, 2] });
    expect(Date.parse(String(lines[0].timestamp))).not.toBeNaN();
    expect(lines.map((l) => l.level)).toEqual(['info', 'warn', 'debug']);
    await closeLogger();
    expect(fs.statSync(homeLayout(home).agentLog).mode & 0o777).toBe(0o600);
  });

  it('logs errors with their stack', async () => {
    const log = createLogger(home);
    log.error('failed', { error: new Error('boom') });
    log.error(new Error('direct'));
    const lines = logLines();
    expect(lines[0]).toMatchObject({ level: 'error', message: 'failed', error: { name: 'Error', message: 'boom' } });
    expect(String((lines[0].error as { stack: string }).stack)).toContain('Error: boom');
    expect(lines[1]).toMatchObject({ level: 'error', message: 'direct' });
    expect(String(lines[1].stack)).toContain('Error: direct');
  });

  it('verbose mirrors entries to stderr in a short human format', async () => {
    const writes: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      writes.push(String(chunk));
      return true;
    });
    const log = createLogger(home, { verbose: true });
    log.info('applying KB5000001', { pid: 42, target: 'my service' });
    await closeLogger();
    vi.restoreAllMocks();
    const text = writes.join('');
    expect(text).toMatch(/^\d\d:\d\d:\d\d info {2}applying KB5000001 pid=42 target="my service"\n$/);
    expect(logLines()).toHaveLength(1);
  });

  it('keeps the last lines when the process exits abruptly, and never keeps it alive', async () => {
    const abrupt = await runNode(`
      const { createLogger } = await import(${JSON.stringify(LOG_JS)});
      const log = createLogger(${JSON.stringify(home)}, { verbose: false });
      for (let i = 0; i < 100; i++) log.info('line ' + i);
      process.exit(3);
    `);
    expect(abrupt.code).toBe(3);
    expect(logLines()).toHaveLength(100);

    const natural = await runNode(`
      const { createLogger } = await import(${JSON.stringify(LOG_JS)});
      const log = createLogger(${JSON.stringify(home)}, { verbose: true });
      log.info('done');
    `);
    expect(natural.code).toBe(0);
    expect(natural.stderr).toContain('info  done');
    expect(natural.ms).toBeLessThan(5_000);

    const closed = await runNode(`
      const { createLogger, closeLogger } = await import(${JSON.stringify(LOG_JS)});
      const log = createLogger(${JSON.stringify(home)}, { verbose: true });
      log.info('closing');
      await closeLogger();
      process.stderr.write('closed\\n');
    `);
    expect(closed.code).toBe(0);
    // closing the logger leaves stderr usable
    expect(closed.stderr).toMatch(/info  closing\nclosed\n$/);
    expect(logLines().map((l) => l.message).slice(-2)).toEqual(['done', 'closing']);
  });
});
