// The init of a PID namespace (a container's init) is refused like the machine's PID 1: if it
// died of a patch, the kernel would kill its whole namespace. `--allow-init` asks for it.
// The fixture target is made PID 1 of a new namespace with util-linux's `unshare --pid --fork`.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { isNamespaceInit, readStatus } from '../../src/proc/index.js';
import { fixturePath, killTargetsAfterEach, spawnTarget, type Target } from '../../src/harness/index.js';
import { entryBytes, fileEntryBytes, hpAgent, patchMappings } from './helpers.js';

killTargetsAfterEach(afterEach);

let unshare = '';
function unshareProblem(): string | undefined {
  try {
    unshare = execFileSync('sh', ['-c', 'command -v unshare'], { encoding: 'utf8' }).trim();
    execFileSync(unshare, ['--pid', '--fork', '--kill-child', 'true'], { stdio: 'ignore', timeout: 10_000 });
    return undefined;
  } catch (e) {
    return `unshare --pid --fork does not work here (${(e as Error).message.split('\n')[0]}): util-linux missing, or no right to create a PID namespace`;
  }
}
const skipReason = unshareProblem();
if (skipReason) console.warn(`namespace-init tests skipped: ${skipReason}`);

/** loop-pie as PID 1 of a new PID namespace; returns the harness target (unshare) and the init's PID here. */
async function containerInit(): Promise<{ t: Target; pid: number }> {
  const t = await spawnTarget(unshare, { args: ['--pid', '--fork', '--kill-child', fixturePath('loop-pie')] });
  const children = fs.readFileSync(`/proc/${t.pid}/task/${t.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  expect(children).toHaveLength(1);
  return { t, pid: children[0] };
}

describe.skipIf(skipReason !== undefined)('the init of a PID namespace', () => {
  it('is refused by try (TARGET_IS_INIT, exit 3, nothing written), and patched with --allow-init', async () => {
    const { t, pid } = await containerInit();
    expect(readStatus(pid).nsPids).toEqual([pid, 1]);
    expect(isNamespaceInit(pid)).toBe(true);
    expect(await t.request('call')).toBe('42');

    const args = ['try', fixturePath('loop_fix.so'), '--pid', String(pid), '--function', 'compute=compute_v2'];
    const r = await hpAgent(args);
    expect(r.json?.error?.code, r.stdout + r.stderr).toBe('TARGET_IS_INIT');
    expect(r.json.error.message).toMatch(/container's init/);
    expect(r.json.error.message).toMatch(/--allow-init/);
    expect(r.json.error.unchanged).toBe(true);
    expect(r.code).toBe(3);
    expect((await entryBytes(pid, 'compute')).equals(fileEntryBytes(pid, 'compute'))).toBe(true);
    expect(patchMappings(pid)).toEqual([]);
    expect(await t.request('call')).toBe('42');

    // A revert is a change too.
    const revert = await hpAgent(['try', '--revert', '--pid', String(pid), '--function', 'compute']);
    expect(revert.json?.error?.code).toBe('TARGET_IS_INIT');

    const allowed = await hpAgent([...args, '--allow-init']);
    expect(allowed.code, allowed.stdout + allowed.stderr).toBe(0);
    expect(await t.request('call')).toBe('182');
    const back = await hpAgent(['try', '--revert', '--pid', String(pid), '--function', 'compute', '--allow-init']);
    expect(back.code, back.stdout + back.stderr).toBe(0);
    expect(await t.request('call')).toBe('42');
  });
});

describe('the machine\'s init', () => {
  it('PID 1 is refused with TARGET_IS_INIT before anything is read or written', async () => {
    const r = await hpAgent(['try', fixturePath('loop_fix.so'), '--pid', '1', '--function', 'compute=compute_v2']);
    expect(r.json?.error?.code, r.stdout + r.stderr).toBe('TARGET_IS_INIT');
    expect(r.json.error.message).toMatch(/init of this machine/);
    expect(r.code).toBe(3);
  });
});
