/** Where the fixture programs are (fixtures/bin), and how to build them. */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FIXTURES_DIR = fileURLToPath(new URL('../../fixtures/', import.meta.url));
const FIXTURE_BIN = path.join(FIXTURES_DIR, 'bin');

/**
 * Absolute path of fixtures/bin/<name>, found from this module's own location
 * (src/harness/ under vitest, dist/harness/ once compiled: both two levels below the package).
 */
export function fixturePath(name: string): string {
  return path.join(FIXTURE_BIN, name);
}

/**
 * Run `make -s -C fixtures` (quick when everything is up to date; safe to run from several test
 * files at once). Rejects with make's output if the build fails.
 */
export function buildFixtures(timeoutMs = 120_000): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    execFile('make', ['-s', '-C', FIXTURES_DIR], { timeout: timeoutMs }, (error, stdout, stderr) => {
      if (error) reject(new Error(`make -C ${FIXTURES_DIR} failed: ${error.message}\n${stdout}${stderr}`));
      else resolve();
    });
  });
}
