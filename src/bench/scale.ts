/**
 * Many processes: N small targets (`benchd 1 idle 1 nogap`: a main thread and one idle worker),
 * one function (bench_fn_0) patched in each, at N = 1, 10, 100, 1000. Two series on the same
 * targets:
 *
 *  - agent: the real thing, `node bin/hp-agent.js apply HOTPATCH --json` as a separate process
 *    (Node's start-up included), then `hp-agent revert`; the targets run the installed copy of
 *    benchd of a baseline built and booted for the run (scale-agent.ts). Several rounds, each on
 *    freshly started targets; the median one is reported with all the rounds' times.
 *  - engine: `applyPatch` / `revertFunctions` of src/engine in this process, at several
 *    concurrencies.
 *
 * The targets are started and held by ONE separate process, the holder (scale-holder.ts), never
 * by this one: with N launchers as children of the patching process, libuv's SIGCHLD handler would
 * waitpid() each of them on every ptrace stop, making each stop O(N) — an artefact of the harness
 * that a real agent, which never has the services as children, does not pay.
 *
 * A sample of the processes must answer the patched value after each apply and the original one
 * after each revert (asked through the holder). Every target is killed at the end of each point.
 */
import { fileURLToPath } from 'node:url';
import { applyPatch, revertFunctions } from '../engine/patch.js';
import { fixturePath, spawnTarget, type Target } from '../harness/index.js';
import { processExists } from '../proc/stat.js';
import { BENCH_PATCH, BENCHD, functionSpecs, patchedAnswer, unpatchedAnswer } from './benchd.js';
import { cliProblem, cliStartupMs, removeAgentMachine, runCli, setUpAgentMachine, type AgentMachine, type CliRun } from './scale-agent.js';
import { rounded, summarize, type Stats } from './stats.js';

export interface ScaleTry {
  concurrency: number;
  /** Wall time to patch every process, ms; and that divided by the processes. */
  applyTotalMs: number;
  applyPerProcessMs: number;
  /** Wall time to revert them all (at the same concurrency), ms. */
  revertTotalMs: number;
  /** Processes the engine failed to patch or to revert. */
  failed: number;
  /** Processes asked `call 0` after the apply, and how many answered the patched value. */
  sampleChecked: number;
  sampleOk: number;
  error?: string;
}

/** The in-process engine at one number of processes. */
export interface ScalePoint {
  processes: number;
  /** Wall time for the holder to start them all (until each printed READY), ms. */
  spawnMs: number;
  tries: ScaleTry[];
  /** The fastest apply among the tries without failures. */
  best?: { concurrency: number; applyTotalMs: number; applyPerProcessMs: number };
  error?: string;
}

/** `hp-agent apply` / `revert` as separate processes at one number of processes. */
export interface AgentScalePoint {
  processes: number;
  /** `node bin/hp-agent.js --version`, spawn → exit, ms (median of 3, just before the apply): the start-up every command pays. */
  startupMs: number;
  /** `hp-agent apply HOTPATCH --json`, spawn → exit, ms; and that divided by the processes. */
  applyWallMs: number;
  perProcessMs: number;
  /** Spawn → the startDateTime the apply reports (start-up, home, lock, state), ms. */
  applyStartMs?: number;
  /** The reported startDateTime → exit (verify the package, find the processes, patch, record, print), ms. */
  applyWorkMs?: number;
  applyExitCode: number | null;
  /** Processes the agent reported Patched; failed = the others (reported otherwise, or not found). */
  patched: number;
  failed: number;
  /** Per-process pauses the agent reported, µs. */
  pauseUs?: Stats;
  /** `hp-agent revert HOTPATCH --json`, spawn → exit, ms; and per process. */
  revertWallMs: number;
  revertPerProcessMs: number;
  revertExitCode: number | null;
  /** Processes the revert changed back; revertFailed = the others. */
  reverted: number;
  revertFailed: number;
  /** Processes asked `call 0` after the apply (patched value expected) and after the revert (original). */
  sampleChecked: number;
  sampleOk: number;
  revertSampleOk: number;
  error?: string;
  /**
   * The apply and revert wall times of every round, ms, in order: each round on freshly started
   * processes. The fields above are the representative round's (see representativeRound).
   */
  roundsApplyWallMs?: number[];
  roundsRevertWallMs?: number[];
}

/** Rounds of `hp-agent apply` per number of processes: on a shared machine one run is one draw. */
export const AGENT_ROUNDS = 3;

const cleanRound = (a: AgentScalePoint) => !a.error && a.patched === a.processes && a.reverted === a.processes && a.sampleOk === a.sampleChecked && a.revertSampleOk === a.sampleChecked;

/**
 * The round that stands for all: the first one that was not clean (a failure is never hidden
 * behind a good median), else the one with the median apply wall time; with the wall times of
 * every round attached.
 */
export function representativeRound(rounds: AgentScalePoint[]): AgentScalePoint {
  if (rounds.length === 0) throw new Error('no round to choose from');
  const chosen = rounds.find((a) => !cleanRound(a)) ?? [...rounds].sort((a, b) => a.applyWallMs - b.applyWallMs)[Math.floor((rounds.length - 1) / 2)];
  return { ...chosen, roundsApplyWallMs: rounds.map((a) => a.applyWallMs), roundsRevertWallMs: rounds.map((a) => a.revertWallMs) };
}

export interface ScaleSection {
  /** Command line of each process. */
  target: string;
  /** Who holds the targets. */
  holder: string;
  concurrencies: number[];
  /** The in-process engine. */
  points: ScalePoint[];
  /** The command line, a separate process. */
  agent: AgentScalePoint[];
  /** Building and booting the product for the agent series failed (the engine series still ran). */
  agentError?: string;
}

const HOLDER_PATH = fileURLToPath(new URL('./scale-holder.js', import.meta.url));
const TARGET_ARGS = ['1', 'idle', '1', 'nogap'];
const SPAWN_CONCURRENCY = 16;
const SAMPLE = 10;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const round1 = (v: number) => Math.round(v * 10) / 10;
const round3 = (v: number) => Math.round(v * 1000) / 1000;

/** Runs fn over items with at most `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
}

/** Evenly spread indexes into a list of n, at most `count` of them. */
function spread(n: number, count: number): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: count }, (_, i) => Math.floor((i * (n - 1)) / (count - 1)));
}

/** The holder process (scale-holder.ts), driven through the harness's line protocol. */
class Holder {
  private constructor(private readonly target: Target) {}

  static async start(): Promise<Holder> {
    return new Holder(await spawnTarget(process.execPath, { args: [HOLDER_PATH], readyTimeoutMs: 30_000, requestTimeoutMs: 30_000 }));
  }

  private async ask<T>(line: string, timeoutMs?: number): Promise<T> {
    const a = JSON.parse(await this.target.request(line, timeoutMs)) as T & { error?: string };
    if (a.error !== undefined) throw new Error(`holder: ${a.error}`);
    return a;
  }

  spawn(count: number, file: string, args: string[]): Promise<{ pids: number[]; spawnMs: number }> {
    if (/\s/.test([file, ...args].join(''))) throw new Error(`holder: a path or argument with white space cannot be passed: ${file}`);
    return this.ask(`spawn ${count} ${SPAWN_CONCURRENCY} ${file} ${args.join(' ')}`, 60_000 + count * 200);
  }

  async call(pid: number, i: number): Promise<string> {
    return (await this.ask<{ answer: string }>(`call ${pid} ${i}`)).answer;
  }

  async killAll(): Promise<void> {
    await this.ask('killall', 60_000);
  }

  /** Kills every target, then the holder. */
  async close(): Promise<void> {
    try {
      await this.ask('quit', 60_000);
    } catch {
      // it exits as it answers, or died already: kill() makes sure
    }
    await this.target.kill();
  }
}

/** How many of `pids` (a sample) answer `call 0` as patched (or unpatched); the first mismatch. */
async function checkSample(holder: Holder, pids: number[], patched: boolean): Promise<{ checked: number; ok: number; error?: string }> {
  const out: { checked: number; ok: number; error?: string } = { checked: 0, ok: 0 };
  const want = patched ? patchedAnswer(0) : unpatchedAnswer(0);
  for (const i of spread(pids.length, SAMPLE)) {
    out.checked++;
    try {
      const got = await holder.call(pids[i], 0);
      if (got === want) out.ok++;
      else out.error ??= `pid ${pids[i]}: call 0 answered ${got}, expected ${want} (${patched ? 'patched' : 'unpatched'})`;
    } catch (e) {
      out.error ??= message(e);
    }
  }
  return out;
}

async function tryConcurrency(holder: Holder, pids: number[], concurrency: number): Promise<ScaleTry> {
  const patchPath = fixturePath(BENCH_PATCH);
  const functions = functionSpecs(1);
  const out: ScaleTry = { concurrency, applyTotalMs: 0, applyPerProcessMs: 0, revertTotalMs: 0, failed: 0, sampleChecked: 0, sampleOk: 0 };
  const patched = new Set<number>();
  let t0 = performance.now();
  await pool(pids, concurrency, async (pid) => {
    try {
      await applyPatch({ pid, patchPath, functions });
      patched.add(pid);
    } catch (e) {
      out.failed++;
      out.error ??= message(e);
    }
  });
  out.applyTotalMs = round1(performance.now() - t0);
  out.applyPerProcessMs = round3(out.applyTotalMs / pids.length);
  const sample = await checkSample(holder, pids, true);
  out.sampleChecked = sample.checked;
  out.sampleOk = sample.ok;
  out.error ??= sample.error;
  t0 = performance.now();
  await pool([...patched], concurrency, async (pid) => {
    try {
      await revertFunctions({ pid, functions: ['bench_fn_0'] });
    } catch (e) {
      out.failed++;
      out.error ??= message(e);
    }
  });
  out.revertTotalMs = round1(performance.now() - t0);
  return out;
}

function outcomes(r: CliRun): { pid: number; outcome: string; pauseUs?: number; reason?: string }[] {
  return Array.isArray(r.json?.processes) ? (r.json.processes as { pid: number; outcome: string; pauseUs?: number; reason?: string }[]) : [];
}

/** `hp-agent apply` then `hp-agent revert` over the processes, both timed spawn → exit. */
async function agentPoint(m: AgentMachine, holder: Holder, pids: number[]): Promise<AgentScalePoint> {
  const n = pids.length;
  const out: AgentScalePoint = {
    processes: n,
    startupMs: 0,
    applyWallMs: 0,
    perProcessMs: 0,
    applyExitCode: null,
    patched: 0,
    failed: n,
    revertWallMs: 0,
    revertPerProcessMs: 0,
    revertExitCode: null,
    reverted: 0,
    revertFailed: n,
    sampleChecked: 0,
    sampleOk: 0,
    revertSampleOk: 0,
  };
  const ours = new Set(pids);
  try {
    out.startupMs = await cliStartupMs(3);
    const apply = await runCli(m.home, ['apply', m.hotpatchPackage, '--json']);
    out.applyWallMs = apply.wallMs;
    out.perProcessMs = round3(apply.wallMs / n);
    out.applyExitCode = apply.code;
    const started = Date.parse(String(apply.json?.startDateTime));
    if (Number.isFinite(started)) {
      out.applyStartMs = started - apply.spawnEpochMs;
      out.applyWorkMs = apply.exitEpochMs - started;
    }
    const applied = outcomes(apply).filter((p) => ours.has(p.pid));
    out.patched = applied.filter((p) => p.outcome === 'Patched').length;
    out.failed = n - out.patched;
    out.pauseUs = rounded(summarize(applied.flatMap((p) => (p.pauseUs !== undefined ? [p.pauseUs] : []))));
    if (apply.code !== 0) out.error = `apply: ${cliProblem(apply)}`;
    else if (out.failed) out.error = `apply: ${out.failed} not patched${applied.find((p) => p.reason) ? ` (${applied.find((p) => p.reason)!.reason})` : ''}`;
    const sample = await checkSample(holder, pids, true);
    out.sampleChecked = sample.checked;
    out.sampleOk = sample.ok;
    out.error ??= sample.error;

    const revert = await runCli(m.home, ['revert', m.hotpatchId, '--json']);
    out.revertWallMs = revert.wallMs;
    out.revertPerProcessMs = round3(revert.wallMs / n);
    out.revertExitCode = revert.code;
    const back = outcomes(revert).filter((p) => ours.has(p.pid));
    out.reverted = back.filter((p) => p.outcome === 'Reverted').length;
    out.revertFailed = n - out.reverted;
    if (revert.code !== 0) out.error ??= `revert: ${cliProblem(revert)}`;
    else if (out.revertFailed) out.error ??= `revert: ${out.revertFailed} not changed back${back.find((p) => p.reason) ? ` (${back.find((p) => p.reason)!.reason})` : ''}`;
    const after = await checkSample(holder, pids, false);
    out.revertSampleOk = after.ok;
    out.error ??= after.error;
  } catch (e) {
    out.error ??= message(e);
  }
  return out;
}

/**
 * One number of processes: start them in the holder, the agent series (`rounds` times, each on
 * freshly started processes: a patch stays mapped after its revert, so a second apply on the same
 * ones would measure the re-use of that mapping instead), the engine series, kill them.
 */
async function scalePoint(
  processes: number,
  concurrencies: number[],
  machine: AgentMachine | undefined,
  withAgent: boolean,
  rounds: number,
  log: (line: string) => void,
): Promise<{ point: ScalePoint; agent?: AgentScalePoint }> {
  const point: ScalePoint = { processes, spawnMs: 0, tries: [] };
  let agent: AgentScalePoint | undefined;
  let holder: Holder | undefined;
  let pids: number[] = [];
  try {
    holder = await Holder.start();
    const spawned = await holder.spawn(processes, machine?.binary ?? fixturePath(BENCHD), TARGET_ARGS);
    pids = spawned.pids;
    point.spawnMs = spawned.spawnMs;
    log(`scale ${processes} processes started by the holder in ${point.spawnMs} ms`);
    // The agent first, on processes nothing has patched yet.
    if (machine && withAgent) {
      const done: AgentScalePoint[] = [];
      for (let r = 0; r < rounds; r++) {
        if (r > 0) {
          await holder.killAll();
          pids = (await holder.spawn(processes, machine.binary, TARGET_ARGS)).pids;
        }
        const a = await agentPoint(machine, holder, pids);
        done.push(a);
        log(
          `scale ${processes} processes, round ${r + 1}/${rounds}, hp-agent apply: ${a.applyWallMs} ms wall (${a.perProcessMs} ms each; start-up ${a.startupMs} ms, ` +
            `apply's own ${a.applyWorkMs ?? '?'} ms), ${a.patched} patched; revert ${a.revertWallMs} ms, ${a.reverted} reverted; ` +
            `sample ${a.sampleOk}/${a.sampleChecked}, after revert ${a.revertSampleOk}/${a.sampleChecked}${a.error ? `; ${a.error}` : ''}`,
        );
      }
      agent = representativeRound(done);
    }
    // One untimed apply + revert first: the engine's first use in this process (loading its
    // modules' code paths, parsing the patch) is not what the concurrencies should be compared on.
    if (pids.length) {
      await applyPatch({ pid: pids[0], patchPath: fixturePath(BENCH_PATCH), functions: functionSpecs(1) });
      await revertFunctions({ pid: pids[0], functions: ['bench_fn_0'] });
    }
    for (const c of concurrencies) {
      const r = await tryConcurrency(holder, pids, c);
      point.tries.push(r);
      log(`scale ${processes} processes, engine in-process, concurrency ${c}: apply ${r.applyTotalMs} ms (${r.applyPerProcessMs} ms each), revert ${r.revertTotalMs} ms, sample ${r.sampleOk}/${r.sampleChecked}${r.failed ? `, ${r.failed} failed: ${r.error}` : r.error ? `; ${r.error}` : ''}`);
    }
    const ok = point.tries.filter((r) => r.failed === 0 && r.sampleOk === r.sampleChecked);
    const best = [...ok].sort((a, b) => a.applyTotalMs - b.applyTotalMs)[0];
    if (best) point.best = { concurrency: best.concurrency, applyTotalMs: best.applyTotalMs, applyPerProcessMs: best.applyPerProcessMs };
  } catch (e) {
    point.error = message(e);
    log(`scale ${processes} processes: ${point.error}`);
  } finally {
    try {
      await holder?.close();
    } catch (e) {
      point.error = `${point.error ? `${point.error}; ` : ''}${message(e)}`;
    }
    // The holder waited for each target; check from here too.
    const deadline = performance.now() + 5000;
    let left = pids.filter(processExists);
    while (left.length && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      left = left.filter(processExists);
    }
    if (left.length) {
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      point.error = `${point.error ? `${point.error}; ` : ''}${left.length} target(s) still ran after the holder quit (sent SIGKILL)`;
    }
  }
  return { point, agent };
}

/**
 * @param counts         numbers of processes (one point each)
 * @param concurrencies  of the in-process engine
 * @param agentCounts    the points that also run the `hp-agent` command line (default: all)
 */
export async function scaleSection(counts: number[], concurrencies: number[], log: (line: string) => void, agentCounts: number[] = counts, agentRounds = AGENT_ROUNDS): Promise<ScaleSection> {
  const section: ScaleSection = {
    target: `${BENCHD} ${TARGET_ARGS.join(' ')}`,
    holder: 'one separate Node process (scale-holder.js) holds the targets through fixtures/bin/launch; the patching process has no children of its own',
    concurrencies,
    points: [],
    agent: [],
  };
  let machine: AgentMachine | undefined;
  try {
    if (agentCounts.length) {
      try {
        machine = await setUpAgentMachine();
      } catch (e) {
        section.agentError = message(e);
        log(`scale: the agent series cannot run: ${section.agentError}`);
      }
    }
    for (const n of counts) {
      const { point, agent } = await scalePoint(n, concurrencies, machine, agentCounts.includes(n), agentRounds, log);
      section.points.push(point);
      if (agent) section.agent.push(agent);
    }
  } finally {
    removeAgentMachine(machine);
  }
  return section;
}
