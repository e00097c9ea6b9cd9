/**
 * The holder of the "many processes" benchmark (src/bench/scale.ts): a separate Node process that
 * starts the targets and keeps them, so the process that patches them has no children of its own.
 *
 * Why: every ptrace stop of a tracee sends SIGCHLD to the tracer, and libuv answers each SIGCHLD
 * with a waitpid(WNOHANG) on every child the Node process spawned. With N launchers as children of
 * the patching process every stop costs O(N), which the benchmark would measure instead of the
 * engine. A real `hp-agent apply` never has the services as its children either.
 *
 *   node dist/bench/scale-holder.js
 *
 * It speaks the targets' line protocol on stdin/stdout (so the bench starts it with the harness):
 * prints READY, then answers one line per request line, in order:
 *
 *   spawn N CONCURRENCY PATH [ARG...]  start N more targets (each through fixtures/bin/launch,
 *                                      until READY); answers {"pids":[...],"spawnMs":M}
 *   call PID I                         asks target PID `call I`; answers {"answer":"..."}
 *   killall                            kills every target, waits until they are gone; {"killed":N}
 *   quit                               killall, answer, exit
 *
 * A failed request answers {"error":"..."}. When its stdin closes it kills every target and exits;
 * if it is killed outright, the targets exit at end of file on their stdin (a pipe from here).
 * The targets are the holder's own children, not started through fixtures/bin/launch: the holder
 * never traces them, and a machine running a thousand services does not run a thousand
 * launchers beside them for the agent's discovery to read through.
 */
import { killAllTargets, spawnTarget, type Target } from '../harness/index.js';

const targets = new Map<number, Target>();
let closing = false;

function answer(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function spawnMany(count: number, concurrency: number, file: string, args: string[]): Promise<{ pids: number[]; spawnMs: number }> {
  const t0 = performance.now();
  const pids: number[] = [];
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < count && failure === undefined && !closing) {
      next++;
      try {
        // Many processes on few CPUs start slowly: be generous before calling it a failure.
        const t = await spawnTarget(file, { args, direct: true, readyTimeoutMs: 60_000, requestTimeoutMs: 30_000 });
        targets.set(t.pid, t);
        pids.push(t.pid);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
  if (failure !== undefined) throw failure;
  if (closing) throw new Error('the holder is closing');
  return { pids, spawnMs: Math.round(performance.now() - t0) };
}

async function killAll(): Promise<number> {
  const n = targets.size;
  targets.clear();
  await killAllTargets();
  return n;
}

async function handle(line: string): Promise<void> {
  const [cmd, ...rest] = line.trim().split(/\s+/);
  try {
    if (cmd === 'spawn') {
      const [count, concurrency, file, ...args] = rest;
      if (!(Number(count) >= 0) || !(Number(concurrency) >= 1) || !file) throw new Error(`usage: spawn N CONCURRENCY PATH [ARG...], got "${line}"`);
      answer(await spawnMany(Number(count), Number(concurrency), file, args));
    } else if (cmd === 'call') {
      const t = targets.get(Number(rest[0]));
      if (!t) throw new Error(`no target with pid ${rest[0]}`);
      answer({ answer: await t.request(`call ${rest[1]}`) });
    } else if (cmd === 'killall') {
      answer({ killed: await killAll() });
    } else if (cmd === 'quit') {
      closing = true;
      answer({ killed: await killAll() });
      process.exit(0);
    } else {
      throw new Error(`unknown request "${line}"`);
    }
  } catch (e) {
    answer({ error: message(e) });
  }
}

async function closeDown(code: number): Promise<never> {
  closing = true;
  try {
    await killAll();
  } catch (e) {
    process.stderr.write(`scale-holder: ${message(e)}\n`);
    code = 1;
  }
  process.exit(code);
}

// One request at a time, in order: each answer is one line.
let queue: Promise<void> = Promise.resolve();
let partial = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk: string) => {
  partial += chunk;
  let nl: number;
  while ((nl = partial.indexOf('\n')) >= 0) {
    const line = partial.slice(0, nl);
    partial = partial.slice(nl + 1);
    if (line.trim()) queue = queue.then(() => handle(line));
  }
});
process.stdin.on('end', () => {
  closing = true; // stops a spawn in progress
  void queue.then(() => closeDown(0));
});
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => void closeDown(1));
process.stdout.write('READY\n');
