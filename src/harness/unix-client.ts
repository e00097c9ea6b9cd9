/** Clients of a fixture's Unix socket, speaking the line protocol; temporary socket paths. */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_REQUEST_TIMEOUT_MS, LineSplitter, RequestQueue } from './protocol.js';
import { tempSockets } from './registry.js';

export class UnixClient {
  private readonly queue: RequestQueue;
  private readonly splitter: LineSplitter;

  private constructor(
    private readonly socket: net.Socket,
    readonly socketPath: string,
  ) {
    this.splitter = new LineSplitter((line) => this.queue.deliver(line));
    this.queue = new RequestQueue(
      (text) => {
        socket.write(text);
      },
      () => `unix socket ${socketPath}`,
      () => '',
    );
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.splitter.push(chunk));
    socket.on('error', () => undefined);
    socket.once('close', () => this.closeQueue());
  }

  private closeQueue(): void {
    this.queue.close(
      (line) => new Error(`unix socket ${this.socketPath}: connection closed; no answer to ${JSON.stringify(line)}`),
    );
  }

  static connect(socketPath: string, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): Promise<UnixClient> {
    return new Promise<UnixClient>((resolve, reject) => {
      const socket = net.createConnection({ path: socketPath });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`unix socket ${socketPath}: not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new UnixClient(socket, socketPath));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`unix socket ${socketPath}: cannot connect: ${error.message}`));
      });
    });
  }

  request(line: string, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): Promise<string> {
    return this.queue.request(line, timeoutMs);
  }

  close(): void {
    this.closeQueue();
    this.socket.destroy();
  }
}

/** One connection, one request, one answer line. */
export async function unixRequest(
  socketPath: string,
  line: string,
  timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
): Promise<string> {
  const client = await UnixClient.connect(socketPath, timeoutMs);
  try {
    return await client.request(line, timeoutMs);
  } finally {
    client.close();
  }
}

let socketSequence = 0;

/**
 * A fresh path for a Unix socket in the temporary directory (not created here; removed when the
 * Node process exits if something created it).
 */
export function tempSocketPath(prefix = 'hp-agent'): string {
  const name = `${prefix}-${process.pid}-${++socketSequence}-${randomBytes(4).toString('hex')}.sock`;
  const socketPath = path.join(os.tmpdir(), name);
  // sockaddr_un.sun_path holds 108 bytes including the terminating NUL
  if (Buffer.byteLength(socketPath) > 107) {
    throw new Error(`tempSocketPath: ${socketPath} is too long for a Unix socket; use a shorter TMPDIR or prefix`);
  }
  tempSockets.add(socketPath);
  return socketPath;
}
