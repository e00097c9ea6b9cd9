/**
 * Health checks of automatic patching (availability first): after a service is changed, ask it
 * the way its baseline's service definition says (manifest.ts HealthCheckSchema) — a request and
 * the answer expected, or a command that must exit 0. A service without one must still run.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import type { BaselineService } from '../package/index.js';
import { expandRun } from '../agent/readiness.js';

export const DEFAULT_HEALTH_TIMEOUT_MS = 5_000;

export interface HealthResult {
  healthy: boolean;
  /** What was asked and what came back (or why nothing did). */
  detail: string;
}

/** Sends one line and reads the first line of the answer. */
function request(target: { path: string } | { port: number; host: string }, send: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(target);
    let buf = '';
    const done = (err?: Error, line?: string) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(line!);
    };
    const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${send}\n`));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(undefined, buf.slice(0, nl).replace(/\r$/, ''));
    });
    sock.on('error', (e) => done(e));
    sock.on('end', () => done(new Error(buf ? `the connection closed after "${buf}" without a whole line` : 'the connection closed without an answer')));
  });
}

/** Checks one service of the baseline; `alive` says whether its recorded process still runs. */
export async function checkHealth(home: string, service: BaselineService, alive: boolean): Promise<HealthResult> {
  if (!alive) return { healthy: false, detail: `${service.name} does not run` };
  const check = service.healthCheck;
  if (!check) return { healthy: true, detail: `${service.name} runs (its definition has no health check)` };
  const timeoutMs = check.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
  if (check.type === 'command') {
    const [cmd, ...args] = check.command.map((w) => expandRun(home, w));
    const shown = [cmd, ...args].join(' ');
    return new Promise((resolve) => {
      execFile(cmd, args, { timeout: timeoutMs }, (err) => {
        if (!err) resolve({ healthy: true, detail: `"${shown}" exited 0` });
        else resolve({ healthy: false, detail: `"${shown}" failed: ${err.killed ? `no exit within ${timeoutMs} ms` : err.message.split('\n')[0]}` });
      });
    });
  }
  const target = check.path !== undefined ? { path: expandRun(home, check.path) } : { port: check.port!, host: check.host ?? '127.0.0.1' };
  const where = 'path' in target ? target.path : `${target.host}:${target.port}`;
  try {
    const answer = await request(target, check.send, timeoutMs);
    const healthy = answer === check.expect;
    return { healthy, detail: `"${check.send}" to ${where} answered "${answer}"${healthy ? '' : `, expected "${check.expect}"`}` };
  } catch (e) {
    return { healthy: false, detail: `"${check.send}" to ${where}: ${(e as Error).message}` };
  }
}
