/**
 * Test harness for hp-agent: starts the fixture targets (fixtures/bin/*), talks their line protocol
 * (see fixtures/targets/proto.h) over stdin/stdout or a Unix socket, and makes sure every target it
 * started dies: kill() / killAllTargets() / useTargets(afterEach) during a run, and a synchronous
 * SIGKILL of the survivors when the Node process exits. A Node process killed without warning
 * takes its targets along too: each runs under fixtures/bin/launch, which dies with its parent and
 * kills its target as it goes (PR_SET_PDEATHSIG), and the fixtures exit at end of file on stdin.
 *
 * Targets are grandchildren, not children, of this process (fixtures/bin/launch in between), so
 * tests can ptrace them from this very process: libuv would otherwise waitpid() them on every
 * SIGCHLD and could swallow a pending ptrace-stop as if it were an exit.
 *
 * This module has no dependency on vitest (or any test runner) at runtime.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, readFileSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path, { basename } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { processExists, processState } from '../proc/stat.js';

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
const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;
const KILL_WAIT_MS = 5_000;
const STDERR_LIMIT = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Line splitting and request/answer matching, shared by targets and Unix socket clients.

/** Splits a text stream into lines ("\n", an optional "\r" before it is dropped). */
class LineSplitter {
  private partial = '';

  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: string): void {
    let text = this.partial + chunk;
    let nl: number;
    while ((nl = text.indexOf('\n')) >= 0) {
      let line = text.slice(0, nl);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      text = text.slice(nl + 1);
      this.onLine(line);
    }
    this.partial = text;
  }

  /** Text received after the last newline. */
  rest(): string {
    return this.partial;
  }
}

interface Waiter {
  line: string;
  abandoned: boolean;
  resolve(answer: string): void;
  reject(error: Error): void;
}

/**
 * One-answer-per-request matching over a line channel. Requests are written one at a time; the
 * waiters form a FIFO matched against incoming lines, and a timed-out waiter stays in it (marked
 * abandoned) so its late answer is consumed instead of being given to the next request.
 */
class RequestQueue {
  private readonly waiters: Waiter[] = [];
  private tail: Promise<unknown> = Promise.resolve();
  private closedError: ((line: string) => Error) | undefined;
  /** Lines that arrived with no request waiting for them (kept for failure messages). */
  readonly unsolicited: string[] = [];

  constructor(
    private readonly write: (text: string) => void,
    private readonly describe: () => string,
    private readonly context: () => string,
  ) {}

  deliver(line: string): void {
    const waiter = this.waiters.shift();
    if (!waiter) {
      if (this.unsolicited.length < 100) this.unsolicited.push(line);
      return;
    }
    if (!waiter.abandoned) waiter.resolve(line);
  }

  /** No answer will ever come: fail every waiting and future request. */
  close(makeError: (line: string) => Error): void {
    if (this.closedError) return;
    this.closedError = makeError;
    for (const waiter of this.waiters.splice(0)) {
      if (!waiter.abandoned) waiter.reject(makeError(waiter.line));
    }
  }

  request(line: string, timeoutMs: number): Promise<string> {
    if (line.includes('\n') || line.includes('\r')) {
      return Promise.reject(
        new Error(`${this.describe()}: a request must be a single line, got ${JSON.stringify(line)}`),
      );
    }
    const run = (): Promise<string> =>
      new Promise<string>((resolve, reject) => {
        if (this.closedError) {
          reject(this.closedError(line));
          return;
        }
        let timer: NodeJS.Timeout | undefined;
        const waiter: Waiter = {
          line,
          abandoned: false,
          resolve: (answer) => {
            clearTimeout(timer);
            resolve(answer);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        };
        timer = setTimeout(() => {
          waiter.abandoned = true;
          reject(
            new Error(
              `${this.describe()}: no answer to ${JSON.stringify(line)} within ${timeoutMs} ms` +
                (this.unsolicited.length > 0
                  ? `; lines nobody asked for: ${JSON.stringify(this.unsolicited.slice(-5))}`
                  : '') +
                this.context(),
            ),
          );
        }, timeoutMs);
        this.waiters.push(waiter);
        try {
          this.write(`${line}\n`);
        } catch (error) {
          // never sent: no answer will come for it, so it must not wait in the FIFO
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          clearTimeout(timer);
          reject(new Error(`${this.describe()}: cannot send ${JSON.stringify(line)}: ${String(error)}`));
        }
      });
    const answer = this.tail.then(run);
    this.tail = answer.catch(() => undefined);
    return answer;
  }
}

function clip(text: string, max = 4000): string {
  return text.length <= max ? text : `...${text.slice(text.length - max)}`;
}

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

// ---------------------------------------------------------------------------------------------
// Targets

interface Killable {
  /** Send SIGKILL now, synchronously (used from process.on('exit')). */
  killNow(): void;
  kill(): Promise<void>;
}

interface Registry {
  targets: Set<Killable>;
  sockets: Set<string>;
}

/*
 * One registry per Node process, shared by every copy of this module (a test runner may load it
 * afresh for each test file): one exit handler, and killAllTargets() sees every target.
 */
const REGISTRY_KEY = Symbol.for('hp-agent.harness.registry');

function registry(): Registry {
  const holder = globalThis as { [REGISTRY_KEY]?: Registry };
  let found = holder[REGISTRY_KEY];
  if (!found) {
    const created: Registry = { targets: new Set(), sockets: new Set() };
    holder[REGISTRY_KEY] = created;
    process.on('exit', () => {
      for (const target of created.targets) target.killNow();
      for (const socketPath of created.sockets) {
        try {
          unlinkSync(socketPath);
        } catch {
          // never created, or already removed
        }
      }
    });
    found = created;
  }
  return found;
}

const liveTargets = registry().targets;
const tempSockets = registry().sockets;

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

const FIXTURES_DIR = fileURLToPath(new URL('../../fixtures/', import.meta.url));
const FIXTURE_BIN = path.join(FIXTURES_DIR, 'bin');

/**
 * Absolute path of fixtures/bin/<name>, found from this module's own location
 * (src/harness/ under vitest, dist/harness/ once compiled: both two levels below the package).
 */
export function fixturePath(name: string): string {
  return path.join(FIXTURE_BIN, name);
}

/**
 * Run `make -s -C fixtures` (quick when everything is up to date; safe to run from several test
 * files at once). Rejects with make's output if the build fails.
 */
export function buildFixtures(timeoutMs = 120_000): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    execFile('make', ['-s', '-C', FIXTURES_DIR], { timeout: timeoutMs }, (error, stdout, stderr) => {
      if (error) reject(new Error(`make -C ${FIXTURES_DIR} failed: ${error.message}\n${stdout}${stderr}`));
      else resolve();
    });
  });
}

/** Kill every target spawned and not yet reaped. */
export async function killAllTargets(): Promise<void> {
  const results = await Promise.allSettled([...liveTargets].map((target) => target.kill()));
  const failures = results.flatMap((result) => (result.status === 'rejected' ? [String(result.reason)] : []));
  if (failures.length > 0) throw new Error(failures.join('\n'));
}

/** A hook registrar with the shape of vitest's / jest's / mocha's afterEach. */
export type HookRegistrar = (fn: () => Promise<void>) => void;

/**
 * Kill every target after each test: `useTargets(afterEach)` with the test runner's afterEach
 * (passed in, so this module does not import vitest). Without an argument the global afterEach is
 * used (vitest with globals: true, jest, mocha).
 */
export function useTargets(afterEach?: HookRegistrar): void {
  const register =
    afterEach ?? ((globalThis as { afterEach?: HookRegistrar }).afterEach as HookRegistrar | undefined);
  if (typeof register !== 'function') {
    throw new Error("useTargets: pass the test runner's afterEach (import { afterEach } from 'vitest')");
  }
  register(killAllTargets);
}

/** Same as useTargets(afterEach). */
export function killTargetsAfterEach(afterEach: HookRegistrar): void {
  useTargets(afterEach);
}

// ---------------------------------------------------------------------------------------------
// Unix socket clients

/** A persistent connection speaking the line protocol: one answer line per request line. */
export class UnixClient {
  private readonly queue: RequestQueue;
  private readonly splitter: LineSplitter;

  private constructor(
    private readonly socket: net.Socket,
    readonly socketPath: string,
  ) {
    this.splitter = new LineSplitter((line) => this.queue.deliver(line));
    this.queue = new RequestQueue(
      (text) => {
        socket.write(text);
      },
      () => `unix socket ${socketPath}`,
      () => '',
    );
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.splitter.push(chunk));
    socket.on('error', () => undefined);
    socket.once('close', () => this.closeQueue());
  }

  private closeQueue(): void {
    this.queue.close(
      (line) => new Error(`unix socket ${this.socketPath}: connection closed; no answer to ${JSON.stringify(line)}`),
    );
  }

  static connect(socketPath: string, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): Promise<UnixClient> {
    return new Promise<UnixClient>((resolve, reject) => {
      const socket = net.createConnection({ path: socketPath });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`unix socket ${socketPath}: not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new UnixClient(socket, socketPath));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`unix socket ${socketPath}: cannot connect: ${error.message}`));
      });
    });
  }

  request(line: string, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): Promise<string> {
    return this.queue.request(line, timeoutMs);
  }

  close(): void {
    this.closeQueue();
    this.socket.destroy();
  }
}

/** One connection, one request, one answer line. */
export async function unixRequest(
  socketPath: string,
  line: string,
  timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
): Promise<string> {
  const client = await UnixClient.connect(socketPath, timeoutMs);
  try {
    return await client.request(line, timeoutMs);
  } finally {
    client.close();
  }
}

let socketSequence = 0;

/**
 * A fresh path for a Unix socket in the temporary directory (not created here; removed when the
 * Node process exits if something created it).
 */
export function tempSocketPath(prefix = 'hp-agent'): string {
  const name = `${prefix}-${process.pid}-${++socketSequence}-${randomBytes(4).toString('hex')}.sock`;
  const socketPath = path.join(os.tmpdir(), name);
  // sockaddr_un.sun_path holds 108 bytes including the terminating NUL
  if (Buffer.byteLength(socketPath) > 107) {
    throw new Error(`tempSocketPath: ${socketPath} is too long for a Unix socket; use a shorter TMPDIR or prefix`);
  }
  tempSockets.add(socketPath);
  return socketPath;
}
