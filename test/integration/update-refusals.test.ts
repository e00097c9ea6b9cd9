// Update management's refusals and its enrollment rules against a real greetd: bad input changes
// nothing, a broken feed installs nothing, and a machine taken off hotpatching gets cumulative
// updates (with reboots) until hotpatching is back and the next baseline boots. Every --json
// printed here is checked against the output contract.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { fixturePackage } from '../../src/demo/fixture-packages.js';
import type { OutputCommand } from '../../src/contract/index.js';
import { expectConforms } from '../contract-validate.js';
import { cliPath } from './helpers.js';
import { answers, at, cleanUpdateDirs, counts, expected, feedOf, machine, servicePid, states } from './update-helpers.js';

afterEach(cleanUpdateDirs);

const JAN = '2027-01-20T12:00:00Z';

/** The state file and the package store as they are: what a refused command must leave alone. */
function snapshot(home: string) {
  const store = path.join(home, 'packages');
  const downloads = path.join(home, 'downloads');
  return {
    state: fs.readFileSync(path.join(home, 'state.json'), 'utf8'),
    store: fs.readdirSync(store).sort(),
    downloads: fs.existsSync(downloads) ? fs.readdirSync(downloads) : [],
  };
}

describe('bad input', () => {
  it('malformed parameters, unknown classifications or KBs, a tampered index, an unreachable or cut-off feed: a clear error, nothing changed', async () => {
    const m = await machine();
    const feed = await feedOf();
    const agent = at(m.home, JAN);
    const before = snapshot(m.home);
    const usage: string[][] = [
      ['--maximum-duration', '4H'],
      ['--maximum-duration', 'PT0S'],
      ['--maximum-duration', 'P1M'],
      ['--classifications-to-include', 'security'],
      ['--classifications-to-include', 'Critical,Hotfix'],
      ['--kb-numbers-to-include', 'KB12'],
      ['--kb-numbers-to-exclude', 'KB5999999'], // well formed, but the feed has no such KB
      ['--reboot-setting', 'Sometimes'],
      ['--max-patch-publish-date', '2027-01-01'],
      ['--reboot-setting', 'Never', '--reboot-setting', 'Always'],
      ['--maximum-duration', 'PT1H', '--maximum-duration', 'PT2H'],
    ];
    for (const args of usage) {
      const r = await agent(['install', '--feed', feed, ...args]);
      expect(r.code, `${args.join(' ')}: ${r.stdout}`).toBe(2);
      expectConforms('error', r.json);
      expect(r.json.error.code, args.join(' ')).toBe('USAGE');
      expect(r.json.error.message.length).toBeGreaterThan(20);
    }
    expect((await agent(['install', '--feed', path.join(feed, 'nope')])).code).toBe(2);
    expect((await agent(['install'])).code).toBe(2);

    // A tampered index: refused (install), assessed as Failed (assess).
    const bad = path.join(path.dirname(feed), `${path.basename(feed)}-tampered`);
    fs.cpSync(feed, bad, { recursive: true });
    fs.writeFileSync(path.join(bad, 'index.json'), fs.readFileSync(path.join(bad, 'index.json'), 'utf8').replace('"2026-12-08"', '"2026-12-01"'));
    try {
      const r = await agent(['install', '--feed', bad]);
      expect(r.code).toBe(3);
      expect(r.json.error).toMatchObject({ code: 'FEED_BAD_SIGNATURE', unchanged: true });
      const a = await agent(['assess', '--feed', bad]);
      expect(a.code).toBe(3);
      expectConforms('assess', a.json);
      expect(a.json).toMatchObject({ status: 'Failed', availablePatches: [], error: { code: 'FEED_BAD_SIGNATURE' } });
    } finally {
      fs.rmSync(bad, { recursive: true, force: true });
    }

    // Nothing listens on port 1.
    const unreachable = await agent(['install', '--feed', 'http://127.0.0.1:1/feed/']);
    expect(unreachable.code).toBe(3);
    expect(unreachable.json.error.code).toBe('FEED_UNREACHABLE');

    const after = snapshot(m.home);
    expect(after.store).toEqual(before.store);
    expect(after.downloads).toEqual([]);
    // The failed assessment is kept as the last one; nothing else in the state moved.
    const strip = (text: string) => { const s = JSON.parse(text); delete s.lastAssessment; return s; };
    expect(strip(after.state)).toEqual(strip(before.state));
    expect(servicePid(m.home)).toBe(m.pid);
    expect(await answers(m.socket)).toEqual(expected.b1);

    // A feed whose packages are cut off half-way: the index is fine, every download fails.
    const server = http.createServer((req, res) => {
      const file = path.join(feed, path.basename(decodeURIComponent(req.url ?? '')));
      const bytes = fs.readFileSync(file);
      res.writeHead(200, { 'content-length': bytes.length });
      if (file.endsWith('.hpkg')) res.write(bytes.subarray(0, bytes.length >> 1), () => res.destroy());
      else res.end(bytes);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const r = await agent(['install', '--feed', `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, '--exclude-kbs-requiring-reboot']);
      expect(r.code, r.stdout).toBe(3);
      expectConforms('install', r.json);
      expect(states(r)).toEqual([['2026.11', 'Excluded'], ['2026.10-hp2', 'Failed']]);
      expect(r.json).toMatchObject({ status: 'Failed', error: { code: 'FEED_DOWNLOAD_FAILED' }, rebootStatus: 'NotNeeded' });
    } finally {
      await new Promise((r) => server.close(r));
    }
    expect(snapshot(m.home).store).toEqual(before.store);
    expect(snapshot(m.home).downloads).toEqual([]);
    expect(await answers(m.socket)).toEqual(expected.b1);
  });

  it('config: a refused combination or value changes nothing', async () => {
    const m = await machine();
    const agent = at(m.home, JAN);
    const before = snapshot(m.home).state;
    for (const args of [['patchMode', 'Manual'], ['patchMode', 'manual'], ['enableHotpatching', 'yes'], ['timeZone', 'Mars/Olympus'], ['offPeakWindow', '22-06'], ['rebootSetting', 'Never'], ['patchMode']]) {
      const r = await agent(['config', 'set', ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.json.error.code).toBe('USAGE');
    }
    expect((await agent(['config', 'set', 'patchMode', 'Manual'])).json.error.message).toMatch(/enableHotpatching true requires patchMode AutomaticByPlatform/);
    expect(snapshot(m.home).state).toBe(before);
  });
});

describe('hotpatch enrollment', () => {
  it('off: cumulative updates with reboots; on again: Pending until the next baseline boots, then hotpatches', async () => {
    const m = await machine();
    const feed = await feedOf();
    const dec = at(m.home, '2026-12-20T12:00:00Z');
    const run = async (command: OutputCommand, args: string[], code = 0) => {
      const r = await dec(args);
      expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(code);
      expectConforms(command, r.json);
      return r;
    };

    const shown = await run('config', ['config']);
    expect(shown.json).toMatchObject({ enrollment: 'Enabled', patchSettings: { patchMode: 'AutomaticByPlatform', enableHotpatching: true, assessmentMode: 'ImageDefault', automaticByPlatformSettings: { rebootSetting: 'IfRequired' } }, offPeakWindow: { start: '22:00', end: '06:00' } });
    const off = await run('config', ['config', 'set', 'enableHotpatching', 'false', 'timeZone', 'Europe/Rome']);
    expect(off.json).toMatchObject({ enrollment: 'Disabled', changed: ['enableHotpatching', 'timeZone'], timeZone: 'Europe/Rome', timeZoneSource: 'configured' });
    expect(off.json.enrollmentReason).toMatch(/cumulative updates that need a reboot/);

    // Not enrolled: the month's fix is the cumulative update; the hotpatch is refused.
    const assessed = await run('assess', ['assess', '--feed', feed]);
    expect(assessed.json.availablePatches.map((p: { patchId: string; rebootBehavior: string }) => [p.patchId, p.rebootBehavior])).toEqual([['2026.10.2', 'AlwaysRequiresReboot']]);
    const refused = await dec(['apply', fixturePackage('2026.10-hp2')]);
    expect(refused.code).toBe(3);
    expect(refused.json.error.code).toBe('NOT_ENROLLED');
    const cu = await run('install', ['install', '--feed', feed]);
    expect(states(cu)).toEqual([['2026.10.2', 'Installed']]);
    expect(cu.json.rebootStatus).toBe('Completed');
    expect(servicePid(m.home)).not.toBe(m.pid);
    expect(await answers(m.socket)).toEqual(expected.b1c2);

    // On again: Pending; off while pending: Canceled; on again: Pending.
    expect((await run('config', ['config', 'set', 'enableHotpatching', 'true'])).json.enrollment).toBe('Pending');
    expect((await run('config', ['config', 'set', 'enableHotpatching', 'false'])).json.enrollment).toBe('Canceled');
    const pending = await run('config', ['config', 'set', 'enableHotpatching', 'true']);
    expect(pending.json.enrollment).toBe('Pending');
    expect(pending.json.enrollmentReason).toMatch(/next baseline/);
    const st = await run('status', ['status']);
    expect(st.json).toMatchObject({ enrollment: 'Pending', enrollmentReason: pending.json.enrollmentReason, timeZone: 'Europe/Rome' });
    expect((await run('assess', ['assess', '--feed', feed])).json.availablePatches).toEqual([]);

    // February: the next baseline (over the later cumulative update), its boot enrolls the
    // machine, and the same install goes on with that baseline's hotpatch, live.
    const feb = at(m.home, '2027-02-20T12:00:00Z');
    const plan = await feb(['install', '--feed', feed, '--dry-run']);
    expectConforms('install', plan.json);
    expect(plan.json.patches.map((p: { patchId: string; installationState: string }) => [p.patchId, p.installationState])).toEqual([['2026.11', 'Installed'], ['2026.11-hp1', 'Installed']]);
    const next = await feb(['install', '--feed', feed]);
    expect(next.code, next.stdout).toBe(0);
    expectConforms('install', next.json);
    expect(states(next)).toEqual([['2026.11', 'Installed'], ['2026.11-hp1', 'Installed']]);
    expect(counts(next)).toEqual({ installed: 2, pending: 0, failed: 0, excluded: 0, notSelected: 0 });
    expect(await answers(m.socket)).toEqual(expected['b2+hp1']);
    const enrolled = await feb(['status']);
    expect(enrolled.json).toMatchObject({ enrollment: 'Enabled', installedBaseline: { baselineId: '2026.11' }, processes: [{ baselineId: '2026.11', hotpatchSequence: 1, compliant: true }] });
    expect(enrolled.json.enrollmentReason).toMatch(/baseline 2026.11 was installed and booted/);

    const h = await feb(['history', '--days', '365']);
    expectConforms('history', h.json);
    const actions = h.json.entries.map((e: { action: string }) => e.action);
    for (const a of ['installation', 'assess', 'enroll', 'unenroll', 'reboot']) expect(actions).toContain(a);
  });
});

describe('feed build and serve from the command line', () => {
  it('serves a feed over HTTP that assess reads like the folder', async () => {
    const m = await machine();
    const feed = await feedOf(['2026.10', '2026.10-hp1']);
    const child = spawn(process.execPath, [cliPath, 'feed', 'serve', feed, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const first = await new Promise<string>((resolve) => {
        let text = '';
        child.stdout.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.trim().endsWith('}')) resolve(text);
        });
      });
      const served = JSON.parse(first);
      expectConforms('feed-serve', served);
      const r = await at(m.home, JAN)(['assess', '--feed', served.url]);
      expect(r.code, r.stdout).toBe(0);
      expect(r.json.availablePatches.map((p: { patchId: string }) => p.patchId)).toEqual(['2026.10-hp1']);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    expect(child.exitCode).toBe(0);
  });
});
