/**
 * The agent's home directory (HP_AGENT_HOME, default /var/lib/hp-agent) and where everything
 * lives inside it. Only this module spells out the layout; every other module asks it for paths.
 *
 *   <home>/                    mode 0700: keys, state and logs are nobody else's business
 *     system/<baselineId>/...  one folder per installed baseline (its files, as staged)
 *     system/active            pointer file: the id of the baseline the machine runs
 *     system/pending           pointer file: the id of the baseline staged for the next reboot
 *     trusted-keys/            public keys packages must be signed with
 *     packages/                package store (every package the agent installed)
 *     downloads/               packages fetched from an update feed, verified, on their way to the store
 *     state.json               the agent's state (see state.ts)
 *     history.jsonl            append-only update history (see history.ts)
 *     logs/agent.log           the agent's own log, JSON lines (see log.ts)
 *     logs/services/<name>.log stdout and stderr of each service (see services.ts)
 *     run/                     runtime files: sockets, service pid files, service stdin FIFOs
 *     lock                     held by the one agent that may change anything (see lock.ts)
 */
import { constants as fsConstants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { HpError } from '../errors.js';
import { readTextIfExists, writeFileAtomic } from '../fs/atomic.js';
import { agentUid, checkNotTampered } from '../fs/secure-path.js';

export const DEFAULT_AGENT_HOME = '/var/lib/hp-agent';

export interface HomeLayout {
  home: string;
  /** One folder per baseline: system/<baselineId>/. */
  system: string;
  /** Pointer file holding the id of the active baseline. */
  activePointer: string;
  /** Pointer file holding the id of the baseline staged for the next reboot. */
  pendingPointer: string;
  trustedKeys: string;
  packages: string;
  downloads: string;
  state: string;
  history: string;
  logs: string;
  agentLog: string;
  serviceLogs: string;
  /** Runtime directory: sockets, service pid files and stdin FIFOs (what `${HP_RUN}` expands to). */
  run: string;
  lock: string;
}

/** The agent's home: HP_AGENT_HOME (made absolute) or /var/lib/hp-agent. */
export function agentHome(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.HP_AGENT_HOME;
  return fromEnv ? path.resolve(fromEnv) : DEFAULT_AGENT_HOME;
}

/** Layouts already worked out: the agent asks for its home's paths once per process it patches. */
const layouts = new Map<string, HomeLayout>();

export function homeLayout(home: string): HomeLayout {
  if (!path.isAbsolute(home)) return computeLayout(home); // depends on the working directory
  let layout = layouts.get(home);
  if (!layout) {
    layout = Object.freeze(computeLayout(home));
    layouts.set(home, layout);
  }
  return layout;
}

function computeLayout(home: string): HomeLayout {
  const root = path.resolve(home);
  const system = path.join(root, 'system');
  const logs = path.join(root, 'logs');
  return {
    home: root,
    system,
    activePointer: path.join(system, 'active'),
    pendingPointer: path.join(system, 'pending'),
    trustedKeys: path.join(root, 'trusted-keys'),
    packages: path.join(root, 'packages'),
    downloads: path.join(root, 'downloads'),
    state: path.join(root, 'state.json'),
    history: path.join(root, 'history.jsonl'),
    logs,
    agentLog: path.join(logs, 'agent.log'),
    serviceLogs: path.join(logs, 'services'),
    run: path.join(root, 'run'),
    lock: path.join(root, 'lock'),
  };
}

// Ids and service names become file names: one safe path component, never '.', '..' or hidden,
// and never the two pointer files' names (they share system/ with the baseline folders).
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const RESERVED_BASELINE_IDS = new Set(['active', 'pending']);

/** Throws BAD_NAME unless `name` can be used as one file name inside the home. */
export function checkSafeName(kind: string, name: string): void {
  if (typeof name !== 'string' || !SAFE_NAME.test(name) || name.includes('..')) {
    throw new HpError(
      'BAD_NAME',
      `refusing ${kind} ${JSON.stringify(name)}: it must be 1-128 characters of letters, digits, '.', '_', '+', '-', start with a letter or digit and contain no '..', because it becomes a file name in the agent home`,
      { kind, name },
    );
  }
}

/** system/<baselineId>/ (the id is checked: it must be a safe folder name). */
export function baselineDir(home: string, baselineId: string): string {
  checkSafeName('baseline id', baselineId);
  if (RESERVED_BASELINE_IDS.has(baselineId)) {
    throw new HpError('BAD_NAME', `refusing baseline id "${baselineId}": the name is reserved for a pointer file in system/`, {
      kind: 'baseline id',
      name: baselineId,
    });
  }
  return path.join(homeLayout(home).system, baselineId);
}

/** logs/services/<name>.log */
export function serviceLogPath(home: string, name: string): string {
  checkSafeName('service name', name);
  return path.join(homeLayout(home).serviceLogs, `${name}.log`);
}

export type BaselinePointer = 'active' | 'pending';

/** The baseline id a pointer file holds, or undefined when the pointer does not exist. */
export async function readBaselinePointer(home: string, which: BaselinePointer): Promise<string | undefined> {
  const layout = homeLayout(home);
  const file = which === 'active' ? layout.activePointer : layout.pendingPointer;
  const text = await readTextIfExists(file);
  if (text === undefined) return undefined;
  const id = text.trim();
  if (id === '') return undefined;
  checkSafeName(`baseline id in ${file}`, id);
  return id;
}

/** Point `which` at a baseline (atomically), or remove the pointer when id is undefined. */
export async function writeBaselinePointer(home: string, which: BaselinePointer, id: string | undefined): Promise<void> {
  const layout = homeLayout(home);
  const file = which === 'active' ? layout.activePointer : layout.pendingPointer;
  if (id === undefined) {
    await fsp.rm(file, { force: true });
    return;
  }
  baselineDir(home, id); // validates the id
  await writeFileAtomic(file, `${id}\n`);
}

/**
 * Create the home and its folders if missing. The root gets mode 0700 (also when it already
 * existed with a looser mode and belongs to us). Refuses a home that is not a writable directory,
 * and (HOME_INSECURE) one that belongs to another user or is writable by group or others, as ssh
 * refuses such a ~/.ssh; the trust store gets the same check when its keys are read (keys.ts).
 */
export async function ensureHome(home: string): Promise<HomeLayout> {
  const layout = homeLayout(home);
  try {
    await fsp.mkdir(layout.home, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw homeError(layout.home, error);
  }
  const st = await fsp.stat(layout.home);
  if (!st.isDirectory()) {
    throw new HpError('HOME_NOT_DIRECTORY', `agent home ${layout.home} exists but is not a directory`, { home: layout.home });
  }
  // Someone else's, or writable by others: they could have planted a key (see secure-path.ts).
  checkNotTampered(layout.home, 'agent home', 'HOME_INSECURE', st);
  // Merely readable by others: ours, so tighten it.
  if ((st.mode & 0o777) !== 0o700 && st.uid === agentUid()) {
    await fsp.chmod(layout.home, 0o700);
  }
  try {
    await fsp.access(layout.home, fsConstants.W_OK | fsConstants.X_OK);
    for (const dir of [layout.system, layout.trustedKeys, layout.packages, layout.logs, layout.serviceLogs, layout.run]) {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    }
  } catch (error) {
    throw homeError(layout.home, error);
  }
  return layout;
}

function homeError(home: string, error: unknown): HpError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new HpError(
      'HOME_NOT_WRITABLE',
      `cannot use ${home} as the agent home: ${code === 'EROFS' ? 'read-only file system' : 'permission denied'} (run as root, or set HP_AGENT_HOME to a directory you own)`,
      { home, code },
    );
  }
  if (code === 'ENOTDIR' || code === 'EEXIST') {
    return new HpError('HOME_NOT_DIRECTORY', `cannot use ${home} as the agent home: a path component is not a directory`, { home, code });
  }
  return new HpError('HOME_NOT_WRITABLE', `cannot use ${home} as the agent home: ${(error as Error).message}`, { home, code });
}
