/**
 * The baseline's services: real, long-lived processes that outlive the agent's CLI process.
 *
 * How a service is started (and why):
 *
 *   agent ──spawn──> node service-launcher.js ──spawn(detached)──> SERVICE   (the launcher exits at once)
 *
 * - The service is a *grandchild* of the agent. The agent's child is a tiny Node launcher that
 *   spawns the service and exits as soon as the exec succeeded, printing the service's PID; the
 *   service is then re-parented to init (or to the nearest child subreaper). The agent must not be
 *   the service's parent: libuv reaps its own children with waitpid() on every SIGCHLD, and such a
 *   waitpid() also consumes the ptrace-stops of a child the agent traces (see
 *   fixtures/tools/launch.c), which would break live patching from this very process.
 * - The launcher is Node rather than `sh -c '... &'`: a POSIX shell starts a background job with
 *   SIGINT and SIGQUIT ignored (and dash makes that irrevocable), which the service would inherit
 *   through exec; libuv resets every signal disposition to the default in the child instead. Node
 *   also reports an exec failure (ENOENT, EACCES) to us as an error instead of as a log line.
 * - `detached: true` makes the service a session and process-group leader (setsid): no
 *   controlling terminal, so a Ctrl-C or hang-up of the agent's terminal never reaches it, and
 *   stopService() can signal its whole process group.
 * - stdin is a FIFO, run/<name>.stdin, opened O_RDWR by the launcher and handed to the service as
 *   fd 0. The service thus holds a writer of its own stdin, which therefore never reaches end of
 *   file (our fixtures exit at EOF), whoever else opens and closes the FIFO. Anybody may still
 *   send the service a command line by writing to the FIFO.
 * - stdout and stderr are appended (O_APPEND) to logs/services/<name>.log. Readiness is, as the
 *   manifest chooses (readiness.ts), a line `READY` in that log after the offset it had when the
 *   service was started, `READY=1` sent to $NOTIFY_SOCKET (sd_notify), or a socket that accepts.
 * - Identity is (PID, start time), the start time being field 22 of /proc/PID/stat (clock ticks
 *   after boot): a recycled PID has another start time, so serviceAlive() never mistakes a new
 *   process for the old service, and stopService() never signals a stranger.
 * - run/<name>.pid records the running service (JSON, the record below): a second start of the
 *   same name is refused while that record is alive.
 */
import { execFile, spawn } from 'node:child_process';
import fs, { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { peekBuildId } from '../elf/index.js';
import { HpError } from '../errors.js';
import { isGone, processIsSame, processStartTime, readProcStat } from '../proc/stat.js';
import { nowIso } from '../clock.js';
import { readJsonSync, writeJsonAtomic } from '../fs/atomic.js';
import { checkSafeName, homeLayout, serviceLogPath } from './home.js';
import { killPoint } from './kill-point.js';
import { DEFAULT_READINESS, expandRun, prepareReadiness, readinessWaiter, type Readiness } from './readiness.js';
import type { LauncherAnswer, LauncherConfig } from './service-launcher.js';
import { logSize, logTail } from './service-log.js';

export interface ServiceSpec {
  name: string;
  /** Absolute path of the executable. */
  file: string;
  /** Arguments; every `${HP_RUN}` in them is replaced by the home's run directory. */
  args: string[];
  baselineId: string;
  /** 'external': something else starts and stops it; the agent runs `restart` at a reboot and finds its new process. */
  managedBy?: 'external';
  restart?: string[];
  /** The build-id of its file: how its process is recognised whatever path it runs the file from. */
  buildId?: string;
  /** How it says it is ready (default: a line READY). */
  readiness?: Readiness;
}

/** A running service, as recorded in state.services. */
export interface ServiceRecord {
  name: string;
  pid: number;
  /** Field 22 of /proc/PID/stat: with the PID, identifies the process even after PID reuse. */
  startTime: number;
  file: string;
  baselineId: string;
  startedAt: string;
  /** Started by something else (found, not launched): a reboot restarts it with its command, never by a signal. */
  managedBy?: 'external';
}

export interface StartServiceOptions {
  /** How long the service may take to write READY; default 10000 ms. */
  readyTimeoutMs?: number;
  /**
   * Called before the launcher runs, with the log's offset from which READY is awaited: a caller
   * that records it can later adopt a service a killed agent launched (waitServiceReady).
   */
  beforeLaunch?: (logOffset: number) => Promise<void>;
  /** Called as soon as the service's PID is known, before READY is awaited (record it now). */
  launched?: (record: ServiceRecord, logOffset: number) => Promise<void>;
}

export interface StopServiceOptions {
  /** How long SIGTERM may take before SIGKILL; default 5000 ms. */
  timeoutMs?: number;
  /** When given, the service's pid file in <home>/run is removed once it is gone. */
  home?: string;
}

export interface StopResult {
  stopped: boolean;
  how: 'SIGTERM' | 'SIGKILL' | 'already-gone';
}

const DEFAULT_READY_TIMEOUT_MS = 10_000;
const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const KILL_WAIT_MS = 3_000;
const LAUNCHER_TIMEOUT_MS = 15_000;
const POLL_MS = 15;

// ---------------------------------------------------------------------------------------------
// Identity

/** Same PID and same start time (so not a recycled PID), and not a zombie. */
export function serviceAlive(record: Pick<ServiceRecord, 'pid' | 'startTime'>): boolean {
  return processIsSame(record.pid, record.startTime);
}

// ---------------------------------------------------------------------------------------------
// Paths

export function servicePidFile(home: string, name: string): string {
  checkSafeName('service name', name);
  return path.join(homeLayout(home).run, `${name}.pid`);
}

export function serviceStdinFifo(home: string, name: string): string {
  checkSafeName('service name', name);
  return path.join(homeLayout(home).run, `${name}.stdin`);
}

/** The record in run/<name>.pid, or undefined when there is none (or it is unreadable). */
export function readServicePidFile(home: string, name: string): ServiceRecord | undefined {
  try {
    const value = readJsonSync(servicePidFile(home, name)) as ServiceRecord | undefined;
    if (!value || typeof value.pid !== 'number' || typeof value.startTime !== 'number') return undefined;
    return value;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Start

// The launcher is the compiled dist/agent/service-launcher.js whether this module runs from dist/
// (or from the bundle, dist/bundle/), or from the TypeScript sources under a test runner: Node runs
// JavaScript only, and every one of these sits two folders below the package root.
const LAUNCHER = fileURLToPath(new URL('../../dist/agent/service-launcher.js', import.meta.url));

function runLauncher(config: LauncherConfig, env: NodeJS.ProcessEnv): Promise<LauncherAnswer> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LAUNCHER, JSON.stringify(config)], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // The window in which a killed agent leaves a service nobody knows the PID of (the launcher
    // still starts it): repair finds such a service by its executable and arguments.
    killPoint('service:launcher-spawned');
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), LAUNCHER_TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as LauncherAnswer);
      } catch {
        resolve({ error: `the launcher ended (${signal ?? `exit code ${code}`}) without reporting a PID: ${err.trim() || out.trim() || 'no output'}` });
      }
    });
  });
}

function makeFifo(fifo: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('mkfifo', ['-m', '600', fifo], (error, _stdout, stderr) => {
      if (error) reject(new Error(stderr.trim() || error.message));
      else resolve();
    });
  });
}

async function ensureFifo(fifo: string): Promise<void> {
  const st = await fsp.lstat(fifo).catch(() => undefined);
  if (st?.isFIFO()) return;
  if (st) await fsp.rm(fifo, { force: true });
  await makeFifo(fifo);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The service's arguments as it is started: every `${HP_RUN}` replaced by the home's run directory. */
function expandArgs(home: string, spec: ServiceSpec): string[] {
  return spec.args.map((arg) => expandRun(home, arg));
}

/**
 * Every live process that runs this service: its executable is the spec's file and its arguments
 * are the spec's. This finds a service whatever recorded it, or if nothing did (an agent killed
 * between the launch and learning the PID), so a repair never leaves a duplicate running.
 */
export function findServiceProcesses(home: string, spec: ServiceSpec): { pid: number; startTime: number }[] {
  const want = [spec.file, ...expandArgs(home, spec)].join('\0');
  const out: { pid: number; startTime: number }[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    try {
      const exe = fs.readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
      if (exe !== spec.file) continue;
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0$/, '').split('\0');
      if ([exe, ...argv.slice(1)].join('\0') !== want) continue;
    } catch {
      continue; // gone, or not ours to read
    }
    const startTime = processStartTime(pid);
    if (startTime !== undefined) out.push({ pid, startTime });
  }
  return out;
}

/**
 * Start a service as a detached, long-lived grandchild (see the top of this file) and wait until
 * it writes READY. Refuses SERVICE_ALREADY_RUNNING, SERVICE_FILE_NOT_EXECUTABLE, and fails with
 * SERVICE_START_FAILED, SERVICE_EXITED (died before READY) or SERVICE_NOT_READY (timed out; the
 * service is stopped then). Callers record the returned record in state.services.
 */
export async function startService(
  home: string,
  spec: ServiceSpec,
  options: StartServiceOptions = {},
): Promise<ServiceRecord & { readyMs: number }> {
  checkSafeName('service name', spec.name);
  const layout = homeLayout(home);
  if (!path.isAbsolute(spec.file)) {
    throw new HpError('SERVICE_FILE_NOT_EXECUTABLE', `refusing to start service ${spec.name}: its file ${spec.file} is not an absolute path`, {
      service: spec.name,
      file: spec.file,
    });
  }
  try {
    await fsp.access(spec.file, fs.constants.X_OK);
  } catch (error) {
    throw new HpError(
      'SERVICE_FILE_NOT_EXECUTABLE',
      `refusing to start service ${spec.name}: ${spec.file} is not an executable file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
      { service: spec.name, file: spec.file },
    );
  }
  const previous = readServicePidFile(home, spec.name);
  if (previous && serviceAlive(previous)) {
    throw new HpError(
      'SERVICE_ALREADY_RUNNING',
      `refusing to start service ${spec.name}: it already runs as PID ${previous.pid} (started ${previous.startedAt} from baseline ${previous.baselineId}); stop it first`,
      { service: spec.name, pid: previous.pid, baselineId: previous.baselineId },
    );
  }

  await fsp.mkdir(layout.run, { recursive: true, mode: 0o700 });
  await fsp.mkdir(layout.serviceLogs, { recursive: true, mode: 0o700 });
  const fifo = serviceStdinFifo(home, spec.name);
  try {
    await ensureFifo(fifo);
  } catch (error) {
    throw new HpError('SERVICE_START_FAILED', `cannot start service ${spec.name}: cannot create its stdin FIFO ${fifo}: ${(error as Error).message}`, {
      service: spec.name,
      fifo,
    });
  }

  const args = expandArgs(home, spec);
  const readiness = spec.readiness ?? DEFAULT_READINESS;
  let prepared;
  try {
    prepared = prepareReadiness(home, spec.name, readiness);
  } catch (error) {
    throw new HpError('SERVICE_START_FAILED', `cannot start service ${spec.name}: cannot bind its notify socket: ${(error as Error).message}`, { service: spec.name });
  }
  try {
    return await launchAndWait(home, spec, options, { args, readiness, notifyFd: prepared.notifyFd, env: prepared.env });
  } finally {
    prepared.close();
  }
}

async function launchAndWait(
  home: string,
  spec: ServiceSpec,
  options: StartServiceOptions,
  ready: { args: string[]; readiness: Readiness; notifyFd?: number; env: Record<string, string> },
): Promise<ServiceRecord & { readyMs: number }> {
  const layout = homeLayout(home);
  const { args } = ready;
  const fifo = serviceStdinFifo(home, spec.name);
  const log = serviceLogPath(home, spec.name);
  const env: NodeJS.ProcessEnv = { ...process.env, HP_RUN: layout.run, ...ready.env };
  // Not ours to pass on: a NOTIFY_SOCKET the agent itself was given belongs to its own manager.
  if (!ready.env.NOTIFY_SOCKET) delete env.NOTIFY_SOCKET;
  // The launcher is a plain Node: keep the agent's own Node options (loaders, inspector) out of it.
  delete env.NODE_OPTIONS;
  const offset = await logSize(log);
  await options.beforeLaunch?.(offset);
  const began = performance.now();
  const startedAt = nowIso();
  let answer: LauncherAnswer;
  try {
    answer = await runLauncher({ fifo, log, cwd: layout.run, file: spec.file, args }, env);
  } catch (error) {
    throw new HpError('SERVICE_START_FAILED', `cannot start service ${spec.name}: cannot run the launcher ${process.execPath} ${LAUNCHER}: ${(error as Error).message}`, {
      service: spec.name,
    });
  }
  if (typeof answer.pid !== 'number' || !Number.isSafeInteger(answer.pid) || answer.pid <= 0) {
    throw new HpError('SERVICE_START_FAILED', `cannot start service ${spec.name} (${spec.file}): ${answer.error ?? 'no PID reported'}`, {
      service: spec.name,
      file: spec.file,
      code: answer.code,
      stage: answer.stage,
    });
  }
  const pid = answer.pid;
  const startTime = processStartTime(pid);
  if (startTime === undefined) {
    const tail = await logTail(log, offset);
    throw new HpError('SERVICE_EXITED', `service ${spec.name} (PID ${pid}) exited right after it started${tail ? `; its log ends with: ${tail}` : ''}`, {
      service: spec.name,
      pid,
      log,
    });
  }
  const record: ServiceRecord = { name: spec.name, pid, startTime, file: spec.file, baselineId: spec.baselineId, startedAt };
  try {
    await options.launched?.(record, offset);
    killPoint('service:launched');
    await writeJsonAtomic(servicePidFile(home, spec.name), record);
  } catch (error) {
    // Never leave a service running that nothing records.
    const stop = await stopService(record);
    throw new HpError('SERVICE_START_FAILED', `cannot start service ${spec.name}: ${(error as Error).message}; the service was stopped again (${stop.how})`, {
      service: spec.name,
      pid,
    });
  }
  killPoint('service:pid-file-written');
  const readyMs = await waitServiceReady(home, record, { logOffset: offset, readyTimeoutMs: options.readyTimeoutMs, began, readiness: ready.readiness, notifyFd: ready.notifyFd });
  return { ...record, readyMs };
}

/**
 * Waits until the service is ready as its `readiness` says (default: a line READY in its log
 * after `logOffset`); returns the ms since `began` (default: now). For a service just started,
 * and for one a killed agent started whose log offset it had recorded. The timeout is the
 * readiness's own `timeoutMs`, else `readyTimeoutMs`, else 10 s. Fails with SERVICE_EXITED (died
 * before it was ready; its pid file is removed) or SERVICE_NOT_READY (timed out; the service is
 * stopped then).
 */
export async function waitServiceReady(
  home: string,
  record: ServiceRecord,
  o: { logOffset: number; readyTimeoutMs?: number; began?: number; readiness?: Readiness; notifyFd?: number },
): Promise<number> {
  const readiness = o.readiness ?? DEFAULT_READINESS;
  const readyTimeoutMs = readiness.timeoutMs ?? o.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const began = o.began ?? performance.now();
  const { pid, name } = record;
  const log = serviceLogPath(home, name);
  const offset = o.logOffset;
  const deadline = began + readyTimeoutMs;
  const waiter = readinessWaiter(home, name, readiness, { logOffset: offset, notifyFd: o.notifyFd });
  for (;;) {
    if (await waiter.ready()) return Math.round(performance.now() - began);
    if (!serviceAlive(record)) {
      // It may have said so and exited between our look and this check: one last look.
      if (await waiter.ready()) return Math.round(performance.now() - began);
      await fsp.rm(servicePidFile(home, name), { force: true });
      const tail = await logTail(log, offset);
      throw new HpError('SERVICE_EXITED', `service ${name} (PID ${pid}) exited before it was ready${tail ? `; its log ends with: ${tail}` : ''}`, {
        service: name,
        pid,
        log,
      });
    }
    if (performance.now() >= deadline) {
      const stop = await stopService(record, { home });
      const tail = await logTail(log, offset);
      throw new HpError(
        'SERVICE_NOT_READY',
        `service ${name} (PID ${pid}) did not ${waiter.awaited} within ${readyTimeoutMs} ms; it was stopped (${stop.how})${tail ? `; its log ends with: ${tail}` : ''}`,
        { service: name, pid, log, stop, readiness: readiness.type },
      );
    }
    await sleep(POLL_MS);
  }
}

// ---------------------------------------------------------------------------------------------
// Stop

function signalService(record: ServiceRecord, signal: NodeJS.Signals): void {
  // Check identity right before signalling: never signal a process that merely reuses the PID.
  const stat = readProcStat(record.pid);
  if (!stat || isGone(stat.state) || stat.startTime !== record.startTime) return;
  try {
    // A service we started leads its own process group: signal the group, so helpers it forked
    // go too. A record from elsewhere may not: then just the process.
    process.kill(stat.pgrp === record.pid ? -record.pid : record.pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

async function waitGone(record: ServiceRecord, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  for (;;) {
    if (!serviceAlive(record)) return true;
    if (performance.now() >= deadline) return false;
    await sleep(POLL_MS);
  }
}

/**
 * Stop a service: SIGTERM, then SIGKILL if it is still there after timeoutMs. A zombie counts as
 * gone (its parent is init, which reaps it). `stopped: false` only if even SIGKILL did not end it
 * within a few seconds (e.g. stuck in uninterruptible sleep).
 */
export async function stopService(record: ServiceRecord, options: StopServiceOptions = {}): Promise<StopResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
  let result: StopResult;
  if (!serviceAlive(record)) {
    result = { stopped: true, how: 'already-gone' };
  } else {
    signalService(record, 'SIGTERM');
    if (await waitGone(record, timeoutMs)) {
      result = { stopped: true, how: 'SIGTERM' };
    } else {
      signalService(record, 'SIGKILL');
      result = { stopped: await waitGone(record, KILL_WAIT_MS), how: 'SIGKILL' };
    }
  }
  if (result.stopped && options.home) {
    const current = readServicePidFile(options.home, record.name);
    if (current && current.pid === record.pid && current.startTime === record.startTime) {
      await fsp.rm(servicePidFile(options.home, record.name), { force: true });
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Services something else starts and stops (managedBy "external")

/**
 * Every live process that runs an external service's file as its executable: by path, or by the
 * build-id of its executable whatever its path (the service manager may run it from elsewhere).
 */
export function findExternalServiceProcesses(spec: ServiceSpec): { pid: number; startTime: number }[] {
  const out: { pid: number; startTime: number }[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const pid = Number(name);
    let runs = false;
    try {
      runs = fs.readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '') === spec.file;
      if (!runs && spec.buildId) {
        const fd = fs.openSync(`/proc/${pid}/exe`, 'r');
        try {
          runs = peekBuildId(fd) === spec.buildId;
        } finally {
          fs.closeSync(fd);
        }
      }
    } catch {
      continue; // gone, a kernel thread, or not ours to read
    }
    const startTime = runs ? processStartTime(pid) : undefined;
    if (startTime !== undefined) out.push({ pid, startTime });
  }
  return out;
}

const RESTART_TIMEOUT_MS = 60_000;

/**
 * Restarts an external service with its own command (no shell) and finds its new process: one
 * that runs its file and did not run before the command. SERVICE_RESTART_FAILED if the command
 * fails; SERVICE_NOT_READY if no new process shows within `readyTimeoutMs`.
 */
export async function restartExternalService(spec: ServiceSpec, o: { readyTimeoutMs?: number } = {}): Promise<{ before: { pid: number; startTime: number }[]; record: ServiceRecord; readyMs: number }> {
  const [program, ...args] = spec.restart ?? [];
  if (!program) throw new HpError('SERVICE_RESTART_FAILED', `service ${spec.name} is managed externally but has no restart command`, { service: spec.name });
  const before = findExternalServiceProcesses(spec);
  const began = performance.now();
  await new Promise<void>((resolve, reject) => {
    execFile(program, args, { timeout: RESTART_TIMEOUT_MS }, (error, _stdout, stderr) => {
      if (!error) return resolve();
      reject(new HpError('SERVICE_RESTART_FAILED', `the restart command of service ${spec.name} (${spec.restart!.join(' ')}) failed: ${String(stderr).trim() || error.message}`, { service: spec.name, command: spec.restart }));
    });
  });
  const deadline = began + (o.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
  for (;;) {
    const fresh = findExternalServiceProcesses(spec).filter((p) => !before.some((b) => b.pid === p.pid && b.startTime === p.startTime));
    if (fresh.length > 0) {
      const p = fresh[0];
      const record: ServiceRecord = { name: spec.name, pid: p.pid, startTime: p.startTime, file: spec.file, baselineId: spec.baselineId, startedAt: nowIso(), managedBy: 'external' };
      return { before, record, readyMs: Math.round(performance.now() - began) };
    }
    if (performance.now() >= deadline) {
      throw new HpError('SERVICE_NOT_READY', `service ${spec.name}: its restart command (${spec.restart!.join(' ')}) succeeded, but no new process running ${spec.file} appeared within ${o.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS} ms`, { service: spec.name });
    }
    await sleep(POLL_MS);
  }
}
