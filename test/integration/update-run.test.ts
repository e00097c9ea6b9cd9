// `hp-agent run` against real services: a failing health check stops the rollout at the first
// service and rolls it back; a machine whose agent was off across windows catches up at the next
// one; a process started below the hotpatch level gets it as soon as it is seen; SIGTERM stops it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { unixRequest } from '../../src/harness/index.js';
import { isInWindow } from '../../src/update/window.js';
import { agent, cleanUp, newHome, startAgent } from './agent-helpers.js';
import { actionLines, simulate, TZ, versions, yearMachine } from './update-year-helpers.js';

afterEach(cleanUp);

describe('hp-agent run', () => {
  it('stops the rollout at the first service whose health check fails, and rolls that service back', async () => {
    const m = await yearMachine({ extra: true }); // the feed: 2027.01 and a hotpatch whose greeting is wrong
    const actions = await simulate(m, '2027-02-09T12:00:00Z', '2027-02-11T12:00:00Z');
    const services = actions.filter((a) => a.action === 'service');
    expect(services.map((a) => [a.service, a.result, a.healthy])).toEqual([['greetd-a', 'Failed', false]]);
    expect(services[0].detail).toMatch(/health check: "hello bob" to .*greetd-a\.sock answered "hullo bob", expected "hello bob"/);
    const rollback = actions.filter((a) => a.action === 'rollback');
    expect(rollback.map((a) => [a.service, a.result])).toEqual([['greetd-a', 'Succeeded']]);
    expect(rollback[0].detail).toContain('plain baseline 2027.01');
    const install = actions.filter((a) => a.action === 'install');
    expect(install.map((a) => [a.packageId, a.result])).toEqual([['2027.01-broken', 'Failed']]);
    expect(isInWindow(new Date(install[0].time), TZ)).toBe(true);
    // Not tried again on the nights after: said once.
    expect(actions.filter((a) => a.action === 'skip').map((a) => [a.packageId, a.time])).toEqual([['2027.01-broken', '2027-02-10T21:00:00.000Z']]);
    // greetd-b was never touched, greetd-a is back: both answer as the baseline does, from memory too.
    const sock = (s: string) => path.join(m.home, 'run', `${s}.sock`);
    expect(await unixRequest(sock('greetd-a'), 'hello bob')).toBe('hello bob');
    expect(await unixRequest(sock('greetd-b'), 'hello bob')).toBe('hello bob');
    const st = await m.at('2027-02-11T12:00:00Z', ['status']);
    expect(st.json.processes.map((p: any) => p.hotpatchSequence)).toEqual([0, 0]);
    expect(st.json.hotpatch).toBeUndefined();
    const h = await m.at('2027-02-11T12:00:00Z', ['history']);
    const auto = h.json.entries.find((e: any) => e.action === 'auto-install');
    expect(auto).toMatchObject({ packageId: '2027.01-broken', result: 'Failed', detail: { stoppedAt: 'greetd-a', servicesDone: [] } });
  });

  it('installs at the next window when the agent was not running across the windows after a release', async () => {
    const m = await yearMachine();
    const before = await simulate(m, '2027-01-13T00:00:00Z', '2027-02-09T12:00:00Z');
    expect(before.filter((a) => a.action === 'install')).toEqual([]);
    // Off from the release day's noon (February 9) to February 12 noon: three windows missed.
    const after = await simulate(m, '2027-02-12T12:00:00Z', '2027-02-14T00:00:00Z');
    const install = after.filter((a) => a.action === 'install');
    expect(install.map((a) => [a.packageId, a.result, a.time, a.daysSinceRelease])).toEqual([['2027.01-hp1', 'Succeeded', '2027-02-12T21:00:00.000Z', 3]]);
    expect(install[0].withinDays).toBe(true);
    expect(await versions(m)).toEqual(['2027.01-hp1', '2027.01-hp1']);
  });

  it('brings a process started below the hotpatch level up to it as soon as it is seen, and stops cleanly on SIGTERM', async () => {
    const m = await yearMachine();
    // Level 1 on the services (at its release, by a one-shot install).
    const inst = await m.at('2027-02-10T12:00:00Z', ['install', '--feed', m.feed]);
    expect(inst.code, inst.stdout + inst.stderr).toBe(0);
    expect(await versions(m)).toEqual(['2027.01-hp1', '2027.01-hp1']);

    const run = startAgent(m.home, ['run', '--feed', m.feed, '--scan-interval', '200', '--json'], { json: false, env: { HP_AGENT_NOW: '' } });
    // A new process of the baseline's greetd, started by someone else after the level was applied.
    const sock = path.join(m.home, 'run', 'late.sock');
    const late = spawn(path.join(m.home, 'system', '2027.01', 'bin', 'greetd'), [sock, '1'], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    late.unref();
    let answer = '';
    for (let i = 0; i < 100 && answer !== '2027.01-hp1'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      answer = await unixRequest(sock, 'version').catch(() => '');
    }
    expect(answer).toBe('2027.01-hp1');
    process.kill(run.pid, 'SIGTERM');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    const actions = actionLines(r.stdout);
    const caught = actions.filter((a) => a.action === 'catch-up');
    expect(caught.map((a) => [a.pids, a.result, a.packageId])).toEqual([[[late.pid], 'Succeeded', '2027.01-hp1']]);
    expect(actions.at(-1)).toMatchObject({ action: 'stop', reason: expect.stringContaining('SIGTERM') });
  });

  it('assesses every 24 hours with assessmentMode AutomaticByPlatform, and installs nothing with patchMode Manual', async () => {
    const m = await yearMachine();
    const set = await m.at('2027-02-01T00:00:00Z', ['config', 'set', 'patchMode', 'Manual', 'enableHotpatching', 'false', 'assessmentMode', 'AutomaticByPlatform']);
    expect(set.code, set.stdout + set.stderr).toBe(0);
    const actions = await simulate(m, '2027-02-08T06:00:00Z', '2027-02-11T07:00:00Z');
    const assessed = actions.filter((a) => a.action === 'assess');
    expect(assessed.map((a) => a.time)).toEqual(['2027-02-08T06:00:00.000Z', '2027-02-09T06:00:00.000Z', '2027-02-10T06:00:00.000Z', '2027-02-11T06:00:00.000Z']);
    for (const a of assessed) expect(a.reason).toMatch(/^assessmentMode AutomaticByPlatform: assessed every 24 hours/);
    // Released on the 9th: listed from the assessment after it (the cumulative update: hotpatching is off).
    expect(assessed.map((a) => a.kbIds)).toEqual([[], ['KB5700202'], ['KB5700202'], ['KB5700202']]);
    expect(actions.filter((a) => a.action === 'install' || a.action === 'reboot' || a.action === 'service')).toEqual([]);
    expect(await versions(m)).toEqual(['2027.01', '2027.01']);
  });

  it('with patchMode AutomaticByOS installs what each assessment finds at once, outside any window, once per assessment', async () => {
    const m = await yearMachine();
    const set = await m.at('2027-02-01T00:00:00Z', ['config', 'set', 'patchMode', 'AutomaticByOS', 'enableHotpatching', 'false', 'assessmentMode', 'AutomaticByPlatform']);
    expect(set.code, set.stdout + set.stderr).toBe(0);
    const actions = await simulate(m, '2027-02-08T06:00:00Z', '2027-02-10T07:00:00Z');
    // 06:00Z is 07:00 in Rome, outside the off-peak window: AutomaticByOS does not wait for one.
    const installs = actions.filter((a) => a.action === 'install');
    expect(installs.map((a) => [a.kbId, a.result, a.time])).toEqual([['KB5700202', 'Succeeded', '2027-02-09T06:00:00.000Z']]);
    expect(isInWindow(new Date(installs[0].time), TZ)).toBe(false);
    expect(installs[0].reason).toMatch(/^patchMode AutomaticByOS: every available update is installed as soon as it is assessed/);
    expect(installs[0].rebootStatus).toBe('Completed');
    // Installed once: the next day's assessment finds nothing more, so nothing is installed again.
    expect(actions.filter((a) => a.action === 'assess').map((a) => a.kbIds)).toEqual([[], ['KB5700202'], []]);
    expect(await versions(m)).toEqual(['2027.02-cu', '2027.02-cu']);
  });

  it('installs the security level a machine lacks when the latest hotpatch level above it is not a security update', async () => {
    const m = await yearMachine();
    expect((await simulate(m, '2027-01-13T00:00:00Z', '2027-02-15T00:00:00Z')).filter((a) => a.action === 'install').map((a) => a.packageId)).toEqual(['2027.01-hp1']);
    // Off from mid-February until after March 23: hp2 (Critical, March 9) was missed, and hp3
    // (Updates, March 23), cumulative over it, is the level assess lists.
    const after = await simulate(m, '2027-03-24T12:00:00Z', '2027-03-25T12:00:00Z');
    expect(after.filter((a) => a.action === 'skip').map((a) => a.packageId)).toEqual(['2027.01-hp3']);
    expect(after.filter((a) => a.action === 'install').map((a) => [a.packageId, a.classification, a.result])).toEqual([['2027.01-hp2', 'Critical', 'Succeeded']]);
    expect(await versions(m)).toEqual(['2027.01-hp2', '2027.01-hp2']);
  });

  it('leaves a baseline staged under rebootSetting Never, and reboots onto it at the first window after the setting allows it', async () => {
    const m = await yearMachine();
    expect((await m.at('2027-04-01T00:00:00Z', ['config', 'set', 'automaticByPlatformSettings.rebootSetting', 'Never'])).code).toBe(0);
    const never = await simulate(m, '2027-04-13T12:00:00Z', '2027-04-15T00:00:00Z');
    // Staged, and the baseline that still runs gets its missing security level meanwhile (its
    // latest level, hp3, is not a security update: hp2 below it is).
    expect(never.filter((a) => a.action === 'install').map((a) => [a.packageId, a.rebootStatus])).toEqual([['2027.04', 'Required'], ['2027.01-hp2', 'Required']]);
    expect(never.filter((a) => a.action === 'reboot')).toEqual([]);
    expect(await versions(m)).toEqual(['2027.01-hp2', '2027.01-hp2']);
    expect((await m.at('2027-04-15T06:00:00Z', ['config', 'set', 'automaticByPlatformSettings.rebootSetting', 'IfRequired'])).code).toBe(0); // 08:00 in Rome
    const allowed = await simulate(m, '2027-04-15T06:00:00Z', '2027-04-16T12:00:00Z');
    expect(allowed.filter((a) => a.action === 'reboot').map((a) => [a.packageId, a.result, a.time])).toEqual([['2027.04', 'Succeeded', '2027-04-15T20:00:00.000Z']]);
    expect(allowed.filter((a) => a.action === 'install')).toEqual([]);
    expect(await versions(m)).toEqual(['2027.04', '2027.04']);
  });

  it('refuses bad usage before anything runs (exit 2)', async () => {
    const home = newHome();
    const feed = newHome();
    const bad = [
      ['run'], // no feed
      ['run', '--feed', path.join(feed, 'none')],
      ['run', '--feed', feed, '--simulate-from', '2027-01-01T00:00:00Z'],
      ['run', '--feed', feed, '--simulate-from', '2027-01-01', '--simulate-until', '2027-02-01T00:00:00Z'],
      ['run', '--feed', feed, '--simulate-from', '2027-02-01T00:00:00Z', '--simulate-until', '2027-01-01T00:00:00Z'],
      ['run', '--feed', feed, '--scan-interval', '0'],
      ['schedule', '--year', 'next'],
      ['schedule', '--feed', 'ftp://example.invalid/feed'],
    ];
    for (const args of bad) {
      const r = await agent(home, args);
      expect(r.code, `${args.join(' ')}: ${r.stdout}`).toBe(2);
      expect(r.json.error.code).toBe('USAGE');
    }
    expect(fs.readdirSync(home)).toEqual([]);
  });
});
