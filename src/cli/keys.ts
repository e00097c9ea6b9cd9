/** `hp-agent keygen` and `hp-agent trust`: package signing keys and the agent's trust store. */
import { readFileSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Argv } from 'yargs';
import { HpError } from '../errors.js';
import { generateKeyPair, KEY_ID_RE, loadTrusted, parsePublicKey, trustAdd, trustRemove } from '../package/index.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { agentHome, homeLayout } from '../agent/home.js';
import { EXIT, printer, table } from './output.js';
import type { Output } from '../contract/index.js';
import { existingFile, nonEmpty, usage } from './usage.js';


async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

export async function readTextInput(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new HpError('INVALID_ARGUMENT', `cannot read ${what} ${file}: ${(e as Error).message}`, { file });
  }
}

export function keygenCommand(y: Argv): Argv {
  return y.command(
    'keygen',
    'Make an ed25519 key pair for signing packages',
    (c) =>
      c
        .option('out', { type: 'string', demandOption: true, requiresArg: true, coerce: nonEmpty('--out'), describe: 'PREFIX: writes PREFIX.key (private, mode 0600) and PREFIX.pub' })
        .option('force', { type: 'boolean', default: false, describe: 'replace existing key files' })
        .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
        .example('$0 keygen --out release', 'write release.key and release.pub'),
    async (argv) => {
      const a = argv as unknown as { out: string; force: boolean; json: boolean };
      const out = printer(a.json);
      try {
        const privateKey = `${a.out}.key`;
        const publicKey = `${a.out}.pub`;
        for (const f of [privateKey, publicKey]) {
          if (!a.force && (await exists(f))) throw new HpError('KEY_EXISTS', `${f} already exists: refused to overwrite a key (use --force to replace it)`, { file: f });
        }
        const pair = generateKeyPair();
        try {
          await writeFileAtomic(privateKey, pair.privateKeyPem, 0o600);
          await writeFileAtomic(publicKey, pair.publicKeyPem, 0o644);
        } catch (e) {
          throw new HpError('KEY_WRITE_FAILED', `cannot write the key pair ${a.out}.key/.pub: ${(e as Error).message}`);
        }
        const body: Output<'keygen'> = { keyId: pair.keyId, privateKey, publicKey };
        out.result(body, () =>
          `key ${pair.keyId}\n  private ${privateKey} (keep it secret; sign with --key ${privateKey})\n  public  ${publicKey} (trust it with: hp-agent trust add ${publicKey})`);
        process.exitCode = EXIT.ok;
      } catch (e) {
        process.exitCode = out.error(e);
      }
    },
  );
}

export function trustCommand(y: Argv): Argv {
  return y.command('trust', 'Manage the keys whose packages this agent accepts', (c) =>
    c
      .command(
        'add <key>',
        'Trust an ed25519 public key (PEM)',
        (d) =>
          d
            .positional('key', { type: 'string', demandOption: true, coerce: existingFile('public key'), describe: 'public key file (.pub)' })
            .option('name', { type: 'string', requiresArg: true, describe: 'who the key belongs to' })
            .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' }),
        async (argv) => {
          const a = argv as unknown as { key: string; name?: string; json: boolean };
          const out = printer(a.json);
          try {
            const key = await trustAdd(homeLayout(agentHome()).trustedKeys, await readTextInput(a.key, 'public key'), a.name);
            const body: Output<'trust-add'> = { keyId: key.keyId, name: key.name ?? null, added: key.added ?? null };
            out.result(body, () => `trusted key ${key.keyId}${key.name ? ` (${key.name})` : ''}`);
            process.exitCode = EXIT.ok;
          } catch (e) {
            process.exitCode = out.error(e);
          }
        },
      )
      .command(
        'list',
        'List the trusted keys',
        (d) => d.option('json', { type: 'boolean', default: false, describe: 'print one JSON object' }),
        async (argv) => {
          const a = argv as unknown as { json: boolean };
          const out = printer(a.json);
          try {
            const keys = await loadTrusted(homeLayout(agentHome()).trustedKeys);
            const body: Output<'trust-list'> = { keys: keys.map((k) => ({ keyId: k.keyId, name: k.name ?? null, added: k.added ?? null })) };
            out.result(body, () =>
              keys.length === 0
                ? 'no trusted keys: every signed package will be refused (add one with: hp-agent trust add KEY.pub)'
                : table(['KEY ID', 'NAME', 'ADDED'], keys.map((k) => [k.keyId, k.name ?? '-', k.added ?? '-'])));
            process.exitCode = EXIT.ok;
          } catch (e) {
            process.exitCode = out.error(e);
          }
        },
      )
      .command(
        'remove <key>',
        'Stop trusting a key: by its key id (as trust list shows it), its file in the trust store (<id>.pub), or its public key file',
        (d) =>
          d
            .positional('key', { type: 'string', demandOption: true, coerce: keyIdOfArgument, describe: 'key id, <id>.pub, or a public key file' })
            .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' }),
        async (argv) => {
          const a = argv as unknown as { key: string; json: boolean };
          const out = printer(a.json);
          try {
            const key = await trustRemove(homeLayout(agentHome()).trustedKeys, a.key);
            const body: Output<'trust-remove'> = { keyId: key.keyId, name: key.name ?? null, removed: true };
            out.result(body, () => `removed key ${key.keyId}${key.name ? ` (${key.name})` : ''}: packages it signs are refused from now on`);
            process.exitCode = EXIT.ok;
          } catch (e) {
            process.exitCode = out.error(e);
          }
        },
      )
      .demandCommand(1, 'name a trust command: add, list or remove'),
  );
}

/**
 * The key id `trust remove` means: a key id, the trust store's file name for it (<id>.pub), or a
 * public key file (the one given to `trust add`). Anything else is bad usage.
 */
function keyIdOfArgument(v: unknown): string {
  const text = String(nonEmpty('key')(v));
  if (fileExists(text)) {
    try {
      return parsePublicKey(readFileSync(text, 'utf8'), `public key ${text}`).keyId;
    } catch (e) {
      throw usage((e as Error).message);
    }
  }
  const id = /^([0-9a-f]{16})(?:\.pub)?$/.exec(basename(text))?.[1];
  if (id && KEY_ID_RE.test(id)) return id;
  throw usage(`trust remove expects a key id (16 hex digits, see hp-agent trust list), <id>.pub, or a public key file; "${text}" is none of these`);
}

function fileExists(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** keygen and trust together. */
export function keysCommand(y: Argv): Argv {
  return trustCommand(keygenCommand(y));
}
