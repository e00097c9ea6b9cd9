// Shared by the update tests: a machine (one temporary HP_AGENT_HOME, the demo key trusted,
// baseline 2026.10 installed and booted: greetd running) and a feed folder holding the greeter's
// packages with a signed index. "Now" is fixed per command with HP_AGENT_NOW, so the feed's
// release dates decide what has been released.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import { demoPublicKey, fixturePackage, packagesDir, productSpec } from '../../src/demo/fixture-packages.js';
import { UnixClient } from '../../src/harness/index.js';
import { stopHomeServices } from './agent-home.js';
import { hpAgent, type CliResult } from './helpers.js';

export const expected = productSpec().expected;
export const ALL_PACKAGES = ['2026.10', '2026.10-hp1', '2026.10.1', '2026.10-hp2', '2026.10.2', '2026.11', '2026.11-hp1', '2026.11.1', '2026.11-hp2'];

const dirs: string[] = [];

export function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

export async function cleanUpdateDirs(): Promise<void> {
  for (const d of dirs.splice(0)) {
    if (fs.existsSync(path.join(d, 'state.json'))) await stopHomeServices(d);
    fs.rmSync(d, { recursive: true, force: true });
  }
}

/** The CLI against `home` at `now` (ISO date-time), --json unless asked otherwise. */
export const at = (home: string, now: string) => (args: string[], opts: { json?: boolean } = {}): Promise<CliResult> =>
  hpAgent(args, { ...opts, env: { ...process.env, HP_AGENT_HOME: home, HP_AGENT_NOW: now } });

/** A feed folder with these fixture packages and an index signed by the demo key, valid until 2028. */
export async function feedOf(ids: readonly string[] = ALL_PACKAGES): Promise<string> {
  const feed = tempDir('hp-feed-');
  for (const id of ids) fs.copyFileSync(fixturePackage(id), path.join(feed, `${id}.hpkg`));
  const r = await hpAgent(['feed', 'build', feed, '--key', path.join(packagesDir, 'demo.key'), '--expires', '2028-01-01T00:00:00Z'], { env: { ...process.env, HP_AGENT_NOW: '2026-10-01T00:00:00Z' } });
  expect(r.code, r.stderr).toBe(0);
  return feed;
}

export interface Machine {
  home: string;
  socket: string;
  pid: number;
}

/** A home running baseline 2026.10 (greetd started by boot). */
export async function machine(now = '2026-10-20T12:00:00Z'): Promise<Machine> {
  const home = tempDir('hp-upd-');
  const agent = at(home, now);
  expect((await agent(['trust', 'add', demoPublicKey()])).code).toBe(0);
  expect((await agent(['apply', fixturePackage('2026.10')])).code).toBe(0);
  const booted = await agent(['boot']);
  expect(booted.code, booted.stderr).toBe(0);
  return { home, socket: path.join(home, 'run/greetd.sock'), pid: booted.json.started[0].pid };
}

/** What greetd answers now, to every question of the expected table. */
export async function answers(socket: string): Promise<Record<string, string>> {
  const c = await UnixClient.connect(socket);
  try {
    const out: Record<string, string> = {};
    for (const q of Object.keys(expected.b1)) out[q] = await c.request(q);
    return out;
  } finally {
    c.close();
  }
}

/** The one greetd the home's state records (after a reboot: a new PID). */
export function servicePid(home: string): number {
  const state = JSON.parse(fs.readFileSync(path.join(home, 'state.json'), 'utf8')) as { services: { pid: number }[] };
  expect(state.services).toHaveLength(1);
  return state.services[0].pid;
}

/** [patchId, installationState] of each patch of an install result, in its order. */
export const states = (r: CliResult): [string, string][] => r.json.patches.map((p: { patchId: string; installationState: string }) => [p.patchId, p.installationState]);

/** The five counts of an install result. */
export const counts = (r: CliResult) => ({
  installed: r.json.installedPatchCount,
  pending: r.json.pendingPatchCount,
  failed: r.json.failedPatchCount,
  excluded: r.json.excludedPatchCount,
  notSelected: r.json.notSelectedPatchCount,
});
