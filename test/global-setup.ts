// Integration tests run the real command line (dist/) against the real fixtures, so both are
// rebuilt before any test: a stale build must never pass for the current source.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (!fs.existsSync(path.join(root, 'build/Release/hpcore.node'))) run('npm', ['run', '-s', 'build:native']);
  run('npm', ['run', '-s', 'build:ts']); // compiles and bundles
  run('npm', ['run', '-s', 'build:fixtures']);
}
