/**
 * The clean-up registry: every target started and every temporary socket path handed out, so that
 * they are killed and removed during a run (killAllTargets, useTargets) and when the Node process
 * exits.
 */
import { unlinkSync } from 'node:fs';

/** A started target, as the registry needs it. */
export interface Killable {
  /** Send SIGKILL now, synchronously (used from process.on('exit')). */
  killNow(): void;
  kill(): Promise<void>;
}

interface Registry {
  targets: Set<Killable>;
  sockets: Set<string>;
}

/*
 * One registry per Node process, shared by every copy of this module (a test runner may load it
 * afresh for each test file): one exit handler, and killAllTargets() sees every target.
 */
const REGISTRY_KEY = Symbol.for('hp-agent.harness.registry');

function registry(): Registry {
  const holder = globalThis as { [REGISTRY_KEY]?: Registry };
  let found = holder[REGISTRY_KEY];
  if (!found) {
    const created: Registry = { targets: new Set(), sockets: new Set() };
    holder[REGISTRY_KEY] = created;
    process.on('exit', () => {
      for (const target of created.targets) target.killNow();
      for (const socketPath of created.sockets) {
        try {
          unlinkSync(socketPath);
        } catch {
          // never created, or already removed
        }
      }
    });
    found = created;
  }
  return found;
}

export const liveTargets = registry().targets;
export const tempSockets = registry().sockets;

/** Kill every target spawned and not yet reaped. */
export async function killAllTargets(): Promise<void> {
  const results = await Promise.allSettled([...liveTargets].map((target) => target.kill()));
  const failures = results.flatMap((result) => (result.status === 'rejected' ? [String(result.reason)] : []));
  if (failures.length > 0) throw new Error(failures.join('\n'));
}

/** A hook registrar with the shape of vitest's / jest's / mocha's afterEach. */
export type HookRegistrar = (fn: () => Promise<void>) => void;

/**
 * Kill every target after each test: `useTargets(afterEach)` with the test runner's afterEach
 * (passed in, so this module does not import vitest). Without an argument the global afterEach is
 * used (vitest with globals: true, jest, mocha).
 */
export function useTargets(afterEach?: HookRegistrar): void {
  const register =
    afterEach ?? ((globalThis as { afterEach?: HookRegistrar }).afterEach as HookRegistrar | undefined);
  if (typeof register !== 'function') {
    throw new Error("useTargets: pass the test runner's afterEach (import { afterEach } from 'vitest')");
  }
  register(killAllTargets);
}

/** Same as useTargets(afterEach). */
export function killTargetsAfterEach(afterEach: HookRegistrar): void {
  useTargets(afterEach);
}
