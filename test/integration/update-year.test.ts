// A year of releases replayed through `hp-agent run` on a simulated clock, against the real
// greeter services: every Critical/Security update in an off-peak window within 30 days, hotpatch
// months without a reboot, one reboot per baseline; then hotpatching switched off and on again.
import { afterEach, describe, expect, it } from 'vitest';
import { releaseCalendar } from '../../src/update/calendar.js';
import { isInWindow, withinInstallDays } from '../../src/update/window.js';
import { expectConforms } from '../contract-validate.js';
import { cleanUp } from './agent-helpers.js';
import { month, simulate, spec, TZ, versions, yearMachine, type Action } from './update-year-helpers.js';

afterEach(cleanUp);

const calendar = releaseCalendar(2027, [6]);
const byId = new Map([...spec.baselines, ...spec.hotpatches].map((p) => [p.id, p]));
const installs = (as: Action[]) => as.filter((a) => a.action === 'install');
const reboots = (as: Action[]) => as.filter((a) => a.action === 'reboot');

/** Each install kept the rules: inside an off-peak window of the machine's zone, within 30 days of the release. */
function expectInWindowWithin30Days(as: Action[]): void {
  for (const a of installs(as)) {
    const p = byId.get(a.packageId!)!;
    expect(isInWindow(new Date(a.time), TZ), `${a.packageId} at ${a.time}`).toBe(true);
    expect(withinInstallDays(p.releaseDate, new Date(a.time)), `${a.packageId} at ${a.time}`).toBe(true);
    expect(a.withinDays).toBe(true);
    expect(a.window && a.time >= a.window.start && a.time < a.window.end).toBe(true);
    expect(a.reason).toContain(`off-peak window 22:00-06:00 ${TZ}`);
  }
}

describe('a year of releases with automatic patching', () => {
  it('installs every Critical and Security update in an off-peak window within 30 days: no reboot in a hotpatch month, one per baseline, the non-security update listed but never installed', async () => {
    const m = await yearMachine();
    expect(await versions(m)).toEqual(['2027.01', '2027.01']);
    // The calendar, checked against the feed: only the out-of-band hotpatch does not fit.
    const sched = await m.at('2027-01-13T00:00:00Z', ['schedule', '--year', '2027', '--feed', m.feed]);
    expect(sched.code, sched.stderr).toBe(0);
    expectConforms('schedule', sched.json);
    expect(sched.json.months.map((x: any) => x.kind)).toEqual(calendar.map((x) => x.kind));
    expect(sched.json.problems.map((p: any) => p.kbId)).toEqual(['KB5700308']);
    expect(sched.json.months[5].packages).toEqual([{ packageId: '2027.06', kbId: 'KB5700006', releaseDate: '2027-06-08', classification: 'Critical', role: 'unplanned-baseline' }]);
    const human = await m.at('2027-01-13T00:00:00Z', ['schedule', '--feed', m.feed], false);
    expect(human.stdout).toMatch(/^June +2027-06-08 +UNPLANNED BASELINE +KB5700006 2027\.06$/m);
    expect(human.stdout).toContain('KB5700308 2027.07-hp2: a hotpatch (Critical) released 2027-08-24, outside the calendar');
    const actions = await simulate(m, '2027-01-13T00:00:00Z', '2028-01-01T00:00:00Z');

    const automatic = [...spec.baselines.filter((b) => !b.equivalentHotpatch && b.id !== '2027.01'), ...spec.hotpatches.filter((h) => h.classification !== 'Updates')];
    expect(installs(actions).every((a) => a.result === 'Succeeded')).toBe(true);
    expect(installs(actions).map((a) => a.packageId).sort()).toEqual(automatic.map((p) => p.id).sort());
    expectInWindowWithin30Days(actions);
    // Installed at the first window after the release (22:00 in Rome that evening).
    for (const a of installs(actions)) expect(a.daysSinceRelease, a.packageId).toBe(0);

    // One reboot per baseline, each in a baseline month; none in a hotpatch month.
    expect(reboots(actions).map((a) => a.packageId)).toEqual(['2027.04', '2027.06', '2027.07', '2027.10']);
    for (const r of reboots(actions)) expect(calendar[month(r.time) - 1].kind).not.toBe('hotpatch');
    for (const a of actions.filter((x) => x.action === 'service')) expect(a.result).toBe('Succeeded');

    // The non-security update: listed by the assessment after its release, skipped, never installed.
    const listed = actions.filter((a) => a.action === 'assess' && a.kbIds?.includes('KB5700303'));
    expect(listed.length).toBeGreaterThan(0);
    expect(listed[0].otherPatchCount).toBe(1);
    expect(actions.filter((a) => a.action === 'skip').map((a) => a.packageId)).toEqual(['2027.01-hp3']);
    expect(actions.some((a) => a.packageId === '2027.01-hp3' && (a.action === 'install' || a.action === 'service'))).toBe(false);

    // What the processes run, asked of them and read from their memory.
    expect(await versions(m)).toEqual(['2027.10-hp2', '2027.10-hp2']);
    const st = await m.at('2028-01-01T00:00:00Z', ['status']);
    expect(st.json.processes.map((p: any) => [p.baselineId, p.hotpatchSequence, p.compliant])).toEqual([['2027.10', 2, true], ['2027.10', 2, true]]);
    // The history says what was done and why.
    const h = await m.at('2028-01-01T00:00:00Z', ['history', '--days', '400']);
    const auto = h.json.entries.filter((e: any) => e.action === 'auto-install');
    expect(auto.map((e: any) => e.packageId).sort()).toEqual(automatic.map((p) => p.id).sort());
    for (const e of auto) expect(e.detail.reason).toMatch(/off-peak window 22:00-06:00 Europe\/Rome .* day 0 of the 30 after release/);
  });

  it('with hotpatching turned off half-way, the next months arrive as reboot updates; turned on again, it waits for the next baseline', async () => {
    const m = await yearMachine();
    const first = await simulate(m, '2027-01-13T00:00:00Z', '2027-05-20T00:00:00Z');
    expect(installs(first).map((a) => a.packageId)).toEqual(['2027.01-hp1', '2027.01-hp2', '2027.04', '2027.04-hp1']);

    const off = await m.at('2027-05-20T00:00:00Z', ['config', 'set', 'enableHotpatching', 'false']);
    expect(off.code, off.stderr).toBe(0);
    expect(off.json.enrollment).toBe('Disabled');
    const ordinary = await simulate(m, '2027-05-20T00:00:00Z', '2027-09-20T00:00:00Z');
    // May's fixes as May's cumulative update (at once: the machine is behind), June's unplanned
    // baseline, July's baseline, then August's and September's cumulative updates: all reboots.
    expect(installs(ordinary).map((a) => a.packageId)).toEqual(['2027.05-cu', '2027.06', '2027.07', '2027.08-cu', '2027.09-cu']);
    expect(reboots(ordinary).map((a) => a.packageId)).toEqual(['2027.05-cu', '2027.06', '2027.07', '2027.08-cu', '2027.09-cu']);
    expect(ordinary.some((a) => a.action === 'service')).toBe(false); // no hotpatch went live
    for (const a of installs(ordinary)) expect(isInWindow(new Date(a.time), TZ)).toBe(true);
    expect(await versions(m)).toEqual(['2027.09-cu', '2027.09-cu']);

    const on = await m.at('2027-09-20T00:00:00Z', ['config', 'set', 'enableHotpatching', 'true']);
    expect(on.json.enrollment).toBe('Pending');
    const again = await simulate(m, '2027-09-20T00:00:00Z', '2028-01-01T00:00:00Z');
    // Nothing until October's baseline; it enrolls the machine, and November's and December's
    // hotpatches go live without a reboot.
    expect(installs(again).map((a) => [a.packageId, month(a.time)])).toEqual([['2027.10', 10], ['2027.10-hp1', 11], ['2027.10-hp2', 12]]);
    expect(reboots(again).map((a) => a.packageId)).toEqual(['2027.10']);
    expectInWindowWithin30Days(again);
    const st = await m.at('2028-01-01T00:00:00Z', ['status']);
    expect(st.json.enrollment).toBe('Enabled');
    expect(await versions(m)).toEqual(['2027.10-hp2', '2027.10-hp2']);
  });
});
