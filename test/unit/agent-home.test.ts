import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import {
  agentHome,
  baselineDir,
  DEFAULT_AGENT_HOME,
  ensureHome,
  homeLayout,
  readBaselinePointer,
  writeBaselinePointer,
} from '../../src/agent/home.js';

let tmp: string;

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-agent-home-'));
});

afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('agent home', () => {
  it('comes from HP_AGENT_HOME or defaults to /var/lib/hp-agent', () => {
    expect(agentHome({})).toBe(DEFAULT_AGENT_HOME);
    expect(agentHome({ HP_AGENT_HOME: '' })).toBe('/var/lib/hp-agent');
    expect(agentHome({ HP_AGENT_HOME: '/srv/hp' })).toBe('/srv/hp');
    expect(agentHome({ HP_AGENT_HOME: 'rel/home' })).toBe(path.resolve('rel/home'));
  });

  it('lays out every path under the home', () => {
    const l = homeLayout('/h');
    expect(l).toMatchObject({
      home: '/h',
      system: '/h/system',
      activePointer: '/h/system/active',
      pendingPointer: '/h/system/pending',
      trustedKeys: '/h/trusted-keys',
      packages: '/h/packages',
      state: '/h/state.json',
      history: '/h/history.jsonl',
      agentLog: '/h/logs/agent.log',
      serviceLogs: '/h/logs/services',
      run: '/h/run',
      lock: '/h/lock',
    });
    expect(baselineDir('/h', 'b-2025.01')).toBe('/h/system/b-2025.01');
    for (const bad of ['..', '../x', 'a/b', '', '.hidden', 'active', 'pending']) {
      expect(() => baselineDir('/h', bad)).toThrow(HpError);
    }
  });

  it('ensureHome creates the tree with a 0700 root, and tightens an existing root', async () => {
    const home = path.join(tmp, 'home');
    const layout = await ensureHome(home);
    expect(fs.statSync(home).mode & 0o777).toBe(0o700);
    for (const dir of [layout.system, layout.trustedKeys, layout.packages, layout.serviceLogs, layout.run]) {
      expect(fs.statSync(dir).isDirectory()).toBe(true);
    }
    fs.chmodSync(home, 0o755);
    await ensureHome(home);
    expect(fs.statSync(home).mode & 0o777).toBe(0o700);
  });

  it('ensureHome refuses a file where the home should be', async () => {
    const file = path.join(tmp, 'file');
    fs.writeFileSync(file, 'x');
    const error = await ensureHome(file).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HpError);
    expect((error as HpError).code).toBe('HOME_NOT_DIRECTORY');
  });

  it('baseline pointers are written atomically and removed', async () => {
    const home = path.join(tmp, 'home');
    await ensureHome(home);
    expect(await readBaselinePointer(home, 'active')).toBeUndefined();
    await writeBaselinePointer(home, 'active', 'base-1');
    await writeBaselinePointer(home, 'pending', 'base-2');
    expect(await readBaselinePointer(home, 'active')).toBe('base-1');
    expect(await readBaselinePointer(home, 'pending')).toBe('base-2');
    expect(fs.readFileSync(homeLayout(home).activePointer, 'utf8')).toBe('base-1\n');
    await writeBaselinePointer(home, 'pending', undefined);
    expect(await readBaselinePointer(home, 'pending')).toBeUndefined();
    await expect(writeBaselinePointer(home, 'active', '../etc')).rejects.toThrow(/refusing baseline id/);
  });
});
