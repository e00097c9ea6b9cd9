/**
 * The launcher of a service (services.ts says why there is one): run as
 * `node service-launcher.js CONFIG_JSON`, it opens the service's stdin FIFO (O_RDWR: never blocks,
 * never end of file) and its log, spawns the service in its own session with them as stdio,
 * prints {"pid":N} or {"error":...} and exits without waiting for the service.
 *
 * A program of its own, not a module: it imports nothing of hp-agent, so it starts as fast as a
 * bare Node does.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';

/** What services.ts passes as the one argument (JSON). */
export interface LauncherConfig {
  fifo: string;
  log: string;
  cwd: string;
  file: string;
  args: string[];
}

/** The one line the launcher prints. */
export interface LauncherAnswer {
  pid?: number;
  error?: string;
  code?: string;
  /** Where it failed: opening the FIFO or the log, or starting the service. */
  stage?: 'open' | 'exec';
}

const config = JSON.parse(process.argv[2] ?? '{}') as LauncherConfig;
const report = (answer: LauncherAnswer): void => {
  fs.writeSync(1, `${JSON.stringify(answer)}\n`);
};
const failure = (e: unknown, stage: LauncherAnswer['stage']): LauncherAnswer => {
  const err = e as NodeJS.ErrnoException;
  return { error: err.message, code: err.code, stage };
};

let stdinFd: number;
let logFd: number;
try {
  stdinFd = fs.openSync(config.fifo, fs.constants.O_RDWR);
  logFd = fs.openSync(config.log, 'a', 0o600);
} catch (e) {
  report(failure(e, 'open'));
  process.exit(1);
}
const child = spawn(config.file, config.args, { cwd: config.cwd, detached: true, stdio: [stdinFd, logFd, logFd] });
child.once('error', (e) => {
  report(failure(e, 'exec'));
  process.exit(1);
});
child.once('spawn', () => {
  report({ pid: child.pid });
  child.unref();
  process.exit(0);
});
