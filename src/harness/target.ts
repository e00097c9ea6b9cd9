/**
 * A target: a fixture program started (through fixtures/bin/launch, see index.ts), waited for
 * until it prints READY, talked to over its stdin and stdout, and killed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import path, { basename } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { processExists, processState } from '../proc/stat.js';
import { fixturePath } from './fixtures.js';
import { clip, DEFAULT_REQUEST_TIMEOUT_MS, LineSplitter, RequestQueue } from './protocol.js';
import { liveTargets, type Killable } from './registry.js';

export interface TargetOptions {
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** How long the target may take to print READY; default 10000 ms. */
  readyTimeoutMs?: number;
  cwd?: string;
  /** Default timeout of request(); default 5000 ms. */
  requestTimeoutMs?: number;
  /**
   * Start the target as this process's own child instead of through fixtures/bin/launch. Do not
   * ptrace such a target from this process: libuv may take its ptrace-stops for an exit.
   */
  direct?: boolean;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Target {
  readonly pid: number;
  /** Absolute path of the executable. */
  readonly path: string;
  /** Short name for messages: the executable's base name. */
  readonly name: string;
  /**
   * Write one line to the target's stdin and resolve with its next answer line. Requests are
   * queued: each is written once the previous one was answered (or timed out), so concurrent
   * callers get their own answers in order. A timed-out request keeps its place: its late answer
   * is dropped rather than handed to the next request.
   */
  request(line: string, timeoutMs?: number): Promise<string>;
  /** The process has not exited and is not a zombie (per /proc/PID/stat). */
  alive(): boolean;
  /**
   * Settles when the target has ended, with its exit code or signal ({ code: null, signal: null }
   * in the rare cases where they could not be learned, e.g. it was reaped by a tracer).
   */
  readonly exited: Promise<ExitInfo>;
  /** Everything the target wrote to stderr so far. */
  stderr(): string;
  /**
   * SIGKILL and wait until it is dead (reaped, or a zombie left for its tracer to reap); idempotent.
   * Rejects if it still runs 5 s later.
   */
  kill(): Promise<void>;
}

const DEFAULT_READY_TIMEOUT_MS = 10_000;
const KILL_WAIT_MS = 5_000;
const STDERR_LIMIT = 1 << 20;

function stderrContext(stderr: string): string {
  const trimmed = stderr.trimEnd();
  return trimmed ? `; stderr:\n${clip(trimmed)}` : '; stderr: (empty)';
}

function describeExit(info: ExitInfo): string {
  return info.signal ? `killed by ${info.signal}` : `exited with code ${info.code}`;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function tracerPid(pid: number): number | undefined {
  try {
    const match = /^TracerPid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  if (!(pid > 0)) return; // never 0 or -1: those address process groups / everything
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** The child process Node started: the target itself, or fixtures/bin/launch running it. */

interface Spawned {
  child: ChildProcess;
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** fd 3 of launch, where it reports the target's pid; undefined when the target is the child. */
  pidPipe: Readable | undefined;
}

class TargetProcess implements Target, Killable {
  readonly name: string;
  readonly exited: Promise<ExitInfo>;
  /** Resolves once the child exited and its stdout and stderr are drained. */
  readonly closed: Promise<void>;
  exitInfo: ExitInfo | undefined;

  private targetPid: number;
  private readonly pidKnown: Promise<boolean>;
  private stderrText = '';
  private stdoutBeforeReady = '';
  private ready = false;
  private readyWaiter: ((line: string | Error) => void) | undefined;
  private readonly queue: RequestQueue;
  private readonly splitter: LineSplitter;
  private killing: Promise<void> | undefined;
  private watching = false;
  private settleExit!: (info: ExitInfo) => void;

  constructor(
    private readonly spawned: Spawned,
    readonly path: string,
    private readonly requestTimeoutMs: number,
  ) {
    const { child, stdin, stdout, stderr, pidPipe } = spawned;
    this.name = basename(path);
    this.targetPid = pidPipe ? -1 : (child.pid ?? -1);
    this.pidKnown = pidPipe ? this.readPid(pidPipe) : Promise.resolve(this.targetPid > 0);
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.settleExit = (info) => {
        if (this.exitInfo) return;
        this.exitInfo = info;
        liveTargets.delete(this);
        resolve(info);
      };
    });
    child.once('exit', (code, signal) => {
      if (processExists(this.targetPid)) {
        // Not the end of the target: either libuv's waitpid() took a pending ptrace-stop for an
        // exit (possible only for a direct child traced from this process), or launch died
        // before it (the target gets SIGKILL then). Watch /proc instead.
        void this.watchUntilDead();
        return;
      }
      this.settleExit({ code, signal });
    });
    this.closed = new Promise<void>((resolve) => child.once('close', () => resolve()));

    this.queue = new RequestQueue(
      (text) => {
        stdin.write(text);
      },
      () => this.describe(),
      () => stderrContext(this.stderrText),
    );
    this.splitter = new LineSplitter((line) => this.onLine(line));

    stdout.setEncoding('utf8');
    stdout.on('data', (chunk: string) => this.splitter.push(chunk));
    stdout.once('close', () => void this.onStdoutClosed());
    stderr.setEncoding('utf8');
    stderr.on('data', (chunk: string) => {
      this.stderrText = (this.stderrText + chunk).slice(-STDERR_LIMIT);
    });
    // Writing to a dead target's stdin fails with EPIPE; requests report the exit instead.
    stdin.on('error', () => undefined);
  }

  /** The target's pid (-1 until launch reported it, which spawnTarget waits for). */
  get pid(): number {
    return this.targetPid;
  }

  describe(): string {
    return `target ${this.name} (pid ${this.targetPid > 0 ? this.targetPid : '?'})`;
  }

  stderr(): string {
    return this.stderrText;
  }

  alive(): boolean {
    return !this.exitInfo && processExists(this.targetPid);
  }

  request(line: string, timeoutMs = this.requestTimeoutMs): Promise<string> {
    return this.queue.request(line, timeoutMs);
  }

  killNow(): void {
    if (this.exitInfo) return;
    if (this.targetPid > 0) {
      // launch reaps it and exits the same way. (Never kill launch first: the orphaned target
      // would be reparented to init, which, in a container, may reap it late or never.)
      signalPid(this.targetPid, 'SIGKILL');
    } else if (this.spawned.child.exitCode === null && this.spawned.child.signalCode === null) {
      // pid not reported yet: kill launch, its PR_SET_PDEATHSIG takes the target along
      signalPid(this.spawned.child.pid ?? -1, 'SIGKILL');
    }
  }

  kill(): Promise<void> {
    this.killing ??= (async () => {
      this.killNow();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), KILL_WAIT_MS);
      });
      // Node normally reports the exit; /proc covers the cases where it cannot (see the 'exit'
      // handler), and a target held as a zombie by a tracer that has not waited for it yet.
      void this.watchUntilDead(500);
      const outcome = await Promise.race([this.exited, timedOut]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        const tracer = tracerPid(this.targetPid);
        throw new Error(
          `${this.describe()}: still there ${KILL_WAIT_MS} ms after SIGKILL (state ${processState(this.targetPid) ?? '?'}` +
            `${tracer ? `, traced by pid ${tracer}` : ''})`,
        );
      }
      this.spawned.stdin.destroy();
    })();
    return this.killing;
  }

  /** Resolves once READY was printed; rejects (after killing the target) otherwise. */
  async waitReady(timeoutMs: number): Promise<void> {
    const first = new Promise<string | Error>((resolve) => {
      this.readyWaiter = resolve;
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const pidOutcome = await Promise.race([this.pidKnown, timedOut]);
    const outcome =
      pidOutcome === 'timeout'
        ? pidOutcome
        : pidOutcome
          ? await Promise.race([first, timedOut])
          : new Error('no pid reported');
    clearTimeout(timer);
    if (outcome === 'READY') {
      this.ready = true;
      return;
    }
    let problem: string;
    if (outcome === 'timeout') {
      problem = `did not print READY within ${timeoutMs} ms`;
      await this.kill().catch(() => undefined);
    } else if (outcome instanceof Error) {
      // stdout closed: the target is exiting; let it finish so its exit status and stderr are known
      await Promise.race([this.closed, delay(1000)]);
      problem = this.exitInfo ? `${describeExit(this.exitInfo)} before READY` : 'closed its stdout before READY';
      await this.kill().catch(() => undefined);
    } else {
      problem = `printed ${JSON.stringify(outcome)} instead of READY`;
      await this.kill().catch(() => undefined);
    }
    await Promise.race([this.closed, delay(500)]);
    const stdout = this.stdoutBeforeReady + this.splitter.rest();
    throw new Error(
      `${this.describe()} ${problem}` +
        (stdout ? `; stdout:\n${clip(stdout)}` : '') +
        stderrContext(this.stderrText),
    );
  }

  private async readPid(pipe: Readable): Promise<boolean> {
    let text = '';
    pipe.setEncoding('utf8');
    try {
      for await (const chunk of pipe) {
        text += chunk as string;
        if (text.includes('\n')) break;
      }
    } catch {
      // closed abnormally: no pid
    }
    pipe.destroy();
    const pid = Number(text.trim());
    if (!Number.isInteger(pid) || pid <= 0) return false;
    this.targetPid = pid;
    return true;
  }

  /**
   * Settle `exited` once /proc says the target is gone or a zombie, for the cases where Node will
   * not report its end. Exit status unknown then: { code: null, signal: null }.
   */
  private async watchUntilDead(initialDelayMs = 0): Promise<void> {
    if (this.watching) return;
    this.watching = true;
    await delay(initialDelayMs);
    while (!this.exitInfo) {
      if (!processExists(this.targetPid)) {
        // give Node a last chance to report the real status
        await delay(50);
        this.settleExit({ code: null, signal: null });
        return;
      }
      await delay(25);
    }
  }

  private onLine(line: string): void {
    if (this.ready) {
      this.queue.deliver(line);
      return;
    }
    this.stdoutBeforeReady += `${line}\n`;
    const waiter = this.readyWaiter;
    this.readyWaiter = undefined;
    waiter?.(line);
  }

  private async onStdoutClosed(): Promise<void> {
    this.readyWaiter?.(new Error('stdout closed'));
    this.readyWaiter = undefined;
    // The answer to a request may have been the last thing written; give the exit status a moment.
    await Promise.race([this.exited, delay(500)]);
    const how = this.exitInfo ? describeExit(this.exitInfo) : 'closed its stdout';
    this.queue.close(
      (line) =>
        new Error(`${this.describe()} ${how}; no answer to ${JSON.stringify(line)}${stderrContext(this.stderrText)}`),
    );
  }
}

function spawnError(what: string, error: NodeJS.ErrnoException): Error {
  const hint = error.code === 'ENOENT' ? ' (run `make -C fixtures`?)' : '';
  return new Error(`cannot start target ${what}: ${error.code ?? error.message}${hint}`);
}

/**
 * Start a target and wait for its READY line. Rejects, with the target's exit status, stdout and
 * stderr, if it dies or stays silent for readyTimeoutMs (it is killed then).
 *
 * The target runs as a child of fixtures/bin/launch, not of this process (unless options.direct):
 * see fixtures/tools/launch.c for why a process that ptraces its targets needs that.
 */
export async function spawnTarget(targetPath: string, options: TargetOptions = {}): Promise<Target> {
  const absolute = path.resolve(targetPath);
  try {
    accessSync(absolute, fsConstants.X_OK);
  } catch (error) {
    throw spawnError(absolute, error as NodeJS.ErrnoException);
  }
  const launcher = fixturePath('launch');
  const direct = options.direct ?? false;
  const child = direct
    ? spawn(absolute, options.args ?? [], { cwd: options.cwd, env: options.env ?? process.env, stdio: 'pipe' })
    : spawn(launcher, [absolute, ...(options.args ?? [])], {
        cwd: options.cwd,
        env: options.env ?? process.env,
        stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      });
  if (child.pid === undefined) {
    const error = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw spawnError(direct ? absolute : `${absolute} through ${launcher}`, error as NodeJS.ErrnoException);
  }
  child.on('error', () => undefined);
  const [stdin, stdout, stderr, fd3] = child.stdio;
  const spawned: Spawned = {
    child,
    stdin: stdin as Writable,
    stdout: stdout as Readable,
    stderr: stderr as Readable,
    pidPipe: direct ? undefined : (fd3 as Readable),
  };
  const target = new TargetProcess(spawned, absolute, options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
  liveTargets.add(target);
  await target.waitReady(options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
  return target;
}
