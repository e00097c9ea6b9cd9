/**
 * What a hotpatch saves: the time to restart the fixture service (`service SOCK 8`) — kill it,
 * start it again, and wait for its first good answer on its socket — the way a fix is rolled out
 * without live patching. A real service loses far more (connections, warm caches).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { fixturePath, spawnTarget, tempSocketPath, unixRequest, type Target } from '../harness/index.js';
import { rounded, summarize, type Stats } from './stats.js';

export interface RestartSection {
  /** The command line restarted. */
  service: string;
  runs: number;
  /** SIGKILL → the process is gone, ms. */
  killMs?: Stats;
  /** Start → first good answer ("v1" to `call`) on the socket, ms. */
  startMs?: Stats;
  /** Both: the outage a restart causes, ms. */
  totalMs?: Stats;
  error?: string;
}

const WORKERS = 8;

function start(socket: string): Promise<Target> {
  // A direct child is fine here: nothing traces it.
  return spawnTarget(fixturePath('service'), { args: [socket, String(WORKERS)], direct: true });
}

/** Asks until the service answers "v1" (the socket may not exist or listen yet). */
async function firstGoodAnswer(socket: string, deadline: number): Promise<void> {
  for (;;) {
    try {
      if ((await unixRequest(socket, 'call', 2000)) === 'v1') return;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadline) throw new Error(`the service at ${socket} gave no good answer in time`);
    await delay(0);
  }
}

export async function restartSection(runs: number, log: (line: string) => void): Promise<RestartSection> {
  const socket = tempSocketPath('bench-restart');
  const out: RestartSection = { service: `service SOCK ${WORKERS}`, runs: 0 };
  const kill: number[] = [];
  const startup: number[] = [];
  const total: number[] = [];
  let t: Target | undefined;
  try {
    t = await start(socket);
    await firstGoodAnswer(socket, performance.now() + 10_000);
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await t.kill();
      const t1 = performance.now();
      t = await start(socket);
      await firstGoodAnswer(socket, performance.now() + 10_000);
      const t2 = performance.now();
      kill.push(t1 - t0);
      startup.push(t2 - t1);
      total.push(t2 - t0);
      out.runs++;
    }
  } catch (e) {
    out.error = e instanceof Error ? e.message : String(e);
  } finally {
    await t?.kill();
  }
  out.killMs = rounded(summarize(kill), 2);
  out.startMs = rounded(summarize(startup), 2);
  out.totalMs = rounded(summarize(total), 2);
  log(`restart: ${out.runs} runs, median ${out.totalMs?.median ?? '-'} ms${out.error ? `, ${out.error}` : ''}`);
  return out;
}
