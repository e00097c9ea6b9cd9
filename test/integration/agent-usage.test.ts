// Bad usage stops every command before it does anything (issue 10, defect 1): an unknown or
// misspelled option, a missing argument, a value of the wrong type or range, or options that
// conflict exit 2 and no handler runs. One machine (baseline 2026.10, greetd running, hotpatch
// 2026.10-hp1 applied) takes every case; after each, the daemon's entry bytes, patch mappings and
// answers, and every file of the home (state, history, log, trust store, package store) are what
// they were — so an apply, revert or try that ran anyway shows in memory, any other command in
// the home — and nothing was printed on stdout (a handler that ran would have).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoPublicKey, fixturesRoot } from '../../src/demo/fixture-packages.js';
import { agent, bootMachine, cleanUp, expectUnchanged, pkg, servicePid, snapshot, type Machine } from './agent-helpers.js';

let m: Machine;
let pid: number;
let scratch: string;

/** Every regular file of the home (run/ holds sockets) with a hash of its bytes. */
function homeFiles(home: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out[path.relative(home, p)] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(home);
  return out;
}

beforeAll(async () => {
  m = await bootMachine();
  const hp1 = await agent(m.home, ['apply', pkg('2026.10-hp1')]);
  expect(hp1.code, hp1.stdout + hp1.stderr).toBe(0);
  pid = servicePid(m);
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'hpa-usage-'));
}, 60_000);

afterAll(async () => {
  await cleanUp();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

/** Runs `args` (no --json) and proves exit 2, a message matching `why`, and nothing changed. */
async function expectUsage(args: string[], why: RegExp): Promise<void> {
  const before = await snapshot(m);
  const files = homeFiles(m.home);
  const scratchBefore = fs.readdirSync(scratch);
  const r = await agent(m.home, args, { json: false });
  expect(r.code, `${args.join(' ')}\n${r.stdout}${r.stderr}`).toBe(2);
  expect(r.stderr).toMatch(why);
  expect(r.stderr).toMatch(/Run "hp-agent --help" for usage/);
  expect(r.stdout, 'a handler printed its result').toBe('');
  await expectUnchanged(m, before);
  expect(homeFiles(m.home)).toEqual(files);
  expect(fs.readdirSync(scratch)).toEqual(scratchBefore);
}

/** args with `flag`'s value replaced (a flag given twice is itself bad usage). */
const withFlag = (args: string[], flag: string, value: string) => args.map((a, i) => (args[i - 1] === flag ? value : a));
const greetdFix = () => path.join(fixturesRoot, 'bin/baselines/b1-hp2/greetd_fix.so');
const tryArgs = () => [greetdFix(), '--pid', String(pid), '--function', 'add_numbers=add_numbers_v2'];
const packHotpatch = () => ['pack', 'hotpatch', '--out', path.join(scratch, 'x.hpkg'), '--key', path.join(fixturesRoot, 'bin/packages/demo.key'), '--id', 'x-1', '--kb', 'KB5046999', '--title', 'T', '--release-date', '2026-12-01', '--classification', 'Security', '--baseline-id', '2026.10', '--sequence', '3', '--target', `bin/greetd=${path.join(fixturesRoot, 'bin/baselines/b1/bin/greetd')}`, '--patch-object', greetdFix(), '--function', 'add_numbers=add_numbers_v2'];
const packBaseline = () => ['pack', 'baseline', '--out', path.join(scratch, 'b.hpkg'), '--key', path.join(fixturesRoot, 'bin/packages/demo.key'), '--id', 'b-1', '--kb', 'KB5046998', '--title', 'T', '--release-date', '2026-12-01', '--classification', 'Security', '--file', `bin/greetd=${path.join(fixturesRoot, 'bin/baselines/b1/bin/greetd')}`];

describe('bad usage changes nothing, for every command', () => {
  it('apply, revert and try: an unknown option, a missing argument, a bad --pid — memory read back unchanged', async () => {
    // Each of these patched or reverted the running daemon before the usage error was printed
    // (then with --dry-run, which did not exist; now a misspelling of it).
    await expectUsage(['apply', pkg('2026.10-hp2'), '--dryrun'], /Unknown argument: dryrun$/m);
    await expectUsage(['revert', 'KB5046101', '--pids', '123'], /Unknown argument: pids$/m);
    await expectUsage(['try', ...tryArgs(), '--dryrun'], /Unknown argument: dryrun$/m);
    await expectUsage(['apply'], /Not enough non-option arguments/);
    await expectUsage(['revert'], /Not enough non-option arguments/);
    await expectUsage(['try', greetdFix(), '--function', 'add_numbers=add_numbers_v2'], /name the processes: --pid PID \(repeatable\) or --all/);
    await expectUsage(['try', greetdFix(), '--pid', String(pid)], /Missing required argument: function/);
    await expectUsage(['try', '--pid', String(pid), '--function', 'add_numbers=add_numbers_v2'], /a patch object is required/);
    await expectUsage(['apply', pkg('2026.10-hp2'), '--pid', 'abc'], /--pid expects process IDs .* got "abc"/);
    await expectUsage(['apply', pkg('2026.10-hp2'), '--pid', String(pid), '--pid', '0'], /--pid expects process IDs .* got "0"/);
    await expectUsage(['apply', pkg('2026.10-hp2'), '--pid'], /Not enough arguments following: pid/);
    await expectUsage(['apply', pkg('2026.10-hp2'), '--wait', '-5'], /--wait expects milliseconds .* got "-5"/);
    await expectUsage(['revert', 'KB5046101', '--pid', `${pid}x`], /--pid expects process IDs/);
    await expectUsage(['try', ...tryArgs().slice(0, 1), '--pid', '1.5', '--function', 'add_numbers'], /--pid expects process IDs .* got "1.5"/);
    await expectUsage(['try', ...tryArgs(), '--timeout', 'soon'], /--timeout expects milliseconds/);
    await expectUsage(['try', ...tryArgs(), '--function', 'a=b=c'], /--function expects NAME or NAME=REPLACEMENT/);
    // Conflicting options.
    await expectUsage(['try', ...tryArgs(), '--revert'], /--revert puts the original bytes back: do not give a patch object/);
    await expectUsage(['try', '--revert', '--pid', String(pid), '--function', 'format_greeting', '--replace'], /do not give --replace/);
    await expectUsage(['try', ...tryArgs(), '--mode', 'zero-stop', '--consistency', 'function'], /zero-stop cannot give --consistency function/);
    // A package file that is not there is bad usage (2), not a refusal (3); no refusal is recorded.
    await expectUsage(['apply', path.join(scratch, 'absent.hpkg')], /package .*absent\.hpkg cannot be read: no such file/);
  });

  it('status, history, reboot, boot, demo: an unknown option; history --days must be a whole number of days', async () => {
    await expectUsage(['status', '--bogus'], /Unknown argument: bogus$/m);
    await expectUsage(['history', '--since', '3'], /Unknown argument: since$/m);
    await expectUsage(['reboot', '--force'], /Unknown argument: force$/m);
    await expectUsage(['boot', '--now'], /Unknown argument: now$/m);
    await expectUsage(['demo', '--fast'], /Unknown argument: fast$/m);
    await expectUsage(['aply', pkg('2026.10-hp2')], /Unknown arguments?: aply/);
    await expectUsage([], /name a command/);
    await expectUsage(['history', '--days', 'abc'], /--days expects a number of days .* got "abc"/);
    await expectUsage(['history', '--days', '-1'], /--days expects a number of days .* got "-1"/);
    await expectUsage(['history', '--days', '1', '--days', '2'], /--days was given 2 times/);
    await expectUsage(['status', '--wait', 'x'], /--wait expects milliseconds/);
  });

  it('keygen, trust and pack: an unknown option, a missing argument, a malformed KB or date, conflicting options', async () => {
    const out = path.join(scratch, 'k');
    await expectUsage(['keygen', '--out', out, '--bits', '4096'], /Unknown argument: bits$/m);
    await expectUsage(['keygen'], /Missing required argument: out/);
    await expectUsage(['keygen', '--out', ''], /--out must not be empty/);
    await expectUsage(['trust', 'add', demoPublicKey(), '--force'], /Unknown argument: force$/m);
    await expectUsage(['trust', 'add'], /Not enough non-option arguments/);
    await expectUsage(['trust', 'add', path.join(scratch, 'absent.pub')], /public key .*absent\.pub cannot be read: no such file/);
    await expectUsage(['trust', 'list', '--all'], /Unknown argument: all$/m);
    await expectUsage(['trust', 'remove', demoPublicKey(), '--force'], /Unknown argument: force$/m);
    await expectUsage(['trust', 'remove'], /Not enough non-option arguments/);
    await expectUsage(['trust', 'remove', 'nonsense'], /trust remove expects a key id/);
    await expectUsage(['trust'], /name a trust command/);
    await expectUsage([...packHotpatch(), '--sign'], /Unknown argument: sign$/m);
    await expectUsage([...packBaseline(), '--sign'], /Unknown argument: sign$/m);
    await expectUsage(packBaseline().filter((_, i, a) => a[i] !== '--key' && a[i - 1] !== '--key'), /Missing required argument: key/);
    await expectUsage(['pack'], /name what to pack/);
    await expectUsage(withFlag(packBaseline(), '--kb', 'KB12'), /--kb: expected "KB" and 6 to 8 digits.*got "KB12"/);
    await expectUsage(withFlag(packHotpatch(), '--release-date', '2026-13-45'), /--release-date: expected a calendar date YYYY-MM-DD, got "2026-13-45"/);
    await expectUsage(withFlag(packHotpatch(), '--sequence', '0'), /--sequence expects the hotpatch number .* got "0"/);
    await expectUsage([...packHotpatch(), '--consistency', 'function', '--patch-mode', 'zero-stop'], /zero-stop cannot give --consistency function/);
    await expectUsage(withFlag(packHotpatch(), '--key', path.join(scratch, 'absent.key')), /signing key .*absent\.key cannot be read: no such file/);
  });

  it('with --json, a usage error is one JSON object with code USAGE, exit 2, and the handler does not run', async () => {
    const before = await snapshot(m);
    const files = homeFiles(m.home);
    const r = await agent(m.home, ['apply']);
    expect(r.code).toBe(2);
    expect(r.json.error).toMatchObject({ code: 'USAGE', unchanged: true });
    expect(r.json.error.message).toMatch(/Not enough non-option arguments/);
    await expectUnchanged(m, before);
    expect(homeFiles(m.home)).toEqual(files);
  });
});
