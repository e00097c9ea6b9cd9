/**
 * How the agent knows that a service it started is ready — the conventions services already
 * follow, chosen per service in the baseline manifest (`readiness`, default `line`):
 *
 * - line: a line `READY` in the service's log (its stdout and stderr) after the offset the log had
 *   when the service was started;
 * - notify: systemd's sd_notify. Before the launch the agent binds a datagram Unix socket,
 *   run/<name>.notify, and gives its path to the service as NOTIFY_SOCKET; the service sends
 *   `READY=1` (sd_notify(0, "READY=1"), `systemd-notify --ready`). The socket is in run/, which
 *   only the agent's user may enter, and belongs to that one launch;
 * - socket: a probe. A Unix socket path or a TCP port that accepts a connection.
 *
 * Each is a Waiter polled by waitServiceReady (services.ts) until it says yes, the service dies,
 * or the timeout passes.
 */
import fs, { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { native } from '../native.js';
import type { Readiness } from '../package/index.js';
import { checkSafeName, homeLayout, serviceLogPath } from './home.js';

export type { Readiness };

export const DEFAULT_READINESS: Readiness = { type: 'line' };

export interface Waiter {
  /** Whether the service is ready now (never blocks for long). */
  ready(): Promise<boolean>;
  /** What the service did not do, for SERVICE_NOT_READY: "write READY". */
  readonly awaited: string;
  close(): void;
}

/** Replace every `${HP_RUN}` by the home's run directory (service arguments, probe paths). */
export function expandRun(home: string, text: string): string {
  return text.split('${HP_RUN}').join(homeLayout(home).run);
}

export function notifySocketPath(home: string, name: string): string {
  checkSafeName('service name', name);
  return path.join(homeLayout(home).run, `${name}.notify`);
}

/**
 * Before the launch: binds the notify socket when the service uses sd_notify, and says what to
 * add to the service's environment. `close()` when the wait is over.
 */
export function prepareReadiness(home: string, name: string, readiness: Readiness): { env: Record<string, string>; notifyFd?: number; close(): void } {
  if (readiness.type !== 'notify') return { env: {}, close: () => undefined };
  const socket = notifySocketPath(home, name);
  const fd = native.notifySocketOpen(socket);
  return {
    env: { NOTIFY_SOCKET: socket },
    notifyFd: fd,
    close: () => {
      fs.closeSync(fd);
      fs.rmSync(socket, { force: true });
    },
  };
}

/**
 * The waiter for one start. `notifyFd` is the socket prepareReadiness bound; without it (a
 * service a killed agent started, whose READY=1 went to that agent) a notify service counts as
 * ready while it runs: the message cannot be heard again.
 */
export function readinessWaiter(home: string, name: string, readiness: Readiness, o: { logOffset: number; notifyFd?: number }): Waiter {
  switch (readiness.type) {
    case 'line':
      return lineWaiter(serviceLogPath(home, name), o.logOffset);
    case 'notify':
      return o.notifyFd === undefined ? { ready: async () => true, awaited: 'send READY=1', close: () => undefined } : notifyWaiter(o.notifyFd);
    case 'socket':
      return probeWaiter(readiness.path !== undefined ? { path: expandRun(home, readiness.path) } : { host: readiness.host ?? '127.0.0.1', port: readiness.port! });
  }
}

// ---- line ------------------------------------------------------------------------------------------

/** Up to `max` bytes of a file from `offset` (none if it cannot be read). */
export async function readFrom(file: string, offset: number, max = 1 << 20): Promise<Buffer> {
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(file, 'r');
    const buf = Buffer.alloc(max);
    const { bytesRead } = await handle.read(buf, 0, max, offset);
    return buf.subarray(0, bytesRead);
  } catch {
    return Buffer.alloc(0);
  } finally {
    await handle?.close();
  }
}

/**
 * Follows a log from an offset and tells whether a line `READY` appeared. Works on bytes, so a
 * multi-byte character cut by a read never shifts the offset.
 */
function lineWaiter(file: string, start: number): Waiter {
  let position = start;
  let partial = Buffer.alloc(0);
  return {
    awaited: 'write READY',
    close: () => undefined,
    async ready() {
      for (;;) {
        const chunk = await readFrom(file, position);
        if (chunk.length === 0) return false;
        position += chunk.length;
        let data = Buffer.concat([partial, chunk]);
        let nl: number;
        while ((nl = data.indexOf(0x0a)) >= 0) {
          if (data.subarray(0, nl).toString('latin1').replace(/\r$/, '') === 'READY') return true;
          data = data.subarray(nl + 1);
        }
        // A line longer than any READY line need not be kept whole: keep its last bytes only.
        partial = Buffer.from(data.subarray(Math.max(0, data.length - 16)));
      }
    },
  };
}

// ---- notify ----------------------------------------------------------------------------------------

/** sd_notify messages are newline-separated VAR=VALUE assignments; READY=1 says ready. */
function notifyWaiter(fd: number): Waiter {
  return {
    awaited: 'send READY=1 to $NOTIFY_SOCKET',
    close: () => undefined,
    async ready() {
      return native.notifySocketRead(fd).some((m) => m.text.split('\n').includes('READY=1'));
    },
  };
}

// ---- socket probe ----------------------------------------------------------------------------------

const CONNECT_TIMEOUT_MS = 1_000;

function probeWaiter(to: { path: string } | { host: string; port: number }): Waiter {
  return {
    awaited: `accept a connection on ${'path' in to ? to.path : `${to.host}:${to.port}`}`,
    close: () => undefined,
    ready: () =>
      new Promise<boolean>((resolve) => {
        const sock = net.connect(to as net.NetConnectOpts);
        const done = (ok: boolean) => {
          sock.destroy();
          resolve(ok);
        };
        sock.setTimeout(CONNECT_TIMEOUT_MS, () => done(false));
        sock.once('connect', () => done(true));
        sock.once('error', () => done(false));
      }),
  };
}
