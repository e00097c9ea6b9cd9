/**
 * The fixtures' line protocol (fixtures/targets/proto.h), shared by targets and Unix socket
 * clients: a text stream cut into lines, and one answer line per request line, in order.
 */

/** How long request() waits for an answer by default. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;

export class LineSplitter {
  private partial = '';

  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: string): void {
    let text = this.partial + chunk;
    let nl: number;
    while ((nl = text.indexOf('\n')) >= 0) {
      let line = text.slice(0, nl);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      text = text.slice(nl + 1);
      this.onLine(line);
    }
    this.partial = text;
  }

  /** Text received after the last newline. */
  rest(): string {
    return this.partial;
  }
}

interface Waiter {
  line: string;
  abandoned: boolean;
  resolve(answer: string): void;
  reject(error: Error): void;
}

/**
 * One-answer-per-request matching over a line channel. Requests are written one at a time; the
 * waiters form a FIFO matched against incoming lines, and a timed-out waiter stays in it (marked
 * abandoned) so its late answer is consumed instead of being given to the next request.
 */
export class RequestQueue {
  private readonly waiters: Waiter[] = [];
  private tail: Promise<unknown> = Promise.resolve();
  private closedError: ((line: string) => Error) | undefined;
  /** Lines that arrived with no request waiting for them (kept for failure messages). */
  readonly unsolicited: string[] = [];

  constructor(
    private readonly write: (text: string) => void,
    private readonly describe: () => string,
    private readonly context: () => string,
  ) {}

  deliver(line: string): void {
    const waiter = this.waiters.shift();
    if (!waiter) {
      if (this.unsolicited.length < 100) this.unsolicited.push(line);
      return;
    }
    if (!waiter.abandoned) waiter.resolve(line);
  }

  /** No answer will ever come: fail every waiting and future request. */
  close(makeError: (line: string) => Error): void {
    if (this.closedError) return;
    this.closedError = makeError;
    for (const waiter of this.waiters.splice(0)) {
      if (!waiter.abandoned) waiter.reject(makeError(waiter.line));
    }
  }

  request(line: string, timeoutMs: number): Promise<string> {
    if (line.includes('\n') || line.includes('\r')) {
      return Promise.reject(
        new Error(`${this.describe()}: a request must be a single line, got ${JSON.stringify(line)}`),
      );
    }
    const run = (): Promise<string> =>
      new Promise<string>((resolve, reject) => {
        if (this.closedError) {
          reject(this.closedError(line));
          return;
        }
        let timer: NodeJS.Timeout | undefined;
        const waiter: Waiter = {
          line,
          abandoned: false,
          resolve: (answer) => {
            clearTimeout(timer);
            resolve(answer);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        };
        timer = setTimeout(() => {
          waiter.abandoned = true;
          reject(
            new Error(
              `${this.describe()}: no answer to ${JSON.stringify(line)} within ${timeoutMs} ms` +
                (this.unsolicited.length > 0
                  ? `; lines nobody asked for: ${JSON.stringify(this.unsolicited.slice(-5))}`
                  : '') +
                this.context(),
            ),
          );
        }, timeoutMs);
        this.waiters.push(waiter);
        try {
          this.write(`${line}\n`);
        } catch (error) {
          // never sent: no answer will come for it, so it must not wait in the FIFO
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          clearTimeout(timer);
          reject(new Error(`${this.describe()}: cannot send ${JSON.stringify(line)}: ${String(error)}`));
        }
      });
    const answer = this.tail.then(run);
    this.tail = answer.catch(() => undefined);
    return answer;
  }
}

export function clip(text: string, max = 4000): string {
  return text.length <= max ? text : `...${text.slice(text.length - max)}`;
}
