/**
 * The real thing for the "many processes" benchmark: `hp-agent apply` as a separate process.
 *
 * At bench time this builds a small signed product in a temporary folder (a key made for the run,
 * a baseline whose one file is fixtures/bin/benchd, a hotpatch redirecting bench_fn_0 to
 * bench_fn_0_v2 of fixtures/bin/bench_fix.so), and a temporary HP_AGENT_HOME that trusts the key
 * and runs that baseline (apply + boot). The targets then run the INSTALLED copy of benchd, which
 * is what the agent looks for, and the command line is timed from spawn to exit.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { baselineDir } from '../agent/home.js';
import { fixturePath } from '../harness/index.js';
import { generateKeyPair, packBaseline, packHotpatch } from '../package/index.js';
import { BENCH_PATCH, BENCHD, functionSpecs } from './benchd.js';

export const CLI_PATH = fileURLToPath(new URL('../../bin/hp-agent.js', import.meta.url));

const BASELINE_ID = 'bench-scale-1';
const HOTPATCH_ID = 'bench-scale-1-hp1';
const BINARY = `bin/${BENCHD}`;

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Spawn → exit, ms. */
  wallMs: number;
  /** Date.now() at spawn and at exit (to compare with times the agent prints). */
  spawnEpochMs: number;
  exitEpochMs: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON. */
  json?: any;
}

export interface AgentMachine {
  /** The temporary folder holding the packages and the home. */
  dir: string;
  home: string;
  hotpatchPackage: string;
  hotpatchId: string;
  /** The installed benchd the targets must run: $HP_AGENT_HOME/system/<baseline>/bin/benchd. */
  binary: string;
}

/** Runs `node bin/hp-agent.js ARGS` with HP_AGENT_HOME=home and times it, spawn to exit. */
export function runCli(home: string | undefined, args: string[], timeoutMs = 300_000): Promise<CliRun> {
  return new Promise<CliRun>((resolve, reject) => {
    const env = { ...process.env };
    if (home) env.HP_AGENT_HOME = home;
    const spawnEpochMs = Date.now();
    const t0 = performance.now();
    const child = spawn(process.execPath, [CLI_PATH, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let exit: { code: number | null; signal: NodeJS.Signals | null; wallMs: number; exitEpochMs: number } | undefined;
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code, signal) => {
      exit = { code, signal, wallMs: performance.now() - t0, exitEpochMs: Date.now() };
    });
    child.once('close', () => {
      clearTimeout(timer);
      const e = exit ?? { code: child.exitCode, signal: child.signalCode, wallMs: performance.now() - t0, exitEpochMs: Date.now() };
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ ...e, wallMs: Math.round(e.wallMs * 10) / 10, spawnEpochMs, stdout, stderr, json });
    });
  });
}

/** Why a CLI run failed, in one line. */
export function cliProblem(r: CliRun): string {
  const what = r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
  const msg = r.json?.error?.message ?? (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' ');
  return `${what}${msg ? `: ${String(msg).slice(0, 300)}` : ''}`;
}

async function mustRun(home: string, args: string[]): Promise<CliRun> {
  const r = await runCli(home, args);
  if (r.code !== 0) throw new Error(`hp-agent ${args.join(' ')}: ${cliProblem(r)}`);
  return r;
}

/** Node's and the CLI's start-up alone: `node bin/hp-agent.js --version`, spawn → exit, median of `runs`, ms. */
export async function cliStartupMs(runs = 3): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = await runCli(undefined, ['--version'], 30_000);
    if (r.code !== 0) throw new Error(`hp-agent --version: ${cliProblem(r)}`);
    times.push(r.wallMs);
  }
  times.sort((a, b) => a - b);
  return Math.round(times[times.length >> 1] * 10) / 10;
}

/** Builds the product and a home that runs its baseline. Remove it with removeAgentMachine. */
export async function setUpAgentMachine(): Promise<AgentMachine> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-bench-scale-'));
  try {
    const home = path.join(dir, 'home');
    const pair = generateKeyPair();
    const pub = path.join(dir, 'bench.pub');
    fs.writeFileSync(pub, pair.publicKeyPem);
    const baselinePackage = path.join(dir, `${BASELINE_ID}.hpkg`);
    const hotpatchPackage = path.join(dir, `${HOTPATCH_ID}.hpkg`);
    const common = { releaseDate: '2026-01-13', classification: 'Security' as const, privateKeyPem: pair.privateKeyPem };
    await packBaseline({
      ...common,
      out: baselinePackage,
      id: BASELINE_ID,
      kb: 'KB9900001',
      title: 'Benchmark baseline: benchd',
      planned: true,
      files: [{ path: BINARY, source: fixturePath(BENCHD), mode: 0o755 }],
      services: [],
    });
    await packHotpatch({
      ...common,
      out: hotpatchPackage,
      id: HOTPATCH_ID,
      kb: 'KB9900101',
      title: 'Benchmark hotpatch: bench_fn_0',
      baselineId: BASELINE_ID,
      sequence: 1,
      targets: [{ path: BINARY, baselineFile: fixturePath(BENCHD), patchObject: fixturePath(BENCH_PATCH), functions: functionSpecs(1).map((f) => ({ symbol: f.name, replacement: f.replacement })) }],
    });
    await mustRun(home, ['trust', 'add', pub, '--json']);
    await mustRun(home, ['apply', baselinePackage, '--json']);
    await mustRun(home, ['boot', '--json']);
    const binary = path.join(baselineDir(home, BASELINE_ID), BINARY);
    fs.accessSync(binary, fs.constants.X_OK);
    return { dir, home, hotpatchPackage, hotpatchId: HOTPATCH_ID, binary };
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

export function removeAgentMachine(m: AgentMachine | undefined): void {
  if (m) fs.rmSync(m.dir, { recursive: true, force: true });
}
