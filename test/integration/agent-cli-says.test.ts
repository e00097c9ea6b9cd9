// What the command line says is what happened (issue 10, defects 4 and 7): a baseline downgrade
// is refused unless asked for; `status --check` fails on an unhealthy machine; a revert's
// processes and history rows say Reverted; a hotpatch needs no reboot (NotNeeded); the trust
// store can lose a key; the untrusted-key error says how to trust one; --version and the demo
// print what they should. All through the real command line, against a real daemon.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { killTargetsAfterEach, spawnTarget } from '../../src/harness/index.js';
import { parsePublicKey } from '../../src/package/index.js';
import { demoPublicKey } from '../../src/demo/fixture-packages.js';
import { agent, bootMachine, cleanUp, expectRefused, newHome, objectPath, pkg, servicePid } from './agent-helpers.js';
import { cliPath } from './helpers.js';

killTargetsAfterEach(afterEach);
afterEach(cleanUp);

const run = promisify(execFile);

describe('status --check', () => {
  it('exits 0 on a healthy machine and 3, saying why, for a non-compliant process, a pending reboot or a dead service; plain status exits 0', async () => {
    const m = await bootMachine();
    let r = await agent(m.home, ['status', '--check'], { json: false });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/check: healthy/);

    // Hotpatch applied; then a second greetd started by hand does not carry it.
    expect((await agent(m.home, ['apply', pkg('2026.10-hp1')])).code).toBe(0);
    expect((await agent(m.home, ['status', '--check'])).code).toBe(0);
    const second = await spawnTarget(objectPath(m.home, 'bin/greetd'), { args: [path.join(m.home, 'run', 'second.sock'), '2'] });
    r = await agent(m.home, ['status', '--check']);
    expect(r.code).toBe(3);
    expect(r.json.check.healthy).toBe(false);
    expect(r.json.check.problems.join('\n')).toMatch(new RegExp(`process ${second.pid} \\(greetd\\) is not compliant: .*format_greeting`));
    r = await agent(m.home, ['status', '--check'], { json: false });
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/check: NOT healthy/);
    expect((await agent(m.home, ['status'])).code).toBe(0);
    await second.kill();

    // A reboot pending.
    expect((await agent(m.home, ['apply', pkg('2026.11')])).code).toBe(0);
    r = await agent(m.home, ['status', '--check']);
    expect(r.code).toBe(3);
    expect(r.json.check.problems.join('\n')).toMatch(/a reboot is pending: baseline 2026\.11/);
    expect((await agent(m.home, ['status'])).code).toBe(0);

    // The service dies.
    const pid = servicePid(m);
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 200 && fs.existsSync(`/proc/${pid}/exe`); i++) await new Promise((res) => setTimeout(res, 10));
    r = await agent(m.home, ['status', '--check']);
    expect(r.code).toBe(3);
    expect(r.json.check.problems.join('\n')).toMatch(new RegExp(`service greetd \\(PID ${pid}, baseline 2026\\.10\\) is not running`));
    expect((await agent(m.home, ['status'])).code).toBe(0);
  });
});

describe('apply and revert say what happened', () => {
  it('a hotpatch says rebootStatus NotNeeded; a revert says Reverted per process and in history', async () => {
    const m = await bootMachine();
    const pid = servicePid(m);
    const hp1 = await agent(m.home, ['apply', pkg('2026.10-hp1')]);
    expect(hp1.code).toBe(0);
    expect(hp1.json.rebootStatus).toBe('NotNeeded');
    expect((await agent(m.home, ['apply', pkg('2026.10-hp1')], { json: false })).stdout).toMatch(/rebootStatus NotNeeded/);

    const reverted = await agent(m.home, ['revert', 'KB5046101']);
    expect(reverted.code, reverted.stdout + reverted.stderr).toBe(0);
    expect(reverted.json.processes).toMatchObject([{ pid, outcome: 'Reverted' }]);
    const hist = await agent(m.home, ['history']);
    expect(hist.json.entries[0]).toMatchObject({ action: 'revert', result: 'Succeeded', detail: { processes: [{ pid, outcome: 'Reverted' }] } });
    const table = (await agent(m.home, ['history'], { json: false })).stdout;
    const revertRow = table.split('\n').find((l) => /\brevert\b/.test(l));
    expect(revertRow).toMatch(/Reverted/);
    expect(revertRow).not.toMatch(/Patched/);
  });

  it('a baseline older than the running one is refused (BASELINE_DOWNGRADE, both named) unless --allow-downgrade', async () => {
    const m = await bootMachine();
    expect((await agent(m.home, ['apply', pkg('2026.11')])).code).toBe(0);
    const rebooted = await agent(m.home, ['reboot']);
    expect(rebooted.code).toBe(0);
    expect(rebooted.json.toBaselineId).toBe('2026.11');
    const state = fs.readFileSync(path.join(m.home, 'state.json'));
    const pid = servicePid(m);

    const down = await agent(m.home, ['apply', pkg('2026.10')]);
    expectRefused(down, 'BASELINE_DOWNGRADE');
    expect(down.json.error.message).toMatch(/baseline 2026\.10 .* is older than baseline 2026\.11/);
    expect(down.json.error.message).toMatch(/--allow-downgrade/);
    expect(fs.readFileSync(path.join(m.home, 'state.json')).equals(state)).toBe(true);
    expect((await agent(m.home, ['status'])).json).toMatchObject({ installedBaseline: { baselineId: '2026.11' }, rebootPending: false });

    const allowed = await agent(m.home, ['apply', pkg('2026.10'), '--allow-downgrade']);
    expect(allowed.code, allowed.stdout + allowed.stderr).toBe(0);
    expect(allowed.json.patches[0].installationState).toBe('Pending');
    expect((await agent(m.home, ['status'])).json).toMatchObject({ installedBaseline: { baselineId: '2026.11' }, pendingBaseline: { baselineId: '2026.10' }, rebootPending: true });
    expect(servicePid(m)).toBe(pid);
  });
});

describe('trust', () => {
  it('an untrusted signer is refused with the command that trusts a key', async () => {
    const home = newHome();
    const r = await agent(home, ['apply', pkg('2026.10')]);
    expectRefused(r, 'PACKAGE_UNTRUSTED');
    expect(r.json.error.message).toMatch(/hp-agent trust add/);
  });

  it('trust remove takes a key id, the store\'s <id>.pub or the public key file; a key not there is exit 3', async () => {
    const home = newHome();
    const keyId = parsePublicKey(fs.readFileSync(demoPublicKey(), 'utf8')).keyId;
    const listed = async () => (await agent(home, ['trust', 'list'])).json.keys.map((k: any) => k.keyId);
    for (const arg of [keyId, `${keyId}.pub`, demoPublicKey()]) {
      expect((await agent(home, ['trust', 'add', demoPublicKey(), '--name', 'demo'])).code).toBe(0);
      expect(await listed()).toEqual([keyId]);
      const removed = await agent(home, ['trust', 'remove', arg]);
      expect(removed.code, removed.stdout + removed.stderr).toBe(0);
      expect(removed.json).toEqual({ keyId, name: 'demo', removed: true });
      expect(await listed()).toEqual([]);
    }
    const again = await agent(home, ['trust', 'remove', keyId]);
    expectRefused(again, 'KEY_NOT_TRUSTED');
    // Removed means refused: the package signed by it is not accepted any more.
    expectRefused(await agent(home, ['apply', pkg('2026.10')]), 'PACKAGE_UNTRUSTED');
  });
});

describe('--version and the demo', () => {
  it('--version prints the package version from any working directory', async () => {
    const version = JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../../package.json'), 'utf8')).version;
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'hpa-cwd-'));
    try {
      const { stdout } = await run(process.execPath, [cliPath, '--version'], { cwd });
      expect(stdout.trim()).toBe(version);
    } finally {
      fs.rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('the demo prints the output of every command it shows', async () => {
    const { stdout } = await run(process.execPath, [cliPath, 'demo'], { timeout: 60_000 });
    const lines = stdout.split('\n');
    const shown = lines.map((l, i) => [l, lines[i + 1] ?? ''] as const).filter(([l]) => /^\s+\$ hp-agent /.test(l));
    expect(shown.length).toBeGreaterThan(5);
    for (const [command, next] of shown) expect(next, `no output under "${command.trim()}"`).toMatch(/^ {4}\S/);
  }, 60_000);
});
