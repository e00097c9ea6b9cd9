// Shared by the agent refusal and concurrency tests: a machine is one temporary HP_AGENT_HOME
// with the greeter baseline 2026.10 installed and booted (greetd running as a detached daemon),
// driven only through the real command line. A snapshot records everything a refused command
// must leave alone — the entry bytes of every hotpatchable function in the running daemon, its
// patch mappings, state.json byte for byte, and the daemon's answers — so a test can prove it.
import { execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Header, type HeaderData } from 'tar';
import { expect } from 'vitest';
import { processesUnder } from '../../src/agent/discover.js';
import { fixturePackage, demoPublicKey, productSpec } from '../../src/demo/fixture-packages.js';
import { unixRequest } from '../../src/harness/index.js';
import { processExists } from '../../src/proc/stat.js';
import { buildArchive, MANIFEST_FILE, readArchive, sha256Hex, writePackageFile } from '../../src/package/archive.js';
import { signManifest } from '../../src/package/keys.js';
import { cliPath, entryBytes, patchMappings } from './helpers.js';

export const BASELINE = '2026.10';
export const spec = productSpec();
/** The answers the greeter gives at each level (fixtures/baselines/README.md). */
export const expected = spec.expected;
export const pkg = (id: string) => fixturePackage(id);

/** Every function any hotpatch of 2026.10 replaces, with the baseline file that holds it. */
export const FUNCTIONS: { object: string; fn: string }[] = [
  ...new Map(
    spec.hotpatches
      .filter((h) => h.baselineId === BASELINE)
      .flatMap((h) => h.targets.flatMap((t) => t.functions.map((f) => ({ object: t.path, fn: f.symbol }))))
      .map((f) => [`${f.object}:${f.fn}`, f] as const),
  ).values(),
];

export interface AgentResult {
  code: number;
  stdout: string;
  stderr: string;
  json: any;
  /** The signal that ended the agent, if one did (a test's kill point: SIGKILL). */
  signal?: string;
}

export interface RunningAgent {
  readonly pid: number;
  readonly done: Promise<AgentResult>;
  readonly child: ChildProcess;
}

// ---------------------------------------------------------------------------------------------
// Homes and their cleanup

const homes = new Set<string>();
const agents = new Set<ChildProcess>();

export function newHome(): string {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'hpa-'));
  homes.add(home);
  return home;
}

/** Start the CLI against `home`; the agent is a separate process, never the targets' parent. */
export function startAgent(home: string, args: string[], opts: AgentOptions = {}): RunningAgent {
  const full = opts.json === false ? args : [...args, '--json'];
  let child!: ChildProcess;
  const done = new Promise<AgentResult>((resolve) => {
    child = execFile(process.execPath, [cliPath, ...full], { timeout: 60_000, env: { ...process.env, ...opts.env, HP_AGENT_HOME: home } }, (err, stdout, stderr) => {
      agents.delete(child);
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      let json: any;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json, signal: err?.signal ?? undefined });
    });
  });
  agents.add(child);
  return { pid: child.pid!, done, child };
}

/** `env`: extra environment, e.g. the test-only HP_AGENT_TEST_KILL_AT (src/agent/kill-point.ts). */
export interface AgentOptions {
  json?: boolean;
  env?: Record<string, string>;
}

export function agent(home: string, args: string[], opts: AgentOptions = {}): Promise<AgentResult> {
  return startAgent(home, args, opts).done;
}

/** Every process of a home: the services state.json records and whatever runs its installed files. */
export function homePids(home: string): number[] {
  const pids = new Set<number>();
  try {
    const state = JSON.parse(fs.readFileSync(path.join(home, 'state.json'), 'utf8')) as { services?: { pid: number }[] };
    for (const s of state.services ?? []) {
      // Only if it still runs this home's files (a recorded PID may have been recycled).
      if (processesUnder(path.join(home, 'system'), [s.pid]).length > 0) pids.add(s.pid);
    }
  } catch {
    // no state yet
  }
  for (const p of processesUnder(path.join(home, 'system'))) pids.add(p.pid);
  return [...pids];
}

/**
 * afterEach: kill the agents still running (a stopped one too), then every daemon of every home
 * made since, wait until they are gone, and remove the homes. The daemons are not our children:
 * nothing else would stop them.
 */
export async function cleanUp(): Promise<void> {
  for (const child of agents) if (child.pid) process.kill(child.pid, 'SIGKILL');
  agents.clear();
  const victims: number[] = [];
  for (const home of homes) {
    for (const pid of homePids(home)) {
      try {
        process.kill(pid, 'SIGKILL');
        victims.push(pid);
      } catch {
        // already gone
      }
    }
  }
  const deadline = Date.now() + 5_000;
  while (victims.some(processExists) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const left = victims.filter(processExists);
  for (const home of homes) fs.rmSync(home, { recursive: true, force: true });
  homes.clear();
  if (left.length) throw new Error(`processes still alive after SIGKILL: ${left.join(', ')}`);
}

// ---------------------------------------------------------------------------------------------
// A booted machine

export interface Machine {
  home: string;
  /** The daemon's socket: $HP_AGENT_HOME/run/greetd.sock. */
  sock: string;
}

/** trust add demo.pub, apply the 2026.10 baseline (staged), boot (greetd starts). */
export async function bootMachine(): Promise<Machine> {
  const home = newHome();
  const trust = await agent(home, ['trust', 'add', demoPublicKey()]);
  expect(trust.code, trust.stdout + trust.stderr).toBe(0);
  const install = await agent(home, ['apply', pkg(BASELINE)]);
  expect(install.code, install.stdout + install.stderr).toBe(0);
  expect(install.json.patches[0].installationState).toBe('Pending');
  const boot = await agent(home, ['boot']);
  expect(boot.code, boot.stdout + boot.stderr).toBe(0);
  expect(boot.json.started).toHaveLength(1);
  const m = { home, sock: path.join(home, 'run', 'greetd.sock') };
  expect(await answers(m.sock, 'b1')).toEqual(expected.b1);
  return m;
}

/** The daemon's pid, from state.json (after checking it is really alive). */
export function servicePid(m: Machine): number {
  const state = JSON.parse(fs.readFileSync(path.join(m.home, 'state.json'), 'utf8')) as { services: { name: string; pid: number }[] };
  const pid = state.services.find((s) => s.name === 'greetd')?.pid;
  expect(pid).toBeGreaterThan(0);
  expect(processExists(pid!)).toBe(true);
  return pid!;
}

export const objectPath = (home: string, rel: string, baseline = BASELINE) => path.join(home, 'system', baseline, rel);

/** Ask the daemon every request of the expected table for `level`; returns request → answer. */
export async function answers(sock: string, level = 'b1'): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const req of Object.keys(expected[level])) out[req] = await unixRequest(sock, req);
  return out;
}

/** `entryBytes` of every hotpatchable function, as hex, keyed "object:function". */
export async function entries(home: string, pid: number): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of FUNCTIONS) out[`${f.object}:${f.fn}`] = (await entryBytes(pid, f.fn, 16, objectPath(home, f.object))).toString('hex');
  return out;
}

export interface Snapshot {
  pid: number;
  state: Buffer;
  entries: Record<string, string>;
  mappings: string[];
  answers: Record<string, string>;
}

export async function snapshot(m: Machine): Promise<Snapshot> {
  const pid = servicePid(m);
  return {
    pid,
    state: fs.readFileSync(path.join(m.home, 'state.json')),
    entries: await entries(m.home, pid),
    mappings: patchMappings(pid),
    answers: await answers(m.sock),
  };
}

/** Nothing changed: same daemon, same bytes at every entry, same mappings, same state, same answers. */
export async function expectUnchanged(m: Machine, before: Snapshot): Promise<void> {
  const after = await snapshot(m);
  expect(after.pid).toBe(before.pid);
  expect(after.entries).toEqual(before.entries);
  expect(after.mappings).toEqual(before.mappings);
  expect(after.state.equals(before.state), 'state.json changed').toBe(true);
  expect(after.answers).toEqual(before.answers);
}

/** Exit code 3, `--json` `.error.code` as named, and the agent says nothing was changed. */
export function expectRefused(r: AgentResult, code: string): void {
  expect(r.json?.error?.code, r.stdout + r.stderr).toBe(code);
  expect(r.json.error.unchanged).toBe(true);
  expect(r.code).toBe(3);
}

/** `history --json`, oldest first, as [action, result, packageId, refusal code]. */
export async function history(home: string): Promise<[string, string, string | undefined, string | undefined][]> {
  const r = await agent(home, ['history']);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return (r.json.entries as any[]).reverse().map((e) => [e.action, e.result, e.packageId, e.detail?.code]);
}

// ---------------------------------------------------------------------------------------------
// Packages made bad on purpose

/** A copy of a package whose files `edit` changed (then written as the same deterministic tar). */
export async function editedPackage(source: string, out: string, edit: (files: Map<string, Buffer>) => void): Promise<string> {
  const { files } = await readArchive(fs.readFileSync(source));
  edit(files);
  fs.writeFileSync(out, buildArchive(files));
  return out;
}

/**
 * A copy of a package whose manifest (parsed) and files `edit` changed, signed again with the
 * trusted demo key: a package the signature accepts, saying whatever the test wants it to say.
 * Payload entries of the manifest are brought in line with the edited files (sha256, size).
 */
export async function resignedPackage(source: string, out: string, edit: (manifest: any, files: Map<string, Buffer>) => void): Promise<string> {
  const { files } = await readArchive(fs.readFileSync(source));
  const manifest = JSON.parse(files.get(MANIFEST_FILE)!.toString('utf8'));
  const payload = new Map([...files].filter(([p]) => p.startsWith('payload/')));
  edit(manifest, payload);
  for (const p of manifest.payload) {
    const data = payload.get(p.path)!;
    p.sha256 = sha256Hex(data);
    p.size = data.length;
  }
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n', 'utf8');
  const signature = signManifest(manifestBytes, fs.readFileSync(path.join(path.dirname(demoPublicKey()), 'demo.key'), 'utf8'));
  await writePackageFile(out, { manifestBytes, signature, payload });
  return out;
}

/** One raw tar entry (header + data blocks), written by node-tar's Header with no checks of ours. */
export function rawTarEntry(header: Pick<HeaderData, 'path' | 'type' | 'linkpath'>, data = Buffer.alloc(0)): Buffer {
  const h = new Header({ mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: new Date(0), uname: '', gname: '', ...header });
  const block = Buffer.alloc(512);
  h.encode(block);
  return Buffer.concat([block, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

/** A genuine signed package with one more entry appended before the end-of-archive blocks. */
export async function packageWithEntry(source: string, out: string, entry: Buffer): Promise<string> {
  const tar = fs.readFileSync(source);
  const end = Buffer.alloc(1024);
  expect(tar.subarray(tar.length - 1024).equals(end)).toBe(true);
  fs.writeFileSync(out, Buffer.concat([tar.subarray(0, tar.length - 1024), entry, end]));
  return out;
}
