/**
 * `hp-agent feed serve <dir>`: a folder's feed over HTTP on 127.0.0.1 — the index, its signature
 * and the packages, by their file names only (no folders, nothing hidden, GET and HEAD only).
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';

const SERVED = /^\/([A-Za-z0-9][A-Za-z0-9._+-]{0,127})$/;

export interface FeedServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function serveFeed(dir: string, port = 0): Promise<FeedServer> {
  const root = path.resolve(dir);
  const server = http.createServer((req, res) => {
    const name = SERVED.exec(decodeURIComponent((req.url ?? '').split('?')[0]))?.[1];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const file = name ? path.join(root, name) : undefined;
    let st: fs.Stats | undefined;
    try {
      st = file ? fs.statSync(file) : undefined;
    } catch {
      st = undefined;
    }
    if (!file || !st?.isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-type': name!.endsWith('.json') ? 'application/json' : 'application/octet-stream', 'content-length': st.size });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    fs.createReadStream(file).on('error', () => res.destroy()).pipe(res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}/`,
    port: actual,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
