// The agent refuses what it must not install, and a refusal changes nothing: each test boots
// baseline 2026.10 in its own HP_AGENT_HOME (greetd running as a real daemon), runs the real
// command line, and proves afterwards that the daemon's function entries, patch mappings and
// answers, and state.json byte for byte, are what they were before.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixturesRoot } from '../../src/demo/fixture-packages.js';
import { killTargetsAfterEach, spawnTarget, unixRequest } from '../../src/harness/index.js';
import { MANIFEST_FILE, readArchive, SIGNATURE_FILE, writePackageFile } from '../../src/package/archive.js';
import { packHotpatch } from '../../src/package/index.js';
import {
  agent,
  answers,
  bootMachine,
  cleanUp,
  editedPackage,
  entries,
  expected,
  expectRefused,
  expectUnchanged,
  history,
  newHome,
  objectPath,
  packageWithEntry,
  pkg,
  rawTarEntry,
  servicePid,
  snapshot,
  spec,
} from './agent-helpers.js';
import { entryBytes, fileEntryBytes } from './helpers.js';

killTargetsAfterEach(afterEach);
afterEach(cleanUp);

const HP1 = pkg('2026.10-hp1');

describe('agent refusals', () => {
  it('an unsigned package: PACKAGE_UNSIGNED', async () => {
    const m = await bootMachine();
    const { files } = await readArchive(fs.readFileSync(HP1));
    const payload = new Map([...files].filter(([p]) => p.startsWith('payload/')));
    const unsigned = path.join(m.home, 'unsigned.hpkg');
    await writePackageFile(unsigned, { manifestBytes: files.get(MANIFEST_FILE)!, payload });

    const before = await snapshot(m);
    const r = await agent(m.home, ['apply', unsigned]);
    expectRefused(r, 'PACKAGE_UNSIGNED');
    expect(r.json.error.message).toMatch(/manifest\.sig/);
    await expectUnchanged(m, before);
    expect(before.answers).toEqual(expected.b1);
  });

  it('a tampered payload: PACKAGE_TAMPERED; a tampered manifest: PACKAGE_BAD_SIGNATURE', async () => {
    const m = await bootMachine();
    // One byte of the patch object flipped; manifest and signature kept as signed.
    const tamperedPayload = await editedPackage(HP1, path.join(m.home, 'payload.hpkg'), (files) => {
      const obj = files.get('payload/greet-core_fix.so')!;
      obj[obj.length >> 1] ^= 0x01;
    });
    // The manifest changed after signing (the signature is the trusted key's, for other bytes).
    const tamperedManifest = await editedPackage(HP1, path.join(m.home, 'manifest.hpkg'), (files) => {
      const text = files.get(MANIFEST_FILE)!.toString('utf8');
      expect(text).toContain('"Hotpatch for');
      files.set(MANIFEST_FILE, Buffer.from(text.replace('"Hotpatch for', '"HOTPATCH for'), 'utf8'));
    });

    const before = await snapshot(m);
    const r1 = await agent(m.home, ['apply', tamperedPayload]);
    expectRefused(r1, 'PACKAGE_TAMPERED');
    expect(r1.json.error.message).toMatch(/greet-core_fix\.so/);
    await expectUnchanged(m, before);

    const r2 = await agent(m.home, ['apply', tamperedManifest]);
    expectRefused(r2, 'PACKAGE_BAD_SIGNATURE');
    await expectUnchanged(m, before);

    expect((await history(m.home)).slice(-2)).toEqual([
      ['refuse', 'Refused', undefined, 'PACKAGE_TAMPERED'],
      ['refuse', 'Refused', undefined, 'PACKAGE_BAD_SIGNATURE'],
    ]);
  });

  it('an untrusted signer: PACKAGE_UNTRUSTED, and --allow-unsigned then applies it', async () => {
    const m = await bootMachine();
    const prefix = path.join(m.home, 'developer');
    const keygen = await agent(m.home, ['keygen', '--out', prefix]);
    expect(keygen.code, keygen.stdout + keygen.stderr).toBe(0);
    const h = spec.hotpatches.find((x) => x.id === '2026.10-hp1')!;
    const b = spec.baselines.find((x) => x.id === h.baselineId)!;
    const untrusted = path.join(m.home, 'untrusted.hpkg');
    await packHotpatch({
      out: untrusted,
      id: h.id,
      kb: h.kb,
      title: h.title,
      releaseDate: h.releaseDate,
      classification: h.classification,
      baselineId: h.baselineId,
      sequence: h.sequence,
      targets: h.targets.map((t) => ({
        path: t.path,
        baselineFile: path.join(fixturesRoot, 'bin/baselines', b.dir, t.path),
        patchObject: path.join(fixturesRoot, 'bin/baselines', h.dir, t.patchObject),
        functions: t.functions,
      })),
      privateKeyPem: fs.readFileSync(`${prefix}.key`, 'utf8'),
    });

    const before = await snapshot(m);
    const r = await agent(m.home, ['apply', untrusted]);
    expectRefused(r, 'PACKAGE_UNTRUSTED');
    expect(r.json.error.message).toContain(keygen.json.keyId);
    await expectUnchanged(m, before);

    // The developer switch: the same package goes live.
    const ok = await agent(m.home, ['apply', untrusted, '--allow-unsigned']);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.json.status).toBe('Succeeded');
    expect(ok.json.processes.map((p: any) => [p.pid, p.outcome])).toEqual([[before.pid, 'Patched']]);
    expect(await answers(m.sock, 'b1+hp1')).toEqual(expected['b1+hp1']);
    const after = await entries(m.home, before.pid);
    expect(after['lib/libgreet-core.so:format_greeting']).not.toBe(before.entries['lib/libgreet-core.so:format_greeting']);
    expect(after['bin/greetd:banner']).not.toBe(before.entries['bin/greetd:banner']);
    expect(after['bin/greetd:add_numbers']).toBe(before.entries['bin/greetd:add_numbers']);

    expect((await history(m.home)).slice(-2)).toEqual([
      ['refuse', 'Refused', undefined, 'PACKAGE_UNTRUSTED'],
      ['apply', 'Succeeded', '2026.10-hp1', undefined],
    ]);
  });

  it('archive entries that are links, climb out with "..", or are absolute: PACKAGE_UNSAFE_ENTRY', async () => {
    const m = await bootMachine();
    const escapee = `hp-agent-escape-${process.pid}`;
    const bad = {
      symlink: rawTarEntry({ path: 'payload/evil', type: 'SymbolicLink', linkpath: '/etc/passwd' }),
      dotdot: rawTarEntry({ path: `payload/../../${escapee}`, type: 'File' }, Buffer.from('owned\n')),
      absolute: rawTarEntry({ path: path.join(m.home, escapee), type: 'File' }, Buffer.from('owned\n')),
    };
    const before = await snapshot(m);
    for (const [name, entry] of Object.entries(bad)) {
      const file = await packageWithEntry(HP1, path.join(m.home, `${name}.hpkg`), entry);
      const r = await agent(m.home, ['apply', file]);
      expectRefused(r, 'PACKAGE_UNSAFE_ENTRY');
      expect(r.json.error.message, name).toMatch(name === 'symlink' ? /symbolic link/ : name === 'dotdot' ? /"\.\."/ : /absolute/);
      await expectUnchanged(m, before);
    }
    // Nothing was written where the entries pointed.
    expect(fs.existsSync(path.join(m.home, escapee))).toBe(false);
    expect(fs.existsSync(path.join(path.dirname(m.home), escapee))).toBe(false);
    expect((await history(m.home)).slice(-3).map((e) => e[3])).toEqual(['PACKAGE_UNSAFE_ENTRY', 'PACKAGE_UNSAFE_ENTRY', 'PACKAGE_UNSAFE_ENTRY']);
  });

  it('a hotpatch for another baseline: BASELINE_MISMATCH, then REBOOT_REQUIRED once that baseline is staged', async () => {
    const m = await bootMachine();
    let before = await snapshot(m);
    const r1 = await agent(m.home, ['apply', pkg('2026.11-hp1')]);
    expectRefused(r1, 'BASELINE_MISMATCH');
    expect(r1.json.error.message).toMatch(/needs baseline 2026\.11/);
    expect(r1.json.error.message).toMatch(/reboot/);
    expect(r1.json.error.neededBaseline).toBe('2026.11');
    expect(r1.json.error.runningBaseline).toBe('2026.10');
    await expectUnchanged(m, before);

    // 2026.11 installed: staged for the next reboot, nothing running changed.
    const staged = await agent(m.home, ['apply', pkg('2026.11')]);
    expect(staged.code, staged.stdout + staged.stderr).toBe(0);
    expect(staged.json.patches[0].installationState).toBe('Pending');
    expect(staged.json.rebootStatus).toBe('Required');
    before = await snapshot(m);
    expect(before.answers).toEqual(expected.b1);

    const r2 = await agent(m.home, ['apply', pkg('2026.11-hp1')]);
    expectRefused(r2, 'REBOOT_REQUIRED');
    expect(r2.json.error.message).toMatch(/2026\.11/);
    expect(r2.json.error.message).toMatch(/reboot/);
    await expectUnchanged(m, before);

    expect(await history(m.home)).toEqual([
      ['install', 'Succeeded', '2026.10', undefined],
      ['reboot', 'Succeeded', undefined, undefined],
      ['refuse', 'Refused', '2026.11-hp1', 'BASELINE_MISMATCH'],
      ['install', 'Succeeded', '2026.11', undefined],
      ['refuse', 'Refused', '2026.11-hp1', 'REBOOT_REQUIRED'],
    ]);
  });

  it('a hotpatch before any baseline: BASELINE_NOT_INSTALLED', async () => {
    const home = newHome();
    expect((await agent(home, ['trust', 'add', path.join(fixturesRoot, 'bin/packages/demo.pub')])).code).toBe(0);
    const state = path.join(home, 'state.json');
    const stateBefore = fs.existsSync(state) ? fs.readFileSync(state) : undefined;
    const r = await agent(home, ['apply', HP1]);
    expectRefused(r, 'BASELINE_NOT_INSTALLED');
    expect(r.json.error.message).toMatch(/baseline 2026\.10/);
    expect(r.json.error.neededBaseline).toBe('2026.10');
    const stateAfter = fs.existsSync(state) ? fs.readFileSync(state) : undefined;
    expect(stateAfter?.toString()).toBe(stateBefore?.toString());
    expect(fs.readdirSync(path.join(home, 'system'))).toEqual([]);
    expect((await history(home))).toEqual([['refuse', 'Refused', '2026.10-hp1', 'BASELINE_NOT_INSTALLED']]);

    // Installed but not booted yet: the answer is a reboot, not "install it".
    expect((await agent(home, ['apply', pkg('2026.10')])).code).toBe(0);
    const staged = fs.readFileSync(state);
    const r2 = await agent(home, ['apply', HP1]);
    expectRefused(r2, 'REBOOT_REQUIRED');
    expect(r2.json.error.message).toMatch(/reboot/);
    expect(fs.readFileSync(state).equals(staged)).toBe(true);
  });

  it('a hotpatch older than the applied level: HOTPATCH_SUPERSEDED, memory stays at the newer level', async () => {
    const m = await bootMachine();
    const hp2 = await agent(m.home, ['apply', pkg('2026.10-hp2')]);
    expect(hp2.code, hp2.stdout + hp2.stderr).toBe(0);
    expect(await answers(m.sock, 'b1+hp2')).toEqual(expected['b1+hp2']);

    const before = await snapshot(m);
    const r = await agent(m.home, ['apply', HP1]);
    expectRefused(r, 'HOTPATCH_SUPERSEDED');
    expect(r.json.error.appliedSequence).toBe(2);
    await expectUnchanged(m, before);
    expect(await answers(m.sock, 'b1+hp2')).toEqual(expected['b1+hp2']);

    const st = await agent(m.home, ['status']);
    expect(st.json.compliant).toBe(true);
    expect(st.json.hotpatch.packageId).toBe('2026.10-hp2');
    // Read from memory: hp2's functions carry hp2; hp1 was never stored, and banner (which only
    // hp1 replaces) still has the file's bytes.
    const fns = Object.fromEntries(st.json.processes[0].functions.map((f: any) => [f.function, f.packageId ?? f.state]));
    expect(fns).toEqual({ format_greeting: '2026.10-hp2', add_numbers: '2026.10-hp2' });
    const banner = objectPath(m.home, 'bin/greetd');
    expect((await entryBytes(before.pid, 'banner', 16, banner)).equals(fileEntryBytes(before.pid, 'banner', 16, banner))).toBe(true);

    expect((await history(m.home)).slice(-2)).toEqual([
      ['apply', 'Succeeded', '2026.10-hp2', undefined],
      ['refuse', 'Refused', '2026.10-hp1', 'HOTPATCH_SUPERSEDED'],
    ]);
  });

  it('revert with nothing applied: NOTHING_TO_REVERT; of a level that is not current: NOT_CURRENT_LEVEL', async () => {
    const m = await bootMachine();
    let before = await snapshot(m);
    const r1 = await agent(m.home, ['revert', '2026.10-hp1']);
    expectRefused(r1, 'NOTHING_TO_REVERT');
    await expectUnchanged(m, before);

    expect((await agent(m.home, ['apply', HP1])).code).toBe(0);
    before = await snapshot(m);
    expect(before.answers).toEqual(expected['b1+hp1']);
    for (const id of ['2026.10-hp2', 'KB5046102', '2026.10']) {
      const r = await agent(m.home, ['revert', id]);
      expectRefused(r, 'NOT_CURRENT_LEVEL');
      expect(r.json.error.message).toContain('2026.10-hp1');
      await expectUnchanged(m, before);
    }

    // The current level, by KB: back to the plain baseline.
    const ok = await agent(m.home, ['revert', 'KB5046101']);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.json.to).toEqual({ baselineId: '2026.10', sequence: 0 });
    expect(await answers(m.sock, 'b1')).toEqual(expected.b1);

    // Every revert refusal is in the history too.
    const h = await history(m.home);
    expect(h.slice(-6)).toEqual([
      ['refuse', 'Refused', undefined, 'NOTHING_TO_REVERT'],
      ['apply', 'Succeeded', '2026.10-hp1', undefined],
      ['refuse', 'Refused', undefined, 'NOT_CURRENT_LEVEL'],
      ['refuse', 'Refused', undefined, 'NOT_CURRENT_LEVEL'],
      ['refuse', 'Refused', undefined, 'NOT_CURRENT_LEVEL'],
      ['revert', 'Succeeded', '2026.10-hp1', undefined],
    ]);
  });

  it('history records every refusal and every success, in order', async () => {
    const m = await bootMachine();
    const unsigned = await editedPackage(HP1, path.join(m.home, 'unsigned.hpkg'), (files) => files.delete(SIGNATURE_FILE));
    expectRefused(await agent(m.home, ['apply', unsigned]), 'PACKAGE_UNSIGNED');
    expect((await agent(m.home, ['apply', pkg('2026.10-hp2')])).code).toBe(0);
    expectRefused(await agent(m.home, ['apply', HP1]), 'HOTPATCH_SUPERSEDED');
    expectRefused(await agent(m.home, ['apply', pkg('2026.11-hp1')]), 'BASELINE_MISMATCH');
    expect((await agent(m.home, ['revert', '2026.10-hp2'])).code).toBe(0);
    expect(await history(m.home)).toEqual([
      ['install', 'Succeeded', '2026.10', undefined],
      ['reboot', 'Succeeded', undefined, undefined],
      ['refuse', 'Refused', undefined, 'PACKAGE_UNSIGNED'],
      ['apply', 'Succeeded', '2026.10-hp2', undefined],
      ['refuse', 'Refused', '2026.10-hp1', 'HOTPATCH_SUPERSEDED'],
      ['refuse', 'Refused', '2026.11-hp1', 'BASELINE_MISMATCH'],
      ['revert', 'Succeeded', '2026.10-hp2', undefined],
    ]);
    const r = await agent(m.home, ['history']);
    const refusal = r.json.entries.find((e: any) => e.detail?.code === 'PACKAGE_UNSIGNED');
    expect(refusal.detail.package).toBe(unsigned);
    expect(refusal.detail.message).toMatch(/manifest\.sig/);
    expect(new Set(r.json.entries.map((e: any) => e.activityId)).size).toBe(r.json.entries.length);
  });

  it('a process started after the hotpatch is not compliant until the hotpatch is applied again', async () => {
    const m = await bootMachine();
    const daemon = servicePid(m);
    expect((await agent(m.home, ['apply', HP1])).code).toBe(0);
    const patched = await entries(m.home, daemon);

    // A second greetd, started by hand from the installed baseline after the hotpatch.
    const sock2 = path.join(m.home, 'run', 'second.sock');
    const second = await spawnTarget(objectPath(m.home, 'bin/greetd'), { args: [sock2, '2'] });
    expect(await unixRequest(sock2, 'hello bob')).toBe(expected.b1['hello bob']);

    let st = await agent(m.home, ['status']);
    expect(st.code).toBe(0);
    expect(st.json.compliant).toBe(false);
    const byPid = (s: any, pid: number) => s.json.processes.find((p: any) => p.pid === pid);
    expect(st.json.processes.map((p: any) => p.pid).sort()).toEqual([daemon, second.pid].sort());
    expect(byPid(st, daemon).compliant).toBe(true);
    const late = byPid(st, second.pid);
    expect(late.compliant).toBe(false);
    expect(late.hotpatchSequence).toBe(0);
    expect(late.reasons.join('\n')).toMatch(/format_greeting/);
    expect(late.reasons.join('\n')).toMatch(/banner/);

    // The same hotpatch again: only the late process changes.
    const again = await agent(m.home, ['apply', HP1]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    const outcomes = Object.fromEntries(again.json.processes.map((p: any) => [p.pid, p.outcome]));
    expect(outcomes).toEqual({ [daemon]: 'AlreadyAtLevel', [second.pid]: 'Patched' });
    expect(await entries(m.home, daemon)).toEqual(patched);
    expect(await entries(m.home, second.pid)).toEqual(patched);

    st = await agent(m.home, ['status']);
    expect(st.json.compliant).toBe(true);
    expect(st.json.processes.map((p: any) => [p.pid, p.compliant, p.hotpatchSequence]).sort()).toEqual(
      [[daemon, true, 1], [second.pid, true, 1]].sort(),
    );
    expect(await unixRequest(sock2, 'hello bob')).toBe(expected['b1+hp1']['hello bob']);
    expect(await unixRequest(sock2, 'version')).toBe(expected['b1+hp1'].version);
    expect(await answers(m.sock, 'b1+hp1')).toEqual(expected['b1+hp1']);
    expect(second.alive()).toBe(true);
  });
});
