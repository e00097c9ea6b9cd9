// The agent through its command line, against real daemons: the whole life of a machine from
// the first baseline to the next one, and a product someone else packs from their own C sources.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { demoPublicKey, fixturePackage, productSpec } from '../../src/demo/fixture-packages.js';
import { UnixClient } from '../../src/harness/index.js';
import { ElfFile } from '../../src/elf/index.js';
import { hpAgentIn, stopHomeServices } from './agent-home.js';
import { entryBytes } from './helpers.js';

const homes: string[] = [];
afterEach(async () => {
  for (const h of homes.splice(0)) {
    await stopHomeServices(h);
    fs.rmSync(h, { recursive: true, force: true });
  }
});

function newHome(): string {
  const h = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-life-'));
  homes.push(h);
  return h;
}

async function ask(socket: string, questions: string[]): Promise<Record<string, string>> {
  const c = await UnixClient.connect(socket);
  try {
    const out: Record<string, string> = {};
    for (const q of questions) out[q] = await c.request(q);
    return out;
  } finally {
    c.close();
  }
}

describe('a machine from baseline to baseline', () => {
  it('installs, boots, hotpatches cumulatively, reverts, and reboots onto the next baseline', async () => {
    const home = newHome();
    const agent = hpAgentIn(home);
    const expected = productSpec().expected;
    const questions = Object.keys(expected.b1);
    const socket = path.join(home, 'run/greetd.sock');

    expect((await agent(['trust', 'add', demoPublicKey()])).code).toBe(0);
    const installed = await agent(['apply', fixturePackage('2026.10')]);
    expect(installed.code).toBe(0);
    expect(installed.json.rebootStatus).toBe('Required');
    expect(installed.json.patches[0]).toMatchObject({ kbId: 'KB5046001', rebootBehavior: 'AlwaysRequiresReboot', installationState: 'Pending' });

    const booted = await agent(['boot']);
    expect(booted.code).toBe(0);
    const pid = booted.json.started[0].pid as number;
    expect(await ask(socket, questions)).toEqual(expected.b1);

    const hp1 = await agent(['apply', fixturePackage('2026.10-hp1')]);
    expect(hp1.code).toBe(0);
    expect(hp1.json.processes).toMatchObject([{ pid, outcome: 'Patched' }]);
    expect(await ask(socket, questions)).toEqual(expected['b1+hp1']);

    // Cumulative: hp2 re-points format_greeting, adds add_numbers, gives banner back — one transaction.
    const hp2 = await agent(['apply', fixturePackage('2026.10-hp2')]);
    expect(hp2.code).toBe(0);
    const actions = Object.fromEntries(hp2.json.processes[0].sites.map((s: any) => [s.function, s.action]));
    expect(actions).toEqual({ format_greeting: 'repoint', banner: 'restore', add_numbers: 'patch' });
    expect(await ask(socket, questions)).toEqual(expected['b1+hp2']);

    let st = (await agent(['status'])).json;
    expect(st).toMatchObject({ installedBaseline: { baselineId: '2026.10' }, rebootPending: false, compliant: true, hotpatch: { sequence: 2 } });
    expect(st.processes).toHaveLength(1);
    expect(st.processes[0]).toMatchObject({ pid, hotpatchSequence: 2, compliant: true });
    const fnState = Object.fromEntries(st.processes[0].functions.map((f: any) => [f.function, f.state === 'patched' ? f.packageId : f.state]));
    expect(fnState).toEqual({ format_greeting: '2026.10-hp2', add_numbers: '2026.10-hp2', banner: 'original' });

    const reverted = await agent(['revert', '2026.10-hp2']);
    expect(reverted.code).toBe(0);
    expect(reverted.json.to).toMatchObject({ packageId: '2026.10-hp1' });
    expect(await ask(socket, questions)).toEqual(expected['b1+hp1']);

    const next = await agent(['apply', fixturePackage('2026.11')]);
    expect(next.code).toBe(0);
    expect(next.json.rebootStatus).toBe('Required');
    st = (await agent(['status'])).json;
    expect(st.rebootPending).toBe(true);
    expect(st.pendingBaseline).toMatchObject({ baselineId: '2026.11' });
    // Nothing running changed.
    expect(await ask(socket, questions)).toEqual(expected['b1+hp1']);
    expect(st.processes[0].pid).toBe(pid);

    const rebooted = await agent(['reboot']);
    expect(rebooted.code).toBe(0);
    expect(rebooted.json).toMatchObject({ fromBaselineId: '2026.10', toBaselineId: '2026.11', rebootStatus: 'Completed' });
    expect(rebooted.json.downtimeMs).toBeGreaterThan(0);
    expect(await ask(socket, questions)).toEqual(expected.b2);
    st = (await agent(['status'])).json;
    expect(st).toMatchObject({ installedBaseline: { baselineId: '2026.11' }, runningBaselines: ['2026.11'], rebootPending: false });
    expect(st.hotpatch).toBeUndefined();
    // The new service maps the new baseline's build-ids.
    const b2Build = ElfFile.fromFile(path.join(home, 'system/2026.11/bin/greetd')).buildId;
    expect(st.processes[0].files.find((f: any) => f.path.endsWith('bin/greetd')).buildId).toBe(b2Build);
    expect(st.processes[0].pid).not.toBe(pid);

    const b2hp1 = await agent(['apply', fixturePackage('2026.11-hp1')]);
    expect(b2hp1.code).toBe(0);
    expect(await ask(socket, questions)).toEqual(expected['b2+hp1']);

    const history = (await agent(['history'])).json.entries.map((e: any) => `${e.action}:${e.packageId ?? ''}:${e.result}`);
    expect(history.reverse()).toEqual([
      'install:2026.10:Succeeded', 'reboot::Succeeded', 'apply:2026.10-hp1:Succeeded', 'apply:2026.10-hp2:Succeeded',
      'revert:2026.10-hp2:Succeeded', 'install:2026.11:Succeeded', 'reboot::Succeeded', 'apply:2026.11-hp1:Succeeded',
    ]);
  });
});

/** A tiny Unix-socket service (one answer per connection, from answer()) and a fix for it, built from C here. */
function buildTinyProduct(src: string, cflags: string[]): void {
  fs.writeFileSync(path.join(src, 'tinyd.c'), `
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
__attribute__((noipa)) const char *answer(int n) { return n >= 0 ? "old answer" : "negative"; }
int main(int argc, char **argv) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0); struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1); unlink(argv[1]);
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) return 1;
  printf("READY\\n"); fflush(stdout);
  for (int n = 0;; n++) { int c = accept(s, 0, 0); if (c < 0) continue; char buf[64]; if (read(c, buf, sizeof buf) > 0) { const char *r = answer(n); write(c, r, strlen(r)); write(c, "\\n", 1); } close(c); }
}`);
  fs.writeFileSync(path.join(src, 'fix.c'), 'const char *answer_fixed(int n) { return n >= 0 ? "new answer" : "still negative"; }\nconst char *answer_fixed2(int n) { return n >= 0 ? "newer answer" : "still negative"; }\n');
  execFileSync('gcc', ['-O2', ...cflags, '-Wl,--build-id', '-o', path.join(src, 'tinyd'), path.join(src, 'tinyd.c')]);
  execFileSync('gcc', ['-O2', '-fPIC', '-shared', '-nostartfiles', '-Wl,--build-id', '-o', path.join(src, 'fix.so'), path.join(src, 'fix.c')]);
}

/** Signs with a fresh vendor key the agent trusts; packs the baseline (tiny-1.0) and hotpatches of it. */
async function packTiny(agent: ReturnType<typeof hpAgentIn>, src: string, hotpatches: TinyHotpatch[]): Promise<void> {
  const key = path.join(src, 'vendor');
  expect((await agent(['keygen', '--out', key])).code).toBe(0);
  expect((await agent(['trust', 'add', `${key}.pub`, '--name', 'vendor'])).code).toBe(0);
  const common = ['--release-date', '2026-11-10', '--classification', 'Security', '--key', `${key}.key`];
  const base = await agent(['pack', 'baseline', '--out', path.join(src, 'base.hpkg'), '--id', 'tiny-1.0', '--title', 'tiny 1.0', '--planned', '--kb', 'KB5099001',
    '--file', `bin/tinyd=${path.join(src, 'tinyd')}:755`, '--service', 'tinyd=bin/tinyd:${HP_RUN}/tiny.sock', ...common]);
  expect(base.stderr).toBe('');
  expect(base.code).toBe(0);
  for (const h of hotpatches) {
    const hot = await agent(['pack', 'hotpatch', '--out', path.join(src, `${h.id}.hpkg`), '--id', h.id, '--title', 'tiny fix', '--baseline-id', 'tiny-1.0', '--sequence', String(h.sequence), '--kb', h.kb,
      '--target', `bin/tinyd=${path.join(src, 'tinyd')}`, '--patch-object', path.join(src, 'fix.so'), '--function', `answer=${h.replacement}`, ...(h.extra ?? []), ...common]);
    expect(hot.stderr).toBe('');
    expect(hot.code).toBe(0);
  }
}

type TinyHotpatch = { id: string; kb: string; sequence: number; replacement: string; extra?: string[] };

/** A fresh home running the tiny product: built with `cflags`, packed with `hotpatches`, installed and booted. */
async function bootTiny(cflags: string[], hotpatches: TinyHotpatch[]) {
  const home = newHome();
  const agent = hpAgentIn(home);
  const src = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-own-'));
  homes.push(src);
  buildTinyProduct(src, cflags);
  await packTiny(agent, src, hotpatches);
  expect((await agent(['apply', path.join(src, 'base.hpkg')])).code).toBe(0);
  const booted = await agent(['boot']);
  expect(booted.code).toBe(0);
  return { agent, src, pid: booted.json.started[0].pid as number, sock: path.join(home, 'run/tiny.sock') };
}

describe('a product packed by someone else', () => {
  it('installs and hotpatches a service built from its own C sources', async () => {
    const { agent, src, pid, sock } = await bootTiny([], [{ id: 'tiny-1.0-hp1', kb: 'KB5099002', sequence: 1, replacement: 'answer_fixed' }]);
    const { unixRequest } = await import('../../src/harness/index.js');
    expect(await unixRequest(sock, 'q')).toBe('old answer');
    const applied = await agent(['apply', path.join(src, 'tiny-1.0-hp1.hpkg')]);
    expect(applied.code).toBe(0);
    // Not built with hot-patchable entries: 'auto' stops the process for the write.
    expect(applied.json.processes).toMatchObject([{ pid, outcome: 'Patched', mode: 'stop' }]);
    expect(await unixRequest(sock, 'q')).toBe('new answer');
    expect((await agent(['status'])).json.compliant).toBe(true);
  });

  it('built with hot-patchable entries: the package says the mode: zero-stop switches with plain writes, stop re-points in one transaction', async () => {
    const { agent, src, pid, sock } = await bootTiny(['-fpatchable-function-entry=7,5'], [
      { id: 'tiny-1.0-hp1', kb: 'KB5099002', sequence: 1, replacement: 'answer_fixed' },
      { id: 'tiny-1.0-hp2', kb: 'KB5099003', sequence: 2, replacement: 'answer_fixed2', extra: ['--patch-mode', 'stop'] },
    ]);
    const { unixRequest } = await import('../../src/harness/index.js');

    const hp1 = await agent(['apply', path.join(src, 'tiny-1.0-hp1.hpkg')]);
    expect(hp1.code, hp1.stderr).toBe(0);
    expect(hp1.json.processes).toMatchObject([{ pid, outcome: 'Patched', mode: 'zero-stop', pauseUs: 0, threads: 0, sites: [{ function: 'answer', action: 'patch', form: 'padding' }] }]);
    expect(await unixRequest(sock, 'q')).toBe('new answer');
    let st = (await agent(['status'])).json;
    expect(st.compliant).toBe(true);
    expect(st.processes[0].functions).toMatchObject([{ function: 'answer', state: 'patched', form: 'padding', packageId: 'tiny-1.0-hp1' }]);

    // hp2 asks for the stop mode: one transaction re-points the padding's jump.
    const hp2 = await agent(['apply', path.join(src, 'tiny-1.0-hp2.hpkg')]);
    expect(hp2.json.processes).toMatchObject([{ pid, outcome: 'Patched', mode: 'stop', sites: [{ function: 'answer', action: 'repoint', form: 'padding' }] }]);
    expect(hp2.json.processes[0].threads).toBeGreaterThanOrEqual(1);
    expect(await unixRequest(sock, 'q')).toBe('newer answer');

    // Back to hp1 (auto: zero-stop again). (That no running thread is stopped is proved by the
    // spinning fixture in zero-stop.test.ts; this service's only thread sleeps in accept().)
    const back = await agent(['revert', 'tiny-1.0-hp2']);
    expect(back.code, back.stderr).toBe(0);
    expect(back.json.processes).toMatchObject([{ pid, mode: 'zero-stop', pauseUs: 0 }]);
    expect(await unixRequest(sock, 'q')).toBe('new answer');
    st = (await agent(['status'])).json;
    expect(st).toMatchObject({ compliant: true, hotpatch: { packageId: 'tiny-1.0-hp1' } });
    expect(st.processes[0].pid).toBe(pid);
  });
});

describe('a package that asks for function consistency', () => {
  it('switches only functions no thread is in: a refused process keeps its code and answers', async () => {
    // hp1 replaces answer() (called per request, idle otherwise); hp2 would also replace main(),
    // which the service's only thread never leaves (it waits in accept() inside it).
    const { agent, src, pid, sock } = await bootTiny([], [
      { id: 'tiny-1.0-hp1', kb: 'KB5099002', sequence: 1, replacement: 'answer_fixed', extra: ['--consistency', 'function'] },
      { id: 'tiny-1.0-hp2', kb: 'KB5099003', sequence: 2, replacement: 'answer_fixed2', extra: ['--consistency', 'function', '--function', 'main=answer_fixed2'] },
    ]);
    const { unixRequest } = await import('../../src/harness/index.js');

    const hp1 = await agent(['apply', path.join(src, 'tiny-1.0-hp1.hpkg')]);
    expect(hp1.code, hp1.stderr).toBe(0);
    expect(hp1.json.processes).toMatchObject([{ pid, outcome: 'Patched', mode: 'stop' }]);
    expect(await unixRequest(sock, 'q')).toBe('new answer');

    const before = await entryBytes(pid, 'main');
    const hp2 = await agent(['apply', path.join(src, 'tiny-1.0-hp2.hpkg')]);
    expect(hp2.code).not.toBe(0);
    expect(hp2.json.processes).toMatchObject([{ pid, outcome: 'Failed', errorCode: 'FUNCTION_ACTIVE' }]);
    expect((await entryBytes(pid, 'main')).equals(before)).toBe(true);
    expect(await unixRequest(sock, 'q')).toBe('new answer'); // still hp1's answer(): nothing switched
  });
});

describe('an agent killed in the middle of a change', () => {
  it('leaves its intent in the state; status shows it and the next command finishes it', async () => {
    const home = newHome();
    const agent = hpAgentIn(home);
    const expected = productSpec().expected;
    const socket = path.join(home, 'run/greetd.sock');
    await agent(['trust', 'add', demoPublicKey()]);
    await agent(['apply', fixturePackage('2026.10')]);
    const pid = (await agent(['boot'])).json.started[0].pid;
    // Put hp1 in the store, then go back to the plain baseline.
    expect((await agent(['apply', fixturePackage('2026.10-hp1')])).code).toBe(0);
    expect((await agent(['revert', '2026.10-hp1'])).code).toBe(0);
    expect(await ask(socket, ['hello bob'])).toEqual({ 'hello bob': expected.b1['hello bob'] });

    // What an `apply 2026.10-hp1` killed right after recording its intent leaves behind.
    const stateFile = path.join(home, 'state.json');
    const state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
    state.operation = { kind: 'level', startedAt: new Date().toISOString(), detail: { baselineId: '2026.10', packageId: '2026.10-hp1' } };
    fs.writeFileSync(stateFile, JSON.stringify(state));

    const st = (await agent(['status'])).json;
    expect(st.interruptedOperation).toMatchObject({ kind: 'level' });
    const booted = await agent(['boot']);
    expect(booted.code, booted.stderr).toBe(0);
    expect(await ask(socket, ['hello bob', 'version'])).toEqual({ 'hello bob': expected['b1+hp1']['hello bob'], version: expected['b1+hp1'].version });
    const after = (await agent(['status'])).json;
    expect(after.interruptedOperation).toBeUndefined();
    expect(after).toMatchObject({ compliant: true, hotpatch: { packageId: '2026.10-hp1' } });
    expect(after.processes[0].pid).toBe(pid);
    const history = (await agent(['history'])).json.entries.map((e: any) => e.action);
    expect(history[0]).toBe('repair');
  });
});
