// A machine running the year of releases (fixtures/year/) with its feed, and `hp-agent run` on a
// simulated clock over it: the actions it prints, checked against the contract.
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import type { Output } from '../../src/contract/index.js';
import { expectConforms } from '../contract-validate.js';
import { demoPublicKey, packagesDir } from '../../src/demo/fixture-packages.js';
import { yearExtraDir, yearPackagesDir, yearSpec } from '../../src/demo/year-packages.js';
import { agent, newHome, type AgentResult } from './agent-helpers.js';
import { unixRequest } from '../../src/harness/index.js';

export const TZ = 'Europe/Rome';
export const spec = yearSpec();

export interface YearMachine {
  home: string;
  feed: string;
  /** One-shot command at an instant of the simulated year. */
  at(time: string, args: string[], json?: boolean): Promise<AgentResult>;
}

/** The year's feed (or the broken hotpatch's), a machine trusting the demo key, baseline 2027.01 booted on 2027-01-12. */
export async function yearMachine(o: { extra?: boolean } = {}): Promise<YearMachine> {
  const home = newHome();
  const feed = newHome();
  const from = o.extra ? yearExtraDir : yearPackagesDir;
  for (const f of fs.readdirSync(from)) fs.copyFileSync(path.join(from, f), path.join(feed, f));
  const at = (time: string, args: string[], json = true) => agent(home, args, { json, env: { HP_AGENT_NOW: time } });
  const ok = (r: AgentResult) => expect(r.code, r.stdout + r.stderr).toBe(0);
  ok(await at('2027-01-01T00:00:00Z', ['trust', 'add', demoPublicKey()]));
  ok(await at('2027-01-01T00:00:00Z', ['feed', 'build', feed, '--key', path.join(packagesDir, 'demo.key'), '--expires', '2028-02-01T00:00:00Z']));
  ok(await at('2027-01-01T00:00:00Z', ['config', 'set', 'timeZone', TZ, 'patchMode', 'AutomaticByPlatform', 'enableHotpatching', 'true']));
  ok(await at('2027-01-12T12:00:00Z', ['apply', path.join(feed, '2027.01.hpkg')]));
  ok(await at('2027-01-12T12:00:01Z', ['reboot']));
  return { home, feed, at };
}

export type Action = Output<'run'>;

/** `run --json`'s lines, each checked against the contract (zod and the shipped JSON Schema). */
export function actionLines(stdout: string): Action[] {
  return stdout.trim().split('\n').map((l) => {
    const a = JSON.parse(l) as Action;
    expectConforms('run', a);
    return a;
  });
}

/** `hp-agent run --simulate-from --simulate-until --json`: every line must be one action of the contract. */
export async function simulate(m: YearMachine, from: string, until: string): Promise<Action[]> {
  const r = await agent(m.home, ['run', '--feed', m.feed, '--simulate-from', from, '--simulate-until', until, '--json'], { json: false });
  expect(r.code, r.stderr).toBe(0);
  const actions = actionLines(r.stdout);
  expect(actions[0].action).toBe('start');
  expect(actions.at(-1)!.action).toBe('stop');
  expect(actions.filter((a) => a.action === 'error'), JSON.stringify(actions.filter((a) => a.action === 'error'))).toEqual([]);
  return actions;
}

/** What the machine's services answer to `version` (the level their processes run) — asked of the processes themselves. */
export async function versions(m: YearMachine): Promise<string[]> {
  return Promise.all(['greetd-a', 'greetd-b'].map((s) => unixRequest(path.join(m.home, 'run', `${s}.sock`), 'version')));
}

export const month = (iso: string) => Number(iso.slice(5, 7));
