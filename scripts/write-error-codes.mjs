// Writes the README's list of error codes from the catalogue in src/errors.ts (built into
// dist/errors.js first: `npm run build:ts`). test/unit/error-codes.test.ts checks that the README
// lists exactly the catalogue, so run this (`npm run write-error-codes`) after adding or changing a code.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { ERROR_CODES } = await import(path.join(root, 'dist/errors.js'));
const BEGIN = '<!-- error codes: written by scripts/write-error-codes.mjs -->';
const END = '<!-- end of error codes -->';

const rows = Object.entries(ERROR_CODES)
  .sort(([a], [b]) => (a < b ? -1 : 1))
  .map(([code, { meaning, canChange }]) => `| \`${code}\` | ${meaning.replaceAll('|', '\\|')} | ${canChange ? 'yes' : 'no'} |`);
const table = ['| code | meaning | can have changed the target |', '|---|---|---|', ...rows].join('\n');

const file = path.join(root, 'README.md');
const readme = fs.readFileSync(file, 'utf8');
const begin = readme.indexOf(BEGIN);
const end = readme.indexOf(END);
if (begin < 0 || end < begin) throw new Error(`README.md has no "${BEGIN}" … "${END}" section`);
fs.writeFileSync(file, `${readme.slice(0, begin + BEGIN.length)}\n${table}\n${readme.slice(end)}`);
